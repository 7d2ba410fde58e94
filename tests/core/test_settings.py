from pathlib import Path

import pytest

from sleutelbos.core.database import parse_database_url
from sleutelbos.core.errors import ConfigurationError
from sleutelbos.core.settings import load_settings


def test_env_overrides_default_and_cli_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTELBOS_PORT", "9001")
    assert load_settings().port == 9001
    assert load_settings(port=9002).port == 9002
    assert load_settings(port=None).port == 9001


def test_toml_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "conf.toml"
    cfg.write_text('operator_name = "Stedin"\nhsm_jurisdiction = "DE"\n')
    monkeypatch.setenv("SLEUTELBOS_CONFIG", str(cfg))
    s = load_settings()
    assert (s.operator_name, s.hsm_jurisdiction) == ("Stedin", "DE")


def test_pin_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTELBOS_PKCS11_PIN", "123456")
    s = load_settings()
    assert "123456" not in repr(s)
    assert s.pkcs11_pin is not None and s.pkcs11_pin.get_secret_value() == "123456"


def test_database_url_per_component(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.database_url_for("broker") == f"sqlite:///{tmp_path.resolve()}/broker.sqlite"
    s = load_settings(data_dir=tmp_path, database_url="postgresql://h/db", audit_database_url="sqlite:///x.db")
    assert s.database_url_for("broker") == "postgresql://h/db"
    assert s.database_url_for("audit") == "sqlite:///x.db"


def test_parse_database_url() -> None:
    assert parse_database_url("sqlite:////tmp/a.db").path == Path("/tmp/a.db")
    assert parse_database_url("sqlite:///:memory:").path is None
    assert parse_database_url("postgres://u@h:5432/d").dsn == "postgresql://u@h:5432/d"
    with pytest.raises(ConfigurationError, match="unsupported"):
        parse_database_url("mysql://h/d")

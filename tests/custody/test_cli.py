"""``sleutelbos custody inventory`` and ``generate-key`` on the embedded data directory, with SoftHSM2 (set up
by custody itself under the data directory) and without it (the software key store)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sleutelbos.cli import app
from tests.conftest import missing_part, softhsm_module

from .conftest import RecordingAuditSink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PKCS#11 module configured: the embedded defaults decide. SOFTHSM2_CONF is restored afterwards."""
    for name in ("SLEUTELBOS_PKCS11_MODULE", "SLEUTELBOS_PKCS11_TOKEN", "SLEUTELBOS_PKCS11_PIN",
                 "SLEUTELBOS_PKCS11_PIN_FILE", "SLEUTELBOS_CUSTODY_KEY_STORE", "SLEUTELBOS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "unused-softhsm2.conf"))


@pytest.fixture
def audit_component(monkeypatch: pytest.MonkeyPatch) -> RecordingAuditSink:
    """What the audit component does at build time: register its sink on the stack context."""
    import sleutelbos.audit.component as audit_component_module

    sink = RecordingAuditSink()

    def build(ctx: object) -> None:
        ctx.audit_sink = sink  # type: ignore[attr-defined]

    monkeypatch.setattr(audit_component_module, "build", build)
    return sink


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["custody", *args])
    return result.exit_code, result.output


def test_without_softhsm_the_software_store_is_used_and_says_so(
    clean_env, audit_component: RecordingAuditSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLEUTELBOS_CUSTODY_KEY_STORE", "software")
    data = str(tmp_path / "data")
    code, out = _run("generate-key", "--purpose", "breakglass-officer:bob", "--algorithm", "ec-p256",
                     "--label", "bob 2026", "--json", "--data-dir", data)
    assert code == 0, out
    entry = json.loads(out)
    assert entry["purpose"] == "breakglass-officer:bob" and entry["label"] == "bob 2026"
    assert entry["sovereign"] is False and "software key store" in entry["sovereign_reason"]
    assert audit_component.events[0].actor.principal == "cli:operator"
    assert audit_component.events[0].target == entry["id"]

    code, out = _run("inventory", "--json", "--data-dir", data)
    assert code == 0, out
    [listed] = json.loads(out)
    assert listed["id"] == entry["id"] and listed["attributes"]["CKA_EXTRACTABLE"] is False
    code, out = _run("inventory", "--data-dir", data)
    assert code == 0 and "sovereign: false" in out


def test_with_softhsm_the_embedded_token_is_made_and_reused(
    clean_env, audit_component: RecordingAuditSink, tmp_path: Path
) -> None:
    if softhsm_module() is None:
        missing_part("SoftHSM2 (Debian package softhsm2)")
    data = tmp_path / "data"
    code, out = _run("generate-key", "--purpose", "breakglass-officer:alice", "--algorithm", "ed25519",
                     "--json", "--data-dir", str(data))
    assert code == 0, out
    entry = json.loads(out)
    assert entry["sovereign"] is True and entry["hsm"]["model"] == "SoftHSM v2"
    assert entry["attributes"] == {"CKA_EXTRACTABLE": False, "CKA_SENSITIVE": True, "CKA_NEVER_EXTRACTABLE": True,
                                   "CKA_ALWAYS_SENSITIVE": True, "CKA_LOCAL": True}
    pin_file = data / "softhsm" / "user.pin"
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    assert pin_file.read_text().strip() not in out
    assert (data / "softhsm" / "softhsm2.conf").is_file()

    # A separate process, as an operator would run it: the same token and key, found again.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEUTELBOS_PKCS11")}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, "-m", "sleutelbos", "custody", "inventory", "--json", "--data-dir", str(data)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    [listed] = [k for k in json.loads(result.stdout) if k["purpose"] != "audit-checkpoint"]
    assert listed["id"] == entry["id"] and listed["hsm"]["serial"] == entry["hsm"]["serial"]
    assert pin_file.read_text().strip() not in result.stdout + result.stderr


def test_generate_key_fails_closed_when_the_audit_log_is_unavailable(clean_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLEUTELBOS_CUSTODY_KEY_STORE", "software")
    # the audit store cannot be opened: its directory would have to be where a plain file is
    (tmp_path / "blocker").write_text("not a directory")
    monkeypatch.setenv("SLEUTELBOS_AUDIT_DATABASE_URL", f"sqlite:///{tmp_path}/blocker/audit.sqlite")
    data = str(tmp_path / "data")
    code, out = _run("generate-key", "--purpose", "tuf-root", "--algorithm", "ec-p256", "--data-dir", data)
    assert code != 0, out
    monkeypatch.delenv("SLEUTELBOS_AUDIT_DATABASE_URL")
    code, out = _run("inventory", "--json", "--data-dir", data)
    # the audit log's own checkpoint key is made once the log runs; the refused tuf-root key never was
    assert code == 0 and [k["purpose"] for k in json.loads(out)] == ["audit-checkpoint"]


def test_bad_algorithm_is_rejected(clean_env, tmp_path: Path) -> None:
    code, out = _run("generate-key", "--purpose", "x", "--algorithm", "rsa-2048", "--data-dir", str(tmp_path))
    assert code == 2 and "rsa-2048" in out


def test_auto_without_softhsm_installed_falls_back_to_software(
    clean_env, audit_component: RecordingAuditSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sleutelbos.custody.softhsm as softhsm

    monkeypatch.setattr(softhsm, "SOFTHSM_MODULE_CANDIDATES", ())  # a machine without Debian's softhsm2
    code, out = _run("generate-key", "--purpose", "tuf-root", "--algorithm", "ec-p256", "--json",
                     "--data-dir", str(tmp_path / "data"))
    assert code == 0, out
    assert json.loads(out)["sovereign"] is False
    assert not (tmp_path / "data" / "softhsm").exists()

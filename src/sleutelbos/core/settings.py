"""One settings object for the whole stack.

Sources, strongest first: explicit keyword arguments (the CLI's options), ``SLEUTELBOS_*`` environment variables,
an optional TOML file (``SLEUTELBOS_CONFIG``, or ``sleutelbos.toml`` in the data directory), then the embedded
defaults. Secrets are ``SecretStr`` so that they never appear in a log line or a repr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("./sleutelbos-data")
#: the page sizes ``broker_sqlite_page_size`` takes (SQLite's own range starts at 512; below 4 KiB only costs)
SQLITE_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLEUTELBOS_", extra="ignore", validate_default=True)

    # --- the stack --------------------------------------------------------------------------------------
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(default=None, description="Base URL clients see; default http://host:port")
    database_url: str | None = Field(
        default=None,
        description="One database for every component (sqlite:///path or postgresql://…); "
        "default: one SQLite file per component under the data directory",
    )
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    http_max_head_bytes: int = Field(
        default=64 * 1024, ge=4096, description="Largest request head (URL and headers) the servers read; beyond: 431"
    )
    http_read_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest time a client may take to send a request (head and body)"
    )
    operator_name: str = "Operator"
    operator_country: str = "NL"
    max_body_bytes: int = 16 * 1024 * 1024

    # --- broker -----------------------------------------------------------------------------------------
    broker_database_url: str | None = None
    context_fetch_timeout_s: float = 5.0
    mqtt_url: str | None = Field(default=None, description="External MQTT broker; default: the in-process one")
    context_fetch_private_networks: bool = Field(
        default=False, description="Allow fetching @contexts from loopback/private/link-local hosts"
    )
    broker_sqlite_synchronous: str = Field(
        default="NORMAL", pattern="^(NORMAL|FULL|EXTRA)$",
        description="SQLite synchronous mode; NORMAL survives kill -9 (WAL), FULL also power loss",
    )
    broker_sqlite_page_size: int = Field(
        default=16384, description="Page size of a new SQLite store file (decision 0760): 16 KiB makes batch "
        "upserts and the history flush cheaper, single updates ~15 % dearer; a file keeps the size it was created with",
    )
    # broker, issue 3 (subscriptions, notifications, temporal API)
    mqtt_port: int | None = Field(
        default=1884, description="Port of the in-process MQTT broker (amqtt) when mqtt_url is not set; 1884 so as "
        "not to clash with a system Mosquitto on 1883; 0 = any free port; None = no in-process MQTT broker")
    broker_notification_retry_base_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles")
    broker_notification_retry_max_s: float = Field(default=60.0, gt=0, description="Longest retry delay")
    broker_notification_timeout_s: float = Field(default=5.0, gt=0, description="Per-notification send timeout")
    broker_notifier_thread: bool = Field(
        default=True, description="Send notifications from a thread of their own (false: on the broker's event loop)")
    broker_temporal_page_size: int = Field(
        default=1000, ge=1, description="Instances per attribute in one temporal answer; beyond: 206 + Content-Range")
    broker_temporal_retention_days: int | None = Field(
        default=None, ge=1, description="Drop the history recorded more than this many days ago (PostgreSQL: whole "
        "monthly partitions; SQLite: whole buckets)")
    broker_temporal_bucket_seconds: float = Field(
        default=3600.0, ge=0, description="SQLite: how long the attribute history stays in the head before it moves "
        "into a bucket of chunks (0: before every temporal read; docs/decisions/0720)")
    broker_temporal_head_rows: int = Field(
        default=2_000_000, ge=1, description="SQLite: move the head into a bucket sooner once it holds this many "
        "history rows (keeps its entity index in the page cache)")
    broker_batch_workers: int = Field(
        default=0, ge=0, le=64, description="SQLite file: processes that take application/json batch operations "
        "apart and write them, each on a core of its own (decision 0730); 0: the broker's process does")


    # --- policy -----------------------------------------------------------------------------------------
    policy_database_url: str | None = None
    policy_sync_interval_s: float = Field(
        default=2.0, gt=0, description="How often a worker checks the database for policy changes by other workers"
    )
    policy_http_read_timeout_s: float = Field(
        default=30.0, gt=0, description="`serve policy`: longest wait for a request's head and body (slow clients)"
    )


    # --- custody ----------------------------------------------------------------------------------------
    pkcs11_module: str | None = None
    pkcs11_token: str = "sleutelbos"  # noqa: S105 - a token label, not a secret
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = None
    hsm_jurisdiction: str = "NL"
    custody_key_store: str = Field(
        default="auto",
        pattern="^(auto|pkcs11|software)$",
        description="auto: the configured PKCS#11 module, else SoftHSM2 under the data directory when installed, "
        "else the software key store; pkcs11: a module is required; software: never an HSM (not sovereign)",
    )
    custody_database_url: str | None = None


    # --- audit ------------------------------------------------------------------------------------------
    audit_database_url: str | None = None
    audit_origin: str = "sleutelbos.local/audit"
    audit_checkpoint_interval_s: float = 10.0
    audit_checkpoint_entries: int = 1000


    # --- identity ---------------------------------------------------------------------------------------
    identity_database_url: str | None = None
    token_lifetime_s: int = 600
    token_audience: str = "sleutelbos"  # noqa: S105 - an audience name, not a secret
    refresh_token_lifetime_s: int = 14 * 24 * 3600


    @field_validator("broker_sqlite_page_size")
    @classmethod
    def _sqlite_page_size(cls, value: int) -> int:
        # an int, not a Literal: the environment's "4096" is a string, which a Literal of ints would refuse
        if value not in SQLITE_PAGE_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, SQLITE_PAGE_SIZES))} (SQLite ignores any other)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_path()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def database_url_for(self, component: str) -> str:
        """The component's own URL, else the shared one, else ``sqlite:///<data_dir>/<component>.sqlite``."""
        own = getattr(self, f"{component}_database_url", None)
        if own:
            return own
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{component}.sqlite').resolve()}"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _toml_path() -> Path | None:
    explicit = os.environ.get("SLEUTELBOS_CONFIG")
    if explicit:
        return Path(explicit)
    data_dir = Path(os.environ.get("SLEUTELBOS_DATA_DIR", str(DEFAULT_DATA_DIR)))
    candidate = data_dir / "sleutelbos.toml"
    return candidate if candidate.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Settings with the CLI's explicit options on top; ``None`` options mean "not given"."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})

"""Fixtures shared by every component's tests: real PostgreSQL, real SoftHSM2 tokens, real MQTT.

A test may skip a real part only where it is absent *and* the run is not CI; with ``CI=true`` a missing part
fails the test instead, so that CI can never pass by skipping what it was meant to check.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance"
IN_CI = os.environ.get("CI", "").lower() == "true"

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def missing_part(what: str) -> None:
    """Skip outside CI; fail inside CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} not available (allowed outside CI only)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cli(*args: str, port: int, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.Popen[bytes]:
    """``python -m sleutelbos ARGS`` as an operator runs it, once it answers ``/health`` on ``port``; its stderr is
    kept for the error when it exits early (log level WARNING, so the pipe does not fill)."""
    import sys
    import time

    import httpx

    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SLEUTELBOS_LOG_LEVEL": "WARNING", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "sleutelbos", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sleutelbos {args[0]} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sleutelbos {args[0]} did not start in {timeout:g} s")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- PostgreSQL -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    dsn = os.environ.get("SLEUTELBOS_TEST_PG_DSN")
    if not dsn:
        missing_part("PostgreSQL (SLEUTELBOS_TEST_PG_DSN)")
    return dsn  # type: ignore[return-value]


def pg_execute(dsn: str, sql: str) -> None:
    """One statement on a connection of its own, from a synchronous fixture (creating and dropping databases and
    schemas)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def pg_scratch_database(admin_dsn: str, prefix: str, options: str = "") -> Iterator[str]:
    """A new PostgreSQL database (``CREATE DATABASE ... <options>``) for the block, dropped after it: its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    pg_execute(admin_dsn, f'CREATE DATABASE "{name}"{options}')
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        pg_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database_url(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with pg_scratch_database(pg_admin_dsn, "sb_test") as url:
        yield url


# --- SoftHSM2 -------------------------------------------------------------------------------------------

def softhsm_module() -> str | None:
    configured = os.environ.get("SLEUTELBOS_TEST_PKCS11_MODULE")
    if configured and Path(configured).exists():
        return configured
    return next((p for p in SOFTHSM_MODULE_CANDIDATES if Path(p).exists()), None)


class SoftHsmToken:
    """A SoftHSM2 token initialised in a temporary directory with its own ``SOFTHSM2_CONF``."""

    def __init__(self, module: str, conf: Path, label: str, pin: str, so_pin: str) -> None:
        self.module = module
        self.conf = conf
        self.label = label
        self.pin = pin
        self.so_pin = so_pin

    def env(self) -> dict[str, str]:
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "SLEUTELBOS_PKCS11_MODULE": self.module,
            "SLEUTELBOS_PKCS11_TOKEN": self.label,
            "SLEUTELBOS_PKCS11_PIN": self.pin,
        }


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    """A fresh token per test; ``SOFTHSM2_CONF`` is set in the environment for the test's duration."""
    module = softhsm_module()
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        missing_part("SoftHSM2 (Debian package softhsm2)")
    token_dir = tmp_path / "softhsm-tokens"
    token_dir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label, pin, so_pin = "sleutelbos-test", secrets.token_hex(4), secrets.token_hex(4)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        check=True, env=env, capture_output=True,
    )
    token = SoftHsmToken(module, conf, label, pin, so_pin)  # type: ignore[arg-type]
    for key, value in token.env().items():
        monkeypatch.setenv(key, value)
    return token


# --- MQTT -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mosquitto() -> tuple[str, int]:
    host = os.environ.get("SLEUTELBOS_TEST_MQTT_HOST", "127.0.0.1")
    port = int(os.environ.get("SLEUTELBOS_TEST_MQTT_PORT", "1883"))
    if not port_open(host, port):
        missing_part(f"an MQTT broker on {host}:{port}")
    return host, port

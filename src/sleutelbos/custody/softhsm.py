"""The embedded stack's own SoftHSM2 token, kept under ``<data_dir>/softhsm/``.

When no PKCS#11 module is configured and Debian's ``softhsm2`` is installed, ``sleutelbos up`` uses SoftHSM2
automatically: its own ``softhsm2.conf`` (token directory inside the data directory), a token initialised on first
start with ``softhsm2-util --init-token``, and a generated user PIN (and SO PIN) in 0600 files in the data
directory. The PIN is never logged. ``SOFTHSM2_CONF`` is set for this process: SoftHSM2 reads it at
``C_Initialize``, and a process holds one configuration at a time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sleutelbos.custody.errors import HsmUnavailable

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_softhsm() -> tuple[str, str] | None:
    """``(module path, softhsm2-util path)`` when SoftHSM2 is installed, else ``None``."""
    module = next((p for p in SOFTHSM_MODULE_CANDIDATES if Path(p).is_file()), None)
    util = shutil.which("softhsm2-util")
    return (module, util) if module and util else None


@dataclass(frozen=True)
class EmbeddedToken:
    module: str
    label: str
    pin: str
    conf: Path


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)


def ensure_embedded_token(data_dir: Path, label: str) -> EmbeddedToken | None:
    """Set up (first start) or reuse the data directory's SoftHSM2 token; ``None`` without SoftHSM2."""
    found = find_softhsm()
    if found is None:
        return None
    module, util = found
    root = (data_dir / "softhsm").resolve()
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    conf = root / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    pin_file = root / "user.pin"
    so_pin_file = root / "so.pin"
    os.environ["SOFTHSM2_CONF"] = str(conf)
    if not pin_file.exists():
        pin, so_pin = secrets.token_hex(16), secrets.token_hex(16)
        result = subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)}, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise HsmUnavailable(f"softhsm2-util could not initialise token {label!r}: {result.stderr.strip()}")
        _write_secret(so_pin_file, so_pin)
        _write_secret(pin_file, pin)
    return EmbeddedToken(module=module, label=label, pin=pin_file.read_text().strip(), conf=conf)

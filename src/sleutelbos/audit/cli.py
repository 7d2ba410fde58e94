"""``sleutelbos audit ...`` commands: ``export``, ``verify``, ``key``.

``verify`` exits 0 only when everything holds; 1 when the log does not verify (and prints the first bad entry's
index); 2 when it cannot start (unreadable file, malformed key).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer

from sleutelbos.audit.checkpoint import CheckpointError, NoteVerifier, load_verifier
from sleutelbos.audit.export import export_log
from sleutelbos.audit.software_signer import KEY_FILE, SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.audit.verify import VerificationReport, verify_export, verify_store
from sleutelbos.core.database import parse_database_url
from sleutelbos.core.settings import DEFAULT_DATA_DIR, Settings, load_settings

app = typer.Typer(help="Tamper-evident audit log (RFC 9162 Merkle tree, signed checkpoints).", no_args_is_help=True)

DataDir = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Where the embedded stack keeps its state.")


def _existing_store_url(settings: Settings) -> str:
    """The log's database URL; a missing SQLite file is an error here (reading must not create an empty log)."""
    url = settings.database_url_for("audit")
    parsed = parse_database_url(url)
    if parsed.kind == "sqlite" and parsed.path is not None and not parsed.path.exists():
        typer.echo(f"error: no audit log at {parsed.path} (check --data-dir)", err=True)
        raise typer.Exit(2)
    return url


def _software_vkey(settings: Settings) -> list[str]:
    """The data directory's software checkpoint key, if one exists (never created here)."""
    if not (settings.data_dir / KEY_FILE).exists():
        return []
    signer = SoftwareSigner.load_or_create(settings.data_dir)
    return [NoteVerifier.for_public_key(settings.audit_origin, signer.public_key()).vkey]


@app.command()
def export(
    file: Path = typer.Argument(..., help="Where to write the JSON Lines export ('-' for standard output)."),
    data_dir: Path = DataDir,
) -> None:
    """Write the log, its checkpoints and its public key(s) as JSON Lines (format in docs/audit.md)."""
    settings = load_settings(data_dir=data_dir)

    url = _existing_store_url(settings)

    async def run() -> None:
        store = open_store(url)
        await store.open()
        try:
            if str(file) == "-":
                summary = await export_log(store, sys.stdout.buffer, settings.audit_origin, _software_vkey(settings))
            else:
                with file.open("wb") as out:
                    summary = await export_log(store, out, settings.audit_origin, _software_vkey(settings))
        finally:
            await store.close()
        typer.echo(f"exported {summary.entries} entries and {summary.checkpoints} checkpoints", err=True)

    asyncio.run(run())


@app.command()
def verify(
    file: Path | None = typer.Argument(None, help="An export to verify; without it, the live store."),
    key: list[str] | None = typer.Option(
        None, "--key", help="Trusted checkpoint key: a vkey (name+id+key) or a file with a vkey or PEM public key."
    ),
    data_dir: Path = DataDir,
) -> None:
    """Verify an export (or the live store) offline; exit 0 only when every entry and checkpoint holds."""
    settings = load_settings(data_dir=data_dir)
    try:
        trusted = [load_verifier(k, settings.audit_origin) for k in key] if key else None
    except (CheckpointError, ValueError) as exc:
        typer.echo(f"error: --key: {exc}", err=True)
        raise typer.Exit(2) from None

    if file is not None:
        if not file.is_file():
            typer.echo(f"error: {file} is not a file", err=True)
            raise typer.Exit(2)
        with file.open("rb") as handle:
            report = verify_export(handle, trusted)
    else:
        url = _existing_store_url(settings)

        async def run() -> VerificationReport:
            store = open_store(url)
            await store.open()
            try:
                return await verify_store(store, settings.audit_origin, trusted)
            finally:
                await store.close()

        report = asyncio.run(run())
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def key(data_dir: Path = DataDir) -> None:
    """Print the verifier key(s) of the log's checkpoints (to pass to ``verify --key`` elsewhere)."""
    settings = load_settings(data_dir=data_dir)

    url = _existing_store_url(settings)

    async def run() -> list[str]:
        store = open_store(url)
        await store.open()
        try:
            return [cp.vkey for cp in await store.checkpoints()]
        finally:
            await store.close()

    vkeys = list(dict.fromkeys([*asyncio.run(run()), *_software_vkey(settings)]))
    if not vkeys:
        typer.echo("no checkpoint key yet", err=True)
        raise typer.Exit(1)
    for vkey in vkeys:
        typer.echo(vkey)

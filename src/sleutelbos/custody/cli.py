"""``sleutelbos custody ...`` commands, on the embedded stack's data directory.

The commands build custody the way ``sleutelbos up`` does — through the composition root, with the audit
component it requires — so that the same key store is used (the configured PKCS#11 module, else SoftHSM2 under
``<data-dir>/softhsm/``, else the software key store) and every key operation is audited first. Without an audit
sink, ``generate-key`` refuses (fail closed); ``inventory`` only reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import Actor
from sleutelbos.core.settings import DEFAULT_DATA_DIR, load_settings
from sleutelbos.custody.models import InventoryEntry, KeyAlgorithm
from sleutelbos.custody.service import KeyCustody

app = typer.Typer(help="Key custody: keys made and used inside an HSM over PKCS#11.", no_args_is_help=True)

DataDir = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Where the embedded stack keeps its state.")
T = TypeVar("T")


def _with_custody(data_dir: Path, work: Callable[[KeyCustody], Awaitable[T]]) -> T:
    from sleutelbos.stack import StackContext, build_components

    settings = load_settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> T:
        ctx = StackContext(settings=settings, announce=lambda message: None)
        components = build_components(ctx, ("custody",))
        started: list[Any] = []
        custody: KeyCustody = ctx.services["custody"]
        try:
            for component in components:
                await component.start()
                started.append(component)
            return await work(custody)
        finally:
            for component in reversed(started):
                await component.stop()
            custody.close()

    try:
        return asyncio.run(run())
    except SleutelbosError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc


def _describe_store(custody: KeyCustody) -> str:
    token = custody.token_identity()
    where = (f"PKCS#11 token {token.label!r} ({token.manufacturer} {token.model}, serial {token.serial})"
             if custody.sovereign else "software key store")
    return (f"key store: {where}; custodian {custody.custodian}; jurisdiction {custody.jurisdiction}; "
            f"sovereign: {str(custody.sovereign).lower()}")


def _print_table(entries: list[InventoryEntry]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sleutelbos key inventory (attributes read from the token)")
    for column in ("id", "purpose", "alg", "v", "state", "extractable", "local", "storage", "hsm", "sovereign"):
        table.add_column(column)
    for entry in entries:
        doc = entry.as_dict()
        attrs = doc["attributes"] or {}
        table.add_row(
            doc["id"][:12], doc["purpose"] + (f" ({doc['meter']})" if doc["meter"] else ""), doc["algorithm"],
            str(doc["version"]), doc["state"], str(attrs.get("CKA_EXTRACTABLE", "-")),
            str(attrs.get("CKA_LOCAL", "-")), doc["storage"].split(":")[0],
            f"{doc['hsm']['label']} {doc['hsm']['serial']} ({doc['jurisdiction']})", str(doc["sovereign"]).lower(),
        )
    Console().print(table)
    if entries and not entries[0].sovereign:
        typer.echo(f"not sovereign: {entries[0].sovereign_reason}")


@app.command()
def inventory(
    as_json: bool = typer.Option(False, "--json", help="A JSON array, one object per key."),
    meters: bool = typer.Option(True, "--meters/--no-meters", help="Include per-meter DLMS keys."),
    limit: int = typer.Option(None, "--limit", help="At most this many keys.", min=1),
    data_dir: Path = DataDir,
) -> None:
    """Every key with its purpose, state, custodian, HSM identity and the attributes read back from the token."""

    async def work(custody: KeyCustody) -> tuple[str, list[InventoryEntry]]:
        return _describe_store(custody), custody.inventory(include_meters=meters, limit=limit)

    store, entries = _with_custody(data_dir, work)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        typer.echo(store)
        _print_table(entries)


@app.command("generate-key")
def generate_key(
    purpose: str = typer.Option(..., "--purpose", help="What the key is for, e.g. breakglass-officer:alice."),
    algorithm: KeyAlgorithm = typer.Option(..., "--algorithm", help="Key algorithm."),
    label: str = typer.Option(None, "--label", help="CKA_LABEL of the token object."),
    reason: str = typer.Option("", "--reason", help="Why (goes into the audit log)."),
    operator: str = typer.Option("cli:operator", "--operator", help="Who asks (goes into the audit log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the inventory entry as JSON."),
    data_dir: Path = DataDir,
) -> None:
    """Create a key in the token for an operator (e.g. a break-glass officer's key) and print its inventory entry."""

    async def work(custody: KeyCustody) -> InventoryEntry:
        actor = Actor(principal=operator, organisation=custody.custodian, kind="operator")
        record = await custody.generate(purpose, algorithm, label=label, actor=actor, reason=reason)
        return custody.inventory_entry(record)

    entry = _with_custody(data_dir, work)
    if as_json:
        typer.echo(json.dumps(entry.as_dict(), indent=2))
    else:
        _print_table([entry])

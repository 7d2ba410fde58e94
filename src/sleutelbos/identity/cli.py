"""``sleutelbos identity ...`` commands.

``create-client`` opens the data directory's stack in-process (audit and custody included, so the creation is
audited and the store is the stack's own), creates a client and prints its ``client_id`` and ``client_secret``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.settings import DEFAULT_DATA_DIR, load_settings
from sleutelbos.identity.models import ClientType
from sleutelbos.stack import StackContext, build_components

app = typer.Typer(help="Identity manager: OAuth 2.0 / OpenID Connect, Keyrock-compatible.", no_args_is_help=True)


def _build(ctx: StackContext) -> list[Any]:
    return build_components(ctx, ("identity",))


async def _create_client(data_dir: Path, org: str, name: str, scope: str, client_type: str) -> dict[str, Any]:
    settings = load_settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = StackContext(settings=settings, announce=lambda msg: typer.echo(msg, err=True))
    components = _build(ctx)
    started: list[Any] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        service = ctx.services["identity"]
        client, secret = await service.create_client_for(org, name, scope, ClientType(client_type))
        return {
            "client_id": client.id, "client_secret": secret, "name": client.name,
            "organisation_id": client.organisation_id, "client_type": str(client.client_type),
            "scope": " ".join(client.scopes),
        }
    finally:
        for component in reversed(started):
            await component.stop()


@app.command("create-client")
def create_client(
    org: str = typer.Option(..., "--org", help="Organisation id or name."),
    name: str = typer.Option(..., "--name", help="Client name, unique in the organisation."),
    scope: list[str] = typer.Option([], "--scope", help="Scope(s) the client may ask for; repeatable."),
    client_type: str = typer.Option("service", "--type", help="service, application or meter."),
    as_json: bool = typer.Option(False, "--json", help="Print the credentials as JSON."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="The stack's data directory."),
) -> None:
    """Create an OAuth client (client credentials) and print its client_id and client_secret once."""
    if client_type not in ("service", "application", "meter"):
        raise typer.BadParameter("--type must be service, application or meter")
    try:
        result = asyncio.run(_create_client(data_dir, org, name, " ".join(s for x in scope for s in x.split()),
                                            client_type))
    except SleutelbosError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        typer.echo(f"client_id:     {result['client_id']}\nclient_secret: {result['client_secret']}")

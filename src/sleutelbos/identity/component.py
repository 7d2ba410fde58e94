"""How the composition root builds the identity component (see ``sleutelbos.stack``).

It needs custody's ``SignerProvider`` (tokens are signed by the ``identity-token`` key): without it, it refuses to
build. It needs the ``AuditSink`` for every admin change: when no audit component registered one, it builds with a
sink that refuses, so tokens are still issued for existing clients but no change happens unaudited (fail closed),
and the bootstrap below is postponed to the first start with an audit log (announced, not silent).

On the first start it creates the operator organisation and its first administrator, announces the credentials once
and writes them to ``<data_dir>/bootstrap.json`` (mode 0600). Later starts find the operator and create nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from starlette.routing import BaseRoute

from sleutelbos.core.errors import ConfigurationError
from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable
from sleutelbos.identity import api
from sleutelbos.identity.errors import ServerError
from sleutelbos.identity.service import BootstrapCredentials, IdentityConfig, IdentityService
from sleutelbos.identity.store import IdentityStore

REQUIRES: tuple[str, ...] = ("audit", "custody")

log = logging.getLogger("sleutelbos.identity")


class IdentityComponent:
    name = "identity"

    def __init__(self, ctx: Any, service: IdentityService) -> None:
        self.ctx = ctx
        self.service = service

    def routes(self) -> list[BaseRoute]:
        return api.routes(self.service)

    async def start(self) -> None:
        settings = self.ctx.settings
        await self.service.store.connect(settings.database_url_for("identity"))
        await self.service.start()
        try:
            credentials = await self.service.bootstrap(settings.operator_name, settings.operator_country)
        except ServerError as exc:
            log.error("identity bootstrap postponed: %s", exc.detail)
            self.ctx.announce(f"identity: operator organisation and admin NOT created yet ({exc.detail}); "
                              "they will be created at the first start with a working audit log")
            return
        if credentials is not None:
            path = write_bootstrap_file(Path(settings.data_dir), credentials)
            self.ctx.announce(announcement(credentials, path))

    async def stop(self) -> None:
        await self.service.close()


def write_bootstrap_file(data_dir: Path, credentials: BootstrapCredentials) -> Path:
    """``bootstrap.json``, created with mode 0600 (never world- or group-readable, not even for an instant)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "bootstrap.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, orjson.dumps(credentials.as_dict(), option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)
    return path


def announcement(credentials: BootstrapCredentials, path: Path) -> str:
    return (
        "identity: first start — operator organisation and administrator created (shown once):\n"
        f"  organisation: {credentials.organisation_name} ({credentials.organisation_id})\n"
        f"  username:     {credentials.username}\n"
        f"  password:     {credentials.password}\n"
        f"  TOTP secret:  {credentials.totp_secret}\n"
        f"  TOTP URI:     {credentials.totp_uri}\n"
        f"  also written to {path} (mode 0600)"
    )


def config_from(settings: Any) -> IdentityConfig:
    return IdentityConfig(
        issuer=settings.base_url,
        audience=settings.token_audience,
        token_lifetime_s=settings.token_lifetime_s,
        refresh_token_lifetime_s=settings.refresh_token_lifetime_s,
    )


class RefusingAuditSink:
    """Stands in when no audit component registered a sink: every admin change is refused (fail closed)."""

    async def record(self, event: AuditEvent) -> AuditReceipt:
        raise AuditUnavailable(f"no audit sink is configured; {event.action} refused (fail closed)")


def build(ctx: Any) -> IdentityComponent:
    if ctx.signers is None:
        raise ConfigurationError("identity needs custody's signers (ctx.signers): tokens are signed in custody")
    audit = ctx.audit_sink or RefusingAuditSink()
    service = IdentityService(IdentityStore(), ctx.signers, audit, config_from(ctx.settings))
    ctx.services["identity"] = service
    return IdentityComponent(ctx, service)

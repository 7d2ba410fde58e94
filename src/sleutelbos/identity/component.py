"""How the composition root builds the identity component (see ``sleutelbos.stack``).

It needs custody's ``SignerProvider`` (tokens are signed by the ``identity-token`` key) and the ``AuditSink``
(every admin change is recorded first); without either it refuses to build — an IdM that cannot sign in an HSM or
cannot audit must not run (fail closed). On the first start it creates the operator organisation and its first
administrator, announces the credentials once and writes them to ``<data_dir>/bootstrap.json`` (mode 0600).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
from starlette.routing import BaseRoute

from sleutelbos.core.errors import ConfigurationError
from sleutelbos.identity import api
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
        credentials = await self.service.bootstrap(settings.operator_name, settings.operator_country)
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


def build(ctx: Any) -> IdentityComponent:
    if ctx.signers is None:
        raise ConfigurationError("identity needs custody's signers (ctx.signers): tokens are signed in custody")
    if ctx.audit_sink is None:
        raise ConfigurationError("identity needs the audit sink (ctx.audit_sink): admin changes are audited first")
    service = IdentityService(IdentityStore(), ctx.signers, ctx.audit_sink, config_from(ctx.settings))
    ctx.services["identity"] = service
    return IdentityComponent(ctx, service)

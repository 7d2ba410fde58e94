"""Serving the policy component alone: the ASGI application ``sleutelbos serve policy`` runs, one or N processes.

The server is uvicorn with the HTTP protocol :class:`.fast_http.PdpHttpProtocol` (:data:`HTTP_PROTOCOL`), which
answers decisions inside the protocol and hands every other request to this application (decision 0391).

Decisions are CPU-bound Python, so one process uses one core; ``sleutelbos serve policy --workers N`` runs N uvicorn
worker processes on one listening socket, each with its own compiled PDPs over the shared policy database (the
component's sync loop picks up PAP changes another worker made). uvicorn starts workers from an import string, so
:func:`create_app` builds the application from the environment (``SLEUTELBOS_*``, see
:mod:`sleutelbos.core.settings`) — the CLI puts its options there before starting the workers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn
from starlette.applications import Starlette

from sleutelbos.core.logging import configure_logging
from sleutelbos.core.settings import Settings, load_settings
from sleutelbos.policy.api import DecisionFastPath, decision_endpoint
from sleutelbos.stack import StackContext, build_app

log = logging.getLogger("sleutelbos.policy")

HTTP_PROTOCOL = "sleutelbos.policy.fast_http:PdpHttpProtocol"
"""uvicorn's ``http`` setting for the policy server (an import string: worker processes import it themselves)."""


def with_decision_fast_path(app: Starlette, ctx: StackContext) -> DecisionFastPath:
    """The stack application with the decision endpoint answered before Starlette's router (see
    :class:`.api.DecisionFastPath`); it also gives :class:`.fast_http.PdpHttpProtocol` the service and limits."""
    service = ctx.services["policy"]
    settings = ctx.settings
    return DecisionFastPath(app, decision_endpoint(service, settings.max_body_bytes), service=service,
                            max_body_bytes=settings.max_body_bytes,
                            read_timeout_s=settings.policy_http_read_timeout_s)


def create_app(**overrides: Any) -> DecisionFastPath:
    """The uvicorn application factory (``sleutelbos.policy.serving:create_app``) for one worker process."""
    settings = load_settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level, settings.log_format)
    ctx = StackContext(settings=settings, announce=log.info)
    return with_decision_fast_path(build_app(ctx, expose=("policy",)), ctx)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run ``workers`` uvicorn worker processes of :func:`create_app` on ``settings.host:port``.

    The workers read their settings from the environment, so the resolved data directory and policy database URL
    are exported first; uvicorn's supervisor handles SIGINT/SIGTERM and restarts a worker that dies.
    """
    os.environ["SLEUTELBOS_DATA_DIR"] = str(settings.data_dir)
    os.environ["SLEUTELBOS_POLICY_DATABASE_URL"] = settings.database_url_for("policy")
    os.environ["SLEUTELBOS_HOST"] = settings.host
    os.environ["SLEUTELBOS_PORT"] = str(settings.port)
    uvicorn.run("sleutelbos.policy.serving:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                http=HTTP_PROTOCOL)

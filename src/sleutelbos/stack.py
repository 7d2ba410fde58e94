"""The composition root: the one place that knows how the components are wired.

``build_stack`` builds every component in-process for the embedded mode (``sleutelbos up``) and puts all their
routes on one public port. ``sleutelbos serve <name>`` builds the same context but exposes one component's routes;
the components it needs in-process (the audit sink, custody's signers) are named by its ``REQUIRES``.

Each component package has a ``component`` module with ``build(ctx) -> Component`` and ``REQUIRES``; building
registers what the component offers others on the context (``ctx.audit_sink``, ``ctx.signers``,
``ctx.services[...]``), and the components reach each other only through those protocols and exported services.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sleutelbos.core.component import Component
from sleutelbos.core.protocols import AuditSink, SignerProvider
from sleutelbos.core.settings import Settings

log = logging.getLogger("sleutelbos.stack")

# Build and start order (stop is the reverse): custody first, so that it is closed last — the audit log signs its
# final checkpoint with a custody key when it stops; custody finds the audit sink on the context when it records.
# Then audit (everyone records into it), then the rest.
COMPONENTS: tuple[str, ...] = ("custody", "audit", "policy", "identity", "broker")


@dataclass
class StackContext:
    """What components share in one process. Filled in while the stack is built."""

    settings: Settings
    audit_sink: AuditSink | None = None
    signers: SignerProvider | None = None
    services: dict[str, Any] = field(default_factory=dict)
    announce: Callable[[str], None] = print


def _component_module(name: str) -> Any:
    return importlib.import_module(f"sleutelbos.{name}.component")


def _closure(names: tuple[str, ...]) -> list[str]:
    """The named components and everything they require, in ``COMPONENTS`` order."""
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        wanted.add(name)
        stack.extend(getattr(_component_module(name), "REQUIRES", ()))
    return [c for c in COMPONENTS if c in wanted]


def build_components(ctx: StackContext, names: tuple[str, ...] = COMPONENTS) -> list[Component]:
    """Build ``names`` and what they require. A required (not named) component whose offering is already on the
    context — its module's ``PROVIDES`` attribute, e.g. ``audit_sink`` — is not built again: that is how a
    standalone service is handed a remote audit sink, and how a test puts a recording sink in its place."""
    built: list[Component] = []
    for name in _closure(names):
        module = _component_module(name)
        provides = getattr(module, "PROVIDES", None)
        if name not in names and provides and getattr(ctx, provides, None) is not None:
            continue
        component = module.build(ctx)
        if component is not None:
            built.append(component)
    return built


def build_app(ctx: StackContext, expose: tuple[str, ...] = COMPONENTS) -> Starlette:
    """One ASGI app serving the routes of the components in ``expose``; the others run only in-process."""
    components = build_components(ctx, expose)
    routes: list[BaseRoute] = []
    for component in components:
        if component.name in expose:
            routes.extend(component.routes())

    async def index(request: Request) -> JSONResponse:
        return JSONResponse(
            {"service": "sleutelbos", "components": [c.name for c in components if c.name in expose]}
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [*routes, Route("/", index), Route("/health", health)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started: list[Component] = []
        try:
            for component in components:
                await component.start()
                started.append(component)
                log.info("component started", extra={"component": component.name})
            yield
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("component failed to stop cleanly", extra={"component": component.name})

    # a component may put ASGI middleware ahead of the router for its hottest paths (the broker's reads)
    middleware = [m for component in components if component.name in expose
                  for m in getattr(component, "middleware", list)()]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.context = ctx
    app.state.components = {c.name: c for c in components}
    return app

"""What the composition root needs from a component: its HTTP routes and its start/stop.

A component that runs inside the embedded stack (``sleutelbos up``) or alone (``sleutelbos serve <name>``)
implements this; its routes carry full paths (``/ngsi-ld/v1/...``, ``/.well-known/...``) so that the stack can
put every component on one public port without path rewriting.
"""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute


class Component(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

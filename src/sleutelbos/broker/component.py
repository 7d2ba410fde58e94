"""How the composition root builds the broker component (see ``sleutelbos.stack``)."""

from __future__ import annotations

from typing import Any

REQUIRES: tuple[str, ...] = ()


def build(ctx: Any) -> Any:
    """Not wired into the stack yet."""
    return None

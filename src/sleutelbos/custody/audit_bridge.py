"""Write-ahead audit from synchronous code.

``AuditSink.record`` is a coroutine, but the ``SignerProvider`` protocol is synchronous and creates a key on first
use, which must be audited first (decision note 0200). This waits for the sink: on the loop the sink lives on
(the one custody's ``start()`` remembered) when that loop runs in another thread, otherwise on a helper thread's
own loop, so it also works from inside a running loop's thread. Any failure becomes :class:`AuditUnavailable`,
and the caller then does nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from sleutelbos.core.protocols import AuditEvent, AuditUnavailable

AUDIT_TIMEOUT_S = 30.0


def run_coroutine_blocking(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from synchronous code, whether or not this thread runs an event loop
    (in a helper thread with its own loop; the calling thread waits)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="sleutelbos-custody-bridge", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def record_blocking(
    record: Callable[[AuditEvent], Coroutine[Any, Any, None]],
    event: AuditEvent,
    home_loop: asyncio.AbstractEventLoop | None,
) -> None:
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    try:
        if home_loop is not None and home_loop.is_running() and current is not home_loop:
            asyncio.run_coroutine_threadsafe(record(event), home_loop).result(AUDIT_TIMEOUT_S)
        else:
            run_coroutine_blocking(lambda: record(event))
    except AuditUnavailable:
        raise
    except Exception as exc:
        raise AuditUnavailable(f"audit sink failed to record {event.action}: {exc}") from exc

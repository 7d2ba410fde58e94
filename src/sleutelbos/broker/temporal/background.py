"""The one shape of the temporal history's background work (PostgreSQL's materialiser, SQLite's flusher): a step
every ``interval_s`` in a task of its own, a failed step logged and retried at the next tick, and a stop that waits
for a step in flight before the step's resources are released."""

from __future__ import annotations

import abc
import asyncio
import logging

from sleutelbos.core.tasks import cancel_and_wait

log = logging.getLogger("sleutelbos.broker.temporal")


class BackgroundStep(abc.ABC):
    #: the task's name, and the log's word for a failed step
    name = "temporal history step"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = asyncio.Lock()  # held by a step; stop() waits for it
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=self.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        async with self._lock:  # a step in flight (a read's catch-up, a flush) finishes first
            await self._release()

    async def _follow(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:
                log.exception("%s failed", self.name)
            await asyncio.sleep(self.interval_s)

    @abc.abstractmethod
    async def _tick(self) -> None:
        """One step (a catch-up, a flush when one is due)."""

    async def _release(self) -> None:  # noqa: B027 - a hook: nothing to release by default
        """What the steps hold beyond the task (a thread and its connection), released once none is in flight."""

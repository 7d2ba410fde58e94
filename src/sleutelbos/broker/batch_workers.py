"""Batch worker processes (``broker_batch_workers``, decision 0730): the batch operations of a SQLite broker taken
apart and written on more than one core.

One interpreter does ~40 µs of CPU per batch-upserted entity — parsing, expansion, validation, the rows' JSON — and
one interpreter runs on one core at a time, however many threads it has (decision 0721). SQLite itself is not the
bound: its statements take a fraction of that under the file's write lock. So the broker hands the body of an
``application/json`` batch, as bytes, to one of N worker processes, each with its own connections to the same file:

* the worker parses and expands the body with the request's compiled @context (sent with the job, pickled once per
  context), and builds the batch's entity and history rows *before* it takes the write lock
  (``SqliteEntityStore.staging``), so two workers overlap in everything but their statements;
* it runs the same service code as the broker's process (``batch.apply_expanded``) in one transaction, and
  answers with the :class:`~sleutelbos.broker.service.BatchResult`, the committed changes when the tenant has
  change-driven subscriptions (the broker's process matches and notifies them, as for its own writes), and the
  further entity types it knows of (the broker's query translation must know them);
* the broker's process stays the one owner of everything else: subscriptions and notifications, the temporal
  flush, WAL checkpoints, hosted @contexts, and every other request.

Left in the broker's process: ``application/ld+json`` batches (each entity may carry its own @context, which may
name a context only the broker's cache holds) and batch delete (it parses ids only).

The processes are spawned, not forked: the broker's process has threads (the notifier, the checkpointer, the
flusher) that a fork would copy mid-step. Spawning imports the program's main module again, so a program that embeds
the broker with workers needs Python's ``if __name__ == "__main__":`` guard (the ``sleutelbos`` command has it).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import count
from multiprocessing.util import Finalize
from pathlib import Path

from sleutelbos.broker.batch import apply_expanded, expand_op
from sleutelbos.broker.body import parse_body
from sleutelbos.broker.context import CompiledContext, ContextStore
from sleutelbos.broker.errors import InternalError
from sleutelbos.broker.notifications.changes import Change, ChangeListener, ObservedStore
from sleutelbos.broker.service import BatchResult, BrokerService, creation
from sleutelbos.broker.store.sqlite import SqliteEntityStore
from sleutelbos.core.collector import tune_garbage_collector

log = logging.getLogger("sleutelbos.broker.batch_workers")

_JSON = "application/json"
#: compiled @contexts whose pickled form the broker keeps (a fleet's clients send a handful)
_CONTEXTS_KEPT = 64


@dataclass(slots=True)
class _Job:
    op: str
    tenant: str
    ctx_serial: int  # names the compiled context for the worker's cache; ``ctx`` is its pickled form
    ctx: bytes
    body: bytes
    options: frozenset[str]
    now: str
    observe: bool  # the tenant has change-driven subscriptions: record the changes
    previous: bool  # and one of them wants previous values (showChanges)


@dataclass(slots=True)
class _Outcome:
    result: BatchResult
    changes: list[Change] = field(default_factory=list)
    further_types: frozenset[str] = frozenset()


class BatchWorkers:
    """The broker's side: a pool of worker processes on the store's file, and what their answers change here."""

    def __init__(self, store: SqliteEntityStore, processes: int, listener: ChangeListener | None = None) -> None:
        if store.path is None:
            raise ValueError("batch workers need a SQLite file (the in-memory database is one process's)")
        self.store = store
        self.processes = processes
        self.listener = listener
        self._pool: ProcessPoolExecutor | None = None
        self._serials = count(1)
        self._contexts: OrderedDict[int, tuple[CompiledContext, int, bytes]] = OrderedDict()
        #: batches the workers answered since start (errors included), and how often the pool was started again
        self.batches = 0
        self.restarts = 0
        store.shared = True

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(str(self.store.path), self.store.synchronous))

    async def start(self) -> None:
        """Start the processes (each opens the store's file) before the broker serves; a worker that cannot open
        the file stops the broker's start, not its first batch."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*(loop.run_in_executor(self._pool, _ready, 0.2) for _ in range(self.processes)))
        log.info("%d batch worker processes on %s (pids %s)", len(set(pids)), self.store.path,
                 ", ".join(str(p) for p in sorted(set(pids))))

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    def _context(self, ctx: CompiledContext) -> tuple[int, bytes]:
        # keyed by the object, kept alive here, so that a recompiled context (a reloaded URL) is a new serial
        kept = self._contexts.get(id(ctx))
        if kept is None or kept[0] is not ctx:
            kept = (ctx, next(self._serials), pickle.dumps(ctx, protocol=pickle.HIGHEST_PROTOCOL))
            self._contexts[id(ctx)] = kept
            if len(self._contexts) > _CONTEXTS_KEPT:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(id(ctx))
        return kept[1], kept[2]

    async def run(self, op: str, tenant: str, ctx: CompiledContext, body: bytes, options: set[str],
                  now: str) -> BatchResult:
        """Batch ``op`` of an ``application/json`` body in a worker process; its errors are the broker's own (a
        body that does not parse answers the same ProblemDetails as in the broker's process)."""
        if self._pool is None:
            raise InternalError("the batch workers are not running")
        listener = self.listener
        observe = listener is not None and listener.observes(tenant)
        previous = observe and listener is not None and listener.wants_previous(tenant)
        serial, pickled = self._context(ctx)
        job = _Job(op, tenant, serial, pickled, body, frozenset(options), now, observe, previous)
        try:
            outcome: _Outcome = await asyncio.get_running_loop().run_in_executor(self._pool, _run, job)
        except BrokenProcessPool:
            log.error("a batch worker process stopped during a batch; starting the workers again")
            await self._restart()
            raise InternalError("a batch worker process stopped during the batch; whether it was written is not "
                                "known: send it again (an upsert can be repeated)") from None
        finally:
            self.batches += 1
        self.store.learn(tenant, outcome.further_types)
        if outcome.changes and listener is not None:
            listener.publish(outcome.changes)
        return outcome.result

    def pids(self) -> list[int]:
        """The worker processes' ids (for an operator's ``ps``, and the tests)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(processes)

    async def _restart(self) -> None:
        self.restarts += 1
        broken, self._pool = self._pool, self._new_pool()
        if broken is not None:
            await asyncio.to_thread(broken.shutdown, False, cancel_futures=True)


# --- the worker process ---------------------------------------------------------------------------------------

class _Recorder:
    """The worker's change listener: records the changes of the job's transaction for the broker's process."""

    def __init__(self) -> None:
        self.observing = False
        self.previous = False
        self.changes: list[Change] = []

    def observes(self, tenant: str) -> bool:
        return self.observing

    def wants_previous(self, tenant: str) -> bool:
        return self.previous

    def publish(self, changes: list[Change]) -> None:
        self.changes.extend(changes)


class _Worker:
    def __init__(self, path: str, synchronous: str) -> None:
        self.loop = asyncio.new_event_loop()  # one loop for the process: the store's lock belongs to it
        asyncio.set_event_loop(self.loop)
        self.store = SqliteEntityStore(Path(path), synchronous, checkpoints=False)  # the broker checkpoints
        self.store.shared = True
        self.loop.run_until_complete(self.store.open())
        self.recorder = _Recorder()
        self.service = BrokerService(ObservedStore(self.store, self.recorder), ContextStore())  # type: ignore[arg-type]
        self.contexts: OrderedDict[int, CompiledContext] = OrderedDict()

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()

    def context(self, job: _Job) -> CompiledContext:
        ctx = self.contexts.get(job.ctx_serial)
        if ctx is None:
            ctx = pickle.loads(job.ctx)  # noqa: S301 — from the broker's own process, over the pool's pipe
            self.contexts[job.ctx_serial] = ctx
            if len(self.contexts) > _CONTEXTS_KEPT:
                self.contexts.popitem(last=False)
        return ctx

    async def run(self, job: _Job) -> _Outcome:
        body, _, _ = parse_body(job.body, _JSON, has_link=False)
        result = BatchResult()
        items = await expand_op(self.service, job.op, self.context(job), body, result, job.now)
        recorder = self.recorder
        recorder.observing, recorder.previous, recorder.changes = job.observe, job.previous, []
        # the rows of entities written as given are built before the write lock (see SqliteEntityStore.staging)
        as_given = job.op == "create" or (job.op == "upsert" and "update" not in job.options)
        if as_given and items and len({e["id"] for e in items}) == len(items):
            with self.store.staging(job.tenant, items, [creation(e) for e in items]):
                await apply_expanded(self.service, job.op, job.tenant, items, set(job.options), result)
        else:
            await apply_expanded(self.service, job.op, job.tenant, items, set(job.options), result)
        return _Outcome(result, recorder.changes, self.store.further_types(job.tenant))


_worker: _Worker | None = None


def _start_worker(path: str, synchronous: str) -> None:
    """The pool's initializer: the store opened once per process. Ctrl-C reaches the whole process group; the
    broker's process stops the workers after their current batch, so they ignore it."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_leave_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _worker = _Worker(path, synchronous)
    Finalize(_worker, _worker.close, exitpriority=10)
    tune_garbage_collector()  # as the broker's process (a batch allocates tens of thousands of acyclic objects)


def _leave_with_parent(parent: int) -> None:
    """Exit once the broker's process is gone (``kill -9`` of it leaves the pool's pipes open, so a worker waiting
    for its next job would wait for ever). Abrupt, as a kill is: a transaction not committed is rolled back by
    SQLite, and no batch was acknowledged that this process did not commit."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def _ready(pause_s: float) -> int:
    """A start-up job: held a moment, so that each of the pool's processes gets one."""
    time.sleep(pause_s)
    return os.getpid()


def _run(job: _Job) -> _Outcome:
    assert _worker is not None
    return _worker.loop.run_until_complete(_worker.run(job))


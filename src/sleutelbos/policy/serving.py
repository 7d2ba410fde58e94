"""Serving the policy component alone: the ASGI application ``sleutelbos serve policy`` runs, one or N processes.

The server is uvicorn with the HTTP protocol :class:`.fast_http.PdpHttpProtocol` (:data:`HTTP_PROTOCOL`), which
answers decisions inside the protocol and hands every other request to this application (decision 0391).

Decisions are CPU-bound Python, so one process uses one core; ``sleutelbos serve policy --workers N`` runs N uvicorn
worker processes, each with its own compiled PDPs over the shared policy database (the component's sync loop picks
up PAP changes another worker made). Each worker listens on its own ``SO_REUSEPORT`` socket, so that the kernel
spreads connections over the workers: with one shared listening socket (uvicorn's ``workers``) a worker that
wakes first accepts a whole burst — 32 keep-alive connections opened together all landed on one of two workers,
which left one core idle for the life of those connections (decision 0391). A small supervisor here starts the
workers, restarts one that dies, and stops them on SIGINT/SIGTERM. Workers build their application from the
environment (``SLEUTELBOS_*``, see :mod:`sleutelbos.core.settings`) through :func:`create_app` — the CLI puts its
options there before starting them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from types import FrameType
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
    """Run ``workers`` worker processes of :func:`create_app` on ``settings.host:port`` (:func:`run_workers`).

    The workers read their settings from the environment, so the resolved data directory and policy database URL
    are exported first.
    """
    os.environ["SLEUTELBOS_DATA_DIR"] = str(settings.data_dir)
    os.environ["SLEUTELBOS_POLICY_DATABASE_URL"] = settings.database_url_for("policy")
    os.environ["SLEUTELBOS_HOST"] = settings.host
    os.environ["SLEUTELBOS_PORT"] = str(settings.port)
    run_workers("sleutelbos.policy.serving:create_app", settings.host, settings.port, workers)


def run_workers(app: str, host: str, port: int, workers: int, http: str = HTTP_PROTOCOL) -> None:
    """Run ``workers`` uvicorn processes of the application factory ``app`` (an import string), each on its own
    ``SO_REUSEPORT`` socket on ``host:port`` (where the platform has none: uvicorn's workers on one shared socket).

    A worker that fails to start stops the whole server (exit status 3, as uvicorn's); one that dies after it
    started is restarted. SIGINT/SIGTERM stop the workers gracefully (uvicorn's shutdown in each).
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, factory=True, host=host, port=port, workers=workers, log_config=None, access_log=False,
                    lifespan="on", timeout_graceful_shutdown=5, http=http)
        return
    try:
        _reuse_port_socket(host, port).close()  # fails here, once, if the address is taken or wrong
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        sys.exit(1)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[multiprocessing.process.BaseProcess, Any]:
        started = context.Event()
        worker = context.Process(target=_worker, args=(app, host, port, http, started), name="sleutelbos-worker")
        worker.start()
        return worker, started

    pool = [start() for _ in range(workers)]
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for index, (worker, started) in enumerate(pool):
                if worker.is_alive() or stopping:
                    continue
                if not started.is_set():  # it never served: a restart would fail alike (bad settings, database)
                    log.error("a worker failed to start (exit status %s); stopping", worker.exitcode)
                    status, stopping = _STARTUP_FAILURE, True
                    break
                log.warning("worker %s exited (%s); starting another", worker.pid, worker.exitcode)
                pool[index] = start()
    finally:
        for worker, _ in pool:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + 15
        for worker, _ in pool:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status:
        sys.exit(status)


_STARTUP_FAILURE = 3  # uvicorn's exit status for "the application did not start"


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``), the address family chosen
    as uvicorn chooses it (IPv6 when the host has a colon), so ``--host`` means what it means without workers."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _WorkerServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor once it serves (so that a worker that never started is not
    restarted in a loop)."""

    def __init__(self, config: uvicorn.Config, started: Any) -> None:
        super().__init__(config)
        self.started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.started_event.set()


def _worker(app: str, host: str, port: int, http: str, started: Any) -> None:
    """One worker process: uvicorn on its own ``SO_REUSEPORT`` socket."""
    config = uvicorn.Config(app, factory=True, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, http=http)
    sock = _reuse_port_socket(host, port)
    sock.listen(config.backlog)
    server = _WorkerServer(config, started)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(_STARTUP_FAILURE)

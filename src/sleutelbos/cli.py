"""The ``sleutelbos`` command line: ``up`` (the embedded stack), ``serve <component>``, and one group of
commands per component (``audit``, ``custody``, ``policy``, ``identity``).

Commands that act on the embedded stack's state take ``--data-dir`` (default ``./sleutelbos-data``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer
import uvicorn

from sleutelbos import __version__
from sleutelbos.audit.cli import app as audit_app
from sleutelbos.broker.cli import app as broker_app
from sleutelbos.core.collector import tune_garbage_collector
from sleutelbos.core.http_bounds import BoundedHttpToolsProtocol, bounded_protocol
from sleutelbos.core.logging import configure_logging
from sleutelbos.core.settings import DEFAULT_DATA_DIR, Settings, load_settings
from sleutelbos.custody.cli import app as custody_app
from sleutelbos.identity.cli import app as identity_app
from sleutelbos.policy.cli import app as policy_app
from sleutelbos.stack import COMPONENTS, StackContext, build_app

app = typer.Typer(help="sleutelbos — a sovereign control plane for smart-meter fleets.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(broker_app, name="broker")
app.add_typer(custody_app, name="custody")
app.add_typer(identity_app, name="identity")
app.add_typer(policy_app, name="policy")

DataDir = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Where the embedded stack keeps its state.")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def up(
    data_dir: Path = DataDir,
    host: str = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Public port (default 8080)."),
) -> None:
    """Run the whole stack in one process on embedded defaults (SQLite under --data-dir)."""
    settings = load_settings(data_dir=data_dir, host=host, port=port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level, settings.log_format)
    ctx = StackContext(settings=settings, announce=lambda msg: typer.echo(msg))
    application = build_app(ctx)
    typer.echo(f"sleutelbos {__version__} on {settings.base_url}  (data: {settings.data_dir.resolve()})")
    _run(application, settings.host, settings.port, _bounded(settings, broker_hot_paths=True))


@app.command()
def serve(
    component: str = typer.Argument(..., help=f"One of: {', '.join(COMPONENTS)}"),
    db: str = typer.Option(None, "--db", help="Database URL (sqlite:///path or postgresql://…)."),
    host: str = typer.Option(None, "--host"),
    port: int = typer.Option(None, "--port"),
    data_dir: Path = DataDir,
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (policy only)."),
) -> None:
    """Run one component alone, on its own port."""
    if component not in COMPONENTS:
        raise typer.BadParameter(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    if workers > 1 and component != "policy":
        raise typer.BadParameter("--workers is supported for the policy component only")
    overrides = {f"{component}_database_url": db} if db else {}
    settings = load_settings(data_dir=data_dir, host=host, port=port, **overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level, settings.log_format)
    if workers > 1:
        from sleutelbos.policy.serving import serve_workers

        typer.echo(f"sleutelbos {component} on {settings.base_url}, {workers} workers")
        serve_workers(settings, workers)
        return
    ctx = StackContext(settings=settings, announce=lambda msg: typer.echo(msg))
    application = build_app(ctx, expose=(component,))
    http: Any = _bounded(settings, broker_hot_paths=component == "broker")
    if component == "policy":
        from sleutelbos.policy.serving import HTTP_PROTOCOL, with_decision_fast_path

        application = with_decision_fast_path(application, ctx)
        http = HTTP_PROTOCOL
    typer.echo(f"sleutelbos {component} on {settings.base_url}")
    _run(application, settings.host, settings.port, http)


def _bounded(settings: Settings, broker_hot_paths: bool = False) -> type[BoundedHttpToolsProtocol]:
    """uvicorn's httptools protocol with the request head and read time bounded (``core.http_bounds``); where the
    broker is served, the subclass that answers its hot requests (two reads, the single PATCH) without the ASGI cycle
    (``broker.fast_http``, decision 0750)."""
    base = BoundedHttpToolsProtocol
    if broker_hot_paths:
        from sleutelbos.broker.fast_http import BrokerHttpProtocol

        base = BrokerHttpProtocol
    return bounded_protocol(settings.http_max_head_bytes, settings.http_read_timeout_s, base)


def _run(application: object, host: str, port: int, http: Any = "auto") -> None:
    config = uvicorn.Config(
        application, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=5, http=http,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was in place
    # before it started; these handlers turn that into a clean exit status 0 for an operator's Ctrl-C or stop.
    def _stopped(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGINT, _stopped)
    signal.signal(signal.SIGTERM, _stopped)
    tune_garbage_collector()
    uvicorn.Server(config).run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

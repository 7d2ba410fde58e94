"""``sleutelbos broker ...`` commands: ``page-size``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sleutelbos.core.database import parse_database_url
from sleutelbos.core.settings import DEFAULT_DATA_DIR, SQLITE_PAGE_SIZES, load_settings

app = typer.Typer(help="NGSI-LD context broker (ETSI GS CIM 009).", no_args_is_help=True)

DataDir = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Where the embedded stack keeps its state.")


@app.command("page-size")
def page_size_command(
    data_dir: Path = DataDir,
    set_size: int | None = typer.Option(
        None, "--set", help="Convert both files to pages of this many bytes (4096-65536), with the broker stopped."),
) -> None:
    """Print the page size of the broker's SQLite files, or convert them (``--set``; decision 0760).

    A data directory created before 16 KiB became the default keeps its 4 KiB pages: converting rewrites each file
    (about its size of free space needed, minutes for gigabytes) and fails, changing nothing, while a broker has the
    file open."""
    from sleutelbos.broker.store.sqlite import temporal_path
    from sleutelbos.broker.store.sqlite_pages import PageSizeError, convert, page_size

    settings = load_settings(data_dir=data_dir)
    parsed = parse_database_url(settings.database_url_for("broker"))
    if parsed.kind != "sqlite" or parsed.path is None:
        typer.echo("error: the broker's database is not a SQLite file; the page size is SQLite's", err=True)
        raise typer.Exit(2)
    if set_size is not None and set_size not in SQLITE_PAGE_SIZES:
        typer.echo(f"error: --set must be one of {', '.join(map(str, SQLITE_PAGE_SIZES))}", err=True)
        raise typer.Exit(2)
    files = [parsed.path, temporal_path(parsed.path)]
    try:
        for path in files:
            if set_size is None:
                typer.echo(f"{path}: {page_size(path)} bytes per page")
                continue
            started = time.monotonic()
            size_mb = path.stat().st_size / 1e6 if path.exists() else 0.0
            done = convert(path, set_size)
            if done.changed:
                typer.echo(f"{path}: {done.before} → {done.after} bytes per page ({size_mb:,.0f} MB rewritten in"
                           f" {time.monotonic() - started:.1f} s)")
            else:
                typer.echo(f"{path}: already {done.after} bytes per page")
    except PageSizeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

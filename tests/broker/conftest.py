"""Broker test fixtures: the same API on SQLite and on PostgreSQL, a real HTTP server for remote @contexts, and the
Smart Data Model examples rewritten to fetch their @context from it (the tests never reach the internet)."""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app
from tests.conftest import pg_execute, pg_scratch_database

SDM = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "ngsi-ld" / "smart-data-models"
SDM_REMOTE = "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld"
BASE = "/ngsi-ld/v1"


class _ContextHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/sdm/context.jsonld":
            body = (SDM / "context.jsonld").read_bytes()
        elif self.path == "/slow/context.jsonld":
            time.sleep(3)
            body = b'{"@context": {}}'
        elif self.path == "/tiny/context.jsonld":
            body = b'{"@context": {"reading": "https://example.org/meter/reading"}}'
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/ld+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the broker gave up waiting (the timeout test)
            return

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="session")
def context_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the Smart Data Models @context (and a slow and a tiny one)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ContextHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def sdm_context_url(context_server: str) -> str:
    return f"{context_server}/sdm/context.jsonld"


def load_example(name: str, context_url: str) -> dict[str, Any]:
    """A Smart Data Model example with its remote @context pointed at the local server."""
    doc = json.loads((SDM / name / "example-normalized.jsonld").read_text())
    ctx = doc.get("@context", [])
    ctx = [context_url if c == SDM_REMOTE else c for c in (ctx if isinstance(ctx, list) else [ctx])]
    doc["@context"] = ctx
    return doc


@pytest.fixture
def examples(sdm_context_url: str) -> dict[str, dict[str, Any]]:
    return {name: load_example(name, sdm_context_url)
            for name in ("Device", "DeviceModel", "DeviceOperation", "SmartMeteringObservation")}


@pytest.fixture(scope="session")
def pg_broker_database(pg_admin_dsn: str) -> Iterator[str]:
    """One PostgreSQL database for the broker tests of a session; each test gets its own schema in it (creating a
    database per test costs ~1.5 s here, a schema a few ms)."""
    with pg_scratch_database(pg_admin_dsn, "sb_broker") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url_of(request.param, request, tmp_path)


def database_url_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker database of ``kind`` (``sqlite``: a file under ``tmp_path``; ``postgresql``: a schema of its own)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.sqlite'}"
        return
    import secrets

    base = request.getfixturevalue("pg_broker_database")
    schema = f"t_{secrets.token_hex(6)}"
    pg_execute(base, f'CREATE SCHEMA "{schema}"')
    yield f"{base}?search_path={schema}"
    pg_execute(base, f'DROP SCHEMA "{schema}" CASCADE')


class Broker:
    """An in-process broker app on one database with an httpx client (ASGI transport)."""

    def __init__(self, client: httpx.AsyncClient, app: Any, url: str) -> None:
        self.client = client
        self.app = app
        self.database_url = url
        self.service = app.state.context.services["broker"]

    async def create(self, entity: dict[str, Any], **kw: Any) -> httpx.Response:
        headers = {"Content-Type": "application/ld+json" if "@context" in entity else "application/json"}
        headers.update(kw.pop("headers", {}))
        return await self.client.post(f"{BASE}/entities", content=json.dumps(entity), headers=headers, **kw)


def _settings(url: str, tmp_path: Path, **kw: Any) -> Any:
    # the test @context server listens on 127.0.0.1, which the broker refuses by default
    return load_settings(data_dir=tmp_path, broker_database_url=url, context_fetch_timeout_s=1.0,
                         context_fetch_private_networks=True, **kw)


@pytest.fixture
def broker_settings() -> dict[str, Any]:
    """Settings of the ``broker`` fixture beyond the defaults (a test module may override it)."""
    return {}


@pytest.fixture
async def broker(database_url: str, tmp_path: Path, broker_settings: dict[str, Any]) -> AsyncIterator[Broker]:
    app = build_app(StackContext(settings=_settings(database_url, tmp_path, **broker_settings)), expose=("broker",))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker.test") as client:
        yield Broker(client, app, database_url)


def ld(entity: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(entity)

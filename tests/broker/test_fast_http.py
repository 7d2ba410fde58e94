"""The broker's reads answered in the HTTP protocol (``broker.fast_http``, decision 0750), on a real uvicorn server
over a real socket: byte for byte what the ASGI path answers, in order behind and ahead of other requests on one
connection, with uvicorn's keep-alive and close rules, and switched off by any unknown layer in front of the broker."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from sleutelbos.broker.asgi import LeanRequest, ReadResponse
from sleutelbos.broker.fast_http import BrokerHttpProtocol, find_hot_paths
from sleutelbos.broker.hotpaths import BrokerHotPaths
from sleutelbos.core.http_bounds import bounded_protocol
from sleutelbos.core.settings import load_settings
from sleutelbos.stack import StackContext, build_app
from tests.broker.conftest import database_url_of
from tests.conftest import free_port

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


def counting_protocol() -> tuple[type[BrokerHttpProtocol], list[str]]:
    """The protocol ``serve broker`` runs, recording each request it answers itself."""
    answered: list[str] = []

    class Counting(bounded_protocol(65536, 30.0, BrokerHttpProtocol)):  # type: ignore[misc,valid-type]
        def _fast_endpoint(self, scope: dict[str, Any]) -> Any:
            endpoint = super()._fast_endpoint(scope)
            if endpoint is not None:
                answered.append(scope["path"])
            return endpoint

    return Counting, answered


def broker_app(data_dir: Path, database_url: str | None = None) -> Starlette:
    """What ``serve broker`` serves (default: on SQLite; no in-process MQTT broker: two of these may run at once)."""
    settings = load_settings(data_dir=data_dir, mqtt_port=None,
                             broker_database_url=database_url or f"sqlite:///{data_dir}/broker.sqlite")
    return build_app(StackContext(settings=settings), expose=("broker",))


@dataclass
class Served:
    port: int
    answered: list[str]


def _serve(app: Any, protocol: type[BrokerHttpProtocol], access_log: bool = False) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, lifespan="on",
                                           log_config=None, access_log=access_log))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A broker on each store: on PostgreSQL every read really waits for the database inside the fast path's task."""
    data_dir: Path = tmp_path_factory.mktemp("fast-http")
    for database_url in database_url_of(request.param, request, data_dir):
        yield from _served(data_dir, database_url)


def _served(data_dir: Path, database_url: str) -> Iterator[Served]:
    protocol, answered = counting_protocol()
    for port in _serve(broker_app(data_dir, database_url), protocol):
        entities = [{"id": f"urn:ngsi-ld:Device:m{i}", "type": "Device",
                     "power": {"type": "Property", "value": i / 2, "unitCode": "KWT",
                               "observedAt": "2026-11-29T12:00:00Z"},
                     "name": {"type": "Property", "value": f"meter {i}"}} for i in range(7)]
        created = exchange(port, request("POST", f"{BASE}/entityOperations/create", orjson.dumps(entities)))
        assert created[0].status == 201, created
        yield Served(port, answered)


# --- raw HTTP/1.1 ----------------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def request(method: str, target: str, body: bytes | None = None, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: broker.test", *extra]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def read_answers(sock: socket.socket, count: int, head: bool = False,
                 wait_for_close: bool = True) -> tuple[list[Answer], bool]:
    """``count`` responses from ``sock`` and whether the server then closed the connection (``head``: answers to
    ``HEAD``, which declare a length but carry no body)."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            buffer += chunk
        raw_head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        headers = [(k.lower(), v.strip()) for k, _, v in (line.partition(":") for line in header_lines)]
        length = 0 if head else int(next((v for k, v in headers if k == "content-length"), "0"))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buffer += chunk
        answers.append(Answer(int(status_line.split()[1]), headers, buffer[:length]))
        buffer = buffer[length:]
    if not wait_for_close:
        return answers, False
    sock.settimeout(0.5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return answers, closed


def exchange(port: int, data: bytes, count: int = 1, head: bool = False) -> list[Answer]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_answers(sock, count, head, wait_for_close=False)[0]


def without_date(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    return answer.status, [(k, v) for k, v in answer.headers if k != "date"], answer.body


# --- the fast path against the ASGI path -----------------------------------------------------------------------

READS = [
    f"{BASE}/entities/urn:ngsi-ld:Device:m3",
    f"{BASE}/entities/urn:ngsi-ld:Device:m3?options=keyValues&attrs=power",
    f"{BASE}/entities/urn:ngsi-ld:Device:nope",
    f"{BASE}/entities?type=Device&q=power%3E1&limit=2",
    f"{BASE}/entities?type=Device&q=power%3E1&limit=2&offset=2&count=true",
    f"{BASE}/entities?type=Device&options=sysAttrs&pick=name",
    f"{BASE}/entities?type=Device&q=power%3E%3E1",
    f"{BASE}/entities",
    f"{BASE}/entities?type=Device&limit=5000",
]


@pytest.mark.parametrize("target", READS)
@pytest.mark.parametrize("accept", ["application/json", "application/ld+json"])
def test_reads_in_the_protocol_answer_as_the_asgi_path(served: Served, target: str, accept: str) -> None:
    """An ``X-Forwarded-For`` header sends the same request through uvicorn's proxy-headers middleware and the ASGI
    cycle; everything but the date must be the same, and only the plain request is answered in the protocol."""
    before = len(served.answered)
    headers = [f"Accept: {accept}", f'Link: <{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; '
                                    'type="application/ld+json"']
    fast = exchange(served.port, request("GET", target, None, *headers))[0]
    assert len(served.answered) == before + 1
    routed = exchange(served.port, request("GET", target, None, *headers, "X-Forwarded-For: 10.1.2.3"))[0]
    assert len(served.answered) == before + 1
    assert without_date(fast) == without_date(routed)
    assert fast.header("date") and fast.header("server") == "uvicorn"


PATCHES = [
    ("urn:ngsi-ld:Device:m6", "application/json", b'{"power": {"type": "Property", "value": 9, "unitCode": "KWT"}}'),
    ("urn:ngsi-ld:Device:m6", "application/json", b'{"power": {"type": "Property", "value": 9}, "nope": '
                                                  b'{"type": "Property", "value": 1}}'),
    ("urn:ngsi-ld:Device:none", "application/json", b'{"power": {"type": "Property", "value": 1}}'),
    ("urn:ngsi-ld:Device:m6", "application/json", b'{"power": '),
    ("urn:ngsi-ld:Device:m6", "application/json", b'{"power": {"value": 1}}'),
    ("urn:ngsi-ld:Device:m6", "text/plain", b'{"power": {"type": "Property", "value": 1}}'),
    ("not a uri", "application/json", b'{"power": {"type": "Property", "value": 1}}'),
]


@pytest.mark.parametrize(("entity", "content_type", "body"), PATCHES)
def test_patch_in_the_protocol_answers_as_the_asgi_path(served: Served, entity: str, content_type: str,
                                                        body: bytes) -> None:
    """A meter's single update, answered in the protocol and through the ASGI path, gets the same answer: success,
    207 for an attribute the entity lacks, and the ETSI errors for a missing entity, bad JSON, an attribute without
    a type, a wrong media type and an id that is no URI."""
    target = f"{BASE}/entities/{entity.replace(' ', '%20')}/attrs"
    lines = [f"PATCH {target} HTTP/1.1", "Host: broker.test", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}"]
    plain = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    forwarded = ("\r\n".join([*lines, "X-Forwarded-For: 10.1.2.3"]) + "\r\n\r\n").encode() + body
    before = len(served.answered)
    fast = exchange(served.port, plain)[0]
    routed = exchange(served.port, forwarded)[0]
    assert served.answered[before:] == [target.replace("%20", " ")]
    assert without_date(fast) == without_date(routed)
    assert fast.status in (204, 207, 400, 404, 415), fast


def test_patch_body_after_100_continue_is_read_in_the_protocol(served: Served) -> None:
    body = b'{"name": {"type": "Property", "value": "continued"}}'
    target = f"{BASE}/entities/urn:ngsi-ld:Device:m4/attrs"
    head = request("PATCH", target, None, "Content-Type: application/json", f"Content-Length: {len(body)}",
                   "Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answers, _ = read_answers(sock, 1, wait_for_close=False)
    assert answers[0].status == 204
    got = exchange(served.port, request("GET", f"{BASE}/entities/urn:ngsi-ld:Device:m4?options=keyValues"))[0]
    assert orjson.loads(got.body)["name"] == "continued"


def test_other_requests_take_the_asgi_path(served: Served) -> None:
    before = len(served.answered)
    for method, target in (("GET", f"{BASE}/entities/urn:ngsi-ld:Device:m1/attrs/power"), ("HEAD", f"{BASE}/entities"),
                           ("GET", f"{BASE}/types"), ("DELETE", f"{BASE}/entities/urn:ngsi-ld:Device:none")):
        answer = exchange(served.port, request(method, target), head=method == "HEAD")[0]
        assert answer.status in (200, 404, 405), (method, target, answer)
    assert len(served.answered) == before


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    """Reads answered in the protocol and a PATCH answered by the application, sent in one write on one
    connection: three answers in request order, the second read seeing the PATCH."""
    entity = f"{BASE}/entities/urn:ngsi-ld:Device:m5"
    patch = orjson.dumps({"name": {"type": "Property", "value": "pipelined"}})
    data = (request("GET", entity + "?options=keyValues") + request("PATCH", entity + "/attrs", patch)
            + request("GET", entity + "?options=keyValues") + request("GET", f"{BASE}/entities?type=Device&limit=1"))
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(data)
        answers, closed = read_answers(sock, 4)
    assert [a.status for a in answers] == [200, 204, 200, 200]
    assert orjson.loads(answers[0].body)["name"] == "meter 5"
    assert orjson.loads(answers[2].body)["name"] == "pipelined"
    assert orjson.loads(answers[3].body)[0]["id"] == "urn:ngsi-ld:Device:m0"
    assert not closed


def test_keep_alive_and_close_follow_uvicorn(served: Served) -> None:
    read = f"{BASE}/entities/urn:ngsi-ld:Device:m2"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request("GET", read) + request("GET", read, None, "Connection: close"))
        answers, closed = read_answers(sock, 2)
    assert answers[0].header("connection") is None
    assert answers[1].header("connection") == "close" and closed
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request("GET", read, version="1.0"))
        answers, closed = read_answers(sock, 1)
    assert answers[0].status == 200 and answers[0].header("connection") == "close" and closed


# --- when the protocol keeps out of the way ----------------------------------------------------------------------

async def _nothing(request: LeanRequest) -> Response:
    return ReadResponse(b"[]", "application/json")


class _Gate:
    """A stand-in for a layer in front of the broker (a policy enforcement point): the fast path must not pass it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def test_read_path_is_found_only_behind_known_layers() -> None:
    read_path = Middleware(BrokerHotPaths, entities=_nothing, entity=_nothing, attrs=_nothing)
    plain = Starlette(middleware=[read_path])
    found = find_hot_paths(ProxyHeadersMiddleware(plain))
    assert found is not None and found.route("GET", f"{BASE}/entities") == (_nothing, {})
    assert found.route("GET", f"{BASE}/entities/urn:x:1") == (_nothing, {"entityId": "urn:x:1"})
    assert found.route("PATCH", f"{BASE}/entities/urn:x:1/attrs") == (_nothing, {"entityId": "urn:x:1"})
    for method, path in (("GET", f"{BASE}/entities/urn:x:1/attrs/a"), ("PATCH", f"{BASE}/entities/urn:x:1"),
                         ("PATCH", f"{BASE}/entities/a/attrs/b/attrs"), ("PATCH", f"{BASE}/entities//attrs"),
                         ("PATCH", f"{BASE}/entities/attrs"), ("POST", f"{BASE}/entities/urn:x:1/attrs"),
                         ("HEAD", f"{BASE}/entities"), ("DELETE", f"{BASE}/entities/urn:x:1")):
        assert found.route(method, path)[0] is None, (method, path)
    assert find_hot_paths(plain) is not None
    assert find_hot_paths(Starlette(middleware=[Middleware(_Gate), read_path])) is None
    assert find_hot_paths(ProxyHeadersMiddleware(_Gate(plain))) is None
    assert find_hot_paths(Starlette()) is None


def test_a_gate_in_front_of_the_broker_turns_the_fast_path_off(tmp_path: Path) -> None:
    app = broker_app(tmp_path)
    app.user_middleware.insert(0, Middleware(_Gate))
    protocol, answered = counting_protocol()
    for port in _serve(app, protocol):
        answer = exchange(port, request("GET", f"{BASE}/entities?type=Device"))[0]
        assert answer.status == 200 and answer.body == b"[]"
    assert answered == []


def test_a_failure_while_answering_is_uvicorns_500(tmp_path: Path) -> None:
    async def broken(request: LeanRequest) -> Response:
        return ReadResponse(b"[]", "application/json", link="<x>\r\nX-Injected: 1")

    app = Starlette(middleware=[Middleware(BrokerHotPaths, entities=broken, entity=_nothing, attrs=_nothing)])
    protocol, answered = counting_protocol()
    for port in _serve(app, protocol):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request("GET", f"{BASE}/entities"))
            answers, closed = read_answers(sock, 1)
        assert answers[0].status == 500 and answers[0].body == b"Internal Server Error" and closed
        assert answers[0].header("x-injected") is None
        assert exchange(port, request("GET", f"{BASE}/entities/urn:x:1"))[0].status == 200
    assert answered == [f"{BASE}/entities", f"{BASE}/entities/urn:x:1"]


def test_a_response_that_closes_the_connection_says_so_once() -> None:
    async def closing(request: LeanRequest) -> Response:
        return Response(b"[]", media_type="application/json", headers={"Connection": "close"})

    app = Starlette(middleware=[Middleware(BrokerHotPaths, entities=closing, entity=_nothing, attrs=_nothing)])
    protocol, answered = counting_protocol()
    for port in _serve(app, protocol):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request("GET", f"{BASE}/entities") + request("GET", f"{BASE}/entities/urn:x:1"))
            answers, closed = read_answers(sock, 1)
    assert [k for k, _ in answers[0].headers].count("connection") == 1 and closed
    assert answered == [f"{BASE}/entities"]


def test_access_log_line_is_uvicorns(caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(middleware=[Middleware(BrokerHotPaths, entities=_nothing, entity=_nothing, attrs=_nothing)])
    protocol, answered = counting_protocol()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        for port in _serve(app, protocol, access_log=True):
            assert exchange(port, request("GET", f"{BASE}/entities?type=Device"))[0].status == 200
    assert answered == [f"{BASE}/entities"]
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 1 and lines[0].startswith("127.0.0.1:")
    assert lines[0].endswith(f'"GET {BASE}/entities?type=Device HTTP/1.1" 200'), lines


def test_serve_and_up_run_the_broker_protocol(tmp_path: Path) -> None:
    """Both servers run the protocol, and with the whole stack of ``up`` (every component) it finds the hot paths."""
    from sleutelbos.cli import _bounded

    settings = load_settings(data_dir=tmp_path, mqtt_port=None)
    assert issubclass(_bounded(settings, broker_hot_paths=True), BrokerHttpProtocol)
    assert not issubclass(_bounded(settings), BrokerHttpProtocol)
    assert find_hot_paths(ProxyHeadersMiddleware(build_app(StackContext(settings=settings)))) is not None

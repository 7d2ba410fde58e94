"""``sleutelbos serve policy`` as a real process over a real socket: the decision fast path in the HTTP protocol
(:mod:`sleutelbos.policy.fast_http`) must answer exactly like the ASGI endpoint, and hold against bad clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import test_authzforce_api as api_tests
from lxml import etree
from pap_support import RecordingAuditSink, action_request_json, action_request_xml, simple_policy
from starlette.testclient import TestClient
from tests.conftest import free_port

from sleutelbos.core.settings import Settings
from sleutelbos.policy.serving import with_decision_fast_path
from sleutelbos.stack import StackContext, build_app

ROOT = Path(__file__).resolve().parents[2]
AZ = "http://authzforce.github.io/rest-api-model/xmlns/authz/5"
ATOM = "http://www.w3.org/2005/Atom"
BASE = "/authzforce-ce/domains"
XML = {"Content-Type": "application/xml"}
JSON = {"Content-Type": "application/xacml+json"}
MAX_BODY = 200_000
READ_TIMEOUT_S = 1.0


@dataclass
class Served:
    url: str
    port: int
    process: subprocess.Popen[bytes]


def serve(data_dir: Path, workers: int) -> Served:
    """Start ``sleutelbos serve policy`` and wait until it answers ``/health``."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SLEUTELBOS_MAX_BODY_BYTES": str(MAX_BODY),
           "SLEUTELBOS_POLICY_HTTP_READ_TIMEOUT_S": str(READ_TIMEOUT_S), "SLEUTELBOS_POLICY_SYNC_INTERVAL_S": "0.2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sleutelbos", "serve", "policy", "--port", str(port), "--data-dir", str(data_dir),
         "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Served(url, port, process)
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = serve(tmp_path_factory.mktemp("served"), workers=1)
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def domain(http: httpx.Client) -> str:
    """A domain whose root permits the action ``read`` (and denies nothing else explicitly)."""
    created = http.post(BASE, content=f'<domainProperties xmlns="{AZ}" externalId="served"/>'.encode(), headers=XML)
    domain_id = etree.fromstring(created.content).get("href")
    assert http.post(f"{BASE}/{domain_id}/pap/policies", content=simple_policy("p"), headers=XML).status_code == 200
    root = f'<pdpPropertiesUpdate xmlns="{AZ}"><rootPolicyRefExpression>p</rootPolicyRefExpression>' \
           "</pdpPropertiesUpdate>"
    assert http.put(f"{BASE}/{domain_id}/pap/pdp.properties", content=root.encode(), headers=XML).status_code == 200
    return domain_id


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[TestClient]:
    """The ASGI endpoint in-process (what ``serve policy`` answered before the fast path), for comparisons."""
    settings = Settings(data_dir=tmp_path, max_body_bytes=MAX_BODY)
    ctx = StackContext(settings=settings, audit_sink=RecordingAuditSink())
    with TestClient(with_decision_fast_path(build_app(ctx, expose=("policy",)), ctx)) as client:
        created = client.post(BASE, content=f'<domainProperties xmlns="{AZ}"/>'.encode(), headers=XML)
        client.domain = etree.fromstring(created.content).get("href")  # type: ignore[attr-defined]
        yield client


# --- raw HTTP/1.1 over a socket -------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(method: str, path: str, body: bytes = b"", content_type: str | None = None, version: str = "1.1",
            extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return (head + extra + "\r\n").encode() + body


class Reader:
    """Reads responses (content-length framed) off one connection, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"connection closed before a response: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._more(), "connection closed inside a response body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(lines[0].split()[1]), headers, body)

    def closed(self) -> bool:
        """True when the server closes the connection (before the socket timeout)."""
        try:
            return not self._more()
        except ConnectionResetError:
            return True


def decision(answer: Answer) -> str:
    if answer.headers["content-type"].startswith("application/xacml+json"):
        import json

        return json.loads(answer.body)["Response"][0]["Decision"]
    ns = {"x": "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"}
    return etree.fromstring(answer.body).findtext("x:Result/x:Decision", namespaces=ns)


# --- the tests ------------------------------------------------------------------------------------------------


def test_decisions_in_json_and_xml_over_one_kept_alive_connection(served: Served, domain: str) -> None:
    url = f"{BASE}/{domain}/pdp"
    with connect(served) as sock:
        reader = Reader(sock)
        for action, expected in (("read", "Permit"), ("write", "NotApplicable"), ("read", "Permit")):
            sock.sendall(request("POST", url, action_request_json(action), "application/xacml+json"))
            answer = reader.answer()
            assert (answer.status, answer.headers["content-type"]) == (200, "application/xacml+json")
            assert decision(answer) == expected and "connection" not in answer.headers
            assert answer.headers["server"] == "uvicorn" and "date" in answer.headers
        for content_type, answered_as in (("application/xml; charset=UTF-8", "application/xml"),
                                          ("application/xacml+xml", "application/xacml+xml")):
            sock.sendall(request("POST", url, action_request_xml("read"), content_type))
            answer = reader.answer()
            assert (answer.status, answer.headers["content-type"], decision(answer)) == (200, answered_as, "Permit")
        # the administration API on the same connection goes to the Starlette application
        sock.sendall(request("GET", f"{BASE}/{domain}/pap/policies"))
        listed = reader.answer()
        assert listed.status == 200 and b'href="p"' in listed.body


def test_pipelined_requests_are_answered_in_order(served: Served, domain: str) -> None:
    url = f"{BASE}/{domain}/pdp"
    with connect(served) as sock:
        sock.sendall(request("POST", url, action_request_json("read"), "application/xacml+json")
                     + request("GET", "/health")  # through ASGI, between two fast ones
                     + request("POST", url, action_request_json("write"), "application/xacml+json")
                     + request("POST", url, action_request_xml("read"), "application/xml"))
        reader = Reader(sock)
        first, health, second, third = (reader.answer() for _ in range(4))
        assert decision(first) == "Permit" and health.body == b'{"status":"ok"}'
        assert decision(second) == "NotApplicable" and decision(third) == "Permit"


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"Request": 5}', "application/xacml+json"),
    (b"{not json", "application/xacml+json"),
    (b"<Request xmlns='urn:nope'/>", "application/xml"),
    (b"<Request", "application/xacml+xml"),
    (b"read", "text/plain"),
    (action_request_json("read"), None),
])
def test_bad_requests_get_the_same_answer_as_from_the_asgi_endpoint(served: Served, domain: str,
                                                                    reference: TestClient, body: bytes,
                                                                    content_type: str | None) -> None:
    with connect(served) as sock:
        sock.sendall(request("POST", f"{BASE}/{domain}/pdp", body, content_type))
        answer = Reader(sock).answer()
    headers = {"Content-Type": content_type} if content_type else {}
    expected = reference.post(f"{BASE}/{reference.domain}/pdp", content=body,  # type: ignore[attr-defined]
                              headers=headers)
    assert answer.status == expected.status_code and answer.status in (400, 415)
    assert answer.headers["content-type"] == expected.headers["content-type"]
    assert answer.body == expected.content


def test_unknown_domain_is_404_with_authzforce_error(served: Served) -> None:
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("POST", f"{BASE}/no-such-domain/pdp", action_request_json("read"),
                             "application/xacml+json"))
        answer = reader.answer()
        assert answer.status == 404 and answer.headers["content-type"] == "application/xml"
        assert etree.fromstring(answer.body).findtext(f"{{{AZ}}}message") == "no domain 'no-such-domain'"
        sock.sendall(request("POST", f"{BASE}/no-such-domain/pdp/x", b"{}", "application/xacml+json"))
        assert reader.answer().status == 404  # not a decision URL: the router's 404, connection kept


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: Served, domain: str) -> None:
    url = f"{BASE}/{domain}/pdp"
    with connect(served) as sock:  # declared too large: 413 at once, the body is discarded, then the close
        sock.sendall(request("POST", url, b"", "application/xacml+json")
                     .replace(b"Content-Length: 0", f"Content-Length: {MAX_BODY + 1}".encode()))
        reader = Reader(sock)
        answer = reader.answer()
        assert answer.status == 413 and answer.headers["connection"] == "close"
        assert etree.fromstring(answer.body).findtext(f"{{{AZ}}}message") == f"request body over {MAX_BODY} bytes"
        sock.sendall(b"x" * (MAX_BODY + 1))
        assert reader.closed()
    with connect(served) as sock:  # chunked, no length declared: refused once the bytes received pass the limit
        sock.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/xacml+json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 50_000
        for _ in range(5):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        answer = Reader(sock).answer()
        assert answer.status == 413
        sock.sendall(b"0\r\n\r\n")
    with connect(served) as sock:  # just under the limit is taken (and is a syntax error, not a 413)
        body = b" " * (MAX_BODY - len(action_request_json("read"))) + action_request_json("read")
        sock.sendall(request("POST", url, body, "application/xacml+json"))
        answer = Reader(sock).answer()
        assert answer.status == 200 and decision(answer) == "Permit"


def test_a_chunked_decision_body_is_taken(served: Served, domain: str) -> None:
    body = action_request_json("read")
    with connect(served) as sock:
        sock.sendall(f"POST {BASE}/{domain}/pdp HTTP/1.1\r\nHost: x\r\nContent-Type: application/xacml+json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        for part in (body[:10], body[10:]):
            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = Reader(sock).answer()
        assert answer.status == 200 and decision(answer) == "Permit"


def test_random_bytes_do_not_break_the_server(served: Served, domain: str) -> None:
    import random

    rng = random.Random(7)
    head = f"POST {BASE}/{domain}/pdp HTTP/1.1\r\nContent-Type: application/xacml+json\r\n".encode()
    for i in range(30):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        with connect(served) as sock:
            sock.sendall(head + noise if i % 2 else noise)
            sock.shutdown(socket.SHUT_WR)  # the server sees the end of the stream: an answer or a close, never a hang
            reader = Reader(sock)
            try:
                while not reader.closed():
                    pass
            except TimeoutError:
                pytest.fail("the server neither answered nor closed the connection")
    with connect(served) as sock:
        sock.sendall(request("POST", f"{BASE}/{domain}/pdp", action_request_json("read"), "application/xacml+json"))
        assert decision(Reader(sock).answer()) == "Permit"
    assert served.process.poll() is None


def test_malformed_http_is_400_and_the_server_keeps_serving(served: Served, domain: str) -> None:
    for garbage in (b"\x00\x01\x02 garbage\r\n\r\n", b"POST /x HTTP/9.9\r\n\r\n",
                    b"POST /authzforce-ce/domains/d/pdp HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                    b"POST /authzforce-ce/domains/d/pdp HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"):
        with connect(served) as sock:
            sock.sendall(garbage)
            reader = Reader(sock)
            assert reader.answer().status == 400
            assert reader.closed()
    with connect(served) as sock:  # a head over the bound
        sock.sendall(f"POST {BASE}/{domain}/pdp HTTP/1.1\r\n".encode() + b"X-Filler: " + b"a" * 70_000 + b"\r\n\r\n")
        reader = Reader(sock)
        assert reader.answer().status == 431
        assert reader.closed()
    with connect(served) as sock:
        sock.sendall(request("POST", f"{BASE}/{domain}/pdp", action_request_json("read"), "application/xacml+json"))
        assert decision(Reader(sock).answer()) == "Permit"


def test_slow_and_idle_clients_are_disconnected(served: Served, domain: str) -> None:
    with connect(served) as sock:  # half a request head, then nothing: closed after the read timeout
        sock.sendall(f"POST {BASE}/{domain}/pdp HTTP/1.1\r\nHost: x\r\n".encode())
        assert Reader(sock).closed()
    with connect(served) as sock:  # a body that never completes
        sock.sendall(request("POST", f"{BASE}/{domain}/pdp", b"", "application/xacml+json")
                     .replace(b"Content-Length: 0", b"Content-Length: 100") + b'{"Request"')
        assert Reader(sock).closed()
    with connect(served) as sock:  # a connection that never sends anything
        assert Reader(sock).closed()


def test_http_1_0_and_connection_close_end_the_connection(served: Served, domain: str) -> None:
    url = f"{BASE}/{domain}/pdp"
    for raw in (request("POST", url, action_request_json("read"), "application/xacml+json", version="1.0"),
                request("POST", url, action_request_json("read"), "application/xacml+json",
                        extra="Connection: close\r\n")):
        with connect(served) as sock:
            sock.sendall(raw)
            reader = Reader(sock)
            answer = reader.answer()
            assert decision(answer) == "Permit" and answer.headers["connection"] == "close"
            assert reader.closed()


def test_expect_100_continue_is_honoured(served: Served, domain: str) -> None:
    body = action_request_json("read")
    with connect(served) as sock:
        sock.sendall(request("POST", f"{BASE}/{domain}/pdp", body, "application/xacml+json",
                             extra="Expect: 100-continue\r\n")[:-len(body)])
        reader = Reader(sock)
        assert reader.answer().status == 100
        sock.sendall(body)
        assert decision(reader.answer()) == "Permit"


@pytest.mark.parametrize("api_test", [api_tests.test_policies_as_root_and_their_removal,
                                      api_tests.test_requests_the_pdp_cannot_take])
def test_the_api_tests_pass_against_the_served_process(tmp_path: Path, api_test: object) -> None:
    """The AuthZForce API tests that need no in-memory audit sink, unchanged, over the real socket (a server each:
    they create the same externalId)."""
    server = serve(tmp_path, workers=1)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            api_test(client)  # type: ignore[operator]
    finally:
        stop(server)


def established_per_worker(server: Served) -> list[int]:
    """How many established connections to the server's port each of its worker processes holds (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == server.port and fields[3] == "01":
                inodes.add(fields[9])
    pid = server.process.pid
    counts = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        held = 0
        for fd in Path(f"/proc/{child}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            held += target.startswith("socket:[") and target[8:-1] in inodes
        counts.append(held)
    return counts


def wait_listening(server: Served, sockets: int) -> None:
    """Wait until ``sockets`` listening sockets are bound to the server's port (one per worker: SO_REUSEPORT)."""
    deadline = time.monotonic() + 60
    while True:
        listening = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                listening += int(fields[1].rsplit(":", 1)[1], 16) == server.port and fields[3] == "0A"
        if listening >= sockets:
            return
        assert time.monotonic() < deadline, f"{listening} of {sockets} workers listening"
        time.sleep(0.1)


def test_serve_policy_with_two_workers(tmp_path: Path) -> None:
    """``--workers 2``: connections are spread over both workers (each has its own SO_REUSEPORT socket; with one
    shared socket a burst of connections could all land on one), both answer decisions, and a domain made through
    one worker reaches the other through the database."""
    server = serve(tmp_path, workers=2)
    try:
        wait_listening(server, 2)  # /health answered by one worker says nothing of the other
        with httpx.Client(base_url=server.url, timeout=10) as client:
            created = client.post(BASE, content=f'<domainProperties xmlns="{AZ}"/>'.encode(), headers=XML)
            domain_id = etree.fromstring(created.content).get("href")
        sockets = [connect(server) for _ in range(16)]
        try:
            for sock in sockets:  # twice on each connection: loaded from the database, then from the compiled PDP
                reader = Reader(sock)
                for _ in range(2):
                    sock.sendall(request("POST", f"{BASE}/{domain_id}/pdp", action_request_json("read"),
                                         "application/xacml+json"))
                    answer = reader.answer()
                    assert answer.status == 200 and decision(answer) == "Deny"  # the default root
            per_worker = sorted(established_per_worker(server))
            assert sum(per_worker) == 16
            assert per_worker[-2] > 0, per_worker  # both workers hold connections (the others: no connection)
        finally:
            for sock in sockets:
                sock.close()
    finally:
        stop(server)

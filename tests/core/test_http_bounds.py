"""The request bounds every ``sleutelbos up`` / ``serve`` server adds to uvicorn (``core.http_bounds``): a request
head over the limit is a 431 and the connection closes; a client too slow to send its request is disconnected;
ordinary requests and keep-alive connections used for longer than the timeout are unaffected."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, start_cli


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data_dir: Path = tmp_path_factory.mktemp("bounds")
    port = free_port()
    proc = start_cli("serve", "broker", "--db", f"sqlite:///{data_dir}/broker.sqlite", "--port", str(port),
                     "--data-dir", str(data_dir), port=port,
                     env={"SLEUTELBOS_HTTP_READ_TIMEOUT_S": "1.5", "SLEUTELBOS_HTTP_MAX_HEAD_BYTES": "8192"})
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes the connection (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_ordinary_requests_and_keep_alive_still_work(broker: int) -> None:
    request = (b"GET /ngsi-ld/v1/entities/urn:ngsi-ld:Device:none HTTP/1.1\r\nHost: t\r\n"
               b"Accept: application/json\r\n\r\n")
    last = request.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
    answer = _exchange(broker, request * 3 + last)
    assert answer.count(b"HTTP/1.1 404 ") == 4
    assert b"ResourceNotFound" in answer


def test_a_head_over_the_limit_is_431_and_closes(broker: int) -> None:
    big = b"GET /ngsi-ld/v1/entities/x HTTP/1.1\r\nHost: t\r\n" + b"X-Filler: " + b"a" * 10_000 + b"\r\n\r\n"
    answer = _exchange(broker, big)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.count(b"HTTP/1.1") == 1  # nothing after it: no 400 for the aborted parse, connection closed


def test_many_small_headers_over_the_limit_are_431(broker: int) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(2_000))
    answer = _exchange(broker, b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_slow_client_is_disconnected(broker: int) -> None:
    with socket.create_connection(("127.0.0.1", broker), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server
        assert time.monotonic() - t0 < 8


def test_a_body_that_never_arrives_is_disconnected(broker: int) -> None:
    with socket.create_connection(("127.0.0.1", broker), timeout=10) as s:
        s.sendall(b"POST /ngsi-ld/v1/entities HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        assert s.recv(1024) == b""


def test_a_connection_that_sends_nothing_is_closed(broker: int) -> None:
    with socket.create_connection(("127.0.0.1", broker), timeout=10) as s:
        assert s.recv(1024) == b""


def test_a_client_that_keeps_sending_requests_in_time_is_kept(broker: int) -> None:
    """The deadline is per request: a connection used for longer than the timeout stays open."""
    request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", broker), timeout=10) as s:
        for _ in range(4):
            s.sendall(request)
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):  # head and body may come in separate writes
                chunk = s.recv(65536)
                assert chunk, "connection closed"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)  # 4 × 0.6 s > the 1.5 s read timeout, each gap < uvicorn's 5 s keep-alive

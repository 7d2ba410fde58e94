"""Real notification receivers for the subscription tests: an HTTP server on a free port (in a thread, so that the
broker's event loop cannot cheat) that records every POST, can be told to fail, answer slowly or answer garbage,
and can be stopped and restarted on the same port; and an MQTT subscriber on a real broker."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from typing import Any

from tests.conftest import free_port


class HttpReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.status = 200
        self.delay_s = 0.0
        self.garbage = False
        self.close_connections = False  # answer with "Connection: close" (no keep-alive)
        self.big_answer = 0  # answer with that many bytes of body
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.status < 300:
                    with receiver.lock:
                        receiver.received.append({"path": self.path, "headers": dict(self.headers.items()),
                                                  "body": json.loads(raw), "at": time.time()})
                body = b"\x00\xffnot json at all" if receiver.garbage else b"x" * receiver.big_answer
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(body)))
                if receiver.close_connections:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.received]

    def entities(self) -> list[dict[str, Any]]:
        return [e for b in self.bodies() for e in b["data"]]

    async def wait_for(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The entities notified, once at least ``count`` arrived (AssertionError after ``within`` seconds)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.entities()
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} notified entities, got {len(self.entities())}: {self.entities()}")

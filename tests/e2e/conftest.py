"""Run the real CLI as a subprocess, the way an operator does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


class RunningStack:
    def __init__(self, proc: subprocess.Popen[str], url: str, data_dir: Path) -> None:
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self.output = ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise
        self.output += out or ""
        return self.proc.returncode


def start_stack(data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> RunningStack:
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SLEUTELBOS_LOG_FORMAT": "console", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sleutelbos", "up", "--data-dir", str(data_dir), "--port", str(port), *args],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"sleutelbos up exited early ({proc.returncode}):\n{out}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return RunningStack(proc, url, data_dir)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"sleutelbos up did not answer on {url} within {timeout}s")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = start_stack(tmp_path / "data")
    yield running
    if running.proc.poll() is None:
        running.stop()

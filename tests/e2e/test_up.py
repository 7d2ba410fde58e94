"""`sleutelbos up`: starts on embedded defaults, serves every component on one port, stops on Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from .conftest import RunningStack, start_stack


def test_up_serves_and_stops_cleanly_on_ctrl_c(stack: RunningStack) -> None:
    index = httpx.get(stack.url + "/").json()
    assert index["service"] == "sleutelbos"
    assert stack.stop(signal.SIGINT) == 0
    assert "sleutelbos" in stack.output and stack.url in stack.output


def test_second_up_on_same_data_dir_resumes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_stack(data_dir)
    assert first.stop() == 0
    second = start_stack(data_dir)
    try:
        assert httpx.get(second.url + "/health").json() == {"status": "ok"}
    finally:
        assert second.stop() == 0

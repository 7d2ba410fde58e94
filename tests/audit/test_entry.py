"""Entries: canonical JSON and the log's monotone time stamps."""

from __future__ import annotations

import pytest
from audit_samples import event

from sleutelbos.audit import entry as entry_module
from sleutelbos.audit.entry import LogClock, NonCanonicalEntry, check_canonical, make_entry, parse_time


def test_canonical_form_round_trips_and_rejects_other_spellings() -> None:
    e = make_entry(event(3), "2026-11-28T12:00:00.000001Z")
    assert check_canonical(e.data)["time"] == "2026-11-28T12:00:00.000001Z"
    assert e.data.startswith(b'{"action":"custody.key.generate","actor":{"country":"NL","kind":"operator"')
    for bad in (e.data.replace(b",", b", ", 1), b'{"b":1,"a":2}', b"[1]", b"{not json"):
        with pytest.raises(NonCanonicalEntry):
            check_canonical(bad)


def test_log_clock_never_goes_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LogClock()
    readings = iter([1_764_331_200_000_000_000, 1_764_331_200_500_000_000, 1_764_331_199_000_000_000])
    monkeypatch.setattr(entry_module.time, "time_ns", lambda: next(readings))
    stamps = [clock.now() for _ in range(3)]
    assert stamps[0] == "2025-11-28T12:00:00.000000Z"
    assert stamps[1] == "2025-11-28T12:00:00.500000Z"
    assert stamps[2] == stamps[1]  # the wall clock stepped back; the log's time did not
    assert parse_time(stamps[1]).microsecond == 500000

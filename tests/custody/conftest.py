"""Fixtures for custody's tests: an audit sink that keeps what it was told (and can be made to fail), and custody
services on a real SoftHSM2 token and on the software key store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable
from sleutelbos.custody import KeyCustody, custody_for_tests


class RecordingAuditSink:
    """Write-ahead audit as the protocol describes it, in memory; ``fail = True`` makes it refuse."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    async def record(self, event: AuditEvent) -> AuditReceipt:
        if self.fail:
            raise AuditUnavailable("audit log down (test)")
        self.events.append(event)
        return AuditReceipt(index=len(self.events) - 1, leaf_hash="00" * 32)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


@pytest.fixture
def audit_sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def hsm_custody(softhsm_token, tmp_path: Path, audit_sink: RecordingAuditSink) -> Iterator[KeyCustody]:
    custody = custody_for_tests(tmp_path / "data", audit_sink)
    yield custody
    custody.close()


@pytest.fixture
def software_custody(tmp_path: Path, audit_sink: RecordingAuditSink) -> Iterator[KeyCustody]:
    custody = custody_for_tests(tmp_path / "data", audit_sink, software=True)
    yield custody
    custody.close()


@pytest.fixture(params=["softhsm", "software"])
def custody(request: pytest.FixtureRequest) -> KeyCustody:
    """The same behaviour on both key stores."""
    return request.getfixturevalue("hsm_custody" if request.param == "softhsm" else "software_custody")

"""The metadata store behaves the same on SQLite and PostgreSQL (migrations, records, states, campaigns)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleutelbos.custody import KeyCustody, KeyState, custody_for_tests
from sleutelbos.custody.dlms_key_transfer import decode_key_transfer
from sleutelbos.custody.store import KeyMetadataStore

from .conftest import RecordingAuditSink


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'custody.sqlite'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def stored_custody(softhsm_token, tmp_path: Path, metadata_url: str) -> Iterator[tuple[KeyCustody,
                                                                                        RecordingAuditSink]]:
    sink = RecordingAuditSink()
    custody = custody_for_tests(tmp_path / "data", sink, database_url=metadata_url)
    yield custody, sink
    custody.close()


def test_migrations_apply_once(metadata_url: str) -> None:
    first = KeyMetadataStore(metadata_url)
    first.close()
    second = KeyMetadataStore(metadata_url)  # opening again applies nothing twice
    rows = second.execute("SELECT version FROM schema_migrations WHERE component = 'custody' ORDER BY version")
    assert [r[0] for r in rows] == [1, 2]
    second.close()


def test_records_states_and_campaigns_persist(stored_custody, tmp_path: Path, metadata_url: str) -> None:
    custody, sink = stored_custody
    signer = custody.signer_for("audit-checkpoint")
    signature = signer.sign(b"checkpoint 1")
    rotated = asyncio.run(custody.rotate("audit-checkpoint"))
    asyncio.run(custody.meters.provision(["M1", "M2", "M3"]))
    campaign = asyncio.run(custody.campaigns.start("g", ["M1", "M2", "M3"]))
    progress = asyncio.run(custody.campaigns.run(campaign, batch_size=2, max_batches=1))
    assert (progress.keyed, progress.pending, progress.state) == (2, 1, "running")
    custody.close()

    reopened = custody_for_tests(tmp_path / "data", sink, database_url=metadata_url)
    try:
        old = reopened.record(signer.key_id)
        assert old.state is KeyState.DEACTIVATED and old.deactivated_at is not None
        assert old.created_at.tzinfo is not None
        assert reopened.signer_for("audit-checkpoint").key_id == rotated.key_id
        assert reopened.verify(signer.key_id, b"checkpoint 1", signature)
        assert reopened.usage()[signer.key_id]["sign"] == 1  # counts survived the restart
        progress = asyncio.run(reopened.campaigns.run(campaign))
        assert (progress.keyed, progress.state) == (3, "finished")
        for meter in ("M1", "M2", "M3"):
            assert len(decode_key_transfer(reopened.campaigns.payload(campaign, meter))) == 3
        assert len(reopened.inventory()) == 2 + 1 + 3 * 4 + 3 * 3  # signing ×2, storage, sets, new keys
    finally:
        reopened.close()

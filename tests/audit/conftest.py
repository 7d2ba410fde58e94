"""Fixtures for the audit tests: a store URL on SQLite and on real PostgreSQL, and a running ``AuditLog``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from audit_samples import ORIGIN

from sleutelbos.audit.checkpoint import NoteVerifier
from sleutelbos.audit.service import AuditLog
from sleutelbos.audit.software_signer import SoftwareSigner
from sleutelbos.audit.store import open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store tests run on the embedded SQLite store and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def signer(tmp_path: Path) -> SoftwareSigner:
    return SoftwareSigner.load_or_create(tmp_path / "keys")


@pytest.fixture
def vkey(signer: SoftwareSigner) -> NoteVerifier:
    return NoteVerifier.for_public_key(ORIGIN, signer.public_key())


@pytest.fixture
async def audit_log(store_url: str, signer: SoftwareSigner) -> AsyncIterator[AuditLog]:
    log = AuditLog(
        open_store(store_url), origin=ORIGIN, signer_source=lambda: signer,
        checkpoint_interval_s=3600, checkpoint_entries=10**9,
    )
    await log.start()
    yield log
    await log.stop(final_checkpoint=False)

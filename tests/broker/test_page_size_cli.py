"""``sleutelbos broker page-size``: a data directory of 4 KiB pages (made before decision 0760, or chosen with
``broker_sqlite_page_size``) read and converted offline with its data intact; refused, changing nothing, while the
broker has the files open; bad input refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sleutelbos.broker.store.sqlite import temporal_path
from sleutelbos.cli import app
from tests.broker.test_temporal_file import instances, page_size, pragma, running
from tests.broker.test_temporal_materialiser import create, patch

runner = CliRunner()


async def four_kib_directory(data: Path) -> Path:
    """A data directory whose store file has 4 KiB pages: three meters, meter 1 with two history rows more."""
    db = data / "broker.sqlite"
    async with running(f"sqlite:///{db}", data, broker_sqlite_page_size=4096) as (client, _):
        for i in range(3):
            await create(client, i)
        await patch(client, 1, 1.0, 1)
        await patch(client, 1, 2.0, 2)
    assert page_size(db) == 4096
    return db


def journal_mode(path: Path) -> str:
    return str(pragma(path, "journal_mode"))


async def test_prints_and_converts_a_4_kib_directory_with_its_data(tmp_path: Path) -> None:
    db = await four_kib_directory(tmp_path)
    shown = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert f"{db}: 4096 bytes per page" in shown.output
    assert f"{temporal_path(db)}: 16384 bytes per page" in shown.output

    done = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path), "--set", "16384"])
    assert done.exit_code == 0, done.output
    assert f"{db}: 4096 → 16384 bytes per page" in done.output
    assert f"{temporal_path(db)}: already 16384 bytes per page" in done.output
    assert page_size(db) == 16384 and journal_mode(db) == "wal"
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        assert [v for _, v in await instances(client, 1)] == [0.0, 1.0, 2.0]
        r = await client.get("/ngsi-ld/v1/entities", params={"type": "Device", "count": "true"})
        assert r.status_code == 200 and r.headers["NGSILD-Results-Count"] == "3"
        await patch(client, 2, 5.0, 3)  # and it takes writes
        assert [v for _, v in await instances(client, 2)] == [0.0, 5.0]

    again = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path), "--set", "16384"])
    assert again.exit_code == 0 and f"{db}: already 16384 bytes per page" in again.output


async def test_the_broker_says_at_start_how_to_convert_an_older_file(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    db = await four_kib_directory(tmp_path)
    caplog.set_level(logging.INFO, logger="sleutelbos.broker.store")
    async with running(f"sqlite:///{db}", tmp_path):
        pass
    said = [r.getMessage() for r in caplog.records if r.name == "sleutelbos.broker.store"]
    assert said == ["broker.sqlite has 4096-byte pages, not the 16384 of broker_sqlite_page_size: `sleutelbos broker"
                    " page-size --set 16384` converts it with the broker stopped (decision 0760)"]
    caplog.clear()
    assert runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path), "--set", "16384"]).exit_code == 0
    async with running(f"sqlite:///{db}", tmp_path):
        pass
    assert not [r for r in caplog.records if r.name == "sleutelbos.broker.store"]


async def test_refused_while_the_broker_has_the_file_open(tmp_path: Path) -> None:
    db = await four_kib_directory(tmp_path)
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        refused = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path), "--set", "16384"])
        assert refused.exit_code == 2
        assert "broker.sqlite is open elsewhere (is the broker running?): stop it first; nothing changed" in \
            refused.output
        await patch(client, 0, 3.0, 4)  # the broker goes on as before
    assert page_size(db) == 4096 and journal_mode(db) == "wal"
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        assert [v for _, v in await instances(client, 0)] == [0.0, 3.0]


async def test_the_environment_chooses_the_size_of_a_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTELBOS_BROKER_SQLITE_PAGE_SIZE", "8192")  # a string, as every environment variable is
    db = tmp_path / "broker.sqlite"
    async with running(f"sqlite:///{db}", tmp_path) as (client, _):
        await create(client, 1)
    assert page_size(db) == 8192


@pytest.mark.parametrize("size", ["1000", "2048", "131072"])
def test_a_size_sqlite_would_ignore_or_below_4_kib_is_refused(tmp_path: Path, size: str) -> None:
    refused = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path), "--set", size])
    assert refused.exit_code == 2 and "--set must be one of 4096, 8192, 16384, 32768, 65536" in refused.output


def test_no_store_file_and_a_postgresql_broker_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no SQLite file at" in missing.output
    assert not (tmp_path / "none").exists()  # reading creates nothing
    monkeypatch.setenv("SLEUTELBOS_BROKER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    pg = runner.invoke(app, ["broker", "page-size", "--data-dir", str(tmp_path)])
    assert pg.exit_code == 2 and "not a SQLite file" in pg.output

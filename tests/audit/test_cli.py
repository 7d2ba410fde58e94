"""``sleutelbos audit export`` / ``verify`` / ``key`` on the embedded stack's log (SQLite under --data-dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from audit_samples import event
from typer.testing import CliRunner

from sleutelbos.cli import app
from sleutelbos.core.settings import Settings
from sleutelbos.stack import StackContext, build_components

runner = CliRunner()


async def _run_stack_log(data_dir: Path, entries: int, names: tuple[str, ...] | None = None) -> int:
    """Build the embedded stack's components, record events through ctx.audit_sink, stop (final checkpoint).

    Returns the log's size: the other components record their own start-up actions (key generation, the
    identity bootstrap) into the same log, before these."""
    ctx = StackContext(settings=Settings(data_dir=data_dir))
    components = build_components(ctx) if names is None else build_components(ctx, names)
    for c in components:
        await c.start()
    assert ctx.audit_sink is not None
    receipts = []
    for start in range(0, entries, 25):
        receipts += await asyncio.gather(
            *(ctx.audit_sink.record(event(i)) for i in range(start, min(entries, start + 25)))
        )
    for c in reversed(components):
        await c.stop()
    return max((r.index + 1 for r in receipts), default=0)


def test_export_and_verify_the_embedded_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    size = asyncio.run(_run_stack_log(data, 60))
    assert size >= 60
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(app, ["audit", "export", str(out), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert lines[0]["type"] == "log" and lines[0]["tree_size"] == size and lines[0]["public_keys"]
    assert [x["index"] for x in lines if x["type"] == "entry"] == list(range(size))
    assert lines[-1] == {"type": "checkpoint", "tree_size": size, "note": lines[-1]["note"]}

    key = runner.invoke(app, ["audit", "key", "--data-dir", str(data)])
    assert key.exit_code == 0
    vkey = key.output.strip().splitlines()[0]
    assert vkey == lines[0]["public_keys"][0]["vkey"]

    ok = runner.invoke(app, ["audit", "verify", str(out), "--key", vkey])
    assert ok.exit_code == 0, ok.output
    assert f"OK: {size} entries" in ok.output
    live = runner.invoke(app, ["audit", "verify", "--key", vkey, "--data-dir", str(data)])
    assert live.exit_code == 0, live.output

    raw = out.read_bytes().splitlines()
    target = size - 18  # one of the events this test recorded
    edited = orjson.loads(raw[1 + target])
    assert edited["index"] == target
    edited["entry"] = edited["entry"].replace('"decision":"permit"', '"decision":"deny"')
    raw[1 + target] = orjson.dumps(edited)
    bad = tmp_path / "edited.jsonl"
    bad.write_bytes(b"\n".join(raw) + b"\n")
    failed = runner.invoke(app, ["audit", "verify", str(bad), "--key", vkey])
    assert failed.exit_code == 1
    assert f"FAILED at entry {target}" in failed.output


def test_verify_with_a_wrong_key_fails_and_a_malformed_key_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    asyncio.run(_run_stack_log(data, 5))
    out = tmp_path / "audit.jsonl"
    assert runner.invoke(app, ["audit", "export", str(out), "--data-dir", str(data)]).exit_code == 0
    other = tmp_path / "other"
    asyncio.run(_run_stack_log(other, 1))
    wrong = runner.invoke(app, ["audit", "key", "--data-dir", str(other)]).output.strip()
    result = runner.invoke(app, ["audit", "verify", str(out), "--key", wrong])
    assert result.exit_code == 1 and "not signed by any trusted key" in result.output
    assert runner.invoke(app, ["audit", "verify", str(out), "--key", "nonsense"]).exit_code == 2
    assert runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.jsonl")]).exit_code == 2
    nowhere = tmp_path / "nowhere"
    assert runner.invoke(app, ["audit", "verify", "--data-dir", str(nowhere)]).exit_code == 2
    assert runner.invoke(app, ["audit", "export", str(tmp_path / "x.jsonl"), "--data-dir", str(nowhere)]).exit_code == 2
    assert not nowhere.exists()


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert asyncio.run(_run_stack_log(data, 0, names=("audit",))) == 0  # the log alone: nothing recorded yet
    out = tmp_path / "empty.jsonl"
    assert runner.invoke(app, ["audit", "export", str(out), "--data-dir", str(data)]).exit_code == 0
    result = runner.invoke(app, ["audit", "verify", str(out)])
    assert result.exit_code == 0 and "OK: 0 entries" in result.output

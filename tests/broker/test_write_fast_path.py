"""The write path's shortcuts (decisions 0503-0507) give exactly what the general code gives.

* The compiled expansion plan (``validation._fast_entity``/``_fast_fragment``) against the generic validator, on
  the meter shape and on every variation that must leave the fast path: same result, or the same error.
* ``asgi.LeanRequest`` reads headers, query parameters and the body as Starlette's ``Request`` does.
* A store transaction reads its own writes (PostgreSQL holds an upsert back to send it with its history rows).
* ``entity.now_iso`` keeps the broker's timestamp format.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.requests import Request

from sleutelbos.broker import validation
from sleutelbos.broker.asgi import LeanRequest
from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.store import open_store
from sleutelbos.broker.store.base import HistoryRow

NOW = "2026-11-29T00:00:00.000000Z"


def meter(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "urn:ngsi-ld:Device:meter-1", "type": "Device"}
    for name, unit in (("activeEnergyImport", "KWH"), ("voltage", "VLT")):
        body[name] = {"type": "Property", "value": 1.5, "observedAt": "2026-11-28T23:45:00Z", "unitCode": unit}
    body.update(changes)
    return body


VARIANTS: list[dict[str, Any]] = [
    meter(),
    meter(voltage={"type": "Property", "value": 230, "unitCode": "VLT"}),  # no observedAt
    meter(voltage={"type": "Property", "value": 230}),
    meter(voltage={"type": "Property", "value": "230"}),
    meter(voltage={"type": "Property", "value": "urn:ngsi-ld:null", "unitCode": "VLT",
                   "observedAt": "2026-11-28T23:45:00Z"}),
    meter(voltage={"type": "Property", "value": {"a": [1, 2]}, "observedAt": "2026-11-28T23:45:00+01:00",
                   "unitCode": "VLT"}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": "2026-11-28T23:45:00Z", "unitCode": "VLT",
                   "datasetId": "urn:ngsi-ld:Dataset:a"}),
    meter(voltage={"type": "Property", "value": 1, "accuracy": {"type": "Property", "value": 0.1}}),
    meter(voltage=[{"type": "Property", "value": 1}, {"type": "Property", "value": 2,
                                                       "datasetId": "urn:ngsi-ld:Dataset:b"}]),
    meter(refModel={"type": "Relationship", "object": "urn:ngsi-ld:DeviceModel:m"}),
    meter(scope="/nl/utrecht"),
    meter(type=["Device", "Meter"]),
    {**meter(), "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"},
    {**meter(), "createdAt": "2020-01-01T00:00:00Z"},
    # each of these must fail, with the generic path's error
    meter(id="not a uri"),
    meter(id=17),
    meter(type=""),
    meter(type=3),
    meter(voltage={"type": "Property", "value": None, "unitCode": "VLT", "observedAt": "2026-11-28T23:45:00Z"}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": "yesterday", "unitCode": "VLT"}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": "2026-13-45T99:00:00Z", "unitCode": "VLT"}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": ["2026-11-28T23:45:00Z"], "unitCode": "VLT"}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": "2026-11-28T23:45:00Z", "unitCode": ""}),
    meter(voltage={"type": "Property", "value": 1, "observedAt": "2026-11-28T23:45:00Z", "unitCode": 5}),
    meter(voltage={"value": 1, "observedAt": "2026-11-28T23:45:00Z", "unitCode": "VLT", "unit": "x"}),
    meter(voltage={"type": "Proprety", "value": 1, "observedAt": "2026-11-28T23:45:00Z", "unitCode": "VLT"}),
    meter(voltage=3),
    meter(**{"bad name": {"type": "Property", "value": 1}}),
    meter(**{"semi;colon": {"type": "Property", "value": 1, "observedAt": "2026-11-28T23:45:00Z",
                            "unitCode": "VLT"}}),
]


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return "ok", fn(*args, **kwargs)
    except BadRequestData as exc:
        return "error", str(exc)


def _generic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_fast_entity", lambda body, ctx, now: None)
    monkeypatch.setattr(validation, "_fast_fragment", lambda body, ctx, now: None)


@pytest.mark.parametrize("body", VARIANTS)
def test_entity_fast_path_equals_generic(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ContextStore().core
    # twice on the fast path: the second call finds the plan built by the first
    first = _outcome(validation.expand_entity, copy.deepcopy(body), ctx, NOW)
    fast = _outcome(validation.expand_entity, copy.deepcopy(body), ctx, NOW)
    _generic(monkeypatch)
    generic = _outcome(validation.expand_entity, copy.deepcopy(body), ContextStore().core, NOW)
    assert first == fast == generic


@pytest.mark.parametrize("allow_null", [False, True])
@pytest.mark.parametrize("body", VARIANTS)
def test_fragment_fast_path_equals_generic(body: dict[str, Any], allow_null: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fragment = {k: v for k, v in body.items() if k not in ("id", "type")}
    ctx = ContextStore().core
    _outcome(validation.expand_fragment, copy.deepcopy(fragment), ctx, NOW, allow_null=allow_null)
    fast = _outcome(validation.expand_fragment, copy.deepcopy(fragment), ctx, NOW, allow_null=allow_null)
    _generic(monkeypatch)
    generic = _outcome(validation.expand_fragment, copy.deepcopy(fragment), ContextStore().core, NOW,
                       allow_null=allow_null)
    assert fast == generic


def test_fast_path_is_taken_for_the_meter_shape() -> None:
    ctx = ContextStore().core
    validation.expand_entity(meter(), ctx, NOW)
    plan = ctx.plans[tuple(meter())]
    assert [name for name, _ in plan] == ["activeEnergyImport", "voltage"]
    assert validation._fast_entity(meter(), ctx, NOW) == validation.expand_entity(meter(), ctx, NOW)


def test_expanded_entities_share_no_mutable_state() -> None:
    ctx = ContextStore().core
    a = validation.expand_entity(meter(), ctx, NOW)
    b = validation.expand_entity(meter(), ctx, NOW)
    a["type"].append("x")
    a[next(k for k in a if k.endswith("voltage"))][0]["value"] = 99
    assert b == validation.expand_entity(meter(), ctx, NOW)


async def test_lean_request_reads_like_starlette() -> None:
    body = b'{"a": 1}'
    scope = {"type": "http", "method": "PATCH", "path": "/x", "raw_path": b"/x", "root_path": "",
             "query_string": b"options=update&limit=5&empty=", "scheme": "http", "server": ("h", 80),
             "headers": [(b"content-type", b"application/json"), (b"link", b"<a>"), (b"link", b"<b>"),
                         (b"ngsild-tenant", b"t1")], "path_params": {"entityId": "urn:x"}}
    chunks = [{"type": "http.request", "body": body[:3], "more_body": True},
              {"type": "http.request", "body": b"", "more_body": True},
              {"type": "http.request", "body": body[3:], "more_body": False}]

    def receiver() -> Any:
        queue = list(chunks)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        return receive

    lean = LeanRequest(scope, receiver())
    star = Request(scope, receiver())
    for name in ("content-type", "link", "ngsild-tenant", "accept"):
        assert lean.headers.get(name) == star.headers.get(name)
    assert list(lean.query_params.multi_items()) == list(star.query_params.multi_items())
    assert lean.path_params == star.path_params
    assert lean.method == star.method
    assert str(lean.url) == str(star.url)
    assert b"".join([c async for c in lean.stream()]) == b"".join([c async for c in star.stream()]) == body
    with pytest.raises(RuntimeError):  # consumed, as Starlette says
        lean.stream()


async def test_transaction_reads_its_own_writes(database_url: str) -> None:
    """PostgreSQL holds an upsert back until its history rows: a read in between must still see it."""
    store = open_store(database_url)
    await store.open()
    try:
        ctx = ContextStore().core
        entity = validation.expand_entity(meter(), ctx, NOW)
        async with store.transaction("") as tx:
            await tx.upsert([entity])
            assert set(await tx.existing([entity["id"]])) == {entity["id"]}
            fetched = await tx.fetch([entity["id"]])
            assert fetched[entity["id"]] == entity
            await tx.history([HistoryRow(entity["id"], NOW, {"x": []})])
        async with store.transaction("") as tx:  # an upsert with no history after it is still written
            entity["modifiedAt"] = "2026-11-29T00:00:01.000000Z"
            await tx.upsert([entity])
        assert (await store.get("", entity["id"]))["modifiedAt"] == "2026-11-29T00:00:01.000000Z"
        assert await store.history_count("", entity["id"]) == 1
    finally:
        await store.close()


def test_now_iso_format_and_order() -> None:
    stamps = [now_iso() for _ in range(2000)]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", s) for s in stamps)
    assert stamps == sorted(stamps)
    parsed = datetime.strptime(stamps[-1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5

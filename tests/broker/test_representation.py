"""Response representations (normalized, concise, keyValues/simplified, sysAttrs, lang, projection, compaction) and
concise input, on the Smart Data Model examples (Device as a meter, DeviceModel, DeviceOperation, readings)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sleutelbos.broker.context import CORE_CONTEXT_URL, ContextStore
from sleutelbos.broker.entity import LOCATION
from sleutelbos.broker.representation import (
    choose_language,
    expand_concise_attribute,
    expand_concise_entity,
    parse_lang,
    render,
    response_context,
)
from sleutelbos.broker.validation import expand_entity

SDM = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ngsi-ld" / "smart-data-models"
MODELS = ["Device", "DeviceModel", "DeviceOperation", "SmartMeteringObservation"]
NOW = "2026-11-28T21:00:00.000000Z"
DM = "https://smartdatamodels.org/dataModel.Device/"


@pytest.fixture(scope="module")
def ctx():
    document = json.loads((SDM / "context.jsonld").read_text())
    return asyncio.run(ContextStore().compile(document["@context"]))


def example(name: str) -> dict:
    body = json.loads((SDM / name / "example-normalized.jsonld").read_text())
    body.pop("@context")
    return body


@pytest.mark.parametrize("name", MODELS)
def test_normalized_round_trip_of_smart_data_models(ctx, name):
    body = example(name)
    entity = expand_entity(body, ctx, NOW)
    assert render(entity, ctx) == body


@pytest.mark.parametrize("name", MODELS)
def test_concise_is_lossless(ctx, name):
    entity = expand_entity(example(name), ctx, NOW)
    concise = render(entity, ctx, form="concise")
    assert all(not (isinstance(v, dict) and v.get("type") in ("Property", "Relationship"))
               for k, v in concise.items() if k not in ("id", "type"))
    assert expand_entity(expand_concise_entity(concise), ctx, NOW) == entity


def test_device_as_meter_in_every_form(ctx):
    entity = expand_entity(example("Device"), ctx, NOW)
    assert [(i["type"], i["value"]) for i in entity[DM + "serialNumber"]] == [("Property", "9845A")]
    kv = render(entity, ctx, form="keyValues")
    assert kv["type"] == "Device"
    assert kv["serialNumber"] == "9845A"
    assert kv["batteryLevel"] == 0.75
    assert kv["refDeviceModel"] == "urn:ngsi-ld:DeviceModel:myDevice-wastecontainer-sensor-345"
    assert render(entity, ctx, form="simplified") == kv
    concise = render(entity, ctx, form="concise")
    assert concise["serialNumber"] == "9845A"
    assert concise["refDeviceModel"] == {"object": "urn:ngsi-ld:DeviceModel:myDevice-wastecontainer-sensor-345"}
    normalized = render(entity, ctx)
    assert normalized["refDeviceModel"]["type"] == "Relationship"


def test_compaction_uses_the_callers_context(ctx):
    entity = expand_entity(example("Device"), ctx, NOW)
    bare = ContextStore().core
    rendered = render(entity, bare, form="keyValues")
    assert DM + "serialNumber" in rendered
    assert rendered["type"] == DM + "Device"


def test_sys_attrs_only_when_asked_and_never_in_key_values(ctx):
    entity = expand_entity(example("DeviceOperation"), ctx, NOW)
    plain = render(entity, ctx)
    assert "createdAt" not in plain and all("createdAt" not in v for k, v in plain.items() if isinstance(v, dict))
    with_sys = render(entity, ctx, sys_attrs=True)
    assert with_sys["createdAt"] == NOW and with_sys["modifiedAt"] == NOW
    attrs = [v for k, v in with_sys.items() if k not in ("id", "type", "createdAt", "modifiedAt")]
    assert attrs and all(a["createdAt"] == NOW for a in attrs)
    assert "createdAt" not in render(entity, ctx, form="keyValues", sys_attrs=True)
    concise = render(entity, ctx, form="concise", sys_attrs=True)
    assert all(isinstance(v, dict) and "createdAt" in v for k, v in concise.items()
               if k not in ("id", "type", "createdAt", "modifiedAt"))


MULTI = {
    "id": "urn:ngsi-ld:Device:m1", "type": "Device",
    "name": [{"type": "Property", "value": "meter one"},
             {"type": "Property", "value": "M1", "datasetId": "urn:ngsi-ld:dataset:short"}],
    "label": {"type": "LanguageProperty", "languageMap": {"en": "meter", "nl": "meter", "fr": "compteur",
                                                          "@none": "meter"}},
    "status": {"type": "VocabProperty", "vocab": "Installed"},
    "config": {"type": "JsonProperty", "json": {"id": "x", "value": 1}},
    "readings": {"type": "ListProperty", "valueList": [1, 2, 3]},
    "path": {"type": "ListRelationship", "objectList": [{"object": "urn:a"}, {"object": "urn:b"}]},
    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.1, 52.1]},
                 "observedAt": "2026-01-01T00:00:00Z"},
    "origin": {"type": "Property", "value": {"type": "Point", "coordinates": [1, 2]}},
    "temperature": {"type": "Property", "value": 21.5, "unitCode": "CEL", "observedAt": "2026-01-01T00:00:00Z",
                    "accuracy": {"type": "Property", "value": 0.1}},
}


@pytest.fixture(scope="module")
def multi(ctx):
    return expand_entity(json.loads(json.dumps(MULTI)), ctx, NOW)


def test_key_values_of_every_attribute_kind(ctx, multi):
    kv = render(multi, ctx, form="keyValues")
    assert kv["name"] == {"dataset": {"@none": "meter one", "urn:ngsi-ld:dataset:short": "M1"}}
    assert kv["label"] == {"languageMap": MULTI["label"]["languageMap"]}
    assert kv["status"] == {"vocab": "Installed"}
    assert kv["config"] == {"json": {"id": "x", "value": 1}}
    assert kv["readings"] == [1, 2, 3]
    assert kv["path"] == ["urn:a", "urn:b"]
    assert kv["location"] == {"type": "Point", "coordinates": [5.1, 52.1]}
    assert kv["temperature"] == 21.5


def test_concise_of_every_attribute_kind_reads_back(ctx, multi):
    concise = render(multi, ctx, form="concise")
    assert concise["name"] == [{"value": "meter one"}, {"value": "M1", "datasetId": "urn:ngsi-ld:dataset:short"}]
    assert concise["label"] == {"languageMap": MULTI["label"]["languageMap"]}
    assert concise["status"] == {"vocab": "Installed"}
    assert concise["readings"] == {"valueList": [1, 2, 3]}
    assert concise["location"]["value"]["type"] == "Point" and "type" not in concise["location"]
    assert concise["origin"] == {"type": "Property", "value": {"type": "Point", "coordinates": [1, 2]}}
    assert concise["temperature"] == {"value": 21.5, "unitCode": "CEL", "observedAt": "2026-01-01T00:00:00Z",
                                      "accuracy": 0.1}
    assert expand_entity(expand_concise_entity(concise), ctx, NOW) == multi


def test_language_filter(ctx, multi):
    fr = render(multi, ctx, lang="fr")
    assert fr["label"] == {"type": "Property", "value": "compteur", "lang": "fr"}
    assert render(multi, ctx, lang="fr-CH,nl;q=0.5")["label"]["lang"] == "fr"
    assert render(multi, ctx, lang="de,nl;q=0.9")["label"]["value"] == "meter"
    assert render(multi, ctx, lang="de")["label"]["lang"] == "@none"
    assert render(multi, ctx, lang="*")["label"]["lang"] == "@none"
    assert render(multi, ctx, form="keyValues", lang="fr")["label"] == "compteur"
    assert render(multi, ctx, form="concise", lang="fr")["label"] == {"value": "compteur", "lang": "fr"}


def test_lang_parsing_and_choice():
    assert parse_lang("fr-CH,fr;q=0.9,en;q=0.8,*;q=0.5") == ["fr-CH", "fr", "en", "*"]
    assert parse_lang('"en"') == ["en"]
    assert parse_lang("en;q=0,de") == ["de"]
    assert choose_language({"en": "a", "de": "b"}, ["*"]) == "en"
    assert choose_language({"EN-gb": "a", "de": "b"}, ["en-GB"]) == "EN-gb"
    assert choose_language({}, ["en"]) is None


def test_projection_and_datasets(ctx, multi):
    pick = {"id", ctx.expand_term("name"), ctx.expand_term("status")}
    assert set(render(multi, ctx, pick=pick)) == {"id", "name", "status"}
    omitted = render(multi, ctx, omit={ctx.expand_term("name"), "type"})
    assert "name" not in omitted and "type" not in omitted and "label" in omitted
    only = render(multi, ctx, attrs=[LOCATION])
    assert set(only) == {"id", "type", "location"}
    short = render(multi, ctx, dataset_id=["urn:ngsi-ld:dataset:short"])
    assert short["name"] == {"type": "Property", "value": "M1", "datasetId": "urn:ngsi-ld:dataset:short"}
    assert "label" not in short
    default = render(multi, ctx, dataset_id=["urn:ngsi-ld:default"], form="keyValues")
    assert default["name"] == "meter one"
    with pytest.raises(ValueError, match="unknown representation"):
        render(multi, ctx, form="geojson")


def test_context_goes_in_the_body_or_the_link_header(ctx):
    body, link = response_context(ctx, "application/ld+json")
    assert body == ctx.context and link is None
    core = ContextStore().core
    assert response_context(core, "application/json") == (None, CORE_CONTEXT_URL)
    url_ctx = asyncio.run(ContextStore(fetcher=_fetch_sdm).compile("https://example.org/ctx.jsonld"))
    assert response_context(url_ctx, "application/json") == (None, "https://example.org/ctx.jsonld")
    assert response_context(url_ctx, "application/ld+json") == ("https://example.org/ctx.jsonld", None)


async def _fetch_sdm(url: str, timeout_s: float):
    return json.loads((SDM / "context.jsonld").read_text())


@pytest.mark.parametrize(("concise", "normalized"), [
    (21, {"type": "Property", "value": 21}),
    ([1, 2], {"type": "Property", "value": [1, 2]}),
    ({"city": "Utrecht"}, {"type": "Property", "value": {"city": "Utrecht"}}),
    ({"object": "urn:x"}, {"type": "Relationship", "object": "urn:x"}),
    ({"objectList": ["urn:x"]}, {"type": "ListRelationship", "objectList": ["urn:x"]}),
    ({"languageMap": {"en": "x"}}, {"type": "LanguageProperty", "languageMap": {"en": "x"}}),
    ({"vocab": "Male"}, {"type": "VocabProperty", "vocab": "Male"}),
    ({"json": {"type": "x"}}, {"type": "JsonProperty", "json": {"type": "x"}}),
    ({"type": "Point", "coordinates": [1, 2]},
     {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}}),
    ({"value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2026-01-01T00:00:00Z"},
     {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2026-01-01T00:00:00Z"}),
    ({"value": 5, "unitCode": "CEL", "accuracy": 0.1},
     {"type": "Property", "value": 5, "unitCode": "CEL", "accuracy": {"type": "Property", "value": 0.1}}),
    ([{"value": 1}, {"value": 2, "datasetId": "urn:d"}],
     [{"type": "Property", "value": 1}, {"type": "Property", "value": 2, "datasetId": "urn:d"}]),
    ({"type": "Relationship", "object": "urn:x", "since": "2020"},
     {"type": "Relationship", "object": "urn:x", "since": {"type": "Property", "value": "2020"}}),
])
def test_concise_input(concise, normalized):
    assert expand_concise_attribute(concise) == normalized


def test_normalized_instances_copied_or_taken_apart_render_alike():
    """Plain instances take the copy path (decision 0615), those with a sub-attribute, ``vocab`` or ``objectType``
    the member-by-member loop; both drop ``instanceId``/``deletedAt`` always and the system members unless asked."""
    ctx = asyncio.run(ContextStore().compile(None))
    power = "https://uri.etsi.org/ngsi-ld/default-context/power"
    owner = "https://uri.etsi.org/ngsi-ld/default-context/owner"
    sys_members = {"createdAt": NOW, "modifiedAt": NOW}
    entity = {
        "id": "urn:ngsi-ld:Device:m1", "type": ["https://uri.etsi.org/ngsi-ld/default-context/Device"], **sys_members,
        power: [{"type": "Property", "value": 5, "unitCode": "KWT", "observedAt": NOW, "datasetId": "urn:a",
                 "instanceId": "urn:i:1", **sys_members},
                {"type": "Property", "value": {"a": 1}, "deletedAt": NOW, "instanceId": "urn:i:2",
                 power: [{"type": "Property", "value": 1, **sys_members}], **sys_members}],
        owner: [{"type": "Relationship", "object": "urn:ngsi-ld:Person:p",
                 "objectType": ["https://uri.etsi.org/ngsi-ld/default-context/Person"], **sys_members}],
    }
    plain = {"type": "Property", "value": 5, "unitCode": "KWT", "observedAt": NOW, "datasetId": "urn:a"}
    nested = {"type": "Property", "value": {"a": 1}, "power": {"type": "Property", "value": 1}}
    relation = {"type": "Relationship", "object": "urn:ngsi-ld:Person:p", "objectType": "Person"}
    assert render(entity, ctx) == {"id": "urn:ngsi-ld:Device:m1", "type": "Device", "power": [plain, nested],
                                   "owner": relation}
    with_sys = render(entity, ctx, sys_attrs=True)
    assert with_sys["power"] == [{**plain, **sys_members},
                                 {**nested, "power": {"type": "Property", "value": 1, **sys_members}, **sys_members}]
    assert with_sys["owner"] == {**relation, **sys_members}
    assert list(with_sys["power"][0]) == ["type", "value", "unitCode", "observedAt", "datasetId", "createdAt",
                                          "modifiedAt"]

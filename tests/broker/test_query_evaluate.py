"""Reference semantics of q over expanded normalized entities (clause 4.9), on the corpus of query_corpus.py."""

from __future__ import annotations

import pytest

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.query import compile_predicate, matches, parse_query
from tests.broker.query_corpus import CORPUS, V, entity

CTX = ContextStore().core


def selected(text: str) -> list[str]:
    predicate = compile_predicate(parse_query(text, CTX))
    return sorted(e["id"].removeprefix("urn:e:") for e in CORPUS if predicate(e))


@pytest.mark.parametrize(("text", "expected"), [
    # existence (example 0/5) and the Orion-LD negation
    ("address", ["3"]),
    ("!temperature", ["10", "4", "5", "6", "9"]),
    # equality: numbers, any datasetId instance counts, int == float, different types never equal
    ("temperature==20", ["1"]),
    ("temperature==30", ["3"]),
    ("temperature==25", ["2"]),
    ("count==20", []),
    ('count=="20"', ["4"]),
    # inequality: the target must exist; different data types are unequal; arrays must not include the value
    ("temperature!=20", ["2", "3", "7", "8"]),
    ('color!="red"', ["10"]),
    ('color!="yellow"', ["10", "3"]),
    # arrays include the value (clause 4.9 equal operator)
    ('color=="red"', ["3"]),
    ('color=="black","red"', ["3"]),
    # ordering needs the same data type; Relationships never order
    ("temperature>15", ["1", "2", "3", "8"]),
    ("speed<0", ["7"]),
    ('isParked>"a"', []),
    ("speed==40..60", ["1", "2"]),
    ("speed!=40..60", ["7"]),
    # strings compare exactly and by code point
    ('brandName=="Mercedes"', ["1"]),
    ('brandName>"Mercedes"', ["10", "2", "4", "8"]),
    # relationships: object, arrays of objects, quoted or unquoted URIs
    ('isParked=="urn:p:1"', ["1"]),
    ("isParked==urn:p:3", ["7"]),
    ("isParked!=urn:p:1", ["7"]),
    # compound values (examples 9, 10, 11)
    ('address[city]=="Berlin"', ["3"]),
    ("address[geo.zip]>10000", ["3"]),
    ('address[country]!="NL"', []),
    ("sensor.rawdata[airquality.particulate]==40", ["4"]),
    ('parkingTickets[value]=="Overstay 60 minutes"', ["6"]),
    # LanguageProperty: a language, any language, arrays of strings
    ('name[en]=="red"', ["5"]),
    ('name=="rouge"', ["5", "6"]),
    ('name[*]=="black"', ["6"]),
    ('name[en]!="red"', ["6"]),
    ('name[fr]=="chat"', ["6"]),
    # ListProperty, ListRelationship, VocabProperty (expanded with the @context)
    ("tags==3", ["5"]),
    ('tags=="b"', ["5"]),
    ('route=="urn:stop:2"', ["5"]),
    ("gender==Male", ["5"]),
    ('gender=="Female"', []),
    # booleans
    ("active==true", ["4"]),
    ("active!=true", ["6"]),
    # dates and times compare temporally; typed literals count as their @value
    ("temperature.observedAt>=2017-12-24T12:00:00Z", ["1", "2"]),
    ("temperature.observedAt<2017-12-31T23:30:00Z", ["1", "2"]),
    ("temperature.observedAt<2017-12-31T23:00:00Z", ["1"]),
    ("temperature.observedAt==2017-12-31T23:00:00Z", ["2"]),
    ("dateFirstUsed>2010-01-01T00:00:00Z", ["6"]),
    ("controlledAsset.observedAt<2021-06-01T10:00:00.124Z", ["8"]),
    ("controlledAsset.observedAt>2021-06-01T10:00:00.123Z", []),
    ("startDate<2021-01-01", ["7"]),
    ("opens>08:00:00", ["7"]),
    ('temperature.unitCode=="CEL"', ["1"]),
    ("controlledAsset.since", ["8"]),
    # regular expressions: strings only, search semantics, negation needs a string target
    ("brandName~=(?i)^merc", ["1", "4", "8"]),
    ("brandName!~=^Merc", ["10", "2", "4"]),
    ("temperature~=2", []),
    ('isParked~="urn"', []),
    # logic
    ("temperature;brandName|rpm", ["1", "2", "8"]),
    ("(temperature>=20;temperature<=25)|count", ["1", "2", "3", "4"]),
    ('((speed>50|rpm>3000);brandName=="Mercedes")', ["1"]),
])
def test_semantics(text, expected):
    assert selected(text) == expected


def test_matches_single_entity():
    e = entity("urn:x", temperature=[{"type": "Property", "value": 21, "datasetId": "urn:ds:a"}])
    assert matches(parse_query("temperature==21", CTX), e)
    assert not matches(parse_query("temperature==22", CTX), e)
    assert matches(parse_query("temperature.datasetId==urn:ds:a", CTX), e)
    assert V + "temperature" in e

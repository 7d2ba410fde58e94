"""Entity Type Selection Language (clause 4.17): OR of AND-groups, both OR spellings, precise errors."""

from __future__ import annotations

import pytest

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.typeselection import TypeSelectionError, parse_type_selection, type_selection_matches

V = "https://uri.etsi.org/ngsi-ld/default-context/"
CTX = ContextStore().core


@pytest.mark.parametrize(("text", "groups"), [
    ("Building", [["Building"]]),
    ("Building|House", [["Building"], ["House"]]),
    ("Building,House", [["Building"], ["House"]]),
    ("(Home;Vehicle)", [["Home", "Vehicle"]]),
    ("(Home;Vehicle)|Motorhome", [["Home", "Vehicle"], ["Motorhome"]]),
    ("(Home;Vehicle),Motorhome", [["Home", "Vehicle"], ["Motorhome"]]),
])
def test_clause_4_17_examples(text, groups):
    assert parse_type_selection(text, CTX) == [[V + t for t in g] for g in groups]


def test_uris_and_context_terms():
    import asyncio

    ctx = asyncio.run(ContextStore().compile({"Device": "https://smartdatamodels.org/dataModel.Device/Device"}))
    assert parse_type_selection("Device|urn:x:Thing", ctx) == [
        ["https://smartdatamodels.org/dataModel.Device/Device"], ["urn:x:Thing"]]


@pytest.mark.parametrize(("text", "position", "fragment"), [
    ("", 0, "empty"),
    ("A;B", 1, "needs parentheses"),
    ("(A;B", 4, "closing the '(' at position 0"),
    ("A,,B", 2, "expected an entity type"),
    ("A|", 2, "expected an entity type"),
    ("A)B", 1, "expected ',' or '|'"),
    ("()", 1, "expected an entity type"),
])
def test_errors(text, position, fragment):
    with pytest.raises(TypeSelectionError) as info:
        parse_type_selection(text, CTX)
    assert isinstance(info.value, BadRequestData)
    assert info.value.position == position
    assert fragment in info.value.detail


def test_matching():
    groups = parse_type_selection("(Home;Vehicle)|Motorhome", CTX)
    assert type_selection_matches(groups, [V + "Home", V + "Vehicle", V + "Other"])
    assert type_selection_matches(groups, [V + "Motorhome"])
    assert not type_selection_matches(groups, [V + "Home"])

"""What the engine writes, it (and so a PEP talking to a remote PDP) reads back unchanged, in XML and JSON.

Every request and response of the conformance suite is used: request → render → parse gives the same request;
the PDP's response → render → parse gives the same response.
"""

from __future__ import annotations

import dataclasses

import pytest
from conformance_suite import discover
from lxml import etree

from sleutelbos.policy.xacml import (
    InvalidResponse,
    Pdp,
    Request,
    load_policy,
    parse_request_json,
    parse_request_xml,
    parse_response_json,
    parse_response_xml,
    render_request_json,
    render_request_xml,
    render_response_json,
    render_response_xml,
)

CASES = [c for c in discover() if c.fmt == "xml" and c.request is not None and c.response is not None
         and not c.invalid_request and c.group != "optional-xml"]


def comparable(request: Request) -> Request:
    """The request with each ``<Content>`` as canonical XML (lxml trees compare by identity; JSON carries text)."""

    def content(value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str):
            value = etree.fromstring(value.encode())
        root = value.getroot() if isinstance(value, etree._ElementTree) else value  # type: ignore[attr-defined]
        return etree.tostring(root, method="c14n")

    return dataclasses.replace(request, attributes=tuple(
        dataclasses.replace(group, content=content(group.content)) for group in request.attributes))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_requests_and_responses_survive_a_round_trip(case) -> None:  # type: ignore[no-untyped-def]
    request = parse_request_xml(case.request.read_bytes())
    assert comparable(parse_request_xml(render_request_xml(request))) == comparable(request)
    assert comparable(parse_request_json(render_request_json(request))) == comparable(request)
    pdp = Pdp(load_policy(case.root_policy.read_bytes()), [load_policy(p.read_bytes()) for p in case.repository])
    response = pdp.decide(request)
    assert parse_response_xml(render_response_xml(response)) == response
    assert parse_response_json(render_response_json(response)) == response


@pytest.mark.parametrize("body", [b"<Response", b"<Result/>", b'<Response xmlns="urn:oasis:names:tc:xacml:3.0:core:'
                                  b'schema:wd-17"><Result><Decision>Perhaps</Decision></Result></Response>'])
def test_a_broken_xml_response_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_response_xml(body)


@pytest.mark.parametrize("body", [b"{", b"{}", b'{"Response": [{"Decision": "Perhaps"}]}',
                                  b'{"Response": [{"Decision": "Permit", "Status": {}}]}'])
def test_a_broken_json_response_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_response_json(body)

"""A request body's JSON and where its ``@context`` may be (ETSI GS CIM 009 v1.8, clause 6.3.5): a pure function of
the bytes, the media type and whether a ``Link`` header came with them — so that the HTTP layer and a batch worker
process (``batch_workers``), which gets only the bytes, take a body apart with the same rules and errors."""

from __future__ import annotations

from typing import Any, Final

import orjson

from sleutelbos.broker.errors import BadRequestData, InvalidRequest

JSONLD: Final = "application/ld+json"


def parse_body(raw: bytes, ctype: str, has_link: bool) -> tuple[Any, Any, bool]:
    """(JSON body, its @context, whether the context came from the body): ``application/ld+json`` carries it in the
    body and no ``Link`` header; ``application/json`` (and merge-patch) in the ``Link`` header, never in the body."""
    if not raw:
        raise InvalidRequest("the request body is empty; a JSON payload is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if ctype == JSONLD:
        if has_link:
            raise BadRequestData("with Content-Type application/ld+json the @context goes in the body, "
                                 "not in a Link header")
        contexts = body_contexts(body)
        if not contexts:
            raise BadRequestData("Content-Type application/ld+json requires an @context member in the body")
        return body, contexts[0], True
    if body_contexts(body):
        raise BadRequestData("with Content-Type application/json the @context must be given in a Link header; "
                             "use application/ld+json to send it in the body")
    return body, None, False


def body_contexts(body: Any) -> list[Any]:
    """The body's first ``@context``: the object's, or the first array member's that has one."""
    if isinstance(body, dict) and "@context" in body:
        return [body["@context"]]
    if isinstance(body, list):
        return [item["@context"] for item in body if isinstance(item, dict) and "@context" in item][:1]
    return []

"""The broker's internal shape of an NGSI-LD Entity (ETSI GS CIM 009 v1.8, clauses 4.5 and 5.2.4) — the shared contract.

Every part of the broker (validation, store, query evaluation, representation) speaks this one shape, so that a
request is expanded once on the way in and compacted once on the way out. It is the *expanded, normalized* form:

``Entity`` — a plain ``dict``::

    {
      "id": "urn:ngsi-ld:Device:meter-1",                 # str, an absolute URI
      "type": ["https://smartdatamodels.org/dataModel.Device/Device"],  # list of expanded type IRIs, never empty
      "createdAt": "2026-11-28T21:00:00.000000Z",          # ISO 8601 UTC, set by the broker
      "modifiedAt": "2026-11-28T21:00:00.000000Z",
      "scope": ["/nl/utrecht"],                            # optional (clause 4.18), stored as given
      "https://uri.etsi.org/ngsi-ld/location": [ {"type": "GeoProperty", "value": {"type": "Point", ...}} ],
      "https://smartdatamodels.org/dataModel.Device/serialNumber": [ {"type": "Property", "value": "9845A"} ],
      "<expanded attribute IRI>": [ <AttributeInstance>, ... ],
    }

* Every attribute is ALWAYS a list of instances: one per ``datasetId`` (clause 4.5.5); the *default instance* has no
  ``datasetId`` key. Two instances of one attribute never share a ``datasetId``.
* ``location``, ``observationSpace`` and ``operationSpace`` are ordinary GeoProperty attributes keyed by their expanded
  IRI (``https://uri.etsi.org/ngsi-ld/location``, ...).
* An ``AttributeInstance`` is a dict with ``"type"`` (one of :data:`ATTRIBUTE_TYPES`), exactly one value member
  (:data:`VALUE_MEMBER` gives it per type: ``value`` | ``object`` | ``languageMap`` | ``json`` | ``valueList`` |
  ``objectList`` | ``vocab``), optional ``observedAt``, ``unitCode``, ``datasetId``, ``createdAt``, ``modifiedAt``,
  ``objectType`` (Relationship), and sub-attributes keyed by expanded IRI in the same list-of-instances shape.
  Members are short names (:data:`INSTANCE_MEMBERS`); anything else in an instance is a sub-attribute IRI.
* Values are stored as given (not JSON-LD-expanded): a Property's ``value`` is the JSON the client sent. Exceptions,
  as the specification requires: a VocabProperty's ``vocab`` and a Relationship's ``objectType`` hold expanded IRIs
  (they are ``@type: @vocab`` terms of the core context), and entity types are expanded.
* ``createdAt``/``modifiedAt`` at entity level are the entity's system attributes; on instances they are the
  instance's. Both are strings ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` so that they sort lexically.

What this module leaves out: the compact form (see ``representation``) and the rules of what a client may send
(see ``validation``). It only names the shape and gives the helpers every consumer needs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypedDict

NGSI_LD: Final = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_CONTEXT_VOCAB: Final = "https://uri.etsi.org/ngsi-ld/default-context/"
LOCATION: Final = NGSI_LD + "location"
OBSERVATION_SPACE: Final = NGSI_LD + "observationSpace"
OPERATION_SPACE: Final = NGSI_LD + "operationSpace"
GEO_PROPERTY_IRIS: Final = frozenset({LOCATION, OBSERVATION_SPACE, OPERATION_SPACE})

#: Attribute type → the member that carries its value (clause 4.5: Property, Relationship, GeoProperty, ...).
VALUE_MEMBER: Final[dict[str, str]] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "VocabProperty": "vocab",
}
ATTRIBUTE_TYPES: Final = frozenset(VALUE_MEMBER)

#: Entity-level keys that are not attributes.
ENTITY_MEMBERS: Final = frozenset({"id", "type", "createdAt", "modifiedAt", "deletedAt", "scope"})

#: Instance-level keys that are not sub-attributes.
INSTANCE_MEMBERS: Final = frozenset(
    {
        "type", "value", "object", "languageMap", "json", "valueList", "objectList", "vocab",
        "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt", "objectType", "lang",
        "instanceId",
    }
)

AttributeInstance: TypeAlias = dict[str, Any]
"""One instance of an attribute (see module docstring); a dict because sub-attributes are keyed by IRI."""

Entity: TypeAlias = dict[str, Any]
"""An entity in expanded normalized form (see module docstring)."""


class EntityHeader(TypedDict):
    """The members every stored entity has; attributes are the remaining keys."""

    id: str
    type: list[str]
    createdAt: str
    modifiedAt: str


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (one tuple: thread-safe)


def now_iso() -> str:
    """The broker's timestamp format: UTC, microseconds, ``Z`` — sorts lexically like it sorts in time.

    Every write takes one, so the date part is formatted once per second (``strftime`` cost more than the rest of
    a single update's bookkeeping) and only the microseconds are added per call."""
    global _second
    second, fraction = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{fraction:06d}Z"


def attributes(entity: Entity) -> Iterator[tuple[str, list[AttributeInstance]]]:
    """Yield ``(expanded attribute IRI, instances)`` for every attribute of the entity (system members skipped)."""
    for key, value in entity.items():
        if key not in ENTITY_MEMBERS:
            yield key, value


def sub_attributes(instance: AttributeInstance) -> Iterator[tuple[str, list[AttributeInstance]]]:
    """Yield ``(expanded sub-attribute IRI, instances)`` of one attribute instance."""
    for key, value in instance.items():
        if key not in INSTANCE_MEMBERS:
            yield key, value


def value_of(instance: AttributeInstance) -> Any:
    """The instance's value member (``value``, ``object``, ``languageMap``, ...), or ``None``."""
    member = VALUE_MEMBER.get(instance.get("type", "Property"), "value")
    return instance.get(member)


def get_instance(
    entity: Entity, attribute: str, dataset_id: str | None = None
) -> AttributeInstance | None:
    """The instance of ``attribute`` with this ``datasetId`` (``None`` = the default instance), or ``None``."""
    for instance in entity.get(attribute, ()):
        if instance.get("datasetId") == dataset_id:
            return instance
    return None


def put_instance(entity: Entity, attribute: str, instance: AttributeInstance) -> AttributeInstance | None:
    """Put ``instance`` in place of the one with the same ``datasetId``; returns the instance it replaced."""
    instances = entity.setdefault(attribute, [])
    dataset_id = instance.get("datasetId")
    for i, existing in enumerate(instances):
        if existing.get("datasetId") == dataset_id:
            instances[i] = instance
            return existing
    instances.append(instance)
    return None


def remove_instance(entity: Entity, attribute: str, dataset_id: str | None = None) -> bool:
    """Remove the instance with this ``datasetId``; drop the attribute when no instance is left. True if found."""
    instances = entity.get(attribute)
    if not instances:
        return False
    kept = [i for i in instances if i.get("datasetId") != dataset_id]
    if len(kept) == len(instances):
        return False
    if kept:
        entity[attribute] = kept
    else:
        del entity[attribute]
    return True


def is_geo(instance: AttributeInstance) -> bool:
    return instance.get("type") == "GeoProperty"

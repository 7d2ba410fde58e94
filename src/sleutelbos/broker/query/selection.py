"""Which entities a query or subscription selects, evaluated in Python (ETSI GS CIM 009 v1.8/v1.9, clauses 5.7.2,
4.17, 4.9, 4.10, 4.19): ``type`` (type selection language), ``id`` list, ``idPattern`` (a regex searched in the id, as
the stores' SQL does), ``attrs`` (the entity must have one of them), ``q``, a geo-query and ``scopeQ``.

The stores translate the same parameters to SQL (``EntityFilter``); subscriptions (issue 3) need the same decision
for one entity at a time, so :class:`EntitySelection` builds it once from the request parameters and answers
:meth:`EntitySelection.matches` per entity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sleutelbos.broker.entity import Entity
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.evaluate import compile_predicate
from sleutelbos.broker.query.parser import TermExpander, parse_query
from sleutelbos.broker.query.scopeq import parse_scope_query, scopes_match
from sleutelbos.broker.query.typeselection import parse_type_selection, type_selection_matches


@dataclass
class EntitySelection:
    """The parsed selection; every given part must hold (clause 5.7.2)."""

    type_groups: list[list[str]] = field(default_factory=list)
    ids: frozenset[str] = frozenset()
    id_pattern: re.Pattern[str] | None = None
    attrs: frozenset[str] = frozenset()
    predicates: list[Callable[[Entity], bool]] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: dict[str, Any], context: TermExpander) -> EntitySelection:
        """From ``type``, ``id``, ``idPattern``, ``attrs``, ``q``, ``scopeQ`` and the geo parameters (strings)."""
        selection = cls()
        if params.get("type"):
            selection.type_groups = parse_type_selection(params["type"], context)
        if params.get("id"):
            selection.ids = frozenset(i for i in params["id"].split(",") if i)
        if params.get("idPattern"):
            try:
                selection.id_pattern = re.compile(params["idPattern"])
            except re.error as exc:
                raise BadRequestData(f"idPattern is not a valid regular expression: {exc}") from exc
        if params.get("attrs"):
            selection.attrs = frozenset(context.expand_term(a) for a in params["attrs"].split(",") if a)
        if params.get("q"):
            selection.predicates.append(compile_predicate(parse_query(params["q"], context)))
        if params.get("scopeQ"):
            groups = parse_scope_query(params["scopeQ"])
            selection.predicates.append(lambda e: scopes_match(groups, e.get("scope", [])))
        if any(params.get(k) for k in ("georel", "geometry", "coordinates")):
            from sleutelbos.broker.geo import parse_geoquery

            geo = parse_geoquery(params.get("georel"), params.get("geometry"), params.get("coordinates"),
                                 params.get("geoproperty"), context)
            if geo is not None:
                selection.predicates.append(geo.matches)
        return selection

    def matches(self, entity: Entity) -> bool:
        if self.type_groups and not type_selection_matches(self.type_groups, entity.get("type", ())):
            return False
        if self.ids and entity.get("id") not in self.ids:
            return False
        if self.id_pattern is not None and self.id_pattern.search(entity.get("id", "")) is None:
            return False
        if self.attrs and not any(a in entity for a in self.attrs):
            return False
        return all(p(entity) for p in self.predicates)

"""Python evaluation of an NGSI-LD query over an entity in expanded normalized form (clause 4.9 semantics).

This is the reference semantics: subscriptions use it directly, and the SQL translation (:mod:`.sql`) is tested to
select exactly the entities it accepts. The rules, from clause 4.9, made precise where the clause is loose:

* **Target element.** The path's first name selects the attribute's instances (all ``datasetId``\\ s: "the target
  value shall be any value of such instances"); each dotted name selects sub-attribute instances; a final
  ``observedAt``/``unitCode``/``datasetId``/``createdAt``/``modifiedAt`` selects that member of the instance.
* **Target value** of an instance, by its type: ``value`` (Property, GeoProperty; a JSON-LD typed literal
  ``{"@type", "@value"}`` counts as its ``@value``), ``object`` (Relationship), ``valueList`` (ListProperty),
  ``objectList`` (ListRelationship), ``json`` (JsonProperty), ``vocab`` (VocabProperty), ``languageMap``
  (LanguageProperty). A trailing ``[a.b]`` walks JSON object members (ECMA-262 dot access; a missing member makes the
  target non-existent); for a LanguageProperty ``[en]`` picks a language and ``[*]`` any.
* **Elements.** A target value that is an array is compared element by element ("is included in the target value");
  a languageMap or an objectList contributes all its scalar leaves.
* **Operators.** ``==``: some element equals some query value (or lies in the range); ``!=``: the instance has the
  target and *no* element equals any query value (different data types are unequal); ``< <= > >=``: some element of the
  same data type compares so; ``~=``: some string element matches (``re.search``); ``!~=``: the target has a string
  element and none matches. An entity matches a term when *some* instance does. A Relationship/ListRelationship target
  matches only ``==``/``!=`` (and existence). A VocabProperty also equals a query string expanded with the @context.
* **Types.** Numbers never equal booleans or strings; dateTime/date/time query values compare temporally with strings
  that parse as such (see :mod:`.values`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, Final

from sleutelbos.broker.entity import VALUE_MEMBER, Entity
from sleutelbos.broker.query.ast import And, AttributePath, Comparison, Exists, Node, Or, Pattern, Range
from sleutelbos.broker.query.values import Literal, element_matches_kind, temporal_key

RELATIONSHIP_TYPES: Final = frozenset({"Relationship", "ListRelationship"})
_LEAF_TYPES: Final = frozenset({"LanguageProperty", "ListRelationship"})

Predicate = Callable[[Entity], bool]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def leaves(value: Any) -> Iterator[Any]:
    """All scalar leaves of a JSON value (depth-first): how a languageMap or objectList is searched."""
    if isinstance(value, dict):
        for child in value.values():
            yield from leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from leaves(child)
    else:
        yield value


def leaf_instances(entity: Entity, path: AttributePath) -> list[dict[str, Any]]:
    """The instances the path's attribute names select (top level, then each dotted sub-attribute)."""
    instances = entity.get(path.attribute)
    if not path.sub_attributes and type(instances) is list and all(type(i) is dict for i in instances):
        return instances
    instances = [i for i in _as_list(instances) if isinstance(i, dict)]
    for sub in path.sub_attributes:
        instances = [s for i in instances for s in _as_list(i.get(sub)) if isinstance(s, dict)]
    return instances


def target_elements(instance: dict[str, Any], path: AttributePath) -> list[Any] | None:
    """The elements of the instance's target value for this path, or None when the target does not exist."""
    if path.metadata is not None:
        if path.metadata not in instance:
            return None
        return _as_list(instance[path.metadata]) or [None]
    kind = instance.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    if member not in instance:
        return None
    value = instance[member]
    if kind == "LanguageProperty":
        if not isinstance(value, dict):
            return None
        if path.compound is not None and path.compound != ("*",):
            if len(path.compound) != 1 or path.compound[0] not in value:
                return None
            value = value[path.compound[0]]
        return list(leaves(value))
    if path.compound is not None:
        for key in path.compound:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if isinstance(value, list) else [value]
    if kind in _LEAF_TYPES:
        return list(leaves(value))
    if member == "value" and isinstance(value, dict) and "@value" in value:
        value = value["@value"]
    return value if isinstance(value, list) else [value]


def _in_range(element: Any, rng: Range) -> bool:
    comparable = element_matches_kind(element, rng.low)
    return comparable is not None and rng.low.value <= comparable <= rng.high.value


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _element_test(literal: Literal, op: str) -> Callable[[Any], bool]:
    """A test of one element against one literal with the data-type rule built in (no per-call dispatch)."""
    order = _ORDER.get(op)
    value = literal.value
    if literal.kind == "number":
        if order is None:
            return lambda e: type(e) in (int, float) and e == value
        return lambda e: type(e) in (int, float) and order(e, value)
    if literal.kind in ("string", "uri"):
        if order is None:
            return lambda e: type(e) is str and e == value
        return lambda e: type(e) is str and order(e, value)
    if literal.kind == "boolean":
        return lambda e: type(e) is bool and e is value
    kind = literal.kind

    def temporal(e: Any) -> bool:
        key = temporal_key(kind, e)
        return key is not None and (key == value if order is None else order(key, value))

    return temporal


def _comparison(term: Comparison) -> Predicate:
    path = term.path
    value = term.value
    vocab = frozenset(term.vocab_values)
    check_relationship = path.metadata is None

    if term.op in ("==", "!="):
        if isinstance(value, Range):
            rng = value

            def hit(elements: Iterable[Any], instance: dict[str, Any]) -> bool:
                return any(_in_range(e, rng) for e in elements)
        else:
            literals = value if isinstance(value, tuple) else (value,)
            tests = [_element_test(lit, "==") for lit in literals]
            test = tests[0] if len(tests) == 1 else (lambda e: any(t(e) for t in tests))

            def hit(elements: Iterable[Any], instance: dict[str, Any]) -> bool:
                for e in elements:
                    if test(e):
                        return True
                if vocab and instance.get("type") == "VocabProperty":
                    return any(isinstance(e, str) and e in vocab for e in elements)
                return False

        wanted = term.op == "=="

        def predicate(entity: Entity) -> bool:
            for instance in leaf_instances(entity, path):
                elements = target_elements(instance, path)
                if elements is not None and hit(elements, instance) is wanted:
                    return True
            return False

        return predicate

    assert isinstance(value, Literal)
    test = _element_test(value, term.op)

    def ordered(entity: Entity) -> bool:
        for instance in leaf_instances(entity, path):
            if check_relationship and instance.get("type") in RELATIONSHIP_TYPES:
                continue
            elements = target_elements(instance, path)
            if elements is not None:
                for element in elements:
                    if test(element):
                        return True
        return False

    return ordered


@lru_cache(maxsize=1024)
def compiled_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regex_search(pattern: str, text: Any) -> bool:
    """``text`` matches ``pattern`` anywhere (``re.search``); also registered as SQLite's ``ngsild_regexp``."""
    return isinstance(text, str) and compiled_regex(pattern).search(text) is not None


def _pattern(term: Pattern) -> Predicate:
    path = term.path
    regex = compiled_regex(term.regex)
    check_relationship = path.metadata is None

    def predicate(entity: Entity) -> bool:
        for instance in leaf_instances(entity, path):
            if check_relationship and instance.get("type") in RELATIONSHIP_TYPES:
                continue
            elements = target_elements(instance, path)
            if elements is None:
                continue
            strings = [e for e in elements if isinstance(e, str)]
            found = any(regex.search(s) is not None for s in strings)
            if (found and not term.negated) or (term.negated and strings and not found):
                return True
        return False

    return predicate


def _exists(term: Exists) -> Predicate:
    path = term.path
    simple = path.metadata is None and path.compound is None

    def present(entity: Entity) -> bool:
        instances = leaf_instances(entity, path)
        if simple:
            return bool(instances)
        return any(target_elements(i, path) is not None for i in instances)

    if term.negated:
        return lambda entity: not present(entity)
    return present


def compile_predicate(node: Node) -> Predicate:
    """Turn a query AST into a Python predicate over expanded normalized entities (built once, called often)."""
    if isinstance(node, And):
        parts = [compile_predicate(t) for t in node.terms]
        return lambda entity: all(p(entity) for p in parts)
    if isinstance(node, Or):
        parts = [compile_predicate(t) for t in node.terms]
        return lambda entity: any(p(entity) for p in parts)
    if isinstance(node, Comparison):
        return _comparison(node)
    if isinstance(node, Pattern):
        return _pattern(node)
    if isinstance(node, Exists):
        return _exists(node)
    raise TypeError(f"not a query node: {node!r}")


def matches(node: Node, entity: Entity) -> bool:
    """Whether ``entity`` satisfies the query (compiles the AST each call; use :func:`compile_predicate` in loops)."""
    return compile_predicate(node)(entity)

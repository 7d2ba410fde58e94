"""The abstract syntax tree of an NGSI-LD query (ETSI GS CIM 009 v1.8/v1.9, clause 4.9).

A parsed ``q`` is a tree of :class:`And`/:class:`Or` over *query terms*. Each term addresses a target element through
an :class:`AttributePath` whose names are already expanded to IRIs with the caller's @context, so the back-ends
(:mod:`.evaluate` for Python, :mod:`.sql` for SQLite/PostgreSQL) never see a short name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias
from typing import Literal as TypingLiteral

from sleutelbos.broker.query.values import Literal

#: Dotted-path names that address a member of the instance rather than a sub-attribute (clause 4.9 example 8).
INSTANCE_METADATA: Final = frozenset({"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt"})

Operator = TypingLiteral["==", "!=", ">", ">=", "<", "<="]


@dataclass(frozen=True, slots=True)
class AttributePath:
    """``attr.sub.sub2[key.key2]`` with every attribute name expanded.

    ``attribute``: the expanded IRI of the top-level attribute.
    ``sub_attributes``: expanded IRIs of the dotted sub-attributes, in order.
    ``metadata``: ``observedAt``/``unitCode``/... when the dotted path ends on an instance member instead.
    ``compound``: the trailing ``[...]`` path into the value (JSON member names, not expanded), or None; for a
    LanguageProperty its single name is the language tag (``*`` = any language).
    ``text``: the path as written, for messages.
    """

    attribute: str
    sub_attributes: tuple[str, ...] = ()
    metadata: str | None = None
    compound: tuple[str, ...] | None = None
    text: str = ""

    @property
    def is_top_level_value(self) -> bool:
        """True when the path is a bare attribute name — the case a value index can answer."""
        return not self.sub_attributes and self.metadata is None and self.compound is None


@dataclass(frozen=True, slots=True)
class Range:
    """``low..high`` (both included)."""

    low: Literal
    high: Literal


@dataclass(frozen=True, slots=True)
class Exists:
    """``attr`` alone: the entity has the target element; ``negated`` is ``!attr`` (an Orion-LD extension)."""

    path: AttributePath
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Comparison:
    """``path op value``; ``value`` is a single literal, a :class:`Range` or a tuple of literals (a ValueList)."""

    path: AttributePath
    op: Operator
    value: Literal | Range | tuple[Literal, ...]
    #: For VocabProperty targets: the query's strings expanded with the @context (clause 4.9, VocabProperty rule).
    vocab_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pattern:
    """``path~=regex`` or, ``negated``, ``path!~=regex``."""

    path: AttributePath
    regex: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Node, ...]


Term: TypeAlias = Exists | Comparison | Pattern
Node: TypeAlias = And | Or | Exists | Comparison | Pattern

"""The NGSI-LD Entity Type Selection Language, the ``type`` parameter (ETSI GS CIM 009 v1.8/v1.9, clause 4.17)::

    EntityTypes  = OrEntityType *(orOp OrEntityType)        ; orOp = "|" / ","
    OrEntityType = "(" EntityType *(";" EntityType) ")" / EntityType

The result is what :class:`~sleutelbos.broker.store.base.EntityFilter` takes as ``type_groups``: an OR of AND-groups
of expanded type IRIs (``A,B`` → ``[[A], [B]]``; ``(A;B)|C`` → ``[[A, B], [C]]``). Names are expanded with the caller's
@context. Left out: URIs that themselves contain ``, ; ( ) |`` (the clause recommends short names for this reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.parser import TermExpander

_SPECIAL = frozenset(",;|()")


class TypeSelectionError(BadRequestData):
    """``type`` does not follow clause 4.17; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int, text: str) -> None:
        super().__init__(f"invalid type selection at position {position}: {message} (type={text!r})")
        self.position = position


def parse_type_selection(text: str, context: TermExpander) -> list[list[str]]:
    """Parse ``type`` into OR-of-AND groups of expanded type IRIs."""
    pos = 0
    groups: list[list[str]] = []

    def name() -> str:
        nonlocal pos
        start = pos
        while pos < len(text) and text[pos] not in _SPECIAL and not text[pos].isspace():
            pos += 1
        if pos == start:
            found = "end of input" if pos >= len(text) else repr(text[pos])
            raise TypeSelectionError(f"expected an entity type, found {found}", pos, text)
        return context.expand_term(text[start:pos])

    if not text:
        raise TypeSelectionError("empty type selection", 0, text)
    while True:
        if pos < len(text) and text[pos] == "(":
            open_at = pos
            pos += 1
            group = [name()]
            while pos < len(text) and text[pos] == ";":
                pos += 1
                group.append(name())
            if pos >= len(text) or text[pos] != ")":
                found = "end of input" if pos >= len(text) else repr(text[pos])
                raise TypeSelectionError(f"expected ';' or ')' closing the '(' at position {open_at}, found {found}",
                                         pos, text)
            pos += 1
            groups.append(group)
        else:
            groups.append([name()])
        if pos >= len(text):
            return groups
        if text[pos] in ",|":
            pos += 1
            continue
        if text[pos] == ";":
            raise TypeSelectionError("';' (and) needs parentheses: write (A;B)", pos, text)
        raise TypeSelectionError(f"expected ',' or '|' between entity types, found {text[pos]!r}", pos, text)


def type_selection_matches(groups: Sequence[Sequence[str]], entity_types: Iterable[str]) -> bool:
    """Whether an entity with these (expanded) types is selected: some group has all its types among them."""
    have = set(entity_types)
    return any(all(t in have for t in group) for group in groups)

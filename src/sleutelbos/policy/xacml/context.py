"""The XACML request and response contexts (XACML 3.0 §5.42-5.58) and the per-decision evaluation context.

:class:`Request` and :class:`Response` are the format-neutral shapes that :mod:`.request_xml` and
:mod:`.json_profile` read and write. :class:`EvaluationContext` is what compiled policies read while deciding one
individual request: the attribute bags keyed by ``(category, attribute id, data type)`` (and with the issuer, for
designators that name one), built once per request so that every designator is a single dict lookup.

The Multiple Decision Profile (§2 of the profile) is supported for *repeated categories*: when a request has several
``<Attributes>`` of the same category, each combination is an individual request and gets its own ``<Result>``;
``MultiRequests`` (explicit references) is supported too. ``CombinedDecision="true"`` combines the individual
decisions into one result when they agree and carry no obligations/advice, and gives Indeterminate otherwise
(profile §3). ``RequestDefaults`` is only used for its XPath version.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .decision import MissingAttributeDetail, Obligation, PolicyIdentifier, Status
from .errors import InvalidRequest
from .values import Bag, current_value

ENVIRONMENT = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment"
CURRENT_TIME = "urn:oasis:names:tc:xacml:1.0:environment:current-time"
CURRENT_DATE = "urn:oasis:names:tc:xacml:1.0:environment:current-date"
CURRENT_DATETIME = "urn:oasis:names:tc:xacml:1.0:environment:current-dateTime"
XS = "http://www.w3.org/2001/XMLSchema#"
MAX_INDIVIDUAL_REQUESTS = 1000
"""Multiple Decision Profile: a request that expands to more individual requests is refused (a cartesian product of
repeated categories grows fast; this bounds the work one request can cause)."""
CURRENT_ATTRIBUTES = {
    (ENVIRONMENT, CURRENT_TIME, XS + "time"),
    (ENVIRONMENT, CURRENT_DATE, XS + "date"),
    (ENVIRONMENT, CURRENT_DATETIME, XS + "dateTime"),
}


@dataclass(frozen=True, slots=True)
class Attribute:
    """§5.46: one attribute of a category; ``values`` are one or more ``AttributeValue`` of ONE data type.

    The XML schema lets one ``<Attribute>`` carry values of several data types; the request parsers split such an
    attribute into one :class:`Attribute` per data type, so that the evaluation context indexes each attribute
    with a single dict entry.
    """

    attribute_id: str
    values: tuple[Any, ...]
    issuer: str | None = None
    include_in_result: bool = False


def _init_attribute(self: Attribute, attribute_id: str, values: tuple[Any, ...], issuer: str | None = None,
                    include_in_result: bool = False) -> None:
    # Requests are built per decision: the slot descriptors set fields in half the time of the frozen dataclass'
    # object.__setattr__, and the data type check is done here once instead of at every lookup.
    if not values:
        raise ValueError(f"attribute {attribute_id!r} has no value")
    if len(values) > 1:
        datatype = values[0].datatype
        for value in values:
            if value.datatype != datatype:
                raise ValueError(f"attribute {attribute_id!r} mixes data types {datatype} and {value.datatype}: "
                                 "use one Attribute per data type")
    _set_attribute_id(self, attribute_id)
    _set_values(self, values)
    _set_issuer(self, issuer)
    _set_include(self, include_in_result)


_set_attribute_id = Attribute.__dict__["attribute_id"].__set__
_set_values = Attribute.__dict__["values"].__set__
_set_issuer = Attribute.__dict__["issuer"].__set__
_set_include = Attribute.__dict__["include_in_result"].__set__
Attribute.__init__ = _init_attribute  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Attributes:
    """§5.44: the attributes of one category (subject, resource, action, environment, or any other URI).

    ``content`` is the ``<Content>``'s element (an lxml element; from JSON, the XML text, parsed on first use by
    an ``AttributeSelector``), or ``None``.
    """

    category: str
    attributes: tuple[Attribute, ...] = ()
    content: Any = None
    xml_id: str | None = None


def _init_attributes(self: Attributes, category: str, attributes: tuple[Attribute, ...] = (), content: Any = None,
                     xml_id: str | None = None) -> None:
    # built for every category of every request: slot descriptors instead of frozen-dataclass object.__setattr__
    _set_category(self, category)
    _set_group(self, attributes)
    _set_content(self, content)
    _set_xml_id(self, xml_id)


_set_category = Attributes.__dict__["category"].__set__
_set_group = Attributes.__dict__["attributes"].__set__
_set_content = Attributes.__dict__["content"].__set__
_set_xml_id = Attributes.__dict__["xml_id"].__set__
Attributes.__init__ = _init_attributes  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Request:
    """§5.42: a request context (possibly several individual requests, see the Multiple Decision Profile)."""

    attributes: tuple[Attributes, ...]
    return_policy_id_list: bool = False
    combined_decision: bool = False
    multi_requests: tuple[tuple[str, ...], ...] = ()
    xpath_version: str | None = None

    def individual_requests(self) -> list[tuple[Attributes, ...]]:
        """The individual requests (Multiple Decision Profile §2.2, §2.3); :class:`.errors.InvalidRequest` when
        there would be more than :data:`MAX_INDIVIDUAL_REQUESTS`."""
        if self.multi_requests:
            if len(self.multi_requests) > MAX_INDIVIDUAL_REQUESTS:
                raise InvalidRequest(f"at most {MAX_INDIVIDUAL_REQUESTS} individual requests are allowed")
            by_id = {a.xml_id: a for a in self.attributes if a.xml_id is not None}
            try:
                return [tuple(by_id[ref] for ref in refs) for refs in self.multi_requests]
            except KeyError as exc:
                raise InvalidRequest(f"MultiRequests: ReferenceId {exc.args[0]!r} names no category") from exc
        groups = self.attributes
        if len({group.category for group in groups}) == len(groups):
            return [groups]
        categories: dict[str, list[Attributes]] = {}
        for group in groups:
            categories.setdefault(group.category, []).append(group)
        count = math.prod(len(group) for group in categories.values())
        if count > MAX_INDIVIDUAL_REQUESTS:
            raise InvalidRequest(f"the repeated categories make {count} individual requests; at most "
                                 f"{MAX_INDIVIDUAL_REQUESTS} are allowed")
        return [tuple(combo) for combo in itertools.product(*categories.values())]


@dataclass(slots=True)
class Result:
    """§5.48: the decision for one individual request and what travels with it (not frozen only because frozen
    dataclasses are slower to build, and one is built per decision; treat it as immutable)."""

    decision: str
    status: Status | None = None
    obligations: tuple[Obligation, ...] = ()
    advice: tuple[Obligation, ...] = ()
    attributes: tuple[Attributes, ...] = ()
    policy_identifiers: tuple[PolicyIdentifier, ...] | None = None


@dataclass(slots=True)
class Response:
    """§5.47: one result per individual request."""

    results: tuple[Result, ...] = field(default_factory=tuple)


class EvaluationContext:
    """The attribute values of one individual request, as compiled designators and selectors look them up.

    ``values`` maps ``(category, attribute_id, data_type)`` to the tuple of every value of that attribute whatever
    its issuer (a designator without ``Issuer`` matches any issuer, §5.29); ``issued`` maps the same key plus the
    issuer. ``bags`` caches the ``Bag`` a designator built from ``values`` (built on first use, so attributes no
    policy reads cost one dict entry). The current date/time attributes are supplied by the PDP when the request
    lacks them (§10.2.6), computed once per request.
    """

    __slots__ = ("_now", "bags", "contents", "issued", "provider", "return_policy_ids", "values")

    def __init__(self, attributes: tuple[Attributes, ...], return_policy_ids: bool = False,
                 provider: AttributeProvider | None = None) -> None:
        values: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        issued: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        contents: dict[str, Any] = {}
        count = 0
        with_issuer = False
        for group in attributes:
            category = group.category
            if group.content is not None:
                contents[category] = group.content
            group_attributes = group.attributes
            count += len(group_attributes)
            for attribute in group_attributes:
                found = attribute.values
                values[(category, attribute.attribute_id, found[0].datatype)] = found
                if attribute.issuer is not None:
                    with_issuer = True
        if count != len(values) or with_issuer:
            # The same attribute more than once (several issuers, or repeated): merge the values.
            values.clear()
            for group in attributes:
                category = group.category
                for attribute in group.attributes:
                    found = attribute.values
                    key = (category, attribute.attribute_id, found[0].datatype)
                    values[key] = values.get(key, ()) + found
                    if attribute.issuer is not None:
                        issued_key = (*key, attribute.issuer)
                        issued[issued_key] = issued.get(issued_key, ()) + found
        self.values = values
        self.issued = issued
        self.bags: dict[tuple[str, str, str], Bag] = {}
        self.contents = contents
        self.return_policy_ids = return_policy_ids
        self.provider = provider
        self._now: datetime | None = None

    @classmethod
    def of_values(cls, values: dict[tuple[str, str, str], tuple[Any, ...]], return_policy_ids: bool = False,
                  provider: AttributeProvider | None = None) -> EvaluationContext:
        """The context of a request already read into ``values`` (one entry per attribute, no issuers, no
        ``Content``) — what :func:`.json_profile.simple_request_values` gives; ``values`` is owned by the context
        from then on (PDP-supplied attributes are added to it)."""
        ctx = _new_context(cls)
        ctx.values = values
        ctx.issued = {}
        ctx.bags = {}
        ctx.contents = {}
        ctx.return_policy_ids = return_policy_ids
        ctx.provider = provider
        ctx._now = None
        return ctx

    def bag(self, key: tuple[str, str, str]) -> Bag | None:
        """The bag of an attribute (no issuer), or ``None`` when the request has no value for it."""
        bag = self.bags.get(key)
        if bag is None:
            found = self.values.get(key)
            if found is None:
                return None
            bag = self.bags[key] = Bag(key[2], found)
        return bag

    def issued_bag(self, key: tuple[str, str, str, str]) -> Bag | None:
        """The bag of an attribute from one issuer, or ``None``."""
        found = self.issued.get(key)
        return None if found is None else Bag(key[2], found)

    def current(self, attribute_id: str, data_type: str) -> Bag:
        """The PDP-supplied current time/date/dateTime, the same instant for the whole request (§10.2.6)."""
        if self._now is None:
            self._now = datetime.now(UTC)
        value = current_value(self._now, attribute_id)
        found = (value,) if value.datatype == data_type else ()
        key = (ENVIRONMENT, attribute_id, data_type)
        self.values[key] = found
        bag = self.bags[key] = Bag(data_type, found)
        return bag

    def provide(self, key: tuple[str, str, str], issuer: str | None) -> Bag:
        """Ask the PDP's attribute provider for an attribute the request lacks; remembered for the request."""
        assert self.provider is not None
        bag = self.provider(key[0], key[1], key[2], issuer)
        if bag is None:
            bag = Bag(key[2], ())
        if issuer is None:
            self.values[key] = bag.values
            self.bags[key] = bag
        else:
            self.issued[(*key, issuer)] = bag.values
        return bag


_new_context = object.__new__

AttributeProvider = Callable[[str, str, str, "str | None"], "Bag | None"]
"""A Policy Information Point (§7.3.3): ``(category, attribute_id, data_type, issuer)`` → a bag, or ``None``."""


class StaticAttributeProvider:
    """Attributes the context handler adds to every request that lacks them (e.g. a role directory snapshot)."""

    def __init__(self, groups: tuple[Attributes, ...]) -> None:
        self._context = EvaluationContext(groups)

    def __call__(self, category: str, attribute_id: str, data_type: str, issuer: str | None) -> Bag | None:
        key = (category, attribute_id, data_type)
        if issuer is None:
            return self._context.bag(key)
        return self._context.issued_bag((*key, issuer))


def missing(category: str, attribute_id: str, data_type: str, issuer: str | None) -> Status:
    """The status of a ``MustBePresent`` designator whose bag is empty (§7.3.5)."""
    from .decision import STATUS_MISSING_ATTRIBUTE

    return Status(STATUS_MISSING_ATTRIBUTE, f"missing attribute {attribute_id} in category {category}",
                  (MissingAttributeDetail(category, attribute_id, data_type, issuer),))

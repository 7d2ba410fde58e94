"""The NGSI-LD Subscription data type (ETSI GS CIM 009 v1.8, clause 5.2.12), its NotificationParams (5.2.14) and
Endpoint (5.2.15), and the rules a client's subscription must follow (clause 5.8.1: create, 5.8.2: update).

A :class:`Subscription` keeps the client's JSON as given (``doc``, compact terms, with its ``@context``) and the
expanded, compiled parts the matcher needs (types, attribute IRIs, the ``q`` predicate, the geo-query). It is
re-parsed from ``doc`` when loaded, so the stored form is exactly what the client wrote and what ``GET`` answers.

Implemented members: ``id``, ``type``, ``subscriptionName``, ``description``, ``entities`` (``id``/``idPattern``/
``type``), ``watchedAttributes``, ``notificationTrigger``, ``timeInterval``, ``q``, ``geoQ``, ``expiresAt``,
``isActive``, ``throttling``, ``lang``, ``jsonldContext``, ``notification`` (``attributes``, ``format``
normalized/keyValues/concise, ``showChanges``, ``sysAttrs``, ``endpoint`` with ``uri`` http(s)/mqtt(s), ``accept``,
``receiverInfo``, ``notifierInfo``), and the read-only status (``status``, ``timesSent``, ``timesFailed``,
``lastNotification``, ``lastSuccess``, ``lastFailure``). Left out: ``scopeQ``, ``csf``, ``temporalQ``,
``datasetId``/``pick``/``omit`` selection in notifications, distributed subscriptions.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import Entity
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query import compile_predicate, parse_query
from sleutelbos.broker.temporal.instants import format_instant, instant, parse_instant
from sleutelbos.broker.validation import check_name, is_uri

TRIGGERS: Final = frozenset({"entityCreated", "entityUpdated", "entityDeleted", "attributeCreated",
                             "attributeUpdated", "attributeDeleted"})
#: Clause 5.2.12: without ``notificationTrigger`` a subscription fires on attributes created and updated.
DEFAULT_TRIGGERS: Final = frozenset({"attributeCreated", "attributeUpdated"})
FORMATS: Final = frozenset({"normalized", "keyValues", "concise"})
ACCEPTS: Final = frozenset({"application/json", "application/ld+json"})
SCHEMES: Final = frozenset({"http", "https", "mqtt", "mqtts"})
MQTT_VERSIONS: Final = frozenset({"mqtt3.1.1", "mqtt5.0"})
STATUS_MEMBERS: Final = frozenset({"status", "timesSent", "timesFailed", "lastNotification", "lastSuccess",
                                   "lastFailure", "createdAt", "modifiedAt"})
_TOP_MEMBERS: Final = frozenset({"id", "type", "subscriptionName", "description", "entities", "watchedAttributes",
                                 "notificationTrigger", "timeInterval", "q", "geoQ", "expiresAt", "isActive",
                                 "throttling", "lang", "jsonldContext", "notification", "@context", *STATUS_MEMBERS})
_NOTIFICATION_MEMBERS: Final = frozenset({"attributes", "format", "showChanges", "sysAttrs", "endpoint",
                                          *STATUS_MEMBERS})


@dataclass(frozen=True)
class EntitySelector:
    """Clause 5.2.33 EntitySelector: ``type`` (expanded) and optionally ``id`` or ``idPattern``."""

    type: str
    id: str | None = None
    id_pattern: re.Pattern[str] | None = None

    def selects(self, entity: Entity) -> bool:
        if self.type not in entity.get("type", ()):
            return False
        if self.id is not None:
            return bool(entity.get("id") == self.id)
        if self.id_pattern is not None:
            return self.id_pattern.search(entity.get("id", "")) is not None
        return True


@dataclass(frozen=True)
class Endpoint:
    """Clause 5.2.15: where notifications go; ``receiver_info`` are headers for the receiver, ``notifier_info``
    settings for the notifier (MQTT-Version, MQTT-QoS)."""

    uri: str
    accept: str = "application/json"
    receiver_info: tuple[tuple[str, str], ...] = ()
    notifier_info: tuple[tuple[str, str], ...] = ()

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme.lower()

    def notifier(self, key: str, default: str) -> str:
        for k, v in self.notifier_info:
            if k == key:
                return v
        return default


@dataclass
class Subscription:
    """A parsed subscription (see module docstring); ``doc`` is what the client sent, without status members."""

    tenant: str
    id: str
    doc: dict[str, Any]
    ctx: CompiledContext
    context: Any
    endpoint: Endpoint
    entities: list[EntitySelector] = field(default_factory=list)
    watched: frozenset[str] | None = None
    triggers: frozenset[str] = DEFAULT_TRIGGERS
    time_interval: float | None = None
    q: Any = None
    q_text: str | None = None
    geo: Any = None
    expires_at: str | None = None
    is_active: bool = True
    throttling: float = 0.0
    lang: str | None = None
    attributes: frozenset[str] | None = None
    format: str = "normalized"
    show_changes: bool = False
    sys_attrs: bool = False
    created_at: str = ""
    modified_at: str = ""
    times_sent: int = 0
    times_failed: int = 0
    last_notification: str | None = None
    last_success: str | None = None
    last_failure: str | None = None

    def expired(self, now: str | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or format_instant(datetime.now(UTC)))

    @property
    def status(self) -> str:
        """Clause 5.2.12: ``active``, ``paused`` (isActive false) or ``expired``."""
        if self.expired():
            return "expired"
        return "active" if self.is_active else "paused"

    @cached_property
    def render_key(self) -> tuple[Any, ...]:
        """The parameters a notified entity's rendering depends on: subscriptions with equal keys share it."""
        return (id(self.ctx), self.format, self.attributes, self.sys_attrs, self.lang, self.show_changes)

    @cached_property
    def render_pick(self) -> frozenset[str] | None:
        """The entity members a notification keeps (``notification.attributes`` plus the entity's own members);
        worked out once per subscription rather than once per notified entity."""
        if self.attributes is None:
            return None
        return frozenset({*self.attributes, "type", "createdAt", "modifiedAt", "scope"})

    @cached_property
    def selects_by_type(self) -> bool:
        """Whether being of one of ``entities``' types is all :meth:`selects` asks (no id, idPattern, q, geoQ): then
        the matcher's index by type has already answered it (decision 0610)."""
        return (bool(self.entities) and self.q is None and self.geo is None
                and all(s.id is None and s.id_pattern is None for s in self.entities))

    def selects(self, entity: Entity) -> bool:
        """Whether the entity is one this subscription is about (entities, q, geoQ) — not the trigger."""
        if self.entities and not any(s.selects(entity) for s in self.entities):
            return False
        if self.q is not None and not self.q(entity):
            return False
        return self.geo is None or bool(self.geo.matches(entity))

    def render(self) -> dict[str, Any]:
        """The subscription as ``GET`` answers it: the client's members plus the status (compact, clause 5.2.12)."""
        out = {k: v for k, v in self.doc.items() if k != "@context"}
        out["id"] = self.id
        out["type"] = "Subscription"
        out["isActive"] = self.is_active
        out["status"] = self.status
        notification = dict(out.get("notification", {}))
        notification["timesSent"] = self.times_sent
        notification["timesFailed"] = self.times_failed
        for key, value in (("lastNotification", self.last_notification), ("lastSuccess", self.last_success),
                           ("lastFailure", self.last_failure)):
            if value is not None:
                notification[key] = value
        if self.times_sent or self.times_failed:
            notification["status"] = "failed" if (self.last_failure or "") > (self.last_success or "") else "ok"
        out["notification"] = notification
        return out


def new_subscription_id() -> str:
    return f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"


def merge_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Clause 5.8.2 update subscription: the fragment's members replace the subscription's; ``notification`` and
    its ``endpoint`` are merged member by member; ``null`` removes a member."""
    if not isinstance(patch, dict):
        raise BadRequestData("a subscription fragment must be a JSON object")
    if "id" in patch and patch["id"] != doc.get("id"):
        raise BadRequestData("a subscription's id cannot be changed")
    out = dict(doc)
    for key, value in patch.items():
        if key in ("@context",):
            continue
        if key == "notification" and isinstance(value, dict) and isinstance(out.get("notification"), dict):
            merged = dict(out["notification"])
            for nkey, nvalue in value.items():
                if nkey == "endpoint" and isinstance(nvalue, dict) and isinstance(merged.get("endpoint"), dict):
                    merged["endpoint"] = {**merged["endpoint"], **nvalue}
                elif nvalue is None:
                    merged.pop(nkey, None)
                else:
                    merged[nkey] = nvalue
            out["notification"] = merged
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def parse_subscription(tenant: str, body: Any, ctx: CompiledContext, context: Any, *,
                       creating: bool = True) -> Subscription:
    """Check a subscription (clause 5.8.1) and compile it; BadRequestData says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequestData("a subscription must be a JSON object")
    unknown = set(body) - _TOP_MEMBERS
    if unknown:
        raise BadRequestData(f"unknown subscription member(s): {', '.join(sorted(unknown))}")
    if body.get("type") != "Subscription":
        raise BadRequestData(f"a subscription's type must be 'Subscription', got {body.get('type')!r}")
    sub_id = body.get("id") or new_subscription_id()
    if not is_uri(sub_id):
        raise BadRequestData(f"subscription id must be a URI, got {sub_id!r}")
    doc = {k: v for k, v in body.items() if k not in STATUS_MEMBERS and k != "@context"}
    if isinstance(doc.get("notification"), dict):
        doc["notification"] = {k: v for k, v in doc["notification"].items() if k not in STATUS_MEMBERS}
    doc["id"] = sub_id
    sub = Subscription(tenant=tenant, id=sub_id, doc=doc, ctx=ctx, context=context,
                       endpoint=_endpoint(body.get("notification")))
    sub.entities = _entities(body.get("entities"), ctx)
    if "watchedAttributes" in body:
        sub.watched = frozenset(_names(body["watchedAttributes"], "watchedAttributes", ctx))
    if not sub.entities and sub.watched is None:
        raise BadRequestData("a subscription needs entities or watchedAttributes (clause 5.2.12)")
    if "notificationTrigger" in body:
        triggers = body["notificationTrigger"]
        if not isinstance(triggers, list) or not triggers or not set(triggers) <= TRIGGERS:
            raise BadRequestData(f"notificationTrigger must be a non-empty list of {', '.join(sorted(TRIGGERS))}")
        sub.triggers = frozenset(triggers)
    if "timeInterval" in body:
        sub.time_interval = _number(body["timeInterval"], "timeInterval", positive=True)
        if sub.watched is not None or "throttling" in body:
            raise BadRequestData("timeInterval (periodic notification) cannot be combined with watchedAttributes "
                                 "or throttling (clause 5.2.12)")
    if "throttling" in body:
        sub.throttling = _number(body["throttling"], "throttling", positive=False)
    if "q" in body:
        if not isinstance(body["q"], str) or not body["q"]:
            raise BadRequestData("q must be a non-empty string")
        sub.q_text = body["q"]
        sub.q = compile_predicate(parse_query(unquote(body["q"]), ctx))
    if "geoQ" in body:
        sub.geo = _geo(body["geoQ"], ctx)
    if "expiresAt" in body:
        sub.expires_at = _datetime(body["expiresAt"], "expiresAt")
        if creating and sub.expired():
            raise BadRequestData(f"expiresAt {body['expiresAt']} is in the past")
    if "isActive" in body:
        if not isinstance(body["isActive"], bool):
            raise BadRequestData("isActive must be true or false")
        sub.is_active = body["isActive"]
    if "lang" in body:
        if not isinstance(body["lang"], str) or not body["lang"]:
            raise BadRequestData("lang must be a language tag string")
        sub.lang = body["lang"]
    for key in ("subscriptionName", "description"):
        if key in body and not isinstance(body[key], str):
            raise BadRequestData(f"{key} must be a string")
    if "jsonldContext" in body and not is_uri(body["jsonldContext"]):
        raise BadRequestData("jsonldContext must be a URI")
    notification = body["notification"]
    unknown = set(notification) - _NOTIFICATION_MEMBERS
    if unknown:
        raise BadRequestData(f"unknown notification member(s): {', '.join(sorted(unknown))}")
    if "attributes" in notification:
        sub.attributes = frozenset(_names(notification["attributes"], "notification.attributes", ctx))
    sub.format = notification.get("format", "normalized")
    if sub.format not in FORMATS:
        raise BadRequestData(f"notification.format must be one of {', '.join(sorted(FORMATS))}, got {sub.format!r}")
    for key in ("showChanges", "sysAttrs"):
        if key in notification and not isinstance(notification[key], bool):
            raise BadRequestData(f"notification.{key} must be true or false")
    sub.show_changes = bool(notification.get("showChanges", False))
    sub.sys_attrs = bool(notification.get("sysAttrs", False))
    return sub


def _endpoint(notification: Any) -> Endpoint:
    if not isinstance(notification, dict):
        raise BadRequestData("a subscription needs a notification object (clause 5.2.14)")
    endpoint = notification.get("endpoint")
    if not isinstance(endpoint, dict):
        raise BadRequestData("notification.endpoint is required (clause 5.2.15)")
    uri = endpoint.get("uri")
    if not isinstance(uri, str):
        raise BadRequestData("notification.endpoint.uri is required")
    parts = urlsplit(uri)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise BadRequestData(f"notification.endpoint.uri must be an http(s):// or mqtt(s):// URI with a host, "
                             f"got {uri!r}")
    if parts.scheme.lower().startswith("mqtt") and len(parts.path) <= 1:
        raise BadRequestData(f"an MQTT endpoint needs a topic: mqtt://[user:pass@]host[:port]/topic, got {uri!r}")
    accept = endpoint.get("accept", "application/json")
    if accept not in ACCEPTS:
        raise BadRequestData(f"notification.endpoint.accept must be one of {', '.join(sorted(ACCEPTS))}")
    receiver = _key_values(endpoint.get("receiverInfo"), "receiverInfo")
    notifier = _key_values(endpoint.get("notifierInfo"), "notifierInfo")
    for key, value in notifier:
        if key == "MQTT-Version" and value not in MQTT_VERSIONS:
            raise BadRequestData(f"notifierInfo MQTT-Version must be one of {', '.join(sorted(MQTT_VERSIONS))}")
        if key == "MQTT-QoS" and value not in ("0", "1", "2"):
            raise BadRequestData(f"notifierInfo MQTT-QoS must be 0, 1 or 2, got {value!r}")
    return Endpoint(uri=uri, accept=accept, receiver_info=receiver, notifier_info=notifier)


FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                             "te", "trailer", "expect", "proxy-connection"})
"""Headers that delimit or route an HTTP/1.1 request: a receiverInfo entry setting one could split a notification
into two requests at its receiver (or at a proxy in front of it), so it is refused."""


def _key_values(raw: Any, what: str) -> tuple[tuple[str, str], ...]:
    """Clause 5.2.22 KeyValuePair lists."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequestData(f"{what} must be a list of {{key, value}} objects")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), str):
            raise BadRequestData(f"{what} entries must be {{\"key\": string, \"value\": string}}")
        if not item["key"] or any(c in item["key"] for c in "\r\n:") or any(c in item["value"] for c in "\r\n"):
            raise BadRequestData(f"{what} key {item['key']!r} or its value is not a valid header")
        if what == "receiverInfo" and item["key"].lower() in FRAMING_HEADERS:
            raise BadRequestData(f"receiverInfo may not set {item['key']!r}: the notifier frames the request itself")
        out.append((item["key"], item["value"]))
    return tuple(out)


def _entities(raw: Any, ctx: CompiledContext) -> list[EntitySelector]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        raise BadRequestData("entities must be a non-empty list of entity selectors")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise BadRequestData("each entities[] selector needs a type (clause 5.2.33)")
        check_name(item["type"])
        pattern = None
        if item.get("id") is not None and not is_uri(item["id"]):
            raise BadRequestData(f"entities[].id must be a URI, got {item['id']!r}")
        if item.get("idPattern") is not None:
            try:
                pattern = re.compile(item["idPattern"])
            except (re.error, TypeError) as exc:
                raise BadRequestData(f"entities[].idPattern is not a valid regular expression: {exc}") from exc
        out.append(EntitySelector(type=ctx.expand_term(item["type"]), id=item.get("id"), id_pattern=pattern))
    return out


def _names(raw: Any, what: str, ctx: CompiledContext) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
        raise BadRequestData(f"{what} must be a non-empty list of attribute names")
    for name in raw:
        check_name(name)
    return [ctx.expand_term(n) for n in raw]


def _number(raw: Any, what: str, positive: bool) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise BadRequestData(f"{what} must be a number, got {raw!r}")
    if raw < 0 or (positive and raw == 0):
        raise BadRequestData(f"{what} must be {'greater than' if positive else 'at least'} 0, got {raw}")
    return float(raw)


def _datetime(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise BadRequestData(f"{what} must be an ISO 8601 date-time")
    try:
        parse_instant(raw)
    except ValueError as exc:
        raise BadRequestData(f"{what} is not an ISO 8601 date-time: {raw!r}") from exc
    return instant(raw) or raw


def _geo(raw: Any, ctx: CompiledContext) -> Any:
    """Clause 5.2.13 GeoQuery through the broker's geo module (same semantics as ``GET /entities`` geo-queries)."""
    if not isinstance(raw, dict):
        raise BadRequestData("geoQ must be an object with geometry, coordinates and georel")
    try:
        from sleutelbos.broker.query.geo import parse_geoquery  # the query package's, when it has one
    except ImportError:
        from sleutelbos.broker.geoquery import parse_geoquery

    coordinates = raw.get("coordinates")
    if not isinstance(coordinates, str):
        import orjson

        coordinates = orjson.dumps(coordinates).decode()
    return parse_geoquery(raw.get("georel"), raw.get("geometry"), coordinates, raw.get("geoproperty"), ctx)

"""The AuthZForce CE REST API (``/authzforce-ce/...``, REST API model ``authz/5``), so that FIWARE tools — Keyrock
posting policies, Wilma asking for decisions — work against sleutelbos unchanged.

Implemented resources (AuthZForce CE server 8–13, XML representations):

- ``/authzforce-ce/domains`` — ``POST`` a ``domainProperties`` (optional ``externalId``) → an Atom ``link`` to the
  new domain; ``GET`` (``?externalId=``) → ``resources`` with one link per domain.
- ``/authzforce-ce/domains/{id}`` — ``GET`` / ``DELETE`` → ``domain`` (properties and child resource links).
- ``/authzforce-ce/domains/{id}/properties`` — ``GET`` / ``PUT`` the ``domainProperties``.
- ``/authzforce-ce/domains/{id}/pap/policies`` — ``POST`` a ``PolicySet`` (or, beyond AuthZForce, a ``Policy``) →
  a link ``{policyId}/{version}``; ``GET`` → one link per policy id.
- ``/authzforce-ce/domains/{id}/pap/policies/{policyId}`` — ``GET`` → one link per version; ``DELETE`` all versions.
- ``/authzforce-ce/domains/{id}/pap/policies/{policyId}/{version}`` — ``GET`` / ``DELETE`` one version (``latest``
  names the highest).
- ``/authzforce-ce/domains/{id}/pap/pdp.properties`` — ``PUT`` a ``pdpPropertiesUpdate`` whose
  ``rootPolicyRefExpression`` selects the root (latest version unless ``Version`` is given); ``GET`` →
  ``pdpProperties`` with the applicable policies.
- ``/authzforce-ce/domains/{id}/pdp`` — ``POST`` a XACML request as ``application/xml``/``application/xacml+xml``
  or as JSON Profile ``application/xacml+json``; the response comes in the same form.

Errors: 400 for an invalid policy (nothing stored), a malformed PAP body or an invalid XACML request (for ``/pdp``
the body is a XACML response with status ``syntax-error``), 404 for an unknown domain or policy, 409 for a conflict
(an existing version, an ``externalId`` in use, a policy the root needs), 413 for a body over the limit, 415 for an
unsupported media type, 503 when the audit log cannot record a change. PAP error bodies are AuthZForce's
``<error><message>``. Left out: AuthZForce's JSON (Badgerfish) PAP representations, PDP ``feature`` switches
(accepted in ``pdpPropertiesUpdate`` and ignored) and the ``/pap/attribute.providers`` resource.

Who made a change is taken from the ``X-Nick-Name`` header that the PEP (Wilma's role) sets after authenticating the
caller; the PAP must only be reachable through the PEP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sleutelbos.core.protocols import Actor, AuditUnavailable
from sleutelbos.policy.service import (
    DomainView,
    PolicyConflict,
    PolicyRejected,
    PolicyService,
    UnknownDomain,
    UnknownPolicy,
)
from sleutelbos.policy.store import Domain, StoreConflict, StoredPolicy
from sleutelbos.policy.xacml import InvalidRequest, Pdp
from sleutelbos.policy.xacml.status import STATUS_SYNTAX_ERROR, XacmlError

AZ = "http://authzforce.github.io/rest-api-model/xmlns/authz/5"
ATOM = "http://www.w3.org/2005/Atom"
XACML = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"
PDP_RELATION = "http://docs.oasis-open.org/ns/xacml/relation/pdp"
PREFIX = "/authzforce-ce"

_XML_TYPES = (b"application/xml", b"application/xacml+xml", b"text/xml")
_JSON_TYPES = (b"application/xacml+json", b"application/json")

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class BadBody(Exception):
    """A PAP request body that is not the representation the resource takes."""


# --- representations ------------------------------------------------------------------------------------------


def _xml(element: etree._Element, status: int = 200, media_type: str = "application/xml") -> Response:
    return Response(etree.tostring(element, xml_declaration=True, encoding="UTF-8", standalone=True),
                    status_code=status, media_type=media_type)


def error_body(message: str) -> bytes:
    """AuthZForce's error representation, ``<error><message>…</message></error>`` (``application/xml``)."""
    error = etree.Element(f"{{{AZ}}}error", nsmap={None: AZ})
    etree.SubElement(error, f"{{{AZ}}}message").text = message
    return etree.tostring(error, xml_declaration=True, encoding="UTF-8", standalone=True)


def _error(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/xml")


def _link(href: str, title: str | None = None, rel: str = "item") -> etree._Element:
    link = etree.Element(f"{{{ATOM}}}link", nsmap={None: ATOM})
    link.set("rel", rel)
    link.set("href", href)
    link.set("title", title if title is not None else href)
    return link


def _resources(hrefs: list[tuple[str, str]]) -> etree._Element:
    resources = etree.Element(f"{{{AZ}}}resources", nsmap={None: AZ, "atom": ATOM})
    for href, title in hrefs:
        link = etree.SubElement(resources, f"{{{ATOM}}}link")
        link.set("rel", "item")
        link.set("href", href)
        link.set("title", title)
    return resources


def _properties(tag: str, domain: Domain) -> etree._Element:
    properties = etree.Element(f"{{{AZ}}}{tag}", nsmap={None: AZ})
    if domain.external_id is not None:
        properties.set("externalId", domain.external_id)
    if domain.description:
        etree.SubElement(properties, f"{{{AZ}}}description").text = domain.description
    return properties


def _domain(domain: Domain) -> etree._Element:
    element = etree.Element(f"{{{AZ}}}domain", nsmap={None: AZ, "atom": ATOM})
    properties = _properties("properties", domain)
    element.append(properties)
    children = etree.SubElement(element, f"{{{AZ}}}childResources")
    for href, title, rel in (("/properties", "Domain properties", "item"), ("/pap", "Policy Administration Point",
                             "item"), ("/pdp", "Policy Decision Point", PDP_RELATION)):
        link = etree.SubElement(children, f"{{{ATOM}}}link")
        link.set("rel", rel)
        link.set("href", href)
        link.set("title", title)
    return element


def _pdp_properties(view: DomainView) -> etree._Element:
    domain = view.domain
    element = etree.Element(f"{{{AZ}}}pdpProperties", nsmap={None: AZ})
    element.set("lastModifiedTime", domain.updated_at.isoformat().replace("+00:00", "Z"))
    root_ref = etree.SubElement(element, f"{{{AZ}}}rootPolicyRefExpression")
    root_ref.text = domain.root_policy_id
    if domain.root_policy_version is not None:
        root_ref.set("Version", domain.root_policy_version)
    applicable = etree.SubElement(element, f"{{{AZ}}}applicablePolicies")
    for position, policy in enumerate(view.applicable):
        ref = etree.SubElement(applicable, f"{{{AZ}}}{'rootPolicyRef' if position == 0 else 'refPolicyRef'}")
        ref.set("Version", policy.version)
        ref.text = policy.policy_id
    return element


def _parse(body: bytes, expected: str) -> etree._Element:
    try:
        element = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadBody(f"not well-formed XML: {exc}") from exc
    if element.getroottree().docinfo.doctype:
        raise BadBody("a DOCTYPE is not allowed")
    if element.tag != f"{{{AZ}}}{expected}":
        raise BadBody(f"expected <{expected}> in namespace {AZ}, got <{etree.QName(element).localname}>")
    return element


def _domain_properties(body: bytes) -> tuple[str | None, str | None]:
    element = _parse(body, "domainProperties")
    description = element.find(f"{{{AZ}}}description")
    external_id = element.get("externalId")
    if external_id is not None and not external_id.strip():
        raise BadBody("externalId must not be empty")
    return external_id, (description.text if description is not None else None)


def _root_reference(body: bytes) -> tuple[str, str | None]:
    element = _parse(body, "pdpPropertiesUpdate")
    reference = element.find(f"{{{AZ}}}rootPolicyRefExpression")
    if reference is None or not (reference.text or "").strip():
        raise BadBody("pdpPropertiesUpdate needs a rootPolicyRefExpression naming a policy")
    return reference.text.strip(), reference.get("Version")


def syntax_error_body(message: str, json: bool) -> bytes:
    """A XACML response for a request that could not be evaluated at all (§7.19.3: status syntax-error)."""
    if json:
        import orjson

        body = {"Response": [{"Decision": "Indeterminate", "Status": {
            "StatusCode": {"Value": STATUS_SYNTAX_ERROR}, "StatusMessage": message}}]}
        return orjson.dumps(body)
    response = etree.Element(f"{{{XACML}}}Response", nsmap={None: XACML})
    result = etree.SubElement(response, f"{{{XACML}}}Result")
    etree.SubElement(result, f"{{{XACML}}}Decision").text = "Indeterminate"
    status = etree.SubElement(result, f"{{{XACML}}}Status")
    etree.SubElement(status, f"{{{XACML}}}StatusCode").set("Value", STATUS_SYNTAX_ERROR)
    etree.SubElement(status, f"{{{XACML}}}StatusMessage").text = message
    return etree.tostring(response, xml_declaration=True, encoding="UTF-8", standalone=True)


UNSUPPORTED_MEDIA_TYPE = "the PDP takes application/xml, application/xacml+xml or application/xacml+json"


def pdp_media_type(content_type: bytes) -> bytes | None:
    """The media type of a ``Content-Type`` header value if the PDP takes it (lower case, parameters dropped)."""
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type if media_type in _XML_TYPES or media_type in _JSON_TYPES else None


def decide_body(decider: Pdp, media_type: bytes, body: bytes) -> tuple[int, bytes, bytes]:
    """One decision on a request body: ``(status, content type, response body)``.

    The one place where the decision endpoint turns request bytes into response bytes, shared by the ASGI endpoint
    and the HTTP fast path (:mod:`.fast_http`), so both answer alike: the response in the request's form, or 400
    with a XACML ``syntax-error`` response for a request that cannot be evaluated. ``media_type`` is one that
    :func:`pdp_media_type` returned.
    """
    if media_type in _JSON_TYPES:
        try:
            return 200, b"application/xacml+json", decider.decide_json(body)
        except (InvalidRequest, XacmlError) as exc:
            return 400, b"application/xacml+json", syntax_error_body(exc.detail, True)
    answer_type = media_type if media_type == b"application/xacml+xml" else b"application/xml"
    try:
        return 200, answer_type, decider.decide_xml(body)
    except (InvalidRequest, XacmlError) as exc:
        return 400, b"application/xml", syntax_error_body(exc.detail, False)


# --- the routes -----------------------------------------------------------------------------------------------


def actor_of(request: Request) -> Actor:
    principal = request.headers.get("x-nick-name") or "unauthenticated"
    organisation = (request.headers.get("x-organizations") or "").split(",")[0].strip() or None
    return Actor(principal=principal, organisation=organisation)


Handler = Callable[[Request], Awaitable[Response]]


def routes(service: PolicyService, max_body_bytes: int) -> list[BaseRoute]:
    """The AuthZForce routes over ``service``, with full paths."""

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise _TooLarge()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
        return b"".join(chunks)

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _TooLarge:
                return _error(413, f"request body over {max_body_bytes} bytes")
            except (UnknownDomain, UnknownPolicy) as exc:
                return _error(404, exc.detail)
            except (PolicyRejected, BadBody) as exc:
                return _error(400, getattr(exc, "detail", None) or str(exc))
            except (PolicyConflict, StoreConflict) as exc:
                return _error(409, exc.detail)
            except AuditUnavailable as exc:
                return _error(503, f"the change was not made: {exc.detail}")

        return endpoint

    def domain_id(request: Request) -> str:
        return request.path_params["domain_id"]

    async def domains(request: Request) -> Response:
        if request.method == "POST":
            external_id, description = _domain_properties(await body_of(request))
            domain = await service.create_domain(actor_of(request), external_id, description)
            return _xml(_link(domain.domain_id))
        found = await service.domains(request.query_params.get("externalId"))
        return _xml(_resources([(d.domain_id, d.domain_id) for d in found]))

    async def domain(request: Request) -> Response:
        if request.method == "DELETE":
            return _xml(_domain(await service.delete_domain(actor_of(request), domain_id(request))))
        return _xml(_domain(await service.domain(domain_id(request))))

    async def properties(request: Request) -> Response:
        if request.method == "PUT":
            external_id, description = _domain_properties(await body_of(request))
            updated = await service.update_properties(actor_of(request), domain_id(request), external_id,
                                                      description)
            return _xml(_properties("domainProperties", updated))
        return _xml(_properties("domainProperties", await service.domain(domain_id(request))))

    async def pap(request: Request) -> Response:
        await service.domain(domain_id(request))
        return _xml(_resources([("policies", "Policies"), ("pdp.properties", "PDP properties")]))

    async def policies(request: Request) -> Response:
        if request.method == "POST":
            stored = await service.add_policy(actor_of(request), domain_id(request), await body_of(request))
            return _xml(_link(f"{quote(stored.policy_id, safe='')}/{stored.version}"))
        ids = await service.policy_ids(domain_id(request))
        return _xml(_resources([(quote(i, safe=""), i) for i in ids]))

    def version_links(stored: list[StoredPolicy]) -> Response:
        return _xml(_resources([(p.version, p.version) for p in reversed(stored)]))

    async def policy(request: Request) -> Response:
        policy_id = request.path_params["policy_id"]
        if request.method == "DELETE":
            return version_links(await service.delete_policy(actor_of(request), domain_id(request), policy_id))
        return version_links(await service.versions(domain_id(request), policy_id))

    async def policy_version(request: Request) -> Response:
        policy_id, version = request.path_params["policy_id"], request.path_params["version"]
        if request.method == "DELETE":
            removed = await service.delete_policy(actor_of(request), domain_id(request), policy_id, version)
            return Response(removed[0].document, media_type="application/xml")
        stored = await service.policy(domain_id(request), policy_id, version)
        return Response(stored.document, media_type="application/xml")

    async def pdp_properties(request: Request) -> Response:
        if request.method == "PUT":
            policy_id, version = _root_reference(await body_of(request))
            view = await service.set_root(actor_of(request), domain_id(request), policy_id, version)
            return _xml(_pdp_properties(view))
        return _xml(_pdp_properties(await service.view(domain_id(request))))

    pdp = decision_endpoint(service, max_body_bytes)

    base = PREFIX + "/domains"
    return [
        # the decision route first: Starlette tries routes in order, and this is the one called all the time
        Route(base + "/{domain_id}/pdp", _AsgiEndpoint(pdp), methods=["POST"]),
        Route(base, guarded(domains), methods=["GET", "POST"]),
        Route(base + "/{domain_id}", guarded(domain), methods=["GET", "DELETE"]),
        Route(base + "/{domain_id}/properties", guarded(properties), methods=["GET", "PUT"]),
        Route(base + "/{domain_id}/pap", guarded(pap), methods=["GET"]),
        Route(base + "/{domain_id}/pap/policies", guarded(policies), methods=["GET", "POST"]),
        Route(base + "/{domain_id}/pap/policies/{policy_id}", guarded(policy), methods=["GET", "DELETE"]),
        Route(base + "/{domain_id}/pap/policies/{policy_id}/{version}", guarded(policy_version),
              methods=["GET", "DELETE"]),
        Route(base + "/{domain_id}/pap/pdp.properties", guarded(pdp_properties), methods=["GET", "PUT"]),
    ]



def decision_endpoint(service: PolicyService, max_body_bytes: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """``POST /authzforce-ce/domains/{id}/pdp`` as a plain ASGI app (reads ``scope["path_params"]["domain_id"]``).

    It is the hot path, so no Request/Response objects and no await beyond reading the body and the two sends;
    :class:`DecisionFastPath` calls it without Starlette's router and middleware.
    """

    async def pdp(scope: Scope, receive: Receive, send: Send) -> None:
        """The decision endpoint as a plain ASGI app: it is the hot path, so no Request/Response objects."""
        media_type: bytes | None = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                media_type = pdp_media_type(value)
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        if media_type is None:
            await _error(415, UNSUPPORTED_MEDIA_TYPE)(scope, receive, send)
            return
        decider = service.cached_pdp(scope["path_params"]["domain_id"])
        if decider is None:
            try:
                decider = await service.pdp(scope["path_params"]["domain_id"])
            except UnknownDomain as exc:
                await _error(404, exc.detail)(scope, receive, send)
                return
        if declared is not None and declared > max_body_bytes:
            await _error(413, f"request body over {max_body_bytes} bytes")(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body_bytes:
                await _error(413, f"request body over {max_body_bytes} bytes")(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        status, answer_type, answer = decide_body(decider, media_type, chunks[0] if len(chunks) == 1
                                                  else b"".join(chunks))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", answer_type), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    return pdp


class _TooLarge(Exception):
    pass


class _AsgiEndpoint:
    """Makes Starlette's ``Route`` call a function as a raw ASGI app (it wraps plain functions in a Request)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


_DECISION_PREFIX = PREFIX + "/domains/"


class DecisionFastPath:
    """An ASGI wrapper that sends ``POST /authzforce-ce/domains/{id}/pdp`` straight to :func:`decision_endpoint`.

    Starlette would otherwise pass every decision through its error and exception middleware and try the route
    patterns in turn; the decision endpoint handles its own errors, so a prefix/suffix test on the path is all it
    needs. Everything else (the PAP, ``/health``, lifespan) goes to the wrapped application unchanged.

    It also carries what the HTTP protocol of ``sleutelbos serve policy`` (:class:`.fast_http.PdpHttpProtocol`)
    needs to answer decisions without ASGI at all: the service, the body limit and the read timeout.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 decide: Callable[[Scope, Receive, Send], Awaitable[None]], *,
                 service: PolicyService | None = None, max_body_bytes: int = 0,
                 read_timeout_s: float = 30.0) -> None:
        self.app = app
        self.decide = decide
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_DECISION_PREFIX) and path.endswith("/pdp"):
                domain_id = path[len(_DECISION_PREFIX):-4]
                if domain_id and "/" not in domain_id:
                    scope["path_params"] = {"domain_id": domain_id}
                    await self.decide(scope, receive, send)
                    return
        await self.app(scope, receive, send)

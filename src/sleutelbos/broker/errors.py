"""NGSI-LD error types (ETSI GS CIM 009 v1.8, clause 5.5.2, table 5.5.2-1) and their ProblemDetails body (RFC 9457).

Each error is a :class:`~sleutelbos.core.errors.SleutelbosError` whose ``detail`` says what was wrong; the HTTP layer
renders it as ``application/problem+json`` with ``type`` ``https://uri.etsi.org/ngsi-ld/errors/<Name>``, the
clause's status code, a ``title`` and the ``detail``. Batch operations put the same body in their ``errors`` list.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sleutelbos.core.errors import SleutelbosError

ERRORS_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiLdError(SleutelbosError):
    """Base of the ETSI error types; subclasses fix the type name, title and HTTP status."""

    type_name: ClassVar[str] = "InternalError"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERRORS_BASE + self.type_name

    def problem(self) -> dict[str, Any]:
        """The ProblemDetails object (RFC 9457) the specification prescribes."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class InvalidRequest(NgsiLdError):
    """The request is syntactically wrong: malformed JSON, wrong content type of a fragment, unknown parameter."""

    type_name = "InvalidRequest"
    title = "Invalid request"
    status = 400


class BadRequestData(NgsiLdError):
    """The request is well-formed but its data is wrong: invalid id, attribute without type, bad q, bad GeoJSON."""

    type_name = "BadRequestData"
    title = "Bad request data"
    status = 400


class AlreadyExists(NgsiLdError):
    type_name = "AlreadyExists"
    title = "Already exists"
    status = 409


class OperationNotSupported(NgsiLdError):
    type_name = "OperationNotSupported"
    title = "Operation not supported"
    status = 422


class ResourceNotFound(NgsiLdError):
    type_name = "ResourceNotFound"
    title = "Resource not found"
    status = 404


class InternalError(NgsiLdError):
    type_name = "InternalError"
    title = "Internal error"
    status = 500


class TooComplexQuery(NgsiLdError):
    type_name = "TooComplexQuery"
    title = "Too complex query"
    status = 403


class TooManyResults(NgsiLdError):
    type_name = "TooManyResults"
    title = "Too many results"
    status = 403


class LdContextNotAvailable(NgsiLdError):
    """A remote @context could not be retrieved (clause 5.5.2: 503)."""

    type_name = "LdContextNotAvailable"
    title = "JSON-LD @context not available"
    status = 503


class NoMultiTenantSupport(NgsiLdError):
    type_name = "NoMultiTenantSupport"
    title = "No multi-tenant support"
    status = 501


class NonexistentTenant(NgsiLdError):
    type_name = "NonexistentTenant"
    title = "Nonexistent tenant"
    status = 404


class NotAcceptable(NgsiLdError):
    """HTTP 406 (clause 6.3.4): the Accept header names no media type the broker can produce."""

    type_name = "InvalidRequest"
    title = "Not acceptable"
    status = 406


class UnsupportedMediaType(NgsiLdError):
    """HTTP 415 (clause 6.3.4): the request body's Content-Type is not JSON or JSON-LD."""

    type_name = "InvalidRequest"
    title = "Unsupported media type"
    status = 415


class PayloadTooLarge(NgsiLdError):
    """HTTP 413: the body is over ``max_body_bytes``; the broker does not read further."""

    type_name = "BadRequestData"
    title = "Payload too large"
    status = 413


class MethodNotAllowed(NgsiLdError):
    type_name = "OperationNotSupported"
    title = "Method not allowed"
    status = 405

"""XACML 3.0 status codes (core spec §B.8) and the typed errors that carry them.

An expression that cannot be evaluated makes its rule or policy *Indeterminate*; the status code in the response
says why. Values and functions raise the two errors below, and the evaluator turns them into Indeterminate results
with the error's ``status_code``. Errors found while a policy is *loaded* (an unknown function id, arguments of the
wrong type) are not status codes at all: the policy is rejected before it is ever used.
"""

from __future__ import annotations

from typing import ClassVar

from sleutelbos.core.errors import SleutelbosError

STATUS_OK = "urn:oasis:names:tc:xacml:1.0:status:ok"
STATUS_MISSING_ATTRIBUTE = "urn:oasis:names:tc:xacml:1.0:status:missing-attribute"
STATUS_SYNTAX_ERROR = "urn:oasis:names:tc:xacml:1.0:status:syntax-error"
STATUS_PROCESSING_ERROR = "urn:oasis:names:tc:xacml:1.0:status:processing-error"


class XacmlError(SleutelbosError):
    """An error that the PDP reports as an XACML status code."""

    status_code: ClassVar[str] = STATUS_PROCESSING_ERROR


class XacmlSyntaxError(XacmlError):
    """A value's text is not in the lexical space of its data type (status ``syntax-error``)."""

    status_code: ClassVar[str] = STATUS_SYNTAX_ERROR


class XacmlProcessingError(XacmlError):
    """A function could not compute its result: division by zero, ``one-and-only`` on a bag whose size is not 1,
    a substring index out of bounds … (status ``processing-error``)."""

    status_code: ClassVar[str] = STATUS_PROCESSING_ERROR


class UnknownFunction(SleutelbosError):
    """A ``FunctionId`` (or ``MatchId``) this PDP does not implement; the policy that names it is invalid."""


class UnknownDataType(SleutelbosError):
    """A ``DataType`` this PDP does not implement; the policy or request that names it is invalid."""


class FunctionSignatureError(SleutelbosError):
    """A function applied to arguments of the wrong number or type; found when the policy is loaded."""

"""Errors raised when a policy or a request is loaded, before any decision is made.

XACML 3.0 §5 (policy schema) and §7.19.3 (syntax errors): a policy that is not well formed or not well typed is
rejected when it is loaded (:class:`InvalidPolicy`), and a request that is not a valid XACML request is refused
before evaluation (:class:`InvalidRequest`; the HTTP layer answers it with ``status:syntax-error`` / 400).
Errors *during* evaluation are never raised to the caller: they become ``Indeterminate`` decisions with a status.
"""

from __future__ import annotations

from sleutelbos.core.errors import SleutelbosError


class InvalidPolicy(SleutelbosError):
    """The policy is rejected at load time; ``detail`` names the element and the reason."""


class InvalidRequest(SleutelbosError):
    """The request is not a valid XACML request (XML schema or JSON Profile); nothing was evaluated."""


class InvalidResponse(SleutelbosError):
    """A XACML response (from a remote PDP) is not valid XML/JSON Profile; a PEP must then deny (fail closed)."""

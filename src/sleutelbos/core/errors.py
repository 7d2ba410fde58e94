"""The root of every typed error in sleutelbos.

Each component derives its own errors from :class:`SleutelbosError`; the HTTP layers map them to the standard
error bodies of their protocol (NGSI-LD ProblemDetails, OAuth 2.0 error responses, XACML status codes).
"""


class SleutelbosError(Exception):
    """Base class: carries a human-readable ``detail`` that says what was wrong."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigurationError(SleutelbosError):
    """A setting is missing or contradicts another; raised at start-up, never silently defaulted."""

"""Identity manager: organisations, users, roles, applications; OAuth 2.0 / OpenID Connect tokens signed by custody
keys; Keyrock-compatible ``/user``. Other components use :class:`IdentityService` (in process) and
:class:`TokenVerifier` (any resource server, e.g. the PEP) — never the store or the routes."""

from sleutelbos.identity.errors import IdentityError, InvalidToken
from sleutelbos.identity.models import ClientType, OrganisationKind
from sleutelbos.identity.revocation_feed import FeedEntry, RevocationFeed
from sleutelbos.identity.service import IdentityConfig, IdentityService
from sleutelbos.identity.verifier import TokenVerifier

__all__ = [
    "ClientType",
    "FeedEntry",
    "IdentityConfig",
    "IdentityError",
    "IdentityService",
    "InvalidToken",
    "OrganisationKind",
    "RevocationFeed",
    "TokenVerifier",
]

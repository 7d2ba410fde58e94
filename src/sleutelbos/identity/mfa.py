"""TOTP second factor (RFC 6238) through ``pyotp``.

Required for operator administrators, approvers and break-glass officers (``MFA_REQUIRED_OPERATOR_ROLES``). A code
is accepted for the current 30-second step and one step either side (clock drift), and each step at most once per
user (the store's ``claim_totp_step``), so an observed code cannot be replayed.
"""

from __future__ import annotations

import time

import pyotp

from sleutelbos.identity.models import MFA_REQUIRED_OPERATOR_ROLES, Membership, Organisation, OrganisationKind

ISSUER = "sleutelbos"
STEP_SECONDS = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step ``code`` belongs to (within ±1 step of ``at``), or None when it matches none."""
    if not (isinstance(code, str) and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if at is None else at
    for offset in (0, -1, 1):
        when = now + offset * STEP_SECONDS
        if pyotp.utils.strings_equal(totp.at(when), code):
            return int(when // STEP_SECONDS)
    return None


def mfa_required(memberships: list[Membership], organisations: dict[str, Organisation]) -> bool:
    """True when any membership is a TOTP-mandatory role in an operator organisation."""
    for m in memberships:
        org = organisations.get(m.organisation_id)
        if org is not None and org.kind is OrganisationKind.OPERATOR and m.role in MFA_REQUIRED_OPERATOR_ROLES:
            return True
    return False

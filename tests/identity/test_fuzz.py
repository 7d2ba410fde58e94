"""Property tests: whatever bytes arrive as a token or a form, the answer is a typed refusal — never a crash,
never an accepted token."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleutelbos.identity.errors import IdentityError, InvalidToken
from sleutelbos.identity.http import parse_params
from sleutelbos.identity.jose import parse_compact
from sleutelbos.identity.verifier import TokenVerifier

from .conftest import ISSUER

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def seg(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_refused_as_a_token(text: str) -> None:
    with pytest.raises(InvalidToken):
        parse_compact(text)


@FUZZ
@given(header=json_values, claims=json_values, signature=st.binary(max_size=80))
def test_structured_garbage_never_verifies(header, claims, signature) -> None:
    verifier = TokenVerifier(issuer=ISSUER, jwks="unused", feed=None)
    token = f"{seg(orjson.dumps(header))}.{seg(orjson.dumps(claims))}.{seg(signature)}"
    with pytest.raises(InvalidToken):
        verifier.verify(token)


@FUZZ
@given(st.text(max_size=400))
def test_any_form_body_parses_or_is_refused_precisely(raw: str) -> None:
    try:
        params = parse_params(raw)
    except IdentityError as exc:
        assert exc.error == "invalid_request" and exc.detail
    else:
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in params.items())


@FUZZ
@given(header=st.binary(max_size=120), claims=st.binary(max_size=120), signature=st.binary(max_size=80))
def test_arbitrary_segment_bytes_never_verify(header: bytes, claims: bytes, signature: bytes) -> None:
    verifier = TokenVerifier(issuer=ISSUER, jwks="unused", feed=None)
    for h in (header, b'{"alg":"ES256","kid":"k","n":' + header + b"}"):
        with pytest.raises(InvalidToken):
            verifier.verify(f"{seg(h)}.{seg(claims)}.{seg(signature)}")

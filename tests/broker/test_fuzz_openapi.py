"""Fuzz the API from its served OpenAPI description (schemathesis): no input may cause a server error.

The broker runs as a real ``sleutelbos serve broker`` subprocess on SQLite, seeded with a few entities so that
generated ids sometimes hit; the number of examples per operation is bounded so the run stays well under a minute.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sleutelbos.broker.openapi import openapi_document
from tests.broker.test_durability import _start
from tests.conftest import free_port

schema = schemathesis.openapi.from_dict(openapi_document())
# The coverage phase alone sends several hundred boundary cases per operation (minutes on this machine); the
# fuzzing and examples phases, bounded below, keep the run under a minute.
schema.config.phases.coverage.enabled = False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    # generated @context URLs are fetched (and fail): keep each attempt short
    proc = _start(f"sqlite:///{tmp / 'broker.sqlite'}", port, tmp, SLEUTELBOS_CONTEXT_FETCH_TIMEOUT_S="0.3")
    url = f"http://127.0.0.1:{port}"
    seed = [{"id": f"urn:ngsi-ld:Device:{i}", "type": "Device", "power": {"type": "Property", "value": i}}
            for i in range(3)]
    httpx.post(f"{url}/ngsi-ld/v1/entityOperations/upsert", json=seed, timeout=10).raise_for_status()
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_served_openapi_is_the_documented_one(served: str) -> None:
    r = httpx.get(f"{served}/ngsi-ld/v1/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json() == openapi_document()
    assert len(r.json()["paths"]) == 16


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error(case: schemathesis.Case, served: str) -> None:
    response = case.call(base_url=served, timeout=10)
    where = f"{case.method} {case.formatted_path} {case.query}: {response.status_code} {response.text[:300]!r}"
    problem = None
    if response.status_code >= 400:
        assert response.headers.get("content-type") == ["application/problem+json"], where
        problem = response.json()
    # 503 LdContextNotAvailable is the specified answer when a generated @context URL cannot be fetched
    unavailable = response.status_code == 503 and problem["type"].endswith("/LdContextNotAvailable")
    assert response.status_code < 500 or unavailable, where
    if problem is not None:
        assert problem["detail"], where

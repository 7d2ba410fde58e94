"""Every OASIS XACML 3.0 conformance test (mandatory, others, optional) in XML and in the JSON Profile.

One pytest case per test id and format; a mismatch fails the case. The pass count per category is printed at the
end of the session (see ``conftest.py``); ``python tests/policy/conformance_suite.py`` prints it without pytest.
"""

from __future__ import annotations

import pytest
from conformance_suite import SUITE, Case, discover, run

CASES = discover()


def test_suite_is_present() -> None:
    assert SUITE.is_dir(), f"the conformance suite is missing: {SUITE}"
    assert len([c for c in CASES if c.group == "mandatory"]) >= 600


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conformance(case: Case, conformance_tally) -> None:  # type: ignore[no-untyped-def]
    conformance_tally.total[(case.group, case.fmt)] += 1
    run(case)
    conformance_tally.passed[(case.group, case.fmt)] += 1

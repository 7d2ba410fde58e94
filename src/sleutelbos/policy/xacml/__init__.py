"""A XACML 3.0 policy decision engine: load policies, build a PDP, decide requests in XML or JSON.

Usage::

    from sleutelbos.policy.xacml import Pdp, load_policy

    root = load_policy(root_xml)                      # validated; InvalidPolicy names the element and the reason
    pdp = Pdp(root, [load_policy(x) for x in others]) # resolves Policy(Set)IdReference; rejects undefined/cycles
    response_xml = pdp.decide_xml(request_xml)        # InvalidRequest if the request is not valid XACML
    response_json = pdp.decide_json(request_json)     # JSON Profile of XACML 3.0 (application/xacml+json)

A :class:`Pdp` is immutable once built: to change policies, build a new one and swap the reference (an atomic
assignment), so that no decision ever sees half a policy set.

Implemented: XACML 3.0 core (policies, policy sets, rules, targets, conditions, variables, references with version
matching, obligations and advice, every standard combining algorithm including the legacy 1.0/1.1 ones, extended
Indeterminate, ``MissingAttributeDetail``, ``IncludeInResult``, ``ReturnPolicyIdList``), the functions and data types
of Appendix A (:mod:`.functions`), the JSON Profile, and the Multiple Decision Profile's repeated categories and
``MultiRequests``, XPath 1.0 ``AttributeSelector`` and ``xpath-node-*`` functions, and an attribute provider hook
(``Pdp(..., attribute_provider=...)``) for attributes a request lacks. Left out: the Administration/Delegation
profile, ``CombinerParameters``.
"""

from __future__ import annotations

import dataclasses

from .compiler import Compiler, gc_paused
from .context import Attribute, AttributeProvider, Attributes, Request, Response, Result, StaticAttributeProvider
from .decision import AttributeAssignment, MissingAttributeDetail, Obligation, PolicyIdentifier, Status
from .errors import InvalidPolicy, InvalidRequest, InvalidResponse
from .json_profile import parse_request_json, parse_response_json, render_request_json, render_response_json
from .model import Policy, PolicyDocument, PolicySet
from .pdp import Pdp
from .policy_xml import load_policy_document
from .request_xml import parse_request_xml, parse_response_xml, render_request_xml, render_response_xml

__all__ = [
    "Attribute",
    "AttributeAssignment",
    "AttributeProvider",
    "Attributes",
    "InvalidPolicy",
    "InvalidRequest",
    "InvalidResponse",
    "MissingAttributeDetail",
    "Obligation",
    "Pdp",
    "Policy",
    "PolicyDocument",
    "PolicyIdentifier",
    "PolicySet",
    "Request",
    "Response",
    "Result",
    "StaticAttributeProvider",
    "Status",
    "load_policy",
    "parse_request_json",
    "parse_request_xml",
    "parse_response_json",
    "parse_response_xml",
    "render_request_json",
    "render_request_xml",
    "render_response_json",
    "render_response_xml",
]


def load_policy(xml: bytes) -> PolicyDocument:
    """Parse and validate one ``<Policy>`` or ``<PolicySet>`` document.

    Everything that can be checked without the policies it references is checked here: XML shape, ids, datatypes
    and values, function ids, argument types and counts, variable references and their cycles, constant
    expressions that can only fail. References are checked when a :class:`Pdp` is built.
    """
    with gc_paused():
        document = load_policy_document(xml)
        compiler = Compiler()
        if isinstance(document.root, PolicySet):
            compiled = compiler.policy_set(document.root)
        else:
            compiled = compiler.policy(document.root)
    return dataclasses.replace(document, compiled=None if document.references() else compiled)

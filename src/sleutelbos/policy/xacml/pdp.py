"""The Policy Decision Point: a root policy, the policies it references, compiled once; decisions on requests.

Building a :class:`Pdp` resolves every ``PolicyIdReference``/``PolicySetIdReference`` of the root (transitively)
against the repository with the version constraints of §5.13 (``Version``, ``EarliestVersion``,
``LatestVersion``; ``*`` matches one version component, ``+`` one or more; among the matches the latest version is
taken), and rejects an undefined or circular reference with :class:`.errors.InvalidPolicy`. A referenced policy is
compiled once however often it is referenced.

:meth:`Pdp.decide` never raises: whatever goes wrong while evaluating becomes an Indeterminate result (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .compiler import Compiler, Node, gc_paused
from .context import AttributeProvider, Attributes, EvaluationContext, Request, Response, Result
from .decision import (
    DECISION_NAMES,
    DENY,
    INDETERMINATE_DP,
    NOT_APPLICABLE,
    PERMIT,
    STATUS_PROCESSING_ERROR,
    Evaluation,
    Status,
)
from .errors import InvalidPolicy
from .json_profile import parse_request_json, render_response_json, simple_request_values
from .model import IdReference, PolicyDocument, PolicySet
from .request_xml import parse_request_xml, render_response_xml


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _pattern(constraint: str) -> re.Pattern[str]:
    parts = []
    for part in constraint.split("."):
        parts.append(r"\d+" if part == "*" else r"\d+(\.\d+)*" if part == "+" else re.escape(part))
    return re.compile(r"\.".join(parts) + r"\Z")


def version_matches(reference: IdReference, version: str) -> bool:
    """§5.13: does ``version`` satisfy the reference's ``Version``, ``EarliestVersion`` and ``LatestVersion``?"""
    if reference.version is not None and not _pattern(reference.version).match(version):
        return False
    actual = _version_tuple(version)
    if reference.earliest_version is not None:
        earliest = tuple(0 if p in ("*", "+") else int(p) for p in reference.earliest_version.split("."))
        if actual < earliest:
            return False
    if reference.latest_version is not None:
        parts = reference.latest_version.split(".")
        if "*" in parts or "+" in parts:
            if not _pattern(reference.latest_version).match(version):
                bound = tuple(int(p) for p in parts[: next(i for i, p in enumerate(parts) if p in "*+")])
                if actual[: len(bound)] > bound:
                    return False
        elif actual > _version_tuple(reference.latest_version):
            return False
    return True


class Pdp:
    """Decides requests against ``root``; ``repository`` holds the documents ``root`` may reference.

    ``repository`` is a sequence of documents or a mapping whose values are documents (keys are ignored); the
    root may be in it too. ``attribute_provider`` is asked for attributes a request lacks (see
    :class:`.context.StaticAttributeProvider`).
    """

    def __init__(self, root: PolicyDocument,
                 repository: Mapping[Any, PolicyDocument] | Iterable[PolicyDocument] = (),
                 attribute_provider: AttributeProvider | None = None) -> None:
        self._provider = attribute_provider
        documents = list(repository.values()) if isinstance(repository, Mapping) else list(repository)
        self.root = root
        self._by_id: dict[tuple[str, str], list[PolicyDocument]] = {}
        for document in documents:
            self._by_id.setdefault((document.kind, document.policy_id), []).append(document)
        for versions in self._by_id.values():
            versions.sort(key=lambda d: _version_tuple(d.version), reverse=True)
        self._compiled: dict[tuple[str, str, str], Node] = {}
        self._resolving: list[tuple[str, str, str]] = [(root.kind, root.policy_id, root.version)]
        self._compiler = Compiler(resolve=self._resolve)
        with gc_paused():
            self._root = self._compile(root)
        self._resolving.clear()
        # The compiler holds this Pdp (its resolver): drop it, so that a replaced Pdp is freed by reference counting
        # at once instead of waiting for the cyclic collector.
        self._compiler = None  # type: ignore[assignment]

    def _compile(self, document: PolicyDocument) -> Node:
        if document.compiled is not None:
            return document.compiled  # type: ignore[no-any-return]
        node = document.root
        if isinstance(node, PolicySet):
            return self._compiler.policy_set(node)
        return self._compiler.policy(node)

    def _resolve(self, reference: IdReference, where: str) -> Node:
        candidates = [d for d in self._by_id.get((reference.kind, reference.ref_id), ())
                      if version_matches(reference, d.version)]
        if not candidates:
            raise InvalidPolicy(f"{where}: {reference.describe()} refers to no {reference.kind} in the repository")
        document = candidates[0]
        key = (document.kind, document.policy_id, document.version)
        if key in self._resolving:
            chain = " -> ".join(f"{k} {i!r} v{v}" for k, i, v in
                                [*self._resolving[self._resolving.index(key):], key])
            raise InvalidPolicy(f"{where}: circular policy reference {chain}")
        compiled = self._compiled.get(key)
        if compiled is None:
            self._resolving.append(key)
            try:
                compiled = self._compile(document)
            finally:
                self._resolving.pop()
            self._compiled[key] = compiled
        return compiled

    # --- deciding

    def evaluate(self, attributes: tuple[Attributes, ...], return_policy_ids: bool = False) -> Evaluation:
        """The root's extended decision for one individual request (for tests and the benchmark)."""
        ctx = EvaluationContext(attributes, return_policy_ids, self._provider)
        try:
            return self._root.evaluate(ctx)
        except Exception as exc:  # fail closed: any failure is Indeterminate, never Permit
            return Evaluation(INDETERMINATE_DP, Status(STATUS_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))

    def decide(self, request: Request) -> Response:
        """The response context for ``request`` (§7.19); one result per individual request.

        Raises :class:`.errors.InvalidRequest` only when the request expands to too many individual requests
        (Multiple Decision Profile); evaluation errors are Indeterminate results, never exceptions.
        """
        groups = request.attributes
        if not request.multi_requests and len(groups) == len({group.category for group in groups}):
            # one individual request (the usual case): no list of individual requests, nothing to combine
            with_ids = request.return_policy_id_list
            return Response((_result(self.evaluate(groups, with_ids), groups, with_ids),))
        results = []
        for individual in request.individual_requests():
            evaluation = self.evaluate(individual, request.return_policy_id_list)
            results.append(_result(evaluation, individual, request.return_policy_id_list))
        if request.combined_decision and len(results) > 1:
            results = [_combined(results)]
        return Response(tuple(results))

    def decide_xml(self, body: bytes) -> bytes:
        """A XACML XML request in, the XML response out; :class:`.errors.InvalidRequest` if it is not valid."""
        return render_response_xml(self.decide(parse_request_xml(body)))

    def decide_json(self, body: bytes | str) -> bytes:
        """A JSON Profile request in, the JSON Profile response out: the PDP's hot path over HTTP.

        :class:`.errors.InvalidRequest` if the request is not valid (nothing was evaluated); evaluation errors are
        Indeterminate responses. A simple request (one individual request, attributes of the common shape — see
        :func:`.json_profile.simple_request_values`) is read straight into the evaluation context, and a Permit,
        Deny or NotApplicable without obligations or advice is answered with pre-encoded bytes; anything else takes
        the general path (:func:`.json_profile.parse_request_json`, :meth:`decide`, :func:`render_response_json`).
        Both give the same bytes for the same request.
        """
        values = simple_request_values(body)
        if values is None:
            return render_response_json(self.decide(parse_request_json(body)))
        ctx = EvaluationContext.of_values(values, False, self._provider)
        try:
            evaluation = self._root.evaluate(ctx)
        except Exception as exc:  # fail closed, as in evaluate()
            evaluation = Evaluation(INDETERMINATE_DP, Status(STATUS_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
        if not evaluation.obligations and not evaluation.advice and evaluation.decision <= NOT_APPLICABLE:
            return _PLAIN_JSON_RESPONSES[evaluation.decision]
        return render_response_json(Response((_result(evaluation, (), False),)))


_PLAIN_RESULTS = (Result("Permit"), Result("Deny"), Result("NotApplicable"))
"""The results of a Permit, Deny (``PERMIT``, ``DENY`` index it) and NotApplicable that carry nothing else."""

_PLAIN_JSON_RESPONSES = tuple(render_response_json(Response((Result(name),)))
                              for name in ("Permit", "Deny", "NotApplicable"))
"""The JSON responses of a Permit, Deny (``PERMIT``, ``DENY`` index it) and NotApplicable that carry nothing else:
rendered once, as render_response_json renders them."""


def _result(evaluation: Evaluation, individual: tuple[Attributes, ...], with_policies: bool) -> Result:
    decision = evaluation.decision
    included: tuple[Attributes, ...] = ()
    for group in individual:
        for attribute in group.attributes:
            if attribute.include_in_result:
                returned = tuple(a for a in group.attributes if a.include_in_result)
                included = (*included, Attributes(group.category, returned, None, group.xml_id))
                break
    policies = evaluation.policies if with_policies else None
    if decision <= NOT_APPLICABLE and not included and policies is None and (
            decision == NOT_APPLICABLE or (not evaluation.obligations and not evaluation.advice)):
        return _PLAIN_RESULTS[decision]  # shared: results are treated as immutable
    if decision in (PERMIT, DENY):
        return Result(DECISION_NAMES[decision], None, evaluation.obligations, evaluation.advice, included, policies)
    if decision == NOT_APPLICABLE:
        return Result("NotApplicable", None, (), (), included, policies)
    status = evaluation.status or Status(STATUS_PROCESSING_ERROR)
    return Result("Indeterminate", status, (), (), included, policies)


def _combined(results: list[Result]) -> Result:
    """Multiple Decision Profile §3: one result when all agree and carry nothing that could be lost."""
    first = results[0].decision
    if all(r.decision == first and not r.obligations and not r.advice for r in results) and first != "Indeterminate":
        return Result(first)
    return Result("Indeterminate", Status(STATUS_PROCESSING_ERROR, "the individual decisions cannot be combined"))

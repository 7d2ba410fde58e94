"""The Policy Administration Point and the per-domain PDPs: what the AuthZForce-compatible API calls.

A *domain* (AuthZForce's word) is an isolated set of policies with its own root policy reference — one per
application in FIWARE (Keyrock creates one per application, keyed by ``externalId``). Every change follows the
same order, which is the point of this module:

1. validate — the posted policy on its own (:func:`sleutelbos.policy.xacml.load_policy`), then the domain's whole
   policy set *with* the change, by compiling the PDP it would produce. A change that leaves the domain without a
   working PDP (an invalid policy, a reference to nothing, a deleted root) is refused and nothing is stored;
2. record the change in the audit log (write-ahead: if the log is unavailable, the change does not happen);
3. store it, conditional on the domain's revision being the one validated against (another worker may have
   changed it meanwhile);
4. swap the domain's compiled PDP in one assignment, so that a decision sees the old policy set or the new one,
   never a mix.

A new domain gets AuthZForce's default root, an empty ``PolicySet`` ``root`` v0.1.0 under ``deny-unless-permit``:
every request is denied until a policy says otherwise (fail closed). The root reference names a policy and,
optionally, a version; without a version the latest stored version is used, so posting a new version of the root
policy takes effect at once (as in AuthZForce).

Several workers may share one database: each keeps its compiled PDPs and :meth:`PolicyService.sync` (run
periodically by the component) reloads the domains whose revision moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sleutelbos.core.errors import SleutelbosError
from sleutelbos.core.protocols import Actor, AuditEvent, AuditSink, AuditUnavailable
from sleutelbos.policy.store import Domain, PolicyStore, StaleRevision, StoredPolicy
from sleutelbos.policy.xacml import InvalidPolicy, Pdp, PolicyDocument, PolicySet, load_policy
from sleutelbos.policy.xacml.model import IdReference
from sleutelbos.policy.xacml.pdp import version_matches

log = logging.getLogger("sleutelbos.policy")

T = TypeVar("T")

DEFAULT_ROOT_ID = "root"
DEFAULT_ROOT_VERSION = "0.1.0"
DEFAULT_ROOT = (
    b'<PolicySet xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicySetId="root" Version="0.1.0" '
    b'PolicyCombiningAlgId="urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:deny-unless-permit">'
    b"<Description>Default root PolicySet: deny everything until a policy permits it</Description>"
    b"<Target/></PolicySet>"
)


class UnknownDomain(SleutelbosError):
    """No domain with this id."""


class UnknownPolicy(SleutelbosError):
    """No policy (or no such version of it) in the domain."""


class PolicyRejected(SleutelbosError):
    """The policy, or the domain's policy set with it, is invalid; nothing was stored."""


class PolicyConflict(SleutelbosError):
    """The change collides with the stored state: an existing version, an externalId in use, a policy the root
    needs, or a concurrent change that could not be reconciled."""


def version_key(version: str) -> tuple[int, ...]:
    """XACML ``VersionType`` (``1.0.2``) as a sortable tuple."""
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class ApplicablePolicy:
    kind: str  # "Policy" or "PolicySet"
    policy_id: str
    version: str


@dataclass(frozen=True)
class DomainView:
    """One domain at one revision: its stored policies, parsed, and the PDP compiled from them."""

    domain: Domain
    stored: tuple[StoredPolicy, ...]
    documents: tuple[PolicyDocument, ...]
    root: PolicyDocument
    pdp: Pdp
    applicable: tuple[ApplicablePolicy, ...]

    def versions(self, policy_id: str) -> list[StoredPolicy]:
        return sorted((p for p in self.stored if p.policy_id == policy_id), key=lambda p: version_key(p.version))


def _next(domain: Domain, **changes: Any) -> Domain:
    """The domain as it is after one more change."""
    return replace(domain, revision=domain.revision + 1, updated_at=datetime.now(UTC), **changes)


def _sha256(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


def _resolve_root(domain: Domain, documents: Iterable[PolicyDocument]) -> PolicyDocument:
    candidates = [d for d in documents if d.policy_id == domain.root_policy_id]
    if domain.root_policy_version is not None:
        candidates = [d for d in candidates if d.version == domain.root_policy_version]
    if not candidates:
        wanted = f"{domain.root_policy_id!r}" + (
            f" version {domain.root_policy_version}" if domain.root_policy_version else ""
        )
        raise PolicyRejected(f"the root policy reference {wanted} matches no stored policy")
    return max(candidates, key=lambda d: version_key(d.version))


def _applicable(root: PolicyDocument, documents: tuple[PolicyDocument, ...]) -> tuple[ApplicablePolicy, ...]:
    """The root and every policy it reaches through references, as the PDP resolves them (latest match)."""
    found: dict[tuple[str, str, str], None] = {(root.kind, root.policy_id, root.version): None}
    pending: list[PolicySet | object] = [root.root]
    while pending:
        node = pending.pop()
        if not isinstance(node, PolicySet):
            continue
        for child in node.children:
            if isinstance(child, IdReference):
                matches = [d for d in documents if d.kind == child.kind and d.policy_id == child.ref_id
                           and version_matches(child, d.version)]
                if matches:
                    target = max(matches, key=lambda d: version_key(d.version))
                    key = (target.kind, target.policy_id, target.version)
                    if key not in found:
                        found[key] = None
                        pending.append(target.root)
            else:
                pending.append(child)
    return tuple(ApplicablePolicy(*key) for key in found)


class PolicyService:
    """Domains, policy versions, root references and decisions, over a :class:`PolicyStore`."""

    def __init__(self, store: PolicyStore, audit_sink: AuditSink | None) -> None:
        self.store = store
        self.audit_sink = audit_sink
        self._views: dict[str, DomainView] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # parsed documents by (id, version, sha256): a stored version never changes, so it is parsed once
        self._documents: dict[tuple[str, str, str], PolicyDocument] = {}

    async def start(self) -> None:
        """Open the store and compile every domain's PDP, so that no decision waits for a compilation."""
        await self.store.open()
        for domain in await self.store.list_domains():
            try:
                await self.view(domain.domain_id)
            except (UnknownDomain, PolicyRejected):
                log.exception("domain %s could not be compiled at start", domain.domain_id)

    async def stop(self) -> None:
        await self.store.close()
        self._views.clear()

    # --- the write-ahead audit ---------------------------------------------------------------------------------

    async def _record(self, actor: Actor, action: str, target: str, **details: object) -> None:
        if self.audit_sink is None:
            raise AuditUnavailable("no audit log is configured; policy changes are refused (write-ahead audit)")
        await self.audit_sink.record(AuditEvent(actor=actor, action=action, target=target, details=details))

    async def _write(self, actor: Actor, action: str, target: str, write: Awaitable[object]) -> None:
        """Run the store write that follows an audit record; if it fails, say so in the log too (best effort: the
        log already holds the intent, and the caller gets the error)."""
        try:
            await write
        except BaseException as exc:
            if self.audit_sink is not None:
                try:
                    await self.audit_sink.record(AuditEvent(actor=actor, action=action, target=target,
                                                            decision="failed", reason=type(exc).__name__))
                except Exception:
                    log.exception("could not record the failure of %s on %s", action, target)
            raise

    # --- compiled views ------------------------------------------------------------------------------------------

    def _parse(self, stored: StoredPolicy) -> PolicyDocument:
        key = (stored.policy_id, stored.version, _sha256(stored.document))
        document = self._documents.get(key)
        if document is None:
            document = load_policy(stored.document)
            self._documents[key] = document
        return document

    def _compile(self, domain: Domain, stored: Iterable[StoredPolicy]) -> DomainView:
        """The view a domain would have with these policies; :class:`PolicyRejected` if they make no PDP."""
        stored = tuple(stored)
        try:
            documents = tuple(self._parse(p) for p in stored)
            root = _resolve_root(domain, documents)
            pdp = Pdp(root, documents)
        except InvalidPolicy as exc:
            raise PolicyRejected(exc.detail) from exc
        return DomainView(domain, stored, documents, root, pdp, _applicable(root, documents))

    async def _compile_off_loop(self, domain: Domain, stored: Iterable[StoredPolicy]) -> DomainView:
        """Compile in a thread: a large policy set (Keyrock's 1,000 roles) takes seconds, and the event loop keeps
        answering decisions with the PDPs in force meanwhile."""
        return await asyncio.to_thread(self._compile, domain, tuple(stored))

    async def _fresh_view(self, domain_id: str) -> DomainView:
        """The domain as the database has it now; compiled again only if its revision moved."""
        domain = await self.store.get_domain(domain_id)
        if domain is None:
            self._views.pop(domain_id, None)
            raise UnknownDomain(f"no domain {domain_id!r}")
        cached = self._views.get(domain_id)
        if cached is not None and cached.domain.revision == domain.revision:
            return cached
        view = await self._compile_off_loop(domain, await self.store.policies(domain_id))
        self._views[domain_id] = view
        return view

    async def view(self, domain_id: str) -> DomainView:
        view = self._views.get(domain_id)
        if view is not None:
            return view
        # one load per domain however many requests miss the cache at once
        lock = self._locks.setdefault(domain_id, asyncio.Lock())
        async with lock:
            view = self._views.get(domain_id)
            return view if view is not None else await self._fresh_view(domain_id)

    def cached_pdp(self, domain_id: str) -> Pdp | None:
        """The domain's PDP if it is compiled already (the decision fast path: no I/O)."""
        view = self._views.get(domain_id)
        return view.pdp if view is not None else None

    async def pdp(self, domain_id: str) -> Pdp:
        return (await self.view(domain_id)).pdp

    async def sync(self) -> int:
        """Reload the domains another worker changed; returns how many views were dropped or rebuilt."""
        revisions = await self.store.revisions()
        changed = 0
        for domain_id, view in list(self._views.items()):
            revision = revisions.get(domain_id)
            if revision is None:
                self._views.pop(domain_id, None)
                changed += 1
            elif revision != view.domain.revision:
                try:
                    await self._fresh_view(domain_id)
                except (UnknownDomain, PolicyRejected):
                    log.exception("domain %s could not be reloaded; its previous PDP stays in force", domain_id)
                changed += 1
        return changed

    # --- changes ----------------------------------------------------------------------------------------------

    async def _change(self, domain_id: str, attempt: Callable[[DomainView], Awaitable[T]]) -> T:
        """Run ``attempt(view)`` under the domain's lock, on a fresh view; one retry if another worker raced us."""
        lock = self._locks.setdefault(domain_id, asyncio.Lock())
        async with lock:
            view = await self._fresh_view(domain_id)
            try:
                return await attempt(view)
            except StaleRevision:
                view = await self._fresh_view(domain_id)
            try:
                return await attempt(view)
            except StaleRevision as exc:
                raise PolicyConflict(exc.detail) from exc

    def _install(self, view: DomainView) -> None:
        self._views[view.domain.domain_id] = view  # one assignment: the atomic swap

    # --- domains ----------------------------------------------------------------------------------------------

    async def create_domain(self, actor: Actor, external_id: str | None, description: str | None = None) -> Domain:
        if external_id is not None and await self.store.list_domains(external_id):
            raise PolicyConflict(f"externalId {external_id!r} is already used by another domain")
        domain_id = secrets.token_urlsafe(16)
        domain = Domain(domain_id, external_id, description, DEFAULT_ROOT_ID, None, 0, datetime.now(UTC))
        root = StoredPolicy(DEFAULT_ROOT_ID, DEFAULT_ROOT_VERSION, "PolicySet", DEFAULT_ROOT)
        view = self._compile(domain, [root])
        await self._record(actor, "policy.domain.create", domain_id, externalId=external_id)
        await self._write(actor, "policy.domain.create", domain_id, self.store.create_domain(domain, [root]))
        self._install(view)
        return domain

    async def domains(self, external_id: str | None = None) -> list[Domain]:
        return await self.store.list_domains(external_id)

    async def domain(self, domain_id: str) -> Domain:
        domain = await self.store.get_domain(domain_id)
        if domain is None:
            raise UnknownDomain(f"no domain {domain_id!r}")
        return domain

    async def delete_domain(self, actor: Actor, domain_id: str) -> Domain:
        domain = await self.domain(domain_id)
        await self._record(actor, "policy.domain.delete", domain_id, externalId=domain.external_id)
        await self._write(actor, "policy.domain.delete", domain_id, self.store.delete_domain(domain_id))
        self._views.pop(domain_id, None)
        return domain

    async def update_properties(self, actor: Actor, domain_id: str, external_id: str | None,
                                description: str | None) -> Domain:
        async def attempt(view: DomainView) -> Domain:
            if external_id is not None and any(
                d.domain_id != domain_id for d in await self.store.list_domains(external_id)
            ):
                raise PolicyConflict(f"externalId {external_id!r} is already used by another domain")
            await self._record(actor, "policy.domain.properties", domain_id, externalId=external_id)
            await self._write(actor, "policy.domain.properties", domain_id, self.store.set_properties(
                domain_id, external_id, description, view.domain.revision))
            domain = _next(view.domain, external_id=external_id, description=description)
            self._install(replace(view, domain=domain))
            return domain

        return await self._change(domain_id, attempt)

    # --- policies ---------------------------------------------------------------------------------------------

    async def add_policy(self, actor: Actor, domain_id: str, document: bytes) -> StoredPolicy:
        """Validate and store a new version of a ``Policy`` or ``PolicySet``."""
        try:
            parsed = load_policy(document)
        except InvalidPolicy as exc:
            raise PolicyRejected(exc.detail) from exc
        stored = StoredPolicy(parsed.policy_id, parsed.version, parsed.kind, document)

        async def attempt(view: DomainView) -> StoredPolicy:
            if any(p.policy_id == stored.policy_id and p.version == stored.version for p in view.stored):
                raise PolicyConflict(f"policy {stored.policy_id!r} version {stored.version} already exists")
            if any(p.policy_id == stored.policy_id and p.kind != stored.kind for p in view.stored):
                other = "Policy" if stored.kind == "PolicySet" else "PolicySet"
                raise PolicyConflict(f"{stored.policy_id!r} is already the id of a {other} in this domain")
            domain = _next(view.domain)
            candidate = await self._compile_off_loop(domain, (*view.stored, stored))
            target = f"{domain_id}/{stored.policy_id}/{stored.version}"
            await self._record(actor, "policy.version.add", target, kind=stored.kind, sha256=_sha256(document))
            await self._write(actor, "policy.version.add", target,
                              self.store.add_policy(domain_id, stored, view.domain.revision))
            self._install(candidate)
            return stored

        return await self._change(domain_id, attempt)

    async def _stored(self, domain_id: str) -> list[StoredPolicy]:
        await self.domain(domain_id)
        return await self.store.policies(domain_id)

    async def policy_ids(self, domain_id: str) -> list[str]:
        return sorted({p.policy_id for p in await self._stored(domain_id)})

    async def versions(self, domain_id: str, policy_id: str) -> list[StoredPolicy]:
        versions = sorted((p for p in await self._stored(domain_id) if p.policy_id == policy_id),
                          key=lambda p: version_key(p.version))
        if not versions:
            raise UnknownPolicy(f"no policy {policy_id!r} in domain {domain_id!r}")
        return versions

    async def policy(self, domain_id: str, policy_id: str, version: str) -> StoredPolicy:
        """One version; ``latest`` names the highest."""
        versions = await self.versions(domain_id, policy_id)
        if version == "latest":
            return versions[-1]
        for stored in versions:
            if stored.version == version:
                return stored
        raise UnknownPolicy(f"no version {version} of policy {policy_id!r} in domain {domain_id!r}")

    async def delete_policy(self, actor: Actor, domain_id: str, policy_id: str,
                            version: str | None = None) -> list[StoredPolicy]:
        """Remove one version, or all versions; refused when the domain's PDP needs what would go."""

        async def attempt(view: DomainView) -> list[StoredPolicy]:
            versions = view.versions(policy_id)
            if version is not None:
                latest = versions[-1] if versions else None
                versions = [p for p in versions if p.version == version or (version == "latest" and p is latest)]
            if not versions:
                what = f"version {version} of policy" if version else "policy"
                raise UnknownPolicy(f"no {what} {policy_id!r} in domain {domain_id!r}")
            gone = {(p.policy_id, p.version) for p in versions}
            remaining = [p for p in view.stored if (p.policy_id, p.version) not in gone]
            domain = _next(view.domain)
            try:
                candidate = await self._compile_off_loop(domain, remaining)
            except PolicyRejected as exc:
                raise PolicyConflict(f"the domain's PDP still needs it: {exc.detail}") from exc
            target = f"{domain_id}/{policy_id}"
            await self._record(actor, "policy.version.delete", target, versions=[p.version for p in versions])
            await self._write(actor, "policy.version.delete", target, self.store.delete_policies(
                domain_id, policy_id, [p.version for p in versions], view.domain.revision))
            self._install(candidate)
            return versions

        return await self._change(domain_id, attempt)

    # --- the root -----------------------------------------------------------------------------------------------

    async def set_root(self, actor: Actor, domain_id: str, policy_id: str, version: str | None = None) -> DomainView:
        """Make ``policy_id`` (pinned to ``version``, or its latest version) the root of the domain's PDP."""

        async def attempt(view: DomainView) -> DomainView:
            domain = _next(view.domain, root_policy_id=policy_id, root_policy_version=version)
            candidate = await self._compile_off_loop(domain, view.stored)
            await self._record(actor, "policy.root.set", domain_id, policyId=policy_id, version=version,
                               resolvedVersion=candidate.root.version)
            await self._write(actor, "policy.root.set", domain_id,
                              self.store.set_root(domain_id, policy_id, version, view.domain.revision))
            self._install(candidate)
            return candidate

        return await self._change(domain_id, attempt)

"""JSON-LD @context handling for NGSI-LD (ETSI GS CIM 009 v1.8, clauses 5.5.7, 6.3.5 and 5.13 / 6.30 @context API).

The expensive part of JSON-LD — resolving and processing a context — happens once per distinct @context and is
cached: :meth:`ContextStore.compile` turns an ``@context`` value (URL, object, or list of both) into a
:class:`CompiledContext`, whose :meth:`~CompiledContext.expand_term` and :meth:`~CompiledContext.compact_iri` are
plain dict lookups. Expanding an entity is then one lookup per attribute name, never a JSON-LD library call per entity.

* The NGSI-LD core context v1.8 is bundled (``contexts/``) and never fetched: any
  ``https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context*.jsonld`` URL resolves to it, and it is always processed
  last so that its terms cannot be redefined by a user context (clause 5.5.7: the core context is implicit and its
  terms are protected).
* Remote contexts are fetched with ``httpx`` under ``context_fetch_timeout_s`` (at most 1 MiB, 3 redirects) and
  cached; a failure answers 503 LdContextNotAvailable. The client chooses the URL, so hosts on loopback, private or
  link-local networks are refused unless ``context_fetch_private_networks`` is set (no probing of the operator's
  network through the broker; a DNS answer that changes between check and fetch is not covered). PyLD compiles
  the prefetched documents through a loader that only reads that cache.
* ``/ngsi-ld/v1/jsonldContexts`` (clause 5.13) lists the cached and hosted contexts, serves one, adds a hosted one and
  deletes one; :class:`ContextStore` keeps them. Hosted contexts live in memory and in the broker's store
  (``jsonld_contexts`` table) so that a URL handed to a client stays valid across restarts.

Left out: ``@import``/``@propagate`` are handled as PyLD handles them; compaction to compact IRIs (``prefix:suffix``)
is not done — an IRI with no term is returned whole, which the specification allows.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import httpx
import orjson

from sleutelbos.broker.entity import DEFAULT_CONTEXT_VOCAB, now_iso
from sleutelbos.broker.errors import BadRequestData, LdContextNotAvailable, ResourceNotFound

CORE_CONTEXT_URL: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
_CORE_URL_RE: Final = re.compile(r"^https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(-v\d+(\.\d+)*)?\.jsonld$")
_ABSOLUTE_URL_RE: Final = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
JSONLD_CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
HOSTED_PATH: Final = "/ngsi-ld/v1/jsonldContexts/"
_KEYWORDS_SKIPPED: Final = frozenset({"@id", "@type"})


def _load_core() -> dict[str, Any]:
    text = resources.files("sleutelbos.broker").joinpath("contexts/ngsi-ld-core-context-v1.8.jsonld").read_bytes()
    return orjson.loads(text)


CORE_CONTEXT_DOCUMENT: Final[dict[str, Any]] = _load_core()


def is_core_context_url(url: str) -> bool:
    return bool(_CORE_URL_RE.match(url))


class CompiledContext:
    """An active JSON-LD context reduced to the lookups NGSI-LD needs (built once per distinct @context).

    ``expand_term("serialNumber")`` → ``https://smartdatamodels.org/dataModel.Device/serialNumber``;
    ``compact_iri(that)`` → ``serialNumber``. Terms not defined expand against ``@vocab`` (the core context's
    ``https://uri.etsi.org/ngsi-ld/default-context/``); ``prefix:suffix`` expands through the prefix; an absolute IRI
    is kept.
    """

    __slots__ = ("_compact", "_expand", "_prefixes", "context", "key", "plans", "vocab")

    def __init__(
        self, key: str, context: Any, terms: dict[str, str], prefixes: dict[str, str], vocab: str | None
    ) -> None:
        self.key = key
        self.context = context  # the @context value as the client gave it, echoed back in responses
        self._expand = terms
        self._prefixes = prefixes
        self.vocab = vocab if vocab is not None else DEFAULT_CONTEXT_VOCAB
        compact: dict[str, str] = {}
        for term, iri in terms.items():
            best = compact.get(iri)
            if best is None or (len(term), term) < (len(best), best):
                compact[iri] = term
        self._compact = compact
        #: the write path's compiled expansion plans for this context (``validation``: entity shapes, types)
        self.plans: dict[Any, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as what it was compiled from (a batch worker process gets it, decision 0730): the memoised
        compactions and the expansion plans are rebuilt where it is used."""
        return (CompiledContext, (self.key, self.context, self._expand, self._prefixes, self.vocab))

    def expand_term(self, name: str) -> str:
        """Expand an attribute name or entity type (vocabulary-relative, JSON-LD 1.1 §5.2 IRI expansion)."""
        iri = self._expand.get(name)
        if iri is not None:
            return iri
        if ":" in name:
            prefix, _, suffix = name.partition(":")
            base = self._prefixes.get(prefix)
            if base is not None and not suffix.startswith("//"):
                return base + suffix
            return name
        return self.vocab + name

    def compact_iri(self, iri: str) -> str:
        """The term for an expanded IRI, or the IRI's ``@vocab``-relative name, or the IRI itself (memoised)."""
        term = self._compact.get(iri)
        if term is not None:
            return term
        term = iri
        if iri.startswith(self.vocab) and len(iri) > len(self.vocab):
            rest = iri[len(self.vocab):]
            if rest not in self._expand and ":" not in rest:
                term = rest
        if len(self._compact) < 100_000:
            self._compact[iri] = term
        return term

    def has_term(self, name: str) -> bool:
        return name in self._expand


@dataclass
class CachedContext:
    """One entry of the @context cache as clause 5.13 describes it (``kind``: Hosted, Cached, ImplicitlyCreated)."""

    url: str
    document: Any
    kind: str
    created_at: str = field(default_factory=now_iso)
    last_usage: str | None = None
    hits: int = 0
    local_id: str | None = None

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "localId": self.local_id or self.url, "kind": self.kind,
                               "createdAt": self.created_at, "numberOfHits": self.hits}
        if self.last_usage:
            out["lastUsage"] = self.last_usage
        return out


Fetcher = Callable[[str, float], Awaitable[Any]]


MAX_CONTEXT_BYTES: Final = 1 << 20
_MAX_REDIRECTS: Final = 3


async def _refuse_private(url: str) -> None:
    """A client names the URL the broker fetches: unless allowed, refuse hosts that resolve to loopback, private,
    link-local or otherwise non-global addresses, so that @context fetching cannot probe the operator's network."""
    parts = httpx.URL(url)
    host = parts.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
        except OSError as exc:
            raise LdContextNotAvailable(f"@context {url}: host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or not all(a.is_global for a in addresses):
        raise LdContextNotAvailable(
            f"@context {url}: host {host!r} is on a private or local network, which this broker does not fetch "
            "from (setting context_fetch_private_networks)")


async def fetch_with_httpx(url: str, timeout_s: float, allow_private_networks: bool = False) -> Any:
    """Fetch a JSON-LD document (at most 1 MiB, 3 redirects, each hop checked unless private networks are allowed);
    any failure or non-JSON answer is LdContextNotAvailable."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            target = url
            for _ in range(_MAX_REDIRECTS + 1):
                if not allow_private_networks:
                    await _refuse_private(target)
                async with client.stream("GET", target,
                                         headers={"Accept": "application/ld+json, application/json"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        target = str(response.url.join(response.headers["location"]))
                        continue
                    response.raise_for_status()
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_CONTEXT_BYTES:
                            raise LdContextNotAvailable(f"@context {url} is larger than {MAX_CONTEXT_BYTES} bytes")
                    return orjson.loads(body)
            raise LdContextNotAvailable(f"@context {url}: more than {_MAX_REDIRECTS} redirects")
    except (httpx.HTTPError, orjson.JSONDecodeError, ValueError) as exc:
        raise LdContextNotAvailable(f"@context {url} could not be retrieved: {exc or type(exc).__name__}") from exc


class ContextStore:
    """Resolves, compiles and caches @contexts; keeps the hosted contexts of ``/jsonldContexts``."""

    def __init__(self, fetch_timeout_s: float = 5.0, fetcher: Fetcher | None = None, max_compiled: int = 512,
                 max_cached: int = 1000, allow_private_networks: bool = False) -> None:
        self.fetch_timeout_s = fetch_timeout_s
        self.max_cached = max_cached
        self.allow_private_networks = allow_private_networks
        self._fetcher = fetcher or self._fetch
        self._documents: dict[str, CachedContext] = {}
        self._compiled: OrderedDict[str, CompiledContext] = OrderedDict()
        self._max_compiled = max_compiled
        self._locks: dict[str, asyncio.Lock] = {}
        self.core = self._compile_now("core", None, [])
        self.persist_hosted: Callable[[CachedContext], Awaitable[None]] | None = None
        self.forget_hosted: Callable[[str], Awaitable[None]] | None = None

    async def _fetch(self, url: str, timeout_s: float) -> Any:
        return await fetch_with_httpx(url, timeout_s, self.allow_private_networks)

    # --- compile ---------------------------------------------------------------------------------------
    async def compile(self, context: Any) -> CompiledContext:
        """The compiled form of an ``@context`` value (None → the core context alone)."""
        if context is None or context == [] or (isinstance(context, str) and is_core_context_url(context)):
            return self.core
        key = context if isinstance(context, str) else orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        items = context if isinstance(context, list) else [context]
        for item in items:
            if not isinstance(item, str | dict):
                raise BadRequestData(f"@context entries must be URLs or objects, got {type(item).__name__}")
            if isinstance(item, str) and not _ABSOLUTE_URL_RE.match(item):
                raise BadRequestData(f"@context entry {item!r} is not an absolute http(s) URL")
        await self._prefetch(items, depth=0)
        compiled = self._compile_now(key, context, items)
        self._compiled[key] = compiled
        if len(self._compiled) > self._max_compiled:
            self._compiled.popitem(last=False)
        return compiled

    async def _prefetch(self, items: list[Any], depth: int) -> None:
        if depth > 8:
            raise BadRequestData("@context nests remote contexts more than 8 levels deep")
        for item in items:
            if isinstance(item, str):
                if is_core_context_url(item):
                    continue
                doc = await self.document(item)
                inner = doc.get("@context") if isinstance(doc, dict) else None
                if inner is None:
                    raise LdContextNotAvailable(f"@context {item} is not a JSON-LD context document")
                await self._prefetch(inner if isinstance(inner, list) else [inner], depth + 1)
            elif isinstance(item, dict):
                imported = item.get("@import")
                if isinstance(imported, str):
                    await self._prefetch([imported], depth + 1)

    def _compile_now(self, key: str, context: Any, items: list[Any]) -> CompiledContext:
        from cachetools import LRUCache
        from pyld import jsonld
        from pyld.context_resolver import ContextResolver

        documents = self._documents

        def loader(url: str, options: Any = None) -> dict[str, Any]:
            if is_core_context_url(url):
                return {"contextUrl": None, "documentUrl": url, "document": CORE_CONTEXT_DOCUMENT}
            cached = documents.get(url)
            if cached is None:
                raise LdContextNotAvailable(f"@context {url} is not cached")
            return {"contextUrl": None, "documentUrl": url, "document": cached.document}

        resolved = [CORE_CONTEXT_URL if isinstance(i, str) and is_core_context_url(i) else i for i in items]
        processor = jsonld.JsonLdProcessor()
        options = {"documentLoader": loader, "contextResolver": ContextResolver(LRUCache(maxsize=64), loader)}
        try:
            active = processor._get_initial_context(options)
            active = processor.process_context(active, [*resolved, CORE_CONTEXT_DOCUMENT["@context"]], options)
        except LdContextNotAvailable:
            raise
        except jsonld.JsonLdError as exc:
            cause = exc
            while getattr(cause, "cause", None) is not None:
                if isinstance(cause.cause, LdContextNotAvailable):
                    raise cause.cause from exc
                cause = cause.cause
            raise BadRequestData(f"invalid @context: {getattr(exc, 'message', exc)}") from exc
        terms: dict[str, str] = {}
        prefixes: dict[str, str] = {}
        for term, definition in active.get("mappings", {}).items():
            if not definition:
                continue
            iri = definition.get("@id")
            if not isinstance(iri, str) or iri in _KEYWORDS_SKIPPED or iri.startswith("@"):
                continue
            terms[term] = iri
            if definition.get("_prefix") or iri.endswith(("/", "#")):
                prefixes[term] = iri
        return CompiledContext(key, context, terms, prefixes, active.get("@vocab"))

    # --- documents (the cache of clause 5.13) ----------------------------------------------------------
    async def document(self, url: str) -> Any:
        """The JSON-LD document at ``url``: bundled, hosted, cached, or fetched once (concurrent callers wait)."""
        if is_core_context_url(url):
            return CORE_CONTEXT_DOCUMENT
        cached = self._documents.get(url) or self._hosted_by_url(url)
        if cached is None:
            lock = self._locks.setdefault(url, asyncio.Lock())
            try:
                async with lock:
                    cached = self._documents.get(url)
                    if cached is None:
                        doc = await self._fetcher(url, self.fetch_timeout_s)
                        if not isinstance(doc, dict) or "@context" not in doc:
                            raise LdContextNotAvailable(f"@context {url} is not a JSON-LD context document")
                        cached = CachedContext(url=url, document=doc, kind="Cached")
                        self._evict()
                        self._documents[url] = cached
            finally:
                self._locks.pop(url, None)
        cached.hits += 1
        cached.last_usage = now_iso()
        return cached.document

    def _evict(self) -> None:
        """Bound the cache of fetched documents (a client naming endless URLs must not grow it forever): drop the
        least recently used Cached entries; Hosted ones stay."""
        cached = [e for e in self._documents.values() if e.kind == "Cached"]
        if len(cached) < self.max_cached:
            return
        cached.sort(key=lambda e: e.last_usage or e.created_at)
        for entry in cached[: len(cached) - self.max_cached + 1]:
            del self._documents[entry.url]
        self._compiled.clear()

    def _hosted_by_url(self, url: str) -> CachedContext | None:
        _, sep, local_id = url.partition(HOSTED_PATH)
        if not sep:
            return None
        for cached in self._documents.values():
            if cached.kind == "Hosted" and cached.local_id == local_id:
                return cached
        return None

    def list(self, kind: str | None = None) -> list[CachedContext]:
        core = CachedContext(url=CORE_CONTEXT_URL, document=CORE_CONTEXT_DOCUMENT, kind="Cached",
                             local_id="ngsi-ld-core-context-v1.8")
        entries = [core, *self._documents.values()]
        return [e for e in entries if kind is None or e.kind == kind]

    def get(self, context_id: str) -> CachedContext:
        """A context by its local id or URL (clause 5.13.3)."""
        if context_id in ("ngsi-ld-core-context-v1.8", CORE_CONTEXT_URL) or is_core_context_url(context_id):
            return self.list()[0]
        for cached in self._documents.values():
            if context_id in (cached.local_id, cached.url):
                cached.hits += 1
                return cached
        raise ResourceNotFound(f"no @context with id {context_id!r}")

    async def add_hosted(self, document: Any, base_url: str) -> CachedContext:
        """Clause 5.13.2: store a context given as ``{"@context": ...}`` and host it under our own URL."""
        if not isinstance(document, dict) or set(document) != {"@context"}:
            raise BadRequestData('a context to add must be a JSON object with exactly one member, "@context"')
        inner = document["@context"]
        items = inner if isinstance(inner, list) else [inner]
        await self._prefetch([i for i in items if isinstance(i, str)], depth=1)
        local_id = str(uuid.uuid4())
        entry = CachedContext(url=f"{base_url.rstrip('/')}{HOSTED_PATH}{local_id}", document=document,
                              kind="Hosted", local_id=local_id)
        self._compile_now("probe", document, [inner] if not isinstance(inner, list) else inner)
        if self.persist_hosted is not None:
            await self.persist_hosted(entry)
        self._documents[entry.url] = entry
        return entry

    def load_hosted(self, entries: list[CachedContext]) -> None:
        for entry in entries:
            self._documents[entry.url] = entry

    async def delete(self, context_id: str, reload: bool = False) -> None:
        """Clause 5.13.4: delete a hosted context, or drop (``reload``: re-fetch) a cached one."""
        entry = self.get(context_id)
        if entry.url == CORE_CONTEXT_URL:
            raise BadRequestData("the NGSI-LD core context is built in and cannot be deleted")
        if entry.kind == "Hosted" and reload:
            raise BadRequestData("reload applies to cached remote contexts, not to hosted ones")
        del self._documents[entry.url]
        self._compiled.clear()
        if entry.kind == "Hosted" and self.forget_hosted is not None:
            await self.forget_hosted(entry.local_id or "")
        if reload:
            await self.document(entry.url)


_LINK_RE: Final = re.compile(r"<([^>]*)>\s*((?:;\s*[^,;]+)*)")


def context_from_link_header(value: str | None) -> str | None:
    """The URL of the ``rel="http://www.w3.org/ns/json-ld#context"`` link (clause 6.3.5), or None."""
    if not value:
        return None
    found: list[str] = []
    for match in _LINK_RE.finditer(value):
        params = match.group(2)
        if JSONLD_CONTEXT_REL in params:
            found.append(match.group(1).strip())
    if len(found) > 1:
        raise BadRequestData("more than one JSON-LD context Link header")
    if found and not re.match(r"^https?://", found[0]):
        raise BadRequestData(f"the JSON-LD context Link must be an absolute http(s) URL, got {found[0]!r}")
    return found[0] if found else None


def link_header_for(url: str) -> str:
    return f'<{url}>; rel="{JSONLD_CONTEXT_REL}"; type="application/ld+json"'

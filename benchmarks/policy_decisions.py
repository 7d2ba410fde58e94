"""Policy decision throughput and latency: sleutelbos's XACML PDP against Cedar (cedarpy), in-process and over HTTP.

Workloads (issue 4):
  (a) Keyrock-style RBAC: one PolicySet, one Policy per role, one Rule per permission (path + HTTP verb), Wilma
      requests with the caller's roles — default 1,000 roles x 10 permissions;
  (b) the project's ABAC meter-data policy (src/sleutelbos/policy/policies/meter-data.xml): households, suppliers,
      vendors with and without grants, the operator, quarantined meters, break-glass.

For each: decisions/s with p50/p99 latency
  - in-process: the full JSON Profile path (``Pdp.decide_json``: bytes in, bytes out — what the HTTP endpoint
    calls), the XML path, and evaluation alone (request parsed beforehand), each also as CPU time per call (this
    process's CPU time / calls: less sensitive to the other processes on the machine than the wall-clock rate);
  - over HTTP (POST /authzforce-ce/domains/{id}/pdp, JSON Profile): `sleutelbos serve policy --workers N`
    (decisions answered inside its HTTP protocol, decision 0391) on both workloads, next to the old path (the same
    application on uvicorn's stock protocol, decisions through ASGI) and two ceilings — uvicorn with a no-op ASGI
    app, and serve policy's own HTTP stack with a decision that costs nothing — all with the same workers and the
    same client: a separate process, a lean asyncio protocol on uvloop, pre-serialized requests, keep-alive, one
    request in flight per connection. Each line also gives the server's and the client's CPU time per request
    (Linux /proc), which the load of a shared machine disturbs far less than the rate;
  - Cedar, the same policies written in Cedar: cedarpy one call at a time with the policy text (parsed on every
    call, as the issue measured), one call at a time with pre-parsed PolicySet/Entities handles, and the batch call.
Ratios are ours / theirs, measured in this run. References: AuthZForce's published ~11,000 responses/s over HTTP;
goals: in-process >= 50,000/s on (b) with p99 < 100 us, HTTP >= 10,000/s.

    PYTHONPATH=src python benchmarks/policy_decisions.py              # defaults: full sizes, a few minutes
    PYTHONPATH=src python benchmarks/policy_decisions.py --roles 100  # smaller RBAC workload
    PYTHONPATH=src python benchmarks/policy_decisions.py --roles 100 --skip-cedar --seconds 0.5  # quick, HTTP
    PYTHONPATH=src python benchmarks/policy_decisions.py --one-worker-too   # HTTP with 1 worker as well
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sleutelbos.policy.meter_data import MeterDataRequest, meter_data_policy  # noqa: E402
from sleutelbos.policy.rbac import Permission, keyrock_policy_set, wilma_request_json, wilma_request_xml  # noqa: E402
from sleutelbos.policy.xacml import Pdp, load_policy, parse_request_json  # noqa: E402

AUTHZFORCE_HTTP = 11_000
VERBS = ("GET", "POST", "PATCH", "DELETE")


# --- workloads ------------------------------------------------------------------------------------------------


class Workload:
    def __init__(self, name: str, policy: bytes, json_bodies: list[bytes], xml_bodies: list[bytes],
                 cedar_policies: str, cedar_requests: list[dict[str, Any]], cedar_entities: list[list[dict]]) -> None:
        self.name = name
        self.policy = policy
        self.json_bodies = json_bodies
        self.xml_bodies = xml_bodies
        self.cedar_policies = cedar_policies
        self.cedar_requests = cedar_requests
        self.cedar_entities = cedar_entities  # per request


def rbac_workload(roles: int, permissions: int, requests: int, rng: random.Random) -> Workload:
    app = "urn:sleutelbos:app:bench"
    table = {
        f"role-{r}": [Permission(f"perm-{r}-{p}", rng.choice(VERBS), f"/v2/app/r{r}/p{p}") for p in range(permissions)]
        for r in range(roles)
    }
    cedar = "\n".join(
        f'permit (principal, action == Action::"{p.action}", resource == Path::"{p.resource}") '
        f'when {{ principal.roles.contains("{role}") }};'
        for role, perms in table.items() for p in perms
    )
    json_bodies, xml_bodies, cedar_requests, cedar_entities = [], [], [], []
    names = list(table)
    for i in range(requests):
        role = rng.choice(names)
        permission = rng.choice(table[role])
        verb = permission.action if rng.random() < 0.8 else next(v for v in VERBS if v != permission.action)
        held = [role, rng.choice(names)]
        json_bodies.append(wilma_request_json(app, held, permission.resource, verb))
        xml_bodies.append(wilma_request_xml(app, held, permission.resource, verb))
        cedar_requests.append({"principal": f'User::"u{i}"', "action": f'Action::"{verb}"',
                               "resource": f'Path::"{permission.resource}"', "context": {}})
        cedar_entities.append([{"uid": {"type": "User", "id": f"u{i}"}, "attrs": {"roles": held}, "parents": []}])
    return Workload(f"(a) RBAC {roles} roles x {permissions} permissions", keyrock_policy_set(app, table),
                    json_bodies, xml_bodies, cedar, cedar_requests, cedar_entities)


CEDAR_METER_POLICY = """
forbid (principal, action, resource) when { resource.quarantined || context.break_glass };
permit (principal, action == Action::"read", resource) when { principal.kind == "operator" };
permit (principal, action == Action::"read", resource)
  when { principal.kind == "household" && resource has owner && resource.owner == principal.subject_id };
permit (principal, action == Action::"read", resource)
  when { principal.kind == "supplier" && resource.contracted_suppliers.contains(principal.organisation) };
permit (principal, action == Action::"read", resource)
  when { principal.kind == "vendor" && principal.granted_meters.contains(resource.meter_id)
         && principal has grant_expires && context.now < principal.grant_expires };
"""


def meter_requests(count: int, rng: random.Random) -> list[MeterDataRequest]:
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        meter = f"urn:ngsi-ld:Device:meter-{rng.randrange(100_000)}"
        household = f"household:{rng.randrange(100_000)}"
        scenario = i % 10
        quarantined = rng.random() < 0.05
        break_glass = rng.random() < 0.02
        common = {"quarantined": quarantined, "break_glass": break_glass}
        if scenario in (0, 1, 2):
            owner = household if scenario != 2 else "household:other"
            out.append(MeterDataRequest(household, household, "household", meter, owner=owner, **common))
        elif scenario in (3, 4, 5):
            suppliers = ("energy-nl", "greenpower") if scenario != 5 else ("greenpower",)
            out.append(MeterDataRequest("svc:energy-nl", "energy-nl", "supplier", meter,
                                        contracted_suppliers=suppliers, **common))
        elif scenario in (6, 7):
            expires = now + timedelta(hours=1 if scenario == 6 else -1)
            out.append(MeterDataRequest("support@meters-inc", "meters-inc", "vendor", meter,
                                        granted_meters=(meter, "other"), grant_expires=expires, **common))
        elif scenario == 8:
            out.append(MeterDataRequest("support@meters-inc", "meters-inc", "vendor", meter, **common))
        else:
            out.append(MeterDataRequest("alice", "gridco", "operator", meter, **common))
    return out


def meter_workload(requests: int, rng: random.Random) -> Workload:
    cedar_requests, cedar_entities = [], []
    reqs = meter_requests(requests, rng)
    for i, r in enumerate(reqs):
        principal = {"kind": r.kind, "organisation": r.organisation, "subject_id": r.subject_id,
                     "granted_meters": list(r.granted_meters)}
        if r.grant_expires is not None:
            principal["grant_expires"] = int(r.grant_expires.timestamp())
        resource: dict[str, Any] = {"meter_id": r.meter_id, "quarantined": r.quarantined,
                                    "contracted_suppliers": list(r.contracted_suppliers)}
        if r.owner is not None:
            resource["owner"] = r.owner
        cedar_requests.append({"principal": f'User::"p{i}"', "action": f'Action::"{r.action}"',
                               "resource": f'Meter::"m{i}"',
                               "context": {"break_glass": r.break_glass, "now": int(time.time())}})
        cedar_entities.append([{"uid": {"type": "User", "id": f"p{i}"}, "attrs": principal, "parents": []},
                               {"uid": {"type": "Meter", "id": f"m{i}"}, "attrs": resource, "parents": []}])
    return Workload("(b) ABAC meter data", meter_data_policy(), [r.to_json() for r in reqs],
                    [r.to_xml() for r in reqs], CEDAR_METER_POLICY, cedar_requests, cedar_entities)


# --- measuring ------------------------------------------------------------------------------------------------


class Figure:
    def __init__(self, label: str, count: int, seconds: float, latencies_ns: Sequence[int],
                 cpu_seconds: float | None = None) -> None:
        self.label = label
        self.rate = count / seconds if seconds else 0.0
        ordered = sorted(latencies_ns)
        self.p50 = ordered[len(ordered) // 2] / 1000 if ordered else float("nan")
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000 if ordered else float("nan")
        # CPU time of this process per call (in-process figures): what one call costs, whatever else the shared
        # machine runs — wall-clock rates swing with the load, this much less.
        self.cpu_us = cpu_seconds / count * 1e6 if cpu_seconds is not None and count else None

    def line(self) -> str:
        cpu = f"   cpu {self.cpu_us:>7.2f} us/call" if self.cpu_us is not None else ""
        return (f"  {self.label:58s} {self.rate:>10,.0f} /s   p50 {self.p50:>9.1f} us   p99 {self.p99:>9.1f} us"
                + cpu)


def measure(label: str, call: Callable[[int], Any], items: int, seconds: float) -> Figure:
    """Call ``call(i)`` for i cycling over ``items`` until ``seconds`` have passed; time each call."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    count = 0
    cpu_start = time.process_time()
    start = clock()
    while True:
        t0 = clock()
        call(count % items)
        t1 = clock()
        latencies.append(t1 - t0)
        count += 1
        if t1 >= deadline:
            break
    elapsed = (clock() - start) / 1e9
    return Figure(label, count, elapsed, latencies, time.process_time() - cpu_start)


def decision_of_json(answer: bytes) -> str:
    return json.loads(answer)["Response"][0]["Decision"]


def in_process(workload: Workload, seconds: float) -> tuple[list[Figure], Pdp]:
    started = time.perf_counter()
    pdp = Pdp(load_policy(workload.policy))
    print(f"  policy loaded and compiled in {time.perf_counter() - started:.2f} s")
    parsed = [parse_request_json(b) for b in workload.json_bodies]
    bodies_json, bodies_xml = workload.json_bodies, workload.xml_bodies
    n = len(bodies_json)
    figures = [
        measure("XACML in-process, JSON request -> JSON response", lambda i: pdp.decide_json(bodies_json[i]), n,
                seconds),
        measure("XACML in-process, XML request -> XML response", lambda i: pdp.decide_xml(bodies_xml[i]), n, seconds),
        measure("XACML in-process, evaluation of a parsed request", lambda i: pdp.decide(parsed[i]), n, seconds),
    ]
    return figures, pdp


def cedar(workload: Workload, seconds: float, batch_size: int) -> tuple[list[Figure], list[bool]]:
    import cedarpy

    policies_text = workload.cedar_policies
    requests, entities = workload.cedar_requests, workload.cedar_entities
    n = len(requests)
    policy_set = cedarpy.PolicySet.from_str(policies_text)
    entity_handles = [cedarpy.Entities.from_json_str(json.dumps(e)) for e in entities]
    allowed = [cedarpy.is_authorized(requests[i], policy_set, entity_handles[i]).allowed for i in range(n)]
    figures = [
        measure("cedarpy one call at a time, policy text (parsed per call)",
                lambda i: cedarpy.is_authorized(requests[i], policies_text, entities[i]), n, seconds),
        measure("cedarpy one call at a time, pre-parsed PolicySet/Entities",
                lambda i: cedarpy.is_authorized(requests[i], policy_set, entity_handles[i]), n, seconds),
    ]
    batches = [(requests[s:s + batch_size], [e for es in entities[s:s + batch_size] for e in es])
               for s in range(0, n - batch_size + 1, batch_size)]
    batch_entities = [cedarpy.Entities.from_json_str(json.dumps(e)) for _, e in batches]
    batch = measure(f"cedarpy batch call ({batch_size} per call), pre-parsed",
                    lambda i: cedarpy.is_authorized_batch(batches[i][0], policy_set, batch_entities[i]),
                    len(batches), seconds)
    batch.rate *= batch_size  # decisions, not calls
    batch.p50 /= batch_size
    batch.p99 /= batch_size
    if batch.cpu_us is not None:
        batch.cpu_us /= batch_size
    batch.label += " [latency per decision]"
    figures.append(batch)
    return figures, allowed


# --- HTTP -----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_database(url: str, workloads: Sequence[Workload]) -> list[str]:
    """Load the policies through the PAP service (audited into memory here) and return one domain per workload."""
    from sleutelbos.core.protocols import Actor, AuditReceipt
    from sleutelbos.policy.service import PolicyService
    from sleutelbos.policy.store import open_store

    class BenchmarkAudit:
        async def record(self, event: Any) -> AuditReceipt:
            return AuditReceipt(0, "00" * 32)

    async def run() -> list[str]:
        service = PolicyService(open_store(url), BenchmarkAudit())
        await service.start()
        try:
            actor = Actor("benchmark")
            domains = []
            for w in workloads:
                domain = await service.create_domain(actor, f"bench-{len(domains)}")
                stored = await service.add_policy(actor, domain.domain_id, w.policy)
                await service.set_root(actor, domain.domain_id, stored.policy_id)
                domains.append(domain.domain_id)
            return domains
        finally:
            await service.stop()

    return asyncio.run(run())


def _wait_started(server: subprocess.Popen[bytes], port: int, workers: int, what: str) -> None:
    """Wait until every worker logged "Application startup complete." (each compiles every domain first): a
    worker still starting accepts no connection, so the client's keep-alive connections would all go to the others."""
    import threading

    started = threading.Semaphore(0)

    def drain() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            if b"Application startup complete" in line:
                started.release()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.time() + 900
    for _ in range(workers):
        while not started.acquire(timeout=0.5):
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"{what} did not start")


def start_server(url: str, workers: int, data_dir: Path, old: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """``sleutelbos serve policy --workers N`` (worker processes on SO_REUSEPORT sockets, the decision fast path in
    the HTTP protocol) — or, with ``old``, the same application on uvicorn's stock httptools protocol (every
    decision through ASGI), either on uvicorn's workers sharing one socket (``"shared"``: the path before decision
    0391) or on serve policy's SO_REUSEPORT workers (``"reuseport"``: the protocol's share of the gain)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SLEUTELBOS_LOG_LEVEL": "INFO",
           "SLEUTELBOS_POLICY_SYNC_INTERVAL_S": "3600"}
    port = free_port()
    if old:
        env.update({"SLEUTELBOS_DATA_DIR": str(data_dir), "SLEUTELBOS_POLICY_DATABASE_URL": url})
        command = [sys.executable, __file__, "--serve-old", str(port), "--workers", str(workers), "--old-mode", old]
    else:
        command = [sys.executable, "-m", "sleutelbos", "serve", "policy", "--db", url, "--port", str(port),
                   "--data-dir", str(data_dir), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_started(server, port, workers, "the policy server")
    return server, port


async def noop_app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """The ceiling: an ASGI app that reads the body and answers ``{}`` — what uvicorn alone costs here."""
    if scope["type"] == "lifespan":  # answered, so that uvicorn logs its startup like the real server
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


class _NoopDecider:
    """A "PDP" that answers ``{}`` to anything: the ceiling of serve policy's own HTTP stack."""

    def decide_json(self, body: bytes) -> bytes:
        return b"{}"

    decide_xml = decide_json


class _NoopService:
    def cached_pdp(self, domain_id: str) -> _NoopDecider:
        return _NoopDecider()


def noop_fast_app() -> Any:
    """``serve policy``'s HTTP stack (uvicorn + :class:`PdpHttpProtocol`) around a decision that costs nothing."""
    import logging

    from sleutelbos.policy.api import DecisionFastPath

    logging.basicConfig(level=logging.INFO)  # uvicorn's "Application startup complete." on stderr, per worker
    return DecisionFastPath(noop_app, noop_app, service=_NoopService(), max_body_bytes=1 << 20)  # type: ignore[arg-type]


def noop_asgi_app() -> Any:
    """The no-op ASGI app, as a factory (the workers of :func:`run_workers` import factories)."""
    import logging

    logging.basicConfig(level=logging.INFO)
    return noop_app


def start_noop_server(workers: int, fast: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, __file__, "--serve-noop", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command + (["--noop-fast"] if fast else []), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT / "benchmarks")))})
    _wait_started(server, port, workers, "the no-op server")
    return server, port


def serve_noop(port: int, workers: int, fast: bool) -> None:
    """A no-op server on serve policy's workers (SO_REUSEPORT sockets): with serve policy's HTTP protocol, or
    with uvicorn's stock httptools protocol and the no-op ASGI app."""
    from sleutelbos.policy.serving import HTTP_PROTOCOL, run_workers

    stem = Path(__file__).stem
    if fast:
        run_workers(f"{stem}:noop_fast_app", "127.0.0.1", port, workers, http=HTTP_PROTOCOL)
    else:
        run_workers(f"{stem}:noop_asgi_app", "127.0.0.1", port, workers, http="httptools")


def serve_old(port: int, workers: int, mode: str) -> None:
    """The policy application on uvicorn's stock httptools protocol, every decision through ASGI
    (:class:`DecisionFastPath` in front of Starlette): on uvicorn's workers sharing one socket, as ``serve policy``
    ran before decision 0391 (``shared``), or on serve policy's SO_REUSEPORT workers (``reuseport``)."""
    import uvicorn

    from sleutelbos.policy.serving import run_workers

    if mode == "reuseport":
        run_workers("sleutelbos.policy.serving:create_app", "127.0.0.1", port, workers, http="httptools")
    else:
        uvicorn.run("sleutelbos.policy.serving:create_app", factory=True, host="127.0.0.1", port=port,
                    workers=workers, log_level="info", access_log=False, lifespan="on", http="httptools")


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux ``/proc``; 0.0 elsewhere) — the server's
    cost per request, which the load of a shared machine disturbs far less than its rate."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def http_run(port: int, domain: str, bodies_file: Path, seconds: float, connections: int,
             processes: int) -> Figure:
    """Run the client in ``processes`` processes of its own (each with its share of the keep-alive connections)
    and merge their counts and latencies."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    shares = [connections // processes + (k < connections % processes) for k in range(processes)]
    clients = [subprocess.Popen(
        [sys.executable, __file__, "--http-client", "--ports", str(port), "--domain", domain,
         "--bodies", str(bodies_file), "--seconds", str(seconds), "--connections", str(share),
         "--offset", str(k), "--out", f"{bodies_file}.{k}.json"], env=env)
        for k, share in enumerate(shares) if share]
    results = []
    for k, client in enumerate(clients):
        if client.wait():
            raise RuntimeError("an HTTP client process failed")
        results.append(json.loads(Path(f"{bodies_file}.{k}.json").read_text()))
    count = sum(r["count"] for r in results)
    elapsed = max(r["seconds"] for r in results)
    figure = Figure("", count, elapsed, [ns for r in results for ns in r["latencies_ns"]])
    figure.client_cpu = sum(r["cpu_seconds"] for r in results) / count if count else 0.0  # type: ignore[attr-defined]
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"  !! {errors} responses were not 200")
    return figure


class _ClientConnection(asyncio.Protocol):
    """One keep-alive connection of the benchmark client, one request in flight (no pipelining).

    A protocol rather than streams: the client shares the two cores with the server, so it must cost little per
    request — a ``data_received`` that finds the end of the head and the ``content-length``, and one write of a
    pre-serialized request."""

    def __init__(self, requests: list[bytes], first: int, stats: dict[str, Any]) -> None:
        self.requests = requests
        self.index = first
        self.stats = stats
        self.buffer = b""
        self.sent_at = 0
        self.deadline = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))

    def send_next(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.requests[self.index % len(self.requests)])
        self.index += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        stats = self.stats
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            start = head.find(b"content-length:") + 15
            stop = head.find(b"\r\n", start)
            total = end + 4 + int(head[start:stop if stop > 0 else end])
            if len(buffer) < total:
                break
            if not buffer.startswith(b"HTTP/1.1 200"):
                stats["errors"] += 1
            buffer = buffer[total:]
            now = time.perf_counter_ns()
            stats["latencies_ns"].append(now - self.sent_at)
            stats["count"] += 1
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)
                return
            self.send_next()
        self.buffer = buffer


async def http_client(port: int, domain: str, bodies: list[bytes], seconds: float, connections: int,
                      offset: int) -> dict[str, Any]:
    """Keep-alive HTTP/1.1 connections, one request in flight each (no pipelining), pre-serialized requests, a
    lean asyncio protocol on uvloop. All connections are open before the clock starts."""
    path = f"/authzforce-ce/domains/{domain}/pdp"
    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xacml+json\r\n"
         f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies
    ]
    stats: dict[str, Any] = {"count": 0, "errors": 0, "latencies_ns": []}
    loop = asyncio.get_running_loop()
    connected = []
    for k in range(connections):
        _, protocol = await loop.create_connection(
            lambda k=k: _ClientConnection(requests, k * 7919 + offset * 104729, stats), "127.0.0.1", port)
        connected.append(protocol)
    cpu = time.process_time()
    started = time.perf_counter_ns()
    for protocol in connected:
        protocol.deadline = started + int(seconds * 1e9)
        protocol.send_next()
    await asyncio.gather(*(protocol.done for protocol in connected))
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return {**stats, "seconds": elapsed, "cpu_seconds": time.process_time() - cpu}


# --- the report -----------------------------------------------------------------------------------------------


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def http_figures(args: argparse.Namespace, workloads: list[Workload], summary: dict[str, dict[str, Figure]]) -> None:
    """Over HTTP, one client for all: the two no-op ceilings (uvicorn + a no-op ASGI app; ``serve policy``'s own
    stack with a decision that costs nothing), ``serve policy`` on both workloads, and the old path (every decision
    through ASGI) on the meter workload — each with the same number of workers."""
    meter = workloads[1]
    with tempfile.TemporaryDirectory(prefix="sleutelbos-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'policy.sqlite'}"
        domains = prepare_database(url, workloads)
        bodies_file = Path(tmp) / "bodies.hex"
        print(f"\nover HTTP: client in {args.client_processes} separate process(es), {args.connections} keep-alive "
              "connections in all (one request in flight each), JSON Profile; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        def run(label: str, server: subprocess.Popen[bytes], port: int, domain: str, workload: Workload) -> Figure:
            bodies_file.write_text("\n".join(b.hex() for b in workload.json_bodies))
            cpu = process_tree_cpu_seconds(server.pid)
            figure = http_run(port, domain, bodies_file, args.http_seconds, args.connections, args.client_processes)
            server_cpu = (process_tree_cpu_seconds(server.pid) - cpu) / max(1, round(figure.rate * args.http_seconds))
            figure.label = label
            print(figure.line() + f"   CPU/request: server {server_cpu * 1e6:.0f} us, "
                  f"client {figure.client_cpu * 1e6:.0f} us")  # type: ignore[attr-defined]
            return figure

        for workers in sorted({1, args.workers} if args.one_worker_too else {args.workers}):
            print(f"\n{workers} worker process(es):")
            ceilings = {}
            for fast, label in ((False, "ceiling: uvicorn's protocol + a no-op ASGI app"),
                                (True, "ceiling: serve policy's HTTP stack, no-op decision")):
                noop, noop_port = start_noop_server(workers, fast)
                try:
                    ceilings[fast] = run(label, noop, noop_port, "none", meter)
                finally:
                    noop.terminate()
                    noop.wait(timeout=30)
            server, port = start_server(url, workers, Path(tmp))
            try:
                for w, domain in zip(workloads, domains, strict=True):
                    figure = run(f"{w.name}: `serve policy --workers {workers}`", server, port, domain, w)
                    summary[w.name][f"http-{workers}"] = figure
            finally:
                server.terminate()
                server.wait(timeout=30)
            server, port = start_server(url, workers, Path(tmp), old="shared")
            try:
                old = run(f"{meter.name}: old path (uvicorn's workers, decisions through ASGI)", server, port,
                          domains[1], meter)
            finally:
                server.terminate()
                server.wait(timeout=30)
            if workers > 1:
                server, port = start_server(url, workers, Path(tmp), old="reuseport")
                try:
                    run(f"{meter.name}: uvicorn's protocol on serve policy's workers", server, port, domains[1],
                        meter)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
            for w in workloads:
                figure = summary[w.name][f"http-{workers}"]
                print(f"  {w.name}: {figure.rate:,.0f}/s = {ratio(figure.rate, ceilings[True].rate)} of its stack's "
                      f"no-op ceiling, {ratio(figure.rate, ceilings[False].rate)} of uvicorn's no-op ASGI ceiling"
                      + (f", {ratio(figure.rate, old.rate)} the old path" if w is meter else "")
                      + f"; AuthZForce's published {AUTHZFORCE_HTTP:,}/s: {ratio(figure.rate, AUTHZFORCE_HTTP)}"
                      f"; goal 10,000/s: {'met' if figure.rate >= 10_000 else 'NOT met'}")
        print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--permissions", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000, help="distinct requests per workload")
    parser.add_argument("--seconds", type=float, default=3.0, help="per in-process / Cedar measurement")
    parser.add_argument("--http-seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the HTTP servers")
    parser.add_argument("--one-worker-too", action="store_true", help="also measure every server with 1 worker")
    parser.add_argument("--client-processes", type=int, default=1, help="HTTP client processes")
    parser.add_argument("--batch", type=int, default=100, help="requests per cedarpy batch call")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-cedar", action="store_true")
    parser.add_argument("--seed", type=int, default=4)
    # the client mode, run by this script in a separate process
    parser.add_argument("--http-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--domain", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--serve-noop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--noop-fast", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-old", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--old-mode", default="shared", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_noop:
        serve_noop(args.serve_noop, args.workers, args.noop_fast)
        return
    if args.serve_old:
        serve_old(args.serve_old, args.workers, args.old_mode)
        return

    if args.http_client:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        bodies = [bytes.fromhex(line) for line in Path(args.bodies).read_text().split()]
        result = asyncio.run(http_client(int(args.ports), args.domain, bodies, args.seconds, args.connections,
                                         args.offset))
        Path(args.out).write_text(json.dumps(result))
        return

    rng = random.Random(args.seed)
    print(f"policy decisions benchmark — python {sys.version.split()[0]}, {os.cpu_count()} CPUs (shared; noisy), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    workloads = [rbac_workload(args.roles, args.permissions, args.requests, rng),
                 meter_workload(args.requests, rng)]
    summary: dict[str, dict[str, Figure]] = {}
    for w in workloads:
        print(f"\n{w.name}: {len(w.json_bodies)} distinct requests, policy {len(w.policy) / 1e6:.2f} MB")
        figures, pdp = in_process(w, args.seconds)
        for f in figures:
            print(f.line())
        summary[w.name] = {"json": figures[0], "eval": figures[2]}
        if not args.skip_cedar:
            ours = [decision_of_json(pdp.decide_json(b)) == "Permit" for b in w.json_bodies]
            cedar_figures, allowed = cedar(w, args.seconds, args.batch)
            for f in cedar_figures:
                print(f.line())
            disagree = sum(a != b for a, b in zip(ours, allowed, strict=True))
            print(f"  decisions: {sum(ours)} Permit of {len(ours)}; XACML and Cedar disagree on {disagree}")
            for f in cedar_figures:
                print(f"  ratio XACML JSON path / {f.label.split(' [')[0]}: {ratio(figures[0].rate, f.rate)}"
                      f"   (evaluation only: {ratio(figures[2].rate, f.rate)})")
            summary[w.name]["cedar-batch"] = cedar_figures[-1]

    if not args.skip_http:
        http_figures(args, workloads, summary)

    meter = summary[workloads[1].name]
    print(f"\ngoals on (b) (load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"  in-process >= 50,000/s: JSON path {meter['json'].rate:,.0f}/s, evaluation {meter['eval'].rate:,.0f}/s"
          f" -> {'met' if meter['eval'].rate >= 50_000 else 'NOT met'}")
    print(f"  p99 < 100 us: JSON path {meter['json'].p99:.1f} us, evaluation {meter['eval'].p99:.1f} us"
          f" -> {'met' if meter['eval'].p99 < 100 else 'NOT met'}")
    print(f"  CPU per call: JSON path {meter['json'].cpu_us:.2f} us ({1e6 / meter['json'].cpu_us:,.0f}/s of one core), "
          f"evaluation {meter['eval'].cpu_us:.2f} us ({1e6 / meter['eval'].cpu_us:,.0f}/s of one core)")
    if "cedar-batch" in meter:
        print(f"  >= 2x cedarpy batch: {ratio(meter['eval'].rate, meter['cedar-batch'].rate)} (evaluation), "
              f"{ratio(meter['json'].rate, meter['cedar-batch'].rate)} (JSON path)")


if __name__ == "__main__":
    main()

"""The issue's query and single-entity GETs over HTTP on SQLite, one broker source tree against another on the same
file in the same run: the before/after measure of the read path (decision 0750).

Run from the worktree root, with the other tree a checkout of the code before the change::

    PYTHONPATH=src python benchmarks/broker_reads_http.py --reference-src ../before/src [--meters 100000]

One SQLite file is loaded once, as ``broker_throughput.py --full --batch-workers 2`` leaves it before its query
phase: ``--meters`` meters by batch upsert through this tree's broker with 2 batch workers, a create and three
update passes (the history head flushed into chunks after the fourth), then ``--patches`` single PATCHes of random
meters (the same values: the query reads as many candidate rows). Then, per pair
(``--pairs``, alternating which tree goes first), ``sleutelbos serve broker`` from each tree on that file answers
``GET /entities?type=Device&q=activePowerImport>2.5&limit=20`` (``--queries`` requests after as many for warm-up)
and ``GET /entities/{id}`` of random meters, over 16 keep-alive connections (``broker_throughput.py``'s client).
Unlike ``broker_throughput.py``, whose phases are short and follow a heavy batch phase in the same broker, this is
the steady state of a broker that only reads. Printed per tree: requests/s, the broker's CPU per request (all its
threads), this client's CPU per request, medians over the pairs, and this tree's ratio to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from broker_throughput import http_request, run_requests
from broker_workload import (
    BASE,
    free_port,
    meter,
    process_cpu_s,
    single_patch,
    start_broker,
    stop_broker,
    tree_arguments,
    trees,
)

QUERY = f"{BASE}/entities?type=Device&q=activePowerImport%3E2.5&limit=20"


async def load(src: str, data: Path, meters: int, patches: int) -> None:
    port = free_port()
    proc = start_broker(f"sqlite:///{data}/broker.sqlite", port, data, src, SLEUTELBOS_BROKER_BATCH_WORKERS="2",
                        SLEUTELBOS_BROKER_TEMPORAL_HEAD_ROWS=str(4 * meters))
    try:
        upsert = f"{BASE}/entityOperations/upsert"
        for round_ in range(4):
            batches = [http_request("POST", upsert, orjson.dumps([meter(i, round_) for i in range(s, min(meters, s + 1000))]))
                       for s in range(0, meters, 1000)]
            await run_requests(port, batches, 2, {201, 204})
        rnd = random.Random(7)
        await run_requests(port, [http_request("PATCH", *single_patch(rnd, meters)) for _ in range(patches)], 16, {204})
    finally:
        stop_broker(proc)


async def one_run(src: str, data: Path, meters: int, queries: int) -> dict[str, float]:
    """Requests/s and CPU µs per request (broker, client) of the query and of single GETs, one broker from ``src``."""
    port = free_port()
    proc = start_broker(f"sqlite:///{data}/broker.sqlite", port, data, src)
    out: dict[str, float] = {}
    rnd = random.Random(11)
    try:
        phases = {"query": [http_request("GET", QUERY)] * queries,
                  "get": [http_request("GET", f"{BASE}/entities/urn:ngsi-ld:Device:meter-{rnd.randrange(meters):07d}")
                          for _ in range(queries)]}
        for name, requests in phases.items():
            await run_requests(port, requests, 16, {200})  # warm-up: connections, statements, render cache
            c0, s0, t0 = time.process_time(), process_cpu_s(proc.pid), time.perf_counter()
            await run_requests(port, requests, 16, {200})
            elapsed = time.perf_counter() - t0
            out[f"{name}_per_s"] = len(requests) / elapsed
            out[f"{name}_broker_cpu_us"] = (process_cpu_s(proc.pid) - s0) / len(requests) * 1e6
            out[f"{name}_client_cpu_us"] = (time.process_time() - c0) / len(requests) * 1e6
        return out
    finally:
        stop_broker(proc)


async def measure(args: argparse.Namespace, trees: dict[str, str]) -> None:
    print(f"SQLite, {args.meters:,} meters, {args.queries:,} requests per phase, {args.pairs} pairs, 16 connections")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        await load(trees["this"], data, args.meters, args.patches)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for pair in range(args.pairs):
            for name in (list(trees) if pair % 2 == 0 else list(reversed(trees))):
                runs[name].append(await one_run(trees[name], data, args.meters, args.queries))
    for phase, label in (("query", "q query"), ("get", "single GET")):
        medians = {}
        for name in trees:
            rates = [r[f"{phase}_per_s"] for r in runs[name]]
            medians[name] = (statistics.median(rates), statistics.median(r[f"{phase}_broker_cpu_us"] for r in runs[name]),
                             statistics.median(r[f"{phase}_client_cpu_us"] for r in runs[name]))
            print(f"  {label:10s} {name:9s}: {medians[name][0]:>8,.0f}/s ({', '.join(f'{r:,.0f}' for r in rates)}); "
                  f"broker CPU µs/request {medians[name][1]:,.0f}; client {medians[name][2]:,.0f}")
        print(f"  {label:10s} this / reference: {medians['this'][0] / medians['reference'][0]:.2f}x requests/s, "
              f"{medians['this'][1] / medians['reference'][1]:.2f}x broker CPU per request", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_arguments(ap)
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--patches", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(measure(args, trees(args)))


if __name__ == "__main__":
    main()

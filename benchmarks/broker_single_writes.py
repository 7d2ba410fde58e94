"""Single-entity ``PATCH /entities/{id}/attrs`` on SQLite, one broker source tree against another in the same run:
the before/after measure of the store's group commit (decision 0740).

Run from the worktree root, with the other tree a checkout of the code before the change::

    PYTHONPATH=src python benchmarks/broker_single_writes.py --reference-src ../before/src
    PYTHONPATH=src python benchmarks/broker_single_writes.py --reference-src ../before/src --synchronous FULL

For each pair (``--pairs``, alternating which tree goes first) and each client concurrency (``--concurrency``,
default 1 and 16 connections): ``sleutelbos serve broker`` on a fresh SQLite file from each tree, ``--meters`` meters
created by batch upsert, then ``--patches`` PATCHes of one property of random meters over keep-alive connections
(``broker_throughput.py``'s client). Printed per tree: PATCH/s and the broker's CPU per PATCH (all its threads),
median over the pairs, and the ratio of this tree to the reference.
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


async def one_run(src: str, meters: int, patches: int, concurrency: int, synchronous: str) -> tuple[float, float]:
    """(PATCH/s, broker CPU µs per PATCH) of one fresh broker from ``src``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        port = free_port()
        proc = start_broker(f"sqlite:///{data}/broker.sqlite", port, data, src,
                            SLEUTELBOS_BROKER_SQLITE_SYNCHRONOUS=synchronous)
        try:
            upsert = f"{BASE}/entityOperations/upsert"
            create = [http_request("POST", upsert, orjson.dumps([meter(i, 0) for i in range(s, min(meters, s + 1000))]))
                      for s in range(0, meters, 1000)]
            await run_requests(port, create, 2, {201, 204})
            rnd = random.Random(7)
            load = [http_request("PATCH", *single_patch(rnd, meters)) for _ in range(patches)]
            c0, t0 = process_cpu_s(proc.pid), time.perf_counter()
            await run_requests(port, load, concurrency, {204})
            elapsed = time.perf_counter() - t0
            return patches / elapsed, (process_cpu_s(proc.pid) - c0) / patches * 1e6
        finally:
            stop_broker(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_arguments(ap)
    ap.add_argument("--meters", type=int, default=20_000)
    ap.add_argument("--patches", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = ap.parse_args()
    asyncio.run(measure(args, trees(args)))


async def measure(args: argparse.Namespace, trees: dict[str, str]) -> None:
    print(f"SQLite synchronous={args.synchronous}, {args.meters:,} meters, {args.patches:,} PATCHes per run, "
          f"{args.pairs} pairs")
    for conc in args.concurrency:
        rates: dict[str, list[float]] = {name: [] for name in trees}
        cpus: dict[str, list[float]] = {name: [] for name in trees}
        for pair in range(args.pairs):
            order = list(trees) if pair % 2 == 0 else list(reversed(trees))
            for name in order:
                rate, cpu = await one_run(trees[name], args.meters, args.patches, conc, args.synchronous)
                rates[name].append(rate)
                cpus[name].append(cpu)
        for name in trees:
            print(f"  {conc:>3} connections, {name:9s}: PATCH/s {statistics.median(rates[name]):>8,.0f} "
                  f"({', '.join(f'{r:,.0f}' for r in rates[name])}); broker CPU µs/PATCH "
                  f"{statistics.median(cpus[name]):,.0f}")
        print(f"  {conc:>3} connections, this / reference: PATCH/s "
              f"{statistics.median(rates['this']) / statistics.median(rates['reference']):.2f}x, CPU per PATCH "
              f"{statistics.median(cpus['this']) / statistics.median(cpus['reference']):.2f}x", flush=True)


if __name__ == "__main__":
    main()

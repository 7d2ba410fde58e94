"""Garbage-collector settings for a long-running server process (decisions 0106 and 0505).

Why: the hot paths (a 1,000-entity batch upsert, thousands of audit appends in flight) allocate tens of thousands of
short-lived dicts and lists, none of them in reference cycles, so CPython's default — a young-generation pass every
700 allocations, each older pass walking every live object — ran collections that found nothing, ~10 % of the CPU.
After start-up the long-lived objects (modules, compiled contexts and policies, routes) are frozen out of the
collector's walks, and the young generation is collected every 20,000 allocations. Cycles are still collected, only
later. Process-wide, so one place sets it; once per process (a test run starts many components in one process, and
what is frozen is never collected).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
_tuned = False


def tune_garbage_collector() -> None:
    """Freeze the start-up heap and raise the young generation's threshold, once per process."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    threshold0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, threshold0), gen1, gen2)

"""Interpreter settings for long-running Serendib processes: the garbage collector's
thresholds, and how soon a thread waiting for the GIL gets it."""

from __future__ import annotations

import gc
import sys

__all__ = ["SWITCH_INTERVAL_S", "tune_gc", "tune_threads"]

SWITCH_INTERVAL_S = 0.0003
"""How long a thread holding the GIL keeps it while another waits (CPython's default: 5 ms)."""

GC_THRESHOLDS = (50_000, 20, 100)
"""Allocations before a young collection; young collections per middle one; middle per full."""


def tune_gc() -> None:
    """Collect garbage less often: for a process that runs a manager or many workers.

    A manager makes a few short-lived objects per task and keeps every unfinished task in
    memory. At CPython's default thresholds (700, 10, 10) the cyclic collector walks that
    live heap again and again: 12-29% of a busy manager's CPU time (``bench.tasks_e2e``),
    and more the more tasks are pending. This moves everything alive now (imports, start-up
    objects) out of the collector's sight for good (:func:`gc.freeze`) and raises the
    thresholds to :data:`GC_THRESHOLDS`. Reference counting still frees almost everything
    at once; only cycles wait longer. The ``serendib`` command calls it for ``admin``,
    ``worker`` and ``demo``; call it once at start-up in your own long-running process.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_threads() -> None:
    """Hand the GIL over sooner (:data:`SWITCH_INTERVAL_S`): for a process whose event loop
    shares the interpreter with a busy thread, as a manager's does with its store's writer.

    The writer releases the GIL while SQLite works and must take it back between statements;
    with CPython's 5 ms switch interval it can wait that long behind the loop, and the loop
    waits on the writer's commit. Measured through the client (``bench.client_e2e --one
    throughput``, W=4, N=10,000, quiet machine): with the admin and the workers tuned (the
    ``serendib`` command does it for ``admin``, ``worker`` and ``demo``), 8,731-9,402
    tasks/s over six runs against 8,066-8,587 untuned (docs/benchmarks.md).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)

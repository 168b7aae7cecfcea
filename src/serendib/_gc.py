"""Garbage-collector settings for long-running Serendib processes."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

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

"""What keeps a pending task from the scheduler: its parents, its time, or a limit.

A pending task goes to the :class:`~serendib.tasks.scheduling.Scheduler` (and waits there for
a worker) only once nothing holds it. Three parts hold tasks, each pure and each costing
O(log n) or less per task, whatever the number of tasks held:

- :class:`Dependencies`: a task whose parents have not all ended waits for them. When a
  parent ends, each child learns it in O(1): with its output (it succeeded), or that the
  child is doomed (it failed or was cancelled, and the child does not run anyway).
- :class:`Timeline`: a task not to be assigned before a time (``delay_s``, ``not_before``,
  a retry's backoff) waits for it.
- :class:`KeyLimits`: a task with a ``concurrency_key`` takes a permit of its key before it
  goes to the scheduler: at most N of a key are admitted or running at once (``--limit``), and
  at most R start per second (``--rate``: a key has ``max(1, floor(R))`` start permits, each
  given back ``permits / R`` seconds after its task started, so no window of that length
  sees more starts than permits).

The manager's book moves tasks between them (:class:`~serendib.tasks.engine.book.TaskBook`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush

__all__ = ["Dependencies", "KeyLimits", "Released", "Timeline"]


@dataclass(slots=True)
class Released:
    """Children that learnt of a parent's end.

    Attributes:
        ready: Children with no parent left to wait for.
        doomed: Children to cancel, each with the parent that failed and how it ended.
    """

    ready: list[str] = field(default_factory=list)
    doomed: list[tuple[str, str, str]] = field(default_factory=list)


class Dependencies:
    """Children waiting on parents that have not ended, and what the ended ones gave them."""

    __slots__ = ("_anyway", "_children", "_inputs", "_waiting")

    def __init__(self) -> None:
        self._waiting: dict[str, set[str]] = {}  # child -> parents not ended
        self._children: dict[str, list[str]] = {}  # parent -> children waiting on it
        self._inputs: dict[str, dict[str, object]] = {}  # child -> succeeded parents' outputs
        self._anyway: set[str] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, child: str) -> bool:
        return child in self._waiting

    def add(
        self,
        child: str,
        waiting_on: Iterable[str],
        inputs: dict[str, object],
        *,
        run_anyway: bool,
    ) -> None:
        """Hold ``child`` until each of ``waiting_on`` ends (given the outputs of the
        parents that already succeeded)."""
        parents = set(waiting_on)
        self._inputs[child] = inputs
        if run_anyway:
            self._anyway.add(child)
        if not parents:
            return
        self._waiting[child] = parents
        for parent in parents:
            self._children.setdefault(parent, []).append(child)

    def ended(self, parent: str, succeeded: bool, output: object, how: str) -> Released:
        """``parent`` ended (``how``: its final state): its waiting children learn it."""
        released = Released()
        for child in self._children.pop(parent, ()):
            waiting = self._waiting.get(child)
            if waiting is None or parent not in waiting:
                continue
            waiting.discard(parent)
            if succeeded:
                self._inputs.setdefault(child, {})[parent] = output
            elif child not in self._anyway:
                self._forget_waits(child)
                released.doomed.append((child, parent, how))
                continue
            if not waiting:
                del self._waiting[child]
                released.ready.append(child)
        return released

    def waits_for(self, child: str) -> list[str]:
        """The parents ``child`` still waits for, sorted."""
        return sorted(self._waiting.get(child, ()))

    def inputs(self, child: str) -> dict[str, object]:
        """The outputs of ``child``'s succeeded parents, by id (it keeps them: a retry needs
        them again)."""
        return self._inputs.get(child, {})

    def has_children(self, parent: str) -> bool:
        """Whether a task waits for ``parent``."""
        return parent in self._children

    def forget(self, child: str) -> None:
        """``child`` ended (or was withdrawn): drop all it holds."""
        self._forget_waits(child)
        self._inputs.pop(child, None)
        self._anyway.discard(child)

    def _forget_waits(self, child: str) -> None:
        for parent in self._waiting.pop(child, ()):
            children = self._children.get(parent)
            if children is not None:
                with suppress(ValueError):
                    children.remove(child)
                if not children:
                    del self._children[parent]


class Timeline:
    """Tasks not to be assigned before a time; the earliest first."""

    __slots__ = ("_heap", "_until")

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._until

    def hold(self, task_id: str, until: float) -> None:
        """Hold ``task_id`` until ``until`` (seconds since the epoch)."""
        self._until[task_id] = until
        heappush(self._heap, (until, task_id))
        if len(self._heap) > 2 * len(self._until) + 64:
            self._heap = [(at, t) for t, at in self._until.items()]
            self._heap.sort()

    def until(self, task_id: str) -> float | None:
        """When ``task_id`` may go; None if it is not held."""
        return self._until.get(task_id)

    def withdraw(self, task_id: str) -> bool:
        """Stop holding ``task_id``; False if it was not held."""
        return self._until.pop(task_id, None) is not None

    def due(self, now: float) -> list[str]:
        """The tasks whose time has come (no longer held), earliest first."""
        found = []
        heap, until = self._heap, self._until
        while heap and heap[0][0] <= now:
            at, task_id = heappop(heap)
            if until.get(task_id) == at:
                del until[task_id]
                found.append(task_id)
        return found

    def next_at(self) -> float | None:
        """The earliest time a held task may go; None if none is held."""
        heap, until = self._heap, self._until
        while heap and until.get(heap[0][1]) != heap[0][0]:
            heappop(heap)
        return heap[0][0] if heap else None


@dataclass(slots=True, eq=False)
class _Key:
    limit: int | None  # tasks admitted or running at once; None: no limit
    permits: int  # start permits (rate); 0: no rate
    window: float  # seconds a start permit stays taken after its task started
    running: set[str] = field(default_factory=set)  # admitted, until its attempt ends
    unstarted: set[str] = field(default_factory=set)  # holding a start permit, not started
    returns: deque[float] = field(default_factory=deque)  # when used start permits come back
    queue: list[tuple[int, int, str]] = field(default_factory=list)  # -priority, seq, id
    queued: dict[str, int] = field(default_factory=dict)  # id -> seq of its live entry

    def room(self, now: float) -> bool:
        if self.limit is not None and len(self.running) >= self.limit:
            return False
        if self.permits:
            returns = self.returns
            while returns and returns[0] <= now:
                returns.popleft()
            if len(self.unstarted) + len(returns) >= self.permits:
                return False
        return True


class KeyLimits:
    """Concurrency and start-rate limits per ``concurrency_key``.

    Args:
        limits: At most this many tasks of a key admitted to the scheduler or running at once.
        rates: At most this many starts per second of a key.

    Raises:
        ValueError: A limit below 1 or a rate not above 0.
    """

    def __init__(self, limits: Mapping[str, int] = {}, rates: Mapping[str, float] = {}) -> None:
        for key, limit in limits.items():
            if limit < 1:
                raise ValueError(f"the limit of {key!r} must be at least 1, not {limit}")
        for key, rate in rates.items():
            if not rate > 0 or math.isinf(rate):
                raise ValueError(f"the rate of {key!r} must be above 0 per second, not {rate}")
        self._keys: dict[str, _Key] = {}
        for key in {*limits, *rates}:
            per_s = rates.get(key)
            permits = max(1, math.floor(per_s)) if per_s else 0
            self._keys[key] = _Key(limits.get(key), permits, permits / per_s if per_s else 0.0)
        self._seq = 0
        self._dirty: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def limits(self) -> dict[str, int]:
        """The concurrency limit of each key that has one."""
        return {k: v.limit for k, v in self._keys.items() if v.limit is not None}

    @property
    def rates(self) -> dict[str, float]:
        """The start rate of each key that has one (per second)."""
        return {k: v.permits / v.window for k, v in self._keys.items() if v.permits}

    def limited(self, key: str | None) -> bool:
        """Whether tasks of ``key`` are limited."""
        return key is not None and key in self._keys

    def admit(self, key: str, task_id: str, priority: int, now: float) -> bool:
        """Take a permit of ``key`` for ``task_id`` if there is room (True), else queue it
        for one (False)."""
        limits = self._keys[key]
        if not limits.queue and limits.room(now):
            self._take(limits, task_id)
            return True
        self._seq += 1
        limits.queued[task_id] = self._seq
        heappush(limits.queue, (-priority, self._seq, task_id))
        return False

    def occupy(self, key: str, task_id: str) -> None:
        """``task_id`` runs already (a manager resuming): it holds a permit of ``key``
        whatever the room."""
        limits = self._keys.get(key)
        if limits is not None and limits.limit is not None:
            limits.running.add(task_id)

    def started(self, key: str, task_id: str, at: float) -> None:
        """``task_id``'s attempt was given to a worker: its start permit comes back after
        the key's window."""
        limits = self._keys.get(key)
        if limits is not None and task_id in limits.unstarted:
            limits.unstarted.discard(task_id)
            limits.returns.append(at + limits.window)

    def release(self, key: str, task_id: str) -> None:
        """``task_id`` no longer runs (its attempt ended, or it left the scheduler unstarted):
        its permits come back (a start permit of a task that started only after its window)."""
        limits = self._keys.get(key)
        if limits is None:
            return
        if task_id in limits.running:
            limits.running.discard(task_id)
            self._dirty.add(key)
        if task_id in limits.unstarted:
            limits.unstarted.discard(task_id)
            self._dirty.add(key)

    def withdraw(self, key: str, task_id: str) -> bool:
        """Take ``task_id`` out of its key's queue (cancelled); False if it was not queued."""
        limits = self._keys.get(key)
        if limits is None or limits.queued.pop(task_id, None) is None:
            return False
        queue, queued = limits.queue, limits.queued
        if len(queue) > 2 * len(queued) + 64:  # mostly withdrawn entries: keep the live ones
            limits.queue = [e for e in queue if queued.get(e[2]) == e[1]]
            heapify(limits.queue)
        return True

    def is_queued(self, key: str | None, task_id: str) -> bool:
        """Whether ``task_id`` waits for a permit of ``key``."""
        limits = self._keys.get(key) if key is not None else None
        return limits is not None and task_id in limits.queued

    def ready(self, now: float) -> list[str]:
        """Queued tasks that took a permit now (first in line first): they go to the
        scheduler. Looks only at keys whose permits came back, or whose window passed."""
        found: list[str] = []
        keys = self._dirty
        self._dirty = set()
        for name, limits in self._keys.items():
            if name not in keys and not (
                limits.queue and limits.returns and limits.returns[0] <= now
            ):
                continue
            queue, queued = limits.queue, limits.queued
            while queue:
                _, seq, task_id = queue[0]
                if queued.get(task_id) != seq:
                    heappop(queue)
                    continue
                if not limits.room(now):
                    break
                heappop(queue)
                del queued[task_id]
                self._take(limits, task_id)
                found.append(task_id)
        return found

    def next_at(self) -> float | None:
        """The earliest time a start permit comes back to a key with tasks queued; None if
        no queued task waits on time."""
        times = [
            limits.returns[0] for limits in self._keys.values() if limits.queued and limits.returns
        ]
        return min(times) if times else None

    def reason(self, key: str, now: float) -> str:
        """Why a task of ``key`` waits for a permit, for people."""
        limits = self._keys[key]
        if limits.limit is not None and len(limits.running) >= limits.limit:
            return (
                f"held by the limit of {key!r}: {len(limits.running)} of {limits.limit} "
                "running or about to"
            )
        if limits.permits:
            rate = limits.permits / limits.window
            return f"held by the rate of {key!r}: at most {rate:g} starts per second"
        return f"waiting for its turn under the limits of {key!r}"

    def counts(self, key: str) -> tuple[int, int]:
        """Tasks of ``key`` admitted or running, and queued for a permit."""
        limits = self._keys[key]
        return len(limits.running), len(limits.queued)

    @staticmethod
    def _take(limits: _Key, task_id: str) -> None:
        if limits.limit is not None:
            limits.running.add(task_id)
        if limits.permits:
            limits.unstarted.add(task_id)

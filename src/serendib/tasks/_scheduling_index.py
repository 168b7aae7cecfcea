"""The scheduler's per-pool indexes: pending tasks by level, and workers by level.

A pool is what a task needs beyond a level: a skill, a kind of task (the handler that runs it)
and labels; every task of a pool can go to the same workers. A :class:`_Queue` finds the first
task in line among levels lo..hi, a :class:`_Workers` the least or most skilled free worker,
each in amortized O(log n): stale entries (a task gone, a worker
whose load changed) are never searched for, only dropped on reaching a heap's head or compacted
once they outnumber live ones. Memory stays O(live entries + levels); the policy is the scheduler's.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush

# The highest skill level; public as serendib.tasks.scheduling.MAX_LEVEL.
MAX_LEVEL = 1_000
# Every task harder than any worker can be shares the leaf after MAX_LEVEL.
_BEYOND = MAX_LEVEL + 1

# A pending task's place in line (smaller goes first): -priority, its group's turn, -level,
# submission number, id.
_Key = tuple[float, int, int, int, str]
_NO_KEY: _Key = (math.inf, 0, 0, 0, "")
# A free worker's place in line at one level of one skill: load, name, version.
_Slot = tuple[int, str, int]


@dataclass(slots=True)
class _Task:
    pool: _Pool
    key: _Key


@dataclass(slots=True, eq=False)
class _Worker:
    name: str
    skills: dict[str, int]
    capacity: int
    load: int
    version: int
    kinds: frozenset[str] | None = None  # None: it runs every kind
    labels: frozenset[str] = frozenset()
    # The pools it belongs to, with its level in each (its level in the pool's skill).
    pools: dict[_Pool, int] = field(default_factory=dict)

    @property
    def free(self) -> bool:
        return self.load < self.capacity

    def fits(self, pool: _Pool) -> bool:
        """Whether this worker can run the tasks of ``pool`` (at some level)."""
        return (
            self.skills.get(pool.skill, 0) > 0
            and (pool.kind is None or self.kinds is None or pool.kind in self.kinds)
            and pool.labels <= self.labels
        )


class _Pool:
    """The tasks that need one skill, kind and set of labels, and the workers that have them."""

    __slots__ = ("index", "key", "kind", "labels", "note", "queue", "skill")

    def __init__(
        self,
        key: tuple[str, str | None, tuple[str, ...]],
        tasks: dict[str, _Task],
        workers: dict[str, _Worker],
    ) -> None:
        self.key = key
        self.skill, self.kind, labels = key
        self.labels = frozenset(labels)
        self.queue = _Queue(tasks)
        self.index = _Workers(workers)
        # What an assignment's reason says beyond the skill (built once, not per task).
        parts = [f"kind {self.kind}"] if self.kind not in (None, "simulate") else []
        if self.labels:
            parts.append("labels " + ",".join(sorted(self.labels)))
        self.note = "".join(f", {part}" for part in parts)

    def __repr__(self) -> str:
        return f"_Pool({self.key!r})"


class _Queue:
    """One pool's pending tasks: a heap per level, and a segment tree over the heaps' heads.

    Every head is a live task (stale entries are only ever buried), so the tree answers
    "the first task in line among levels lo..hi" in O(log levels).
    """

    __slots__ = ("_buckets", "_live", "_size", "_tasks", "_tree", "count")

    def __init__(self, tasks: dict[str, _Task]) -> None:
        self.count = 0  # live tasks
        self._tasks = tasks
        self._buckets: dict[int, list[_Key]] = {}
        self._live: dict[int, int] = {}
        self._size = 16
        self._tree = [_NO_KEY] * (2 * self._size)

    def push(self, key: _Key) -> None:
        leaf = min(-key[2], _BEYOND)
        if leaf >= self._size:
            self._grow(leaf)
        bucket = self._buckets.setdefault(leaf, [])
        heappush(bucket, key)
        self.count += 1
        live = self._live[leaf] = self._live.get(leaf, 0) + 1
        if bucket[0] is key:
            self._set(leaf, key)
        elif len(bucket) > 2 * live + 16:
            self._compact(leaf)

    def pop(self, key: _Key) -> None:
        """Take out ``key``, the head of its heap, whose task is already gone."""
        leaf = min(-key[2], _BEYOND)
        heappop(self._buckets[leaf])
        self.count -= 1
        self._live[leaf] -= 1
        self._refresh(leaf)

    def discard(self, key: _Key) -> None:
        """Forget ``key``, wherever it is in its heap; its task is already gone."""
        leaf = min(-key[2], _BEYOND)
        bucket = self._buckets[leaf]
        self.count -= 1
        self._live[leaf] -= 1
        if bucket[0] == key:
            heappop(bucket)
            self._refresh(leaf)
        elif len(bucket) > 2 * self._live[leaf] + 16:
            self._compact(leaf)

    def best(self, lo: int, hi: int) -> _Key | None:
        """The first task in line among levels ``lo..hi``."""
        hi = min(hi, self._size - 1)
        best = _NO_KEY
        lo += self._size
        hi += self._size + 1
        tree = self._tree
        while lo < hi:
            if lo & 1:
                if tree[lo] < best:
                    best = tree[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if tree[hi] < best:
                    best = tree[hi]
            lo >>= 1
            hi >>= 1
        return None if best == _NO_KEY else best

    def _alive(self, key: _Key) -> bool:
        task = self._tasks.get(key[4])
        return task is not None and task.key[3] == key[3]

    def _refresh(self, leaf: int) -> None:
        bucket = self._buckets[leaf]
        while bucket and not self._alive(bucket[0]):
            heappop(bucket)
        if bucket:
            self._set(leaf, bucket[0])
        else:
            del self._buckets[leaf], self._live[leaf]
            self._set(leaf, _NO_KEY)

    def _compact(self, leaf: int) -> None:
        bucket = [key for key in self._buckets[leaf] if self._alive(key)]
        heapify(bucket)
        self._buckets[leaf] = bucket

    def _set(self, leaf: int, key: _Key) -> None:
        tree = self._tree
        i = self._size + leaf
        tree[i] = key
        i >>= 1
        while i:
            left, right = tree[2 * i], tree[2 * i + 1]
            tree[i] = left if left < right else right
            i >>= 1

    def _grow(self, leaf: int) -> None:
        size = self._size
        while size <= leaf:
            size *= 2
        tree = [_NO_KEY] * (2 * size)
        for at, bucket in self._buckets.items():
            tree[size + at] = bucket[0]
        for i in range(size - 1, 0, -1):
            tree[i] = min(tree[2 * i], tree[2 * i + 1])
        self._size, self._tree = size, tree


class _Workers:
    """One pool's workers: how many at each level, and the free ones in a heap per level.

    A worker whose load changes gets a new version; its old heap entries go stale and are
    dropped when they reach a head (or when stale entries outnumber live ones).
    """

    __slots__ = ("_counts", "_free", "_heaps", "_levels", "_live", "_workers", "total")

    def __init__(self, workers: dict[str, _Worker]) -> None:
        self._workers = workers
        self._counts: dict[int, int] = {}
        self._levels: list[int] = []  # distinct levels of connected workers, ascending
        self._free: list[int] = []  # levels having a worker with a free slot, ascending
        self._heaps: dict[int, list[_Slot]] = {}
        self._live: dict[int, int] = {}
        self.total = 0

    def join(self, level: int) -> None:
        self.total += 1
        self._counts[level] = self._counts.get(level, 0) + 1
        if self._counts[level] == 1:
            insort(self._levels, level)

    def leave(self, level: int) -> None:
        self.total -= 1
        self._counts[level] -= 1
        if not self._counts[level]:
            del self._counts[level], self._levels[bisect_left(self._levels, level)]

    def offer(self, level: int, worker: _Worker, *, was_free: bool = False) -> None:
        """Enter a free worker's new version (``was_free``: its old one was live, now stale)."""
        heap = self._heaps.setdefault(level, [])
        heappush(heap, (worker.load, worker.name, worker.version))
        live = self._live[level] = self._live.get(level, 0) + (0 if was_free else 1)
        if live == 1 and not was_free:
            insort(self._free, level)
        elif len(heap) > 2 * live + 16:
            heap[:] = [slot for slot in heap if self._alive(slot)]
            heapify(heap)

    def retire(self, level: int) -> None:
        self._live[level] -= 1
        if not self._live[level]:
            del self._live[level], self._heaps[level], self._free[bisect_left(self._free, level)]

    def max_level(self) -> int:
        return self._levels[-1] if self._levels else 0

    def max_free(self) -> int:
        return self._free[-1] if self._free else 0

    def eligible(self, level: int) -> int:
        return sum(self._counts[at] for at in self._levels[bisect_left(self._levels, level) :])

    def least_able(self, level: int) -> tuple[int, _Worker]:
        """The free worker of the lowest level >= ``level`` (there must be one)."""
        return self._head(self._free[bisect_left(self._free, level)])

    def most_able(self) -> tuple[int, _Worker]:
        """The free worker of the highest level (there must be one)."""
        return self._head(self._free[-1])

    def _alive(self, slot: _Slot) -> bool:
        worker = self._workers.get(slot[1])
        return worker is not None and worker.version == slot[2]

    def _head(self, level: int) -> tuple[int, _Worker]:
        heap = self._heaps[level]
        while not self._alive(heap[0]):
            heappop(heap)
        return level, self._workers[heap[0][1]]

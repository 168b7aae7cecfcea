"""Skill-based assignment: which pending task goes to which worker, and why.

Pure and incremental: the manager tells a :class:`Scheduler` about workers, tasks and finished
attempts, and :meth:`Scheduler.assign` returns the assignments possible now. One assignment
costs amortized O(k log n), k being the number of pools the chosen worker is in: nothing scans
all workers or all pending tasks, and a task no connected worker can do is never looked at
again until one that can joins. (A pool's first task looks once at the workers with its
skill; a worker joining looks once at the pools of its skills.)

Guarantees:

- A task goes only to a worker whose level in the task's skill is at least the task's level,
  that runs the task's kind (has a handler for it) and has every label the task requires,
  and never to a worker without a free slot. With ``attempt_unqualified``, a task harder than
  every connected worker goes to the most skilled worker with a free slot instead, once every
  qualified placement is made; its :class:`Assignment` says so.
- :meth:`Scheduler.assign` is maximal: when it returns, no pending task has an eligible worker
  with a free slot. A task that cannot be placed never holds back one that can.
- Among the tasks that can be placed, the highest priority goes first, then the hardest, then
  the earliest submitted; each to the least skilled eligible worker (keeping experts free),
  then the least loaded, then by name.
- Fairness: among tasks of equal priority, tasks that name a ``group`` (a tenant, a user) are
  served in turns, one of each group per turn, before the hardest-first order applies: one
  group's 10^5 tasks do not delay another's ten. (Start-time fair queueing: a group's n-th
  waiting task gets turn ``max(current turn, its group's last turn) + 1``; a group arriving
  late starts at the current turn, neither behind the others nor owed the turns it missed.
  Until a task names a group, tasks take the current turn, so the order is as above; from
  then on, the tasks without a group take turns as one group of their own.)
- Tasks needing the same skill, kind and labels form a pool, indexed on its own; a worker is
  in every pool it fits. A waiting task says what it lacks: a worker running its kind, a
  label, the skill, or the level.
- One pool (or workers that each fit one pool): the workers able to do a task are a subset
  of those able to do any easier one, so this greedy is optimal. It places as many pending
  tasks as any placement on the free slots could, and a task left waiting could only have
  taken the place of a placed task that comes before it in the order above.
- Workers in several pools sharing one capacity: the problem is a general matching, and the
  greedy is maximal but not always maximum; it places at least half as many tasks as the best
  placement would. (A worker with ``python`` and ``general`` may take a general task that a
  ``general``-only worker could have done, leaving a python task waiting.)

Tasks already given out are never moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from heapq import heapify, heappop, heapreplace

from serendib.tasks._scheduling_index import (
    _BEYOND,
    MAX_LEVEL,
    _Key,
    _Pool,
    _Task,
    _Worker,
)

_PoolKey = tuple[str, str | None, tuple[str, ...]]
_SPARE_POOLS = 64
"""Idle pools (no task waiting) kept before they are forgotten: a pool costs each joining
worker a look, so the pools of label sets that came and went do not pile up."""

__all__ = ["MAX_LEVEL", "Assignment", "Scheduler"]


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task given to one worker.

    Attributes:
        task_id: The task.
        worker: The worker's name.
        reason: Why this worker, for people.
        qualified: False when the worker's level is below the task's (``attempt_unqualified``).
    """

    task_id: str
    worker: str
    reason: str
    qualified: bool = True


class Scheduler:
    """Decides which worker gets which pending task; see the module for what it guarantees.

    Args:
        attempt_unqualified: Give a task harder than every connected worker (in its skill) to
            the most skilled worker with a free slot, instead of letting it wait.
    """

    def __init__(self, *, attempt_unqualified: bool = False) -> None:
        self._attempt_unqualified = attempt_unqualified
        self._tasks: dict[str, _Task] = {}
        self._workers: dict[str, _Worker] = {}
        self._pools: dict[_PoolKey, _Pool] = {}
        self._pools_by_skill: dict[str, dict[_PoolKey, _Pool]] = {}
        self._by_skill: dict[str, set[str]] = {}  # workers having each skill (level > 0)
        # How many connected workers run each kind (and run any kind), have each label: to
        # say what a waiting task lacks without looking at every worker.
        self._kinds: dict[str, int] = {}
        self._any_kind = 0
        self._labels: dict[str, int] = {}
        # Pools whose tasks or free workers changed since the last assign(): only these can
        # have a placement to make.
        self._dirty: set[_Pool] = set()
        self._seq = 0
        self._version = 0
        # Fair turns: the highest turn placed so far, and each group's last turn given.
        self._turn = 0
        self._turns: dict[str, int] = {}
        self._groups_kept = 0

    @property
    def pending_count(self) -> int:
        """Number of tasks waiting for a worker."""
        return len(self._tasks)

    @property
    def worker_count(self) -> int:
        """Number of connected workers."""
        return len(self._workers)

    @property
    def pool_count(self) -> int:
        """Number of pools (skill, kind and labels together) it keeps an index for."""
        return len(self._pools)

    def pending_ids(self) -> list[str]:
        """The pending tasks' ids, in submission order."""
        return list(self._tasks)

    def is_pending(self, task_id: str) -> bool:
        """Whether ``task_id`` is waiting for a worker."""
        return task_id in self._tasks

    def has_worker(self, name: str) -> bool:
        """Whether a worker of this name is connected."""
        return name in self._workers

    def load(self, worker: str) -> int:
        """Tasks ``worker`` has in flight.

        Raises:
            KeyError: No worker of that name is connected.
        """
        return self._workers[worker].load

    def capacity(self, worker: str) -> int:
        """Tasks ``worker`` runs at once.

        Raises:
            KeyError: No worker of that name is connected.
        """
        return self._workers[worker].capacity

    def max_level(self, skill: str, kind: str | None = None, labels: Iterable[str] = ()) -> int:
        """The highest level in ``skill`` of any connected worker that runs ``kind`` (any
        worker when None) and has every one of ``labels``; 0 if none."""
        return self._pool(skill, kind, labels).index.max_level()

    def add_worker(
        self,
        name: str,
        skills: Mapping[str, int],
        capacity: int,
        load: int = 0,
        *,
        kinds: Iterable[str] | None = None,
        labels: Iterable[str] = (),
    ) -> None:
        """Connect a worker; one already connected under ``name`` is replaced (its skills,
        kinds, labels and capacity changed: pass its load on), and pending work is re-placed.

        Args:
            name: The worker's name.
            skills: Its level (0 to ``MAX_LEVEL``) in each named skill.
            capacity: Tasks it runs at once (at least 1).
            load: Tasks it already has in flight (a manager resuming, a worker reconfigured).
            kinds: The kinds of task it has handlers for; None: every kind.
            labels: Its labels (``gpu``, ``region=eu``): a task needing labels goes only to
                workers that have them all.

        Raises:
            ValueError: An empty name or skill, or a level, capacity or load out of range.
        """
        if not name:
            raise ValueError("a worker needs a name")
        _check_int("capacity", capacity, 1)
        _check_int("load", load, 0)
        for skill, level in skills.items():
            if not skill:
                raise ValueError(f"worker {name!r} has a skill with an empty name")
            _check_int(f"worker {name!r}'s {skill} level", level, 0, MAX_LEVEL)
        self.remove_worker(name)
        self._version += 1
        worker = _Worker(
            name,
            {s: v for s, v in skills.items() if v > 0},
            capacity,
            load,
            self._version,
            None if kinds is None else frozenset(kinds),
            frozenset(labels),
        )
        self._workers[name] = worker
        self._count(worker, 1)
        for skill in worker.skills:
            self._by_skill.setdefault(skill, set()).add(name)
            for pool in self._pools_by_skill.get(skill, {}).values():
                if worker.fits(pool):
                    self._enter(worker, pool)

    def remove_worker(self, name: str) -> None:
        """Disconnect a worker (its tasks in flight are the caller's to requeue); unknown: no-op."""
        worker = self._workers.pop(name, None)
        if worker is None:
            return
        self._count(worker, -1)
        for skill in worker.skills:
            self._by_skill[skill].discard(name)
        for pool, level in worker.pools.items():
            index = pool.index
            index.leave(level)
            if worker.free:
                index.retire(level)
            if self._attempt_unqualified:
                # Its tasks' best worker may now be below them: they become attempts.
                self._dirty.add(pool)
        worker.pools.clear()

    def release(self, worker: str) -> None:
        """One of ``worker``'s attempts ended: a slot is free. Unknown worker or no load: no-op."""
        found = self._workers.get(worker)
        if found is None or not found.load:
            return
        self._set_load(found, found.load - 1)
        if found.free:
            self._dirty.update(found.pools)

    def add_task(
        self,
        task_id: str,
        skill: str,
        level: int,
        priority: int = 0,
        *,
        kind: str | None = None,
        labels: Iterable[str] = (),
        group: str | None = None,
    ) -> None:
        """Queue a task.

        Args:
            task_id: Its id, unique among pending tasks.
            skill: The named skill it needs.
            level: The least level in ``skill`` a worker needs (at least 1; above
                ``MAX_LEVEL`` it waits for ever, or is attempted with ``attempt_unqualified``).
            priority: Higher goes first.
            kind: The kind of task: only workers that run it are eligible (None: any worker).
            labels: Labels a worker must all have.
            group: Who it is for: groups take turns among tasks of equal priority.

        Raises:
            ValueError: ``task_id`` is already pending, or an empty skill, or level below 1.
        """
        if task_id in self._tasks:
            raise ValueError(f"task {task_id!r} is already pending")
        if not skill:
            raise ValueError(f"task {task_id!r} needs a skill name")
        if type(level) is not int or type(priority) is not int or level < 1:  # the common case fast
            _check_int(f"task {task_id!r}'s level", level, 1)
            _check_int(f"task {task_id!r}'s priority", priority)
        pool = self._pool(skill, kind, labels)
        self._seq += 1
        turn = self._turn
        if group is None and self._turns:
            group = ""  # once groups are in use, the tasks without one are a group too
        if group is not None:
            turns = self._turns
            turn = max(turn, turns.get(group, 0)) + 1
            turns[group] = turn
            if len(turns) > 1_024 and len(turns) > 2 * self._groups_kept:
                self._forget_turns()
        key: _Key = (-priority, turn, -level, self._seq, task_id)
        self._tasks[task_id] = _Task(pool, key)
        pool.queue.push(key)
        self._dirty.add(pool)

    def remove_task(self, task_id: str) -> bool:
        """Withdraw a pending task (cancelled). Returns False if it was not pending."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        task.pool.queue.discard(task.key)
        return True

    def assign(self) -> list[Assignment]:
        """Make every assignment possible now, in order; the tasks stop being pending.

        Returns:
            The assignments, in the order they were made (the first in line first).
        """
        dirty, self._dirty = self._dirty, set()
        made: list[Assignment] = []
        self._drain(dirty, made, qualified=True)
        if self._attempt_unqualified:
            self._drain(dirty, made, qualified=False)
        return made

    def waiting_reason(self, task_id: str) -> str | None:
        """Why a pending task waits, for people; None if it is not pending.

        Says what no connected worker has (the kind's handler, a label, the skill, the level)
        when that is why; costs nothing per worker.
        """
        task = self._tasks.get(task_id)
        if task is None:
            return None
        pool, level = task.pool, -task.key[2]
        skill, index = pool.skill, pool.index
        best, free = index.max_level(), index.max_free()
        if free and (level <= free or (level > best and self._attempt_unqualified)):
            return "waiting for the next assignment round: a worker for it has a free slot"
        if not index.total:
            return f"waiting for a worker with {skill} >= {level}{pool.note} ({self._lack(pool)})"
        if level > best:
            if self._attempt_unqualified:
                return (
                    f"waiting for a free slot to attempt anyway: {_count(index.total, 'worker')} "
                    f"with {skill}{pool.note} busy (most skilled: {skill} {best} < {level})"
                )
            return (
                f"waiting for a worker with {skill} >= {level}{pool.note} "
                f"(most skilled connected: {skill} {best})"
            )
        eligible = _count(index.eligible(level), "eligible worker")
        return f"waiting for a free slot: {eligible} busy"

    def _lack(self, pool: _Pool) -> str:
        """What no connected worker has, for a pool no connected worker fits."""
        lacking = []
        if pool.kind is not None and not self._any_kind and not self._kinds.get(pool.kind):
            lacking.append(f"handles kind {pool.kind!r}")
        lacking += [
            f"has label {label!r}" for label in sorted(pool.labels) if not self._labels.get(label)
        ]
        if not self._by_skill.get(pool.skill):
            lacking.append(f"has {pool.skill}")
        if len(lacking) == 1:
            return f"no connected worker {lacking[0]}"
        if lacking:
            return f"no connected worker {', '.join(lacking[:-1])} or {lacking[-1]}"
        return "no connected worker has all of them together"

    def _pool(self, skill: str, kind: str | None, labels: Iterable[str]) -> _Pool:
        """The pool of tasks needing ``skill``, ``kind`` and ``labels``, made on first use."""
        key = (
            skill,
            kind,
            labels if type(labels) is tuple and not labels else tuple(sorted(set(labels))),
        )
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        if len(self._pools) >= 2 * self._live_pools() + _SPARE_POOLS:
            self._forget_idle_pools()
        pool = self._pools[key] = _Pool(key, self._tasks, self._workers)
        self._pools_by_skill.setdefault(skill, {})[key] = pool
        for name in self._by_skill.get(skill, ()):
            worker = self._workers[name]
            if worker.fits(pool):
                self._enter(worker, pool)
        return pool

    def _forget_turns(self) -> None:
        """Drop the groups whose last turn has passed (they start at the current turn)."""
        self._turns = {g: t for g, t in self._turns.items() if t > self._turn}
        self._groups_kept = len(self._turns)

    def _live_pools(self) -> int:
        return sum(1 for pool in self._pools.values() if pool.queue.count)

    def _forget_idle_pools(self) -> None:
        """Drop the pools that have no task waiting (many label sets came and went)."""
        for key, pool in list(self._pools.items()):
            if pool.queue.count:
                continue
            del self._pools[key], self._pools_by_skill[pool.skill][key]
            self._dirty.discard(pool)
            for name in self._by_skill.get(pool.skill, ()):
                self._workers[name].pools.pop(pool, None)

    def _enter(self, worker: _Worker, pool: _Pool) -> None:
        level = worker.skills[pool.skill]
        worker.pools[pool] = level
        pool.index.join(level)
        if worker.free:
            pool.index.offer(level, worker)
        self._dirty.add(pool)

    def _count(self, worker: _Worker, delta: int) -> None:
        if worker.kinds is None:
            self._any_kind += delta
        else:
            for kind in worker.kinds:
                self._kinds[kind] = self._kinds.get(kind, 0) + delta
        for label in worker.labels:
            self._labels[label] = self._labels.get(label, 0) + delta

    def _drain(self, pools: set[_Pool], made: list[Assignment], *, qualified: bool) -> None:
        # The first in line of each pool, merged in one heap. An assignment only ever makes
        # another pool's first in line worse (its workers fill up), so an entry found stale
        # is recomputed and pushed back, and an entry found current is the true first in line.
        # Each entry notes how many assignments had been made when it was computed: one
        # computed since the last assignment is current without a check. (The pools go in by
        # their key, a tuple, so the heap never compares two pools.)
        line = [(key, 0, pool.key, pool) for pool in pools if (key := self._first(pool, qualified))]
        heapify(line)
        placed = 0
        while line:
            key, seen, _, pool = line[0]
            if seen != placed:
                current = self._first(pool, qualified)
                if current is None:
                    heappop(line)
                    continue
                if current != key:
                    heapreplace(line, (current, placed, pool.key, pool))
                    continue
            made.append(self._place(pool, key, qualified))
            placed += 1
            following = self._first(pool, qualified)
            if following is None:
                heappop(line)
            else:
                heapreplace(line, (following, placed, pool.key, pool))

    @staticmethod
    def _first(pool: _Pool, qualified: bool) -> _Key | None:
        """The first task in line in ``pool`` that has a free worker now."""
        index = pool.index
        free = index.max_free()
        if not free:
            return None
        if qualified:
            return pool.queue.best(1, free)
        return pool.queue.best(index.max_level() + 1, _BEYOND)

    def _place(self, pool: _Pool, key: _Key, qualified: bool) -> Assignment:
        task_id, level = key[4], -key[2]
        if key[1] > self._turn:
            self._turn = key[1]
        del self._tasks[task_id]
        pool.queue.pop(key)
        index, skill = pool.index, pool.skill
        at, worker = index.least_able(level) if qualified else index.most_able()
        self._set_load(worker, worker.load + 1)
        slots = f"{worker.load}/{worker.capacity} slots in use"
        if qualified:
            why = f"least skilled eligible ({skill} {at} >= {level}{pool.note}), {slots}"
        else:
            why = (
                f"most skilled available ({skill} {at} < {level}{pool.note}), attempting anyway, "
                f"{slots}"
            )
        return Assignment(task_id, worker.name, f"{worker.name}: {why}", qualified)

    def _set_load(self, worker: _Worker, load: int) -> None:
        was_free = worker.free
        self._version += 1
        worker.load, worker.version = load, self._version
        if worker.free:
            for pool, level in worker.pools.items():
                pool.index.offer(level, worker, was_free=was_free)
        elif was_free:
            for pool, level in worker.pools.items():
                pool.index.retire(level)


def _check_int(what: str, value: object, lo: int | None = None, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{what} must be {bounds}, not {value}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

"""Skill-based assignment: which pending task goes to which worker, and why.

Pure and incremental: the manager tells a :class:`Scheduler` about workers, tasks and finished
attempts, and :meth:`Scheduler.assign` returns the assignments possible now. One assignment
costs amortized O(k log n), k being the chosen worker's number of skills: nothing scans all
workers or all pending tasks, and a task no connected worker can do is never looked at again
until one that can joins.

Guarantees:

- A task goes only to a worker whose level in the task's skill is at least the task's level,
  and never to a worker without a free slot. With ``attempt_unqualified``, a task harder than
  every connected worker goes to the most skilled worker with a free slot instead, once every
  qualified placement is made; its :class:`Assignment` says so.
- :meth:`Scheduler.assign` is maximal: when it returns, no pending task has an eligible worker
  with a free slot. A task that cannot be placed never holds back one that can.
- Among the tasks that can be placed, the highest priority goes first, then the hardest, then
  the earliest submitted; each to the least skilled eligible worker (keeping experts free),
  then the least loaded, then by name.
- One skill (or workers that each have one skill): the workers able to do a task are a subset
  of those able to do any easier one, so this greedy is optimal. It places as many pending
  tasks as any placement on the free slots could, and a task left waiting could only have
  taken the place of a placed task that comes before it in the order above.
- Workers with several skills sharing one capacity: the problem is a general matching, and the
  greedy is maximal but not always maximum; it places at least half as many tasks as the best
  placement would. (A worker with ``python`` and ``general`` may take a general task that a
  ``general``-only worker could have done, leaving a python task waiting.)

Tasks already given out are never moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from heapq import heapify, heappop, heapreplace

from serendib.tasks._scheduling_index import (
    _BEYOND,
    MAX_LEVEL,
    _Key,
    _Queue,
    _Task,
    _Worker,
    _Workers,
)

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
        self._queues: dict[str, _Queue] = {}
        self._indexes: dict[str, _Workers] = {}
        # Skills whose tasks or free workers changed since the last assign(): only these can
        # have a placement to make.
        self._dirty: set[str] = set()
        self._seq = 0
        self._version = 0

    @property
    def pending_count(self) -> int:
        """Number of tasks waiting for a worker."""
        return len(self._tasks)

    @property
    def worker_count(self) -> int:
        """Number of connected workers."""
        return len(self._workers)

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

    def max_level(self, skill: str) -> int:
        """The highest level in ``skill`` of any connected worker, 0 if none has it."""
        index = self._indexes.get(skill)
        return index.max_level() if index else 0

    def add_worker(
        self, name: str, skills: Mapping[str, int], capacity: int, load: int = 0
    ) -> None:
        """Connect a worker; one already connected under ``name`` is replaced, load and all.

        Args:
            name: The worker's name.
            skills: Its level (0 to ``MAX_LEVEL``) in each named skill.
            capacity: Tasks it runs at once (at least 1).
            load: Tasks it already has in flight (a manager resuming).

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
        worker = _Worker(name, {s: v for s, v in skills.items() if v > 0}, capacity, load, 0)
        worker.version = self._version
        self._workers[name] = worker
        for skill, level in worker.skills.items():
            index = self._indexes.get(skill) or self._indexes.setdefault(
                skill, _Workers(self._workers)
            )
            index.join(level)
            if worker.free:
                index.offer(level, worker)
            self._dirty.add(skill)

    def remove_worker(self, name: str) -> None:
        """Disconnect a worker (its tasks in flight are the caller's to requeue); unknown: no-op."""
        worker = self._workers.pop(name, None)
        if worker is None:
            return
        for skill, level in worker.skills.items():
            index = self._indexes[skill]
            index.leave(level)
            if worker.free:
                index.retire(level)
            if self._attempt_unqualified:
                # Its tasks' best worker may now be below them: they become attempts.
                self._dirty.add(skill)

    def release(self, worker: str) -> None:
        """One of ``worker``'s attempts ended: a slot is free. Unknown worker or no load: no-op."""
        found = self._workers.get(worker)
        if found is None or not found.load:
            return
        self._set_load(found, found.load - 1)
        if found.free:
            self._dirty.update(found.skills)

    def add_task(self, task_id: str, skill: str, level: int, priority: int = 0) -> None:
        """Queue a task.

        Args:
            task_id: Its id, unique among pending tasks.
            skill: The named skill it needs.
            level: The least level in ``skill`` a worker needs (at least 1; above
                ``MAX_LEVEL`` it waits for ever, or is attempted with ``attempt_unqualified``).
            priority: Higher goes first.

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
        self._seq += 1
        key: _Key = (-priority, -level, self._seq, task_id)
        self._tasks[task_id] = _Task(skill, key)
        queue = self._queues.get(skill) or self._queues.setdefault(skill, _Queue(self._tasks))
        queue.push(key)
        self._dirty.add(skill)

    def remove_task(self, task_id: str) -> bool:
        """Withdraw a pending task (cancelled). Returns False if it was not pending."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        self._queues[task.skill].discard(task.key)
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
        """Why a pending task waits, for people; None if it is not pending."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        skill, level = task.skill, -task.key[1]
        index = self._indexes.get(skill)
        best = index.max_level() if index else 0
        free = index.max_free() if index else 0
        if free and (level <= free or (level > best and self._attempt_unqualified)):
            return "waiting for the next assignment round: a worker for it has a free slot"
        if index is None or level > best:
            if self._attempt_unqualified and index and best:
                return (
                    f"waiting for a free slot to attempt anyway: {_count(index.total, 'worker')} "
                    f"with {skill} busy (most skilled: {skill} {best} < {level})"
                )
            have = f"most skilled connected: {skill} {best}" if best else f"none has {skill}"
            return f"waiting for a worker with {skill} >= {level} ({have})"
        eligible = _count(index.eligible(level), "eligible worker")
        return f"waiting for a free slot: {eligible} busy"

    def _drain(self, skills: set[str], made: list[Assignment], *, qualified: bool) -> None:
        # The first in line of each skill, merged in one heap. An assignment only ever makes
        # another skill's first in line worse (its workers fill up), so an entry found stale
        # is recomputed and pushed back, and an entry found current is the true first in line.
        # Each entry notes how many assignments had been made when it was computed: one
        # computed since the last assignment is current without a check.
        line = [(key, 0, skill) for skill in skills if (key := self._first(skill, qualified))]
        heapify(line)
        placed = 0
        while line:
            key, seen, skill = line[0]
            if seen != placed:
                current = self._first(skill, qualified)
                if current is None:
                    heappop(line)
                    continue
                if current != key:
                    heapreplace(line, (current, placed, skill))
                    continue
            made.append(self._place(skill, key, qualified))
            placed += 1
            following = self._first(skill, qualified)
            if following is None:
                heappop(line)
            else:
                heapreplace(line, (following, placed, skill))

    def _first(self, skill: str, qualified: bool) -> _Key | None:
        """The first task in line in ``skill`` that has a free worker now."""
        index = self._indexes.get(skill)
        queue = self._queues.get(skill)
        if index is None or queue is None:
            return None
        free = index.max_free()
        if not free:
            return None
        if qualified:
            return queue.best(1, free)
        return queue.best(index.max_level() + 1, _BEYOND)

    def _place(self, skill: str, key: _Key, qualified: bool) -> Assignment:
        task_id, level = key[3], -key[1]
        del self._tasks[task_id]
        self._queues[skill].pop(key)
        index = self._indexes[skill]
        at, worker = index.least_able(level) if qualified else index.most_able()
        self._set_load(worker, worker.load + 1)
        slots = f"{worker.load}/{worker.capacity} slots in use"
        if qualified:
            why = f"least skilled eligible ({skill} {at} >= {level}), {slots}"
        else:
            why = f"most skilled available ({skill} {at} < {level}), attempting anyway, {slots}"
        return Assignment(task_id, worker.name, f"{worker.name}: {why}", qualified)

    def _set_load(self, worker: _Worker, load: int) -> None:
        was_free = worker.free
        self._version += 1
        worker.load, worker.version = load, self._version
        if worker.free:
            for skill, level in worker.skills.items():
                self._indexes[skill].offer(level, worker, was_free=was_free)
        elif was_free:
            for skill, level in worker.skills.items():
                self._indexes[skill].retire(level)


def _check_int(what: str, value: object, lo: int | None = None, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{what} must be {bounds}, not {value}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

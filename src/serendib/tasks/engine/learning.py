"""What the manager learns from outcomes: each worker's record per task kind and difficulty.

The seed's model says a worker succeeds iff its skill is at least the task's difficulty; real
workers are not that tidy (one lacks a library, another's disk is slow). The manager counts,
per worker, task kind and difficulty, the attempts that succeeded and those that failed or
timed out (a lost or cancelled attempt says nothing of the worker). With learning on, a retry
after a failure escalates to the worker with the best record for the task's kind and
difficulty among those more skilled than the one that failed, when that record is better
than even: the plain escalation goes to the least skilled of them, which may be one that
keeps failing tasks of this kind. The assignment's reason says what was learned.

Memory is one counter per (worker, kind, difficulty) seen; a choice looks at the workers
with a record for that kind and difficulty only, and is made only for retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Choice", "TrackRecord"]


@dataclass(frozen=True, slots=True)
class Choice:
    """A learned escalation target.

    Attributes:
        worker: The worker with the best record.
        level: Its level in the task's skill (the retry needs at least this).
        succeeded: Its attempts of this kind and difficulty that succeeded.
        attempts: Its attempts of this kind and difficulty that ended on it.
    """

    worker: str
    level: int
    succeeded: int
    attempts: int

    def note(self, kind: str, difficulty: int, given_to: str | None = None) -> str:
        """The reason's addition, for people; ``given_to``: the worker the retry went to
        (another of the same level when the chosen one had no free slot)."""
        record = f"{self.succeeded} of {self.attempts} {kind} tasks of difficulty {difficulty}"
        if given_to is None or given_to == self.worker:
            return f"learned: {self.worker} succeeded {record}"
        return f"learned: escalated to level {self.level}, where {self.worker} succeeded {record}"


class TrackRecord:
    """Attempts that succeeded and that failed, per worker, task kind and difficulty."""

    __slots__ = ("_by_task", "_counts")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], list[int]] = {}  # -> [succeeded, failed]
        self._by_task: dict[tuple[str, int], set[str]] = {}  # (kind, difficulty) -> workers

    def note(self, worker: str, kind: str, difficulty: int, succeeded: bool) -> None:
        """An attempt of a ``kind`` task of ``difficulty`` ended on ``worker``."""
        key = (worker, kind, difficulty)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0]
            self._by_task.setdefault((kind, difficulty), set()).add(worker)
        counts[0 if succeeded else 1] += 1

    def record(self, worker: str, kind: str, difficulty: int) -> tuple[int, int]:
        """``(succeeded, attempts)`` of ``worker`` at ``kind`` tasks of ``difficulty``."""
        succeeded, failed = self._counts.get((worker, kind, difficulty), (0, 0))
        return succeeded, succeeded + failed

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """``(worker, kind, difficulty, succeeded, attempts)`` for each record, sorted."""
        return sorted(
            (worker, kind, difficulty, s, s + f)
            for (worker, kind, difficulty), (s, f) in self._counts.items()
        )

    def best(
        self, level_of: Callable[[str], int | None], kind: str, difficulty: int, above: int
    ) -> Choice | None:
        """Among the workers with a record for ``kind`` and ``difficulty`` that could take
        the task now (``level_of``: a worker's level, None if it cannot) and are above level
        ``above``, the one with the best record (successes + 1 over attempts + 2, so one
        lucky attempt is not a record), when that is better than even; ties go to the less
        skilled. None if none is."""
        known = self._by_task.get((kind, difficulty))
        if not known:
            return None
        found: tuple[float, int, str] | None = None
        chosen: Choice | None = None
        for worker in known:
            level = level_of(worker)
            if level is None or level <= above:
                continue
            succeeded, attempts = self.record(worker, kind, difficulty)
            score = (succeeded + 1) / (attempts + 2)
            rank = (-score, level, worker)
            if score > 0.5 and (found is None or rank < found):
                found = rank
                chosen = Choice(worker, level, succeeded, attempts)
        return chosen

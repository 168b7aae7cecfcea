"""Pure functions turning stored records and worker facts into what the dashboard shows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from serendib.dashboard.schemas import (
    AttemptView,
    DifficultyTally,
    TaskDetail,
    TaskRow,
    WorkerDetail,
    WorkerView,
)
from serendib.tasks.models import AttemptOutcome, AttemptRecord, TaskRecord, TaskState, WorkerInfo
from serendib.tasks.report import success_rate

__all__ = [
    "WorkerTally",
    "attempt_views",
    "task_detail",
    "task_row",
    "worker_detail",
    "worker_views",
]


def task_row(record: TaskRecord, waiting_reason: str | None = None) -> TaskRow:
    """The task table line of ``record``.

    Args:
        record: The stored record.
        waiting_reason: For a pending task, why it waits now (replaces the stored reason).
    """
    task = record.task
    reason = record.reason
    if record.state is TaskState.PENDING and waiting_reason:
        reason = waiting_reason
    return TaskRow(
        id=task.id,
        description=task.description,
        kind=task.kind,
        difficulty=task.difficulty,
        required_skill=task.required_skill,
        priority=task.priority,
        state=record.state,
        attempt=record.attempt,
        worker=record.worker,
        reason=reason,
        error=record.error,
        submitted_at=record.submitted_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
    )


def attempt_views(
    record: TaskRecord, attempts: Sequence[AttemptRecord], now: float
) -> list[AttemptView]:
    """A task's attempts with their timings, first to last.

    The queue time of an attempt runs from the task's submission (first attempt) or the end of
    the previous attempt; its run time from the worker's start (or the assignment, when the
    worker did not report one) to its end, or to ``now`` while it runs.
    """
    views: list[AttemptView] = []
    queued_since: float | None = record.submitted_at
    for attempt in sorted(attempts, key=lambda a: a.attempt):
        began = attempt.started_at or attempt.assigned_at
        running = attempt.outcome is AttemptOutcome.RUNNING
        end = now if running else attempt.finished_at
        views.append(
            AttemptView(
                attempt=attempt.attempt,
                worker=attempt.worker,
                reason=attempt.reason,
                outcome=attempt.outcome,
                escalated=attempt.escalated,
                assigned_at=attempt.assigned_at,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
                queued_s=(
                    max(attempt.assigned_at - queued_since, 0.0)
                    if queued_since is not None
                    else None
                ),
                run_s=max(end - began, 0.0) if end is not None else None,
                error=attempt.error,
            )
        )
        queued_since = attempt.finished_at
    return views


def task_detail(
    record: TaskRecord,
    attempts: Sequence[AttemptRecord],
    waiting_reason: str | None,
    now: float,
    children: Sequence[str] = (),
) -> TaskDetail:
    """One task and its history, as ``GET /api/tasks/{id}`` returns it."""
    pending = record.state is TaskState.PENDING
    reason = (waiting_reason or record.reason or "waiting for a worker") if pending else None
    end = record.finished_at if record.finished_at is not None else now
    return TaskDetail(
        task=record.task,
        row=task_row(record, reason),
        waiting_reason=reason,
        attempts=attempt_views(record, attempts, now),
        output=record.output,
        total_s=max(end - record.submitted_at, 0.0),
        parents=list(record.task.depends_on),
        children=list(children),
    )


class WorkerTally:
    """Attempts that ended on one worker: the basis of its success rate, in all and by the
    task's difficulty (for attempts the dashboard saw assigned)."""

    __slots__ = ("by_difficulty", "failed", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.by_difficulty: dict[int, list[int]] = {}  # difficulty -> [succeeded, failed]

    def count(self, success: bool, difficulty: int | None = None) -> None:
        """Count one attempt that ended."""
        if success:
            self.succeeded += 1
        else:
            self.failed += 1
        if difficulty is not None:
            pair = self.by_difficulty.setdefault(difficulty, [0, 0])
            pair[0 if success else 1] += 1


def worker_views(
    connected: Iterable[tuple[WorkerInfo, int, bool]],
    lost: Iterable[WorkerInfo],
    tallies: Mapping[str, WorkerTally],
) -> list[WorkerView]:
    """The worker table: connected workers first (in joining order), then lost ones.

    Args:
        connected: Each connected worker, its load, and whether it is suspect.
        lost: Workers seen before that are no longer connected.
        tallies: Attempts ended per worker name.
    """
    empty = WorkerTally()
    views = [
        _worker(info, load, "suspect" if suspect else "connected", tallies.get(info.name, empty))
        for info, load, suspect in connected
    ]
    views += [_worker(info, 0, "lost", tallies.get(info.name, empty)) for info in lost]
    return views


def _worker(
    info: WorkerInfo,
    load: int,
    status: Literal["connected", "suspect", "lost"],
    tally: WorkerTally,
) -> WorkerView:
    return WorkerView(
        name=info.name,
        skills=dict(info.skills),
        labels=list(info.labels),
        kinds=None if info.kinds is None else list(info.kinds),
        capacity=info.capacity,
        load=load,
        status=status,
        succeeded=tally.succeeded,
        failed=tally.failed,
        success_rate=success_rate(tally.succeeded, tally.failed),
    )


def worker_detail(
    view: WorkerView,
    current: Iterable[TaskRecord],
    recent: Iterable[TaskRecord],
    tally: WorkerTally | None,
) -> WorkerDetail:
    """One worker's page: its line, current and recent tasks, success by difficulty.

    Args:
        view: Its line of the worker table.
        current: Its tasks assigned or running now.
        recent: Its latest tasks, newest first.
        tally: Attempts ended on it, if any.
    """
    by_difficulty = sorted((tally.by_difficulty if tally else {}).items())
    return WorkerDetail(
        worker=view,
        current=[task_row(r) for r in current],
        recent=[task_row(r) for r in recent],
        by_difficulty=[
            DifficultyTally(
                difficulty=difficulty,
                succeeded=ok,
                failed=bad,
                success_rate=success_rate(ok, bad),
            )
            for difficulty, (ok, bad) in by_difficulty
        ],
    )

"""The manager's working copies of unfinished tasks and running attempts.

A :class:`~serendib.tasks.models.TaskRecord` is frozen and validated: right for what leaves
the manager (the store's reads, replies, the API), too slow to copy at every transition when
thousands of tasks change state per second. Inside the manager a task is an :class:`Entry`
and its running attempt a :class:`Lease`: plain mutable objects, changed only by the
manager's book in its one loop, written to the store as rows and turned back into records
only where they leave it.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from serendib.tasks.messages import TaskAssignment, TaskOutcome
from serendib.tasks.models import (
    TRANSITIONS,
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskRecord,
    TaskState,
    check_move,
)
from serendib.tasks.store import AttemptRow, TaskUpdate

__all__ = ["Entry", "Lease"]

_PENDING, _ASSIGNED, _RUNNING = TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING


class Entry:
    """An unfinished task and where it is; the fields of :class:`TaskRecord`, mutable."""

    __slots__ = (
        "attempt",
        "attempt_base",
        "error",
        "escalate_above",
        "finished_at",
        "id",
        "not_before",
        "output",
        "reason",
        "replays",
        "state",
        "submitted_at",
        "task",
        "updated_at",
        "worker",
    )

    def __init__(self, task: Task, submitted_at: float) -> None:
        self.task = task
        self.id = task.id
        self.state = _PENDING
        self.attempt = 0
        self.worker: str | None = None
        self.reason = ""
        self.submitted_at = submitted_at
        self.updated_at = submitted_at
        self.finished_at: float | None = None
        self.output: Any = None
        self.error: str | None = None
        self.replays = 0
        self.attempt_base = 0
        # When it may be assigned (0: at once): its delay, then each retry's backoff.
        self.not_before = task.eligible_at(submitted_at) if task.not_before or task.delay_s else 0.0
        # Not stored: the level of the worker whose attempt last failed, for the retry to
        # go above it (escalation), once it is queued again.
        self.escalate_above: int | None = None

    @classmethod
    def of(cls, record: TaskRecord) -> Entry:
        """The working copy of a stored record."""
        entry = cls(record.task, record.submitted_at)
        entry.state = record.state
        entry.attempt = record.attempt
        entry.worker = record.worker
        entry.reason = record.reason
        entry.updated_at = record.updated_at
        entry.finished_at = record.finished_at
        entry.output = record.output
        entry.error = record.error
        entry.replays = record.replays
        entry.attempt_base = record.attempt_base
        entry.not_before = record.not_before
        return entry

    def record(self) -> TaskRecord:
        """A frozen record of the task as it is now."""
        return TaskRecord(
            task=self.task,
            state=self.state,
            attempt=self.attempt,
            worker=self.worker,
            reason=self.reason,
            submitted_at=self.submitted_at,
            updated_at=self.updated_at,
            finished_at=self.finished_at,
            output=self.output,
            error=self.error,
            replays=self.replays,
            attempt_base=self.attempt_base,
            not_before=self.not_before,
        )

    def outcome(self) -> TaskOutcome:
        """What a watching client is told of the task now that it is final (built from
        the manager's own fields, not validated again)."""
        return TaskOutcome.model_construct(
            task_id=self.id,
            state=self.state,
            attempt=self.attempt,
            worker=self.worker,
            output=self.output,
            error=self.error,
            finished_at=self.finished_at,
            output_omitted=False,
        )

    @property
    def tries(self) -> int:
        """Attempts made in this run (since the last replay)."""
        return self.attempt - self.attempt_base

    def update(self) -> TaskUpdate:
        """What the store writes of the task as it is now."""
        output, error = self.output, self.error
        if output is not None:
            try:
                output = pydantic_core.to_json(output).decode()
            except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as e:
                output = None
                error = f"{error or ''} (output not stored: not JSON: {e})".lstrip()
        return TaskUpdate(
            self.id,
            self.state.value,
            self.attempt,
            self.worker,
            self.reason,
            self.updated_at,
            self.finished_at,
            output,
            error,
            self.replays,
            self.attempt_base,
            self.not_before or None,
        )

    # The transitions of TaskRecord, in place.

    def _to(self, state: TaskState, at: float) -> None:
        if state not in TRANSITIONS[self.state]:
            check_move(self.id, self.state, state)  # raises, saying why
        self.state = state
        self.updated_at = at
        if state.is_final:
            self.finished_at = at

    def replay(self, reason: str, at: float) -> None:
        """FAILED/CANCELLED → PENDING: run again, with ``max_attempts`` from here; its
        attempts so far stay in the history."""
        self._to(_PENDING, at)
        self.replays += 1
        self.attempt_base = self.attempt
        self.finished_at = None
        self.output = None
        self.reason = reason

    def assign(self, worker: str, reason: str, at: float) -> None:
        """PENDING → ASSIGNED: a new attempt for ``worker``."""
        self._to(_ASSIGNED, at)
        self.attempt += 1
        self.worker = worker
        self.reason = reason

    def run(self, at: float) -> None:
        """ASSIGNED → RUNNING."""
        self._to(_RUNNING, at)

    def requeue(self, reason: str, at: float, error: str | None = None) -> None:
        """ASSIGNED/RUNNING → PENDING: lost worker, timeout, or a failure to retry."""
        self._to(_PENDING, at)
        self.reason = reason
        if error:
            self.error = error

    def succeed(self, output: Any, at: float) -> None:
        """→ SUCCEEDED."""
        self._to(TaskState.SUCCEEDED, at)
        self.output = output
        self.error = None

    def fail(self, error: str, at: float) -> None:
        """→ FAILED."""
        self._to(TaskState.FAILED, at)
        self.error = error

    def cancel(self, at: float) -> None:
        """→ CANCELLED."""
        self._to(TaskState.CANCELLED, at)
        self.reason = "cancelled"


class Lease:
    """One attempt of a task: the fields of :class:`AttemptRecord`, mutable."""

    __slots__ = (
        "assigned_at",
        "attempt",
        "error",
        "escalated",
        "finished_at",
        "outcome",
        "reason",
        "resumed",
        "sent_at",
        "seq",
        "stale_results",
        "started_at",
        "task_id",
        "worker",
    )

    def __init__(
        self,
        task_id: str,
        attempt: int,
        worker: str,
        reason: str,
        assigned_at: float,
        escalated: bool = False,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.worker = worker
        self.reason = reason
        self.assigned_at = assigned_at
        self.escalated = escalated
        self.outcome = AttemptOutcome.RUNNING
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.stale_results = 0
        # Not stored: the number of the message that last carried it to the worker (0: not
        # sent yet), and when it was sent.
        self.seq = 0
        self.sent_at = 0.0
        # Not stored either: held since before the manager restarted, and not yet claimed by
        # its worker (see TaskBook.resume).
        self.resumed = False

    @classmethod
    def of(cls, record: AttemptRecord) -> Lease:
        """The working copy of a stored attempt."""
        lease = cls(
            record.task_id,
            record.attempt,
            record.worker,
            record.reason,
            record.assigned_at,
            record.escalated,
        )
        lease.outcome = record.outcome
        lease.started_at = record.started_at
        lease.finished_at = record.finished_at
        lease.error = record.error
        lease.stale_results = record.stale_results
        return lease

    def end(
        self,
        outcome: AttemptOutcome,
        at: float,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """The attempt ended with ``outcome`` at time ``at``."""
        self.outcome = outcome
        self.finished_at = at
        self.error = error
        if started_at is not None:
            self.started_at = started_at

    def assignment(self, task: Task, inputs: dict[str, Any] | None = None) -> TaskAssignment:
        """The message giving this attempt of ``task`` to its worker (with its parents'
        outputs, by id, when it depends on others)."""
        if inputs:
            return TaskAssignment(
                task=task,
                attempt=self.attempt,
                worker=self.worker,
                reason=self.reason,
                inputs=inputs,
            )
        return TaskAssignment(
            task=task, attempt=self.attempt, worker=self.worker, reason=self.reason
        )

    def row(self) -> AttemptRow:
        """What the store writes of the attempt as it is now."""
        return AttemptRow(
            self.task_id,
            self.attempt,
            self.worker,
            self.reason,
            self.outcome.value,
            self.assigned_at,
            self.started_at,
            self.finished_at,
            self.error,
            self.escalated,
            self.stale_results,
        )

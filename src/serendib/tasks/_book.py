"""The manager's book of unfinished tasks and running attempts: the state machine itself.

This layer takes the task entry points: submissions, resumed tasks, results, cancels and
progress (see :mod:`serendib.tasks._book_core` for the layers below).
"""

from __future__ import annotations

import time

from loguru import logger

from serendib.tasks._entries import Entry, Lease
from serendib.tasks._roster import WorkerRoster
from serendib.tasks.events import EventKind
from serendib.tasks.models import (
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskCancel,
    TaskProgress,
    TaskRecord,
    TaskResult,
    TaskState,
)
from serendib.tasks.retries import after_failure

__all__ = ["TaskBook"]


class TaskBook(WorkerRoster):
    """Unfinished tasks, running attempts and connected workers, and every transition.

    Args:
        scheduler: Chooses workers.
        ledger: Saves changes, then sends messages.
        call_soon: Runs a coroutine function in the owner's dispatch loop (for timers).
        owner: Name for log lines.
    """

    # --- entry points -------------------------------------------------------------------------

    def resume(
        self,
        records: list[TaskRecord],
        open_attempts: dict[str, AttemptRecord],
        grace_s: float,
    ) -> None:
        """Take over the unfinished tasks of a previous run.

        An attempt in flight stays its worker's for ``grace_s``: workers outlive a manager
        restart and tell the new one what they hold (their sync, sent when they join), so
        their results, including those finished while the manager was down, still count.
        One its worker does not claim in time, or says it does not hold, is abandoned (LOST)
        and requeued.
        """
        now = time.time()
        resumed = 0
        for record in records:
            entry = Entry.of(record)
            if entry.state is TaskState.PENDING:
                self._queue(entry, stage=False)
                continue
            attempt = open_attempts.get(record.id)
            if attempt is None or attempt.attempt != entry.attempt:
                entry.requeue("manager restarted; attempt abandoned", now)
                self._queue(entry, stage=True)
                continue
            lease = Lease.of(attempt)
            lease.resumed = True
            self._records[entry.id] = entry
            self._attempts[entry.id] = lease
            self._by_worker.setdefault(lease.worker, set()).add(entry.id)
            resumed += 1
        if resumed:
            self._await_claims(grace_s)
        self.pump()

    def submitted(self, tasks: list[Task], at: float) -> None:
        """Queue tasks just stored for the first time (PENDING, submitted ``at``)."""
        events = self.events
        for task in tasks:
            self._queue(Entry(task, at), stage=False)
            if events:
                events.emit(EventKind.SUBMITTED, task_id=task.id)
        self.stats.submitted += len(tasks)
        self.pump()

    def cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel an unfinished task; ``None`` if it is not unfinished."""
        entry = self._records.get(task_id)
        if entry is None:
            return None
        now = time.time()
        attempt = self._attempts.get(task_id)
        if attempt is not None and entry.state in (TaskState.ASSIGNED, TaskState.RUNNING):
            self._end_attempt(attempt, AttemptOutcome.CANCELLED, now, "cancelled")
            self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt.attempt))
        else:
            self.scheduler.remove_task(task_id)
        entry.cancel(now)
        self._finalise(entry)
        self.pump()
        return entry.record()

    def progress(self, progress: TaskProgress, sender: str) -> None:
        """A leaseholder reports progress: the task is RUNNING, and says how far."""
        entry = self._records.get(progress.task_id)
        attempt = self._attempts.get(progress.task_id)
        if (
            entry is None
            or attempt is None
            or attempt.attempt != progress.attempt
            or attempt.worker != sender
        ):
            return
        if entry.state is TaskState.ASSIGNED:
            entry.run(time.time())
        note = f"running on {attempt.worker}: {progress.fraction:.0%} {progress.note}"
        entry.reason = note.rstrip()
        self._ledger.record(entry)

    def waiting_reason(self, record: TaskRecord) -> TaskRecord:
        """A pending record with the scheduler's current reason for waiting."""
        if record.state is not TaskState.PENDING:
            return record
        return record.waiting(self.scheduler.waiting_reason(record.id) or record.reason)

    def take_result(self, result: TaskResult, sender: str) -> None:
        """Count a result if it is the current lease's, from its holder; else it is stale.

        Either way the sender gets an acknowledgement (after the change is saved), so it
        stops resending the result.
        """
        task_id = result.task_id
        if sender:
            self._ledger.ack(sender, (task_id, result.attempt))
        entry = self._records.get(task_id)
        attempt = self._attempts.get(task_id)
        if (
            entry is None
            or attempt is None
            or attempt.attempt != result.attempt
            or attempt.worker != result.worker
            or sender != result.worker
        ):
            self._stale(result, sender, attempt)
            return
        now = time.time()
        started = result.started_at or None
        if result.success:
            self._end_attempt(attempt, AttemptOutcome.SUCCEEDED, now, None, started)
            entry.succeed(result.output, now)
            self._finalise(entry, attempt)
            by_worker = self.stats.by_worker
            by_worker[result.worker] = by_worker.get(result.worker, 0) + 1
            return
        error = result.error or "failed"
        self._end_attempt(attempt, AttemptOutcome.FAILED, now, error, started)
        verdict = after_failure(entry.attempt, entry.task.max_attempts, result.worker, error)
        if not verdict.again:
            entry.fail(verdict.error, now)
            self._finalise(entry, attempt)
            return
        failed_level = self._level_of(result.worker, entry.task)
        self.stats.retries += 1
        entry.requeue(verdict.reason, now, error)
        self._requeue(entry, escalate_above=failed_level)

    def _stale(self, result: TaskResult, sender: str, running: Lease | None) -> None:
        self.stats.stale_results += 1
        if running is not None and running.attempt == result.attempt:
            running.stale_results += 1
            self._ledger.attempt(running)  # stored before the sender is acknowledged
        else:
            self._ledger.stale((result.task_id, result.attempt))
        if self.events:
            self.events.emit(
                EventKind.STALE_RESULT,
                task_id=result.task_id,
                worker=sender,
                attempt=result.attempt,
            )
        logger.info(
            "{}: stale result ignored: task {} attempt {} from {}",
            self.name,
            result.task_id,
            result.attempt,
            sender,
        )

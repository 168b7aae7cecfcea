"""The manager's book of unfinished tasks and running attempts: the state machine itself.

It holds what is in flight in memory, asks the scheduler for assignments, turns results,
losses and timeouts into transitions, stages every change in the ledger (saved before the
messages acting on it are sent), and tells listeners. It does no I/O of its own and runs
entirely in the manager's dispatch loop, so no step ever races another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from serendib.tasks._ledger import Ledger
from serendib.tasks.events import EventBus, EventKind, ManagerStats
from serendib.tasks.models import (
    AttemptOutcome,
    AttemptRecord,
    TaskAssignment,
    TaskCancel,
    TaskProgress,
    TaskRecord,
    TaskResult,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.scheduling import Scheduler

__all__ = ["TaskBook"]

TIMEOUT_GRACE_S = 1.0
_FINAL_EVENTS = {
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
}

CallSoon = Callable[[Callable[[], Awaitable[None]]], None]


class TaskBook:
    """Unfinished tasks, running attempts and connected workers, and every transition.

    Args:
        scheduler: Chooses workers.
        ledger: Saves changes, then sends messages.
        call_soon: Runs a coroutine function in the owner's dispatch loop (for timers).
        owner: Name for log lines.
    """

    def __init__(
        self, scheduler: Scheduler, ledger: Ledger, call_soon: CallSoon, owner: str
    ) -> None:
        self.scheduler = scheduler
        self._ledger = ledger
        self._call_soon = call_soon
        self.name = owner
        self._records: dict[str, TaskRecord] = {}
        self._attempts: dict[str, AttemptRecord] = {}
        self._by_worker: dict[str, set[str]] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._escalate: set[str] = set()
        self.events = EventBus(owner)
        self.stats = ManagerStats()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: str) -> TaskRecord | None:
        """The in-memory record of an unfinished task."""
        return self._records.get(task_id)

    def close(self) -> None:
        """Cancel every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # --- entry points -------------------------------------------------------------------------

    def resume(self, records: list[TaskRecord], open_attempts: dict[str, AttemptRecord]) -> None:
        """Take over the unfinished tasks of a previous run: in-flight attempts are abandoned."""
        now = time.time()
        for record in records:
            in_flight = record.state is not TaskState.PENDING
            if in_flight:
                attempt = open_attempts.get(record.id)
                if attempt is not None:
                    self._stage_attempt(
                        attempt.ended(AttemptOutcome.LOST, now, "manager restarted")
                    )
                record = record.requeued("manager restarted; attempt abandoned", now)
            self._queue(record, stage=in_flight)
        self.pump()

    def submitted(self, records: list[TaskRecord]) -> None:
        """Queue tasks just stored for the first time."""
        for record in records:
            self._queue(record, stage=False)
            self.events.emit(EventKind.SUBMITTED, task_id=record.id)
        self.stats.submitted += len(records)
        self.pump()

    def cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel an unfinished task; ``None`` if it is not unfinished."""
        record = self._records.get(task_id)
        if record is None:
            return None
        now = time.time()
        attempt = self._attempts.get(task_id)
        if attempt is not None and record.state in (TaskState.ASSIGNED, TaskState.RUNNING):
            self._end_attempt(attempt, AttemptOutcome.CANCELLED, now, "cancelled")
            self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt.attempt))
        else:
            self.scheduler.remove_task(task_id)
        cancelled = record.cancelled(now)
        self._finalise(cancelled)
        self.pump()
        return cancelled

    def worker_joined(self, info: WorkerInfo) -> None:
        """A worker can take work."""
        self.workers[info.name] = info
        running = self._by_worker.setdefault(info.name, set())
        self.scheduler.add_worker(info.name, info.skills, info.capacity, load=len(running))
        self.events.emit(EventKind.WORKER_JOINED, worker=info.name)
        self.pump()

    def worker_left(self, name: str) -> None:
        """A worker left or was lost: its attempts go back to the queue."""
        if self.workers.pop(name, None) is None:
            return
        self.scheduler.remove_worker(name)
        self.stats.workers_lost += 1
        self.events.emit(EventKind.WORKER_LEFT, worker=name)
        now = time.time()
        for task_id in sorted(self._by_worker.pop(name, set())):
            attempt = self._attempts.get(task_id)
            record = self._records.get(task_id)
            if attempt is None or record is None:
                continue
            self._end_attempt(attempt, AttemptOutcome.LOST, now, f"worker {name} lost")
            self.stats.requeued_lost += 1
            self._requeue(record.requeued(f"worker {name} left; requeued", now))
        self.pump()

    def progress(self, progress: TaskProgress, sender: str) -> None:
        """A leaseholder reports progress: the task is RUNNING, and says how far."""
        record = self._records.get(progress.task_id)
        attempt = self._attempts.get(progress.task_id)
        if (
            record is None
            or attempt is None
            or attempt.attempt != progress.attempt
            or attempt.worker != sender
        ):
            return
        if record.state is TaskState.ASSIGNED:
            record = record.running(time.time())
        note = f"running on {attempt.worker}: {progress.fraction:.0%} {progress.note}".rstrip()
        record = record.waiting(note)
        self._records[record.id] = record
        self._stage(record)

    def waiting_reason(self, record: TaskRecord) -> TaskRecord:
        """A pending record with the scheduler's current reason for waiting."""
        if record.state is not TaskState.PENDING:
            return record
        return record.waiting(self.scheduler.waiting_reason(record.id) or record.reason)

    def reconcile(self, worker: str, holding: set[tuple[str, int]], grace_s: float) -> None:
        """Requeue attempts given to ``worker`` over ``grace_s`` ago that it does not hold."""
        now = time.time()
        for task_id in sorted(self._by_worker.get(worker, ())):
            attempt = self._attempts.get(task_id)
            record = self._records.get(task_id)
            if attempt is None or record is None or (task_id, attempt.attempt) in holding:
                continue
            if now - attempt.assigned_at < grace_s:
                continue
            reason = f"assignment to {worker} lost in transit"
            self._end_attempt(attempt, AttemptOutcome.LOST, now, reason)
            self.stats.requeued_lost += 1
            self._requeue(record.requeued(f"{reason}; requeued", now))
        self.pump()

    def take_result(self, result: TaskResult, sender: str) -> None:
        """Count a result if it is the current lease's, from its holder; else it is stale.

        Either way the sender gets an acknowledgement (after the change is saved), so it
        stops resending the result.
        """
        if sender:
            self._ledger.ack(sender, (result.task_id, result.attempt))
        record = self._records.get(result.task_id)
        attempt = self._attempts.get(result.task_id)
        if (
            record is None
            or attempt is None
            or attempt.attempt != result.attempt
            or attempt.worker != result.worker
            or sender != result.worker
        ):
            self.stats.stale_results += 1
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
            return
        now = time.time()
        started = result.started_at or None
        if result.success:
            self._end_attempt(attempt, AttemptOutcome.SUCCEEDED, now, None, started)
            self._finalise(record.succeeded(result.output, now), attempt)
            by_worker = self.stats.by_worker
            by_worker[result.worker] = by_worker.get(result.worker, 0) + 1
            return
        error = result.error or "failed"
        self._end_attempt(attempt, AttemptOutcome.FAILED, now, error, started)
        if record.attempt >= record.task.max_attempts:
            self._finalise(
                record.failed(f"{error} (after {record.attempt} attempts)", now), attempt
            )
            return
        failed_level = self._level_of(result.worker, record)
        self.stats.retries += 1
        self._requeue(
            record.requeued(f"retrying after failure on {result.worker}: {error}", now, error),
            escalate_above=failed_level,
        )

    # --- the steps ----------------------------------------------------------------------------

    def _queue(self, record: TaskRecord, stage: bool) -> None:
        self._records[record.id] = record
        task = record.task
        self.scheduler.add_task(record.id, task.required_skill, task.difficulty, task.priority)
        if task.wait_timeout_s is not None and record.attempt == 0:
            self._arm(record.id, task.wait_timeout_s, self._wait_expired, record.id)
        if stage:
            self._stage(record)

    def _requeue(self, record: TaskRecord, escalate_above: int | None = None) -> None:
        task = record.task
        level = task.difficulty
        if (
            escalate_above is not None
            and self.scheduler.max_level(task.required_skill) > escalate_above
        ):
            level = max(level, escalate_above + 1)
            self._escalate.add(record.id)
        self._records[record.id] = record
        self.scheduler.add_task(record.id, task.required_skill, level, task.priority)
        self._stage(record)
        self.events.emit(
            EventKind.REQUEUED,
            task_id=record.id,
            worker=record.worker,
            attempt=record.attempt,
            reason=record.reason,
        )

    def _end_attempt(
        self,
        attempt: AttemptRecord,
        outcome: AttemptOutcome,
        now: float,
        error: str | None,
        started: float | None = None,
    ) -> None:
        self._attempts.pop(attempt.task_id, None)
        self._by_worker.get(attempt.worker, set()).discard(attempt.task_id)
        timer = self._timers.pop(attempt.task_id, None)
        if timer is not None:
            timer.cancel()
        if attempt.worker in self.workers:
            self.scheduler.release(attempt.worker)
        self._stage_attempt(attempt.ended(outcome, now, error, started))
        self.events.emit(
            EventKind.ATTEMPT_ENDED,
            task_id=attempt.task_id,
            worker=attempt.worker,
            attempt=attempt.attempt,
            reason=error or "",
            run_s=max(now - attempt.assigned_at, 0.0),
            outcome=outcome.value,
        )

    def _finalise(self, record: TaskRecord, attempt: AttemptRecord | None = None) -> None:
        self._records.pop(record.id, None)
        self._escalate.discard(record.id)
        timer = self._timers.pop(record.id, None)
        if timer is not None:
            timer.cancel()
        kind = _FINAL_EVENTS[record.state]
        if kind is EventKind.SUCCEEDED:
            self.stats.succeeded += 1
        elif kind is EventKind.FAILED:
            self.stats.failed += 1
        else:
            self.stats.cancelled += 1
        self._stage(record)
        if self.events:
            run_s = record.updated_at - attempt.assigned_at if attempt is not None else None
            self.events.emit(
                kind,
                task_id=record.id,
                worker=record.worker,
                attempt=record.attempt,
                reason=record.error or "",
                run_s=run_s,
            )

    def pump(self) -> None:
        """Make every assignment possible now, and stage it."""
        assignments = self.scheduler.assign()
        if not assignments:
            return
        now = time.time()
        for choice in assignments:
            waiting_since = self._records[choice.task_id].updated_at
            record = self._records[choice.task_id].assigned(choice.worker, choice.reason, now)
            self._records[record.id] = record
            escalated = record.id in self._escalate
            self._escalate.discard(record.id)
            attempt = AttemptRecord(
                task_id=record.id,
                attempt=record.attempt,
                worker=choice.worker,
                reason=choice.reason,
                assigned_at=now,
                escalated=escalated,
            )
            self._attempts[record.id] = attempt
            self._by_worker.setdefault(choice.worker, set()).add(record.id)
            self._stage(record)
            self._stage_attempt(attempt)
            assignment = TaskAssignment(
                task=record.task, attempt=record.attempt, worker=choice.worker, reason=choice.reason
            )
            self._ledger.post(choice.worker, assignment)
            self.stats.assignments += 1
            if escalated:
                self.stats.escalations += 1
            self.events.emit(
                EventKind.ASSIGNED,
                task_id=record.id,
                worker=choice.worker,
                attempt=record.attempt,
                reason=choice.reason,
                escalated=escalated,
                wait_s=max(now - waiting_since, 0.0),
            )
            if record.task.timeout_s is not None:
                self._arm(
                    record.id,
                    record.task.timeout_s + TIMEOUT_GRACE_S,
                    self._attempt_expired,
                    record.id,
                    record.attempt,
                )

    def _arm(self, task_id: str, delay: float, fn: Any, *args: Any) -> None:
        old = self._timers.pop(task_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[task_id] = loop.call_later(delay, lambda: self._call_soon(lambda: fn(*args)))

    async def _wait_expired(self, task_id: str) -> None:
        record = self._records.get(task_id)
        if record is None or record.state is not TaskState.PENDING or record.attempt:
            return
        self._timers.pop(task_id, None)
        task = record.task
        if self.scheduler.max_level(task.required_skill) >= task.difficulty:
            return  # a skilled worker is connected, only busy: the task will get its turn
        reason = self.scheduler.waiting_reason(task_id) or "no eligible worker"
        self.scheduler.remove_task(task_id)
        wait = task.wait_timeout_s or 0
        self._finalise(
            record.failed(f"no worker could take it within {wait:g}s ({reason})", time.time())
        )

    async def _attempt_expired(self, task_id: str, attempt_no: int) -> None:
        attempt = self._attempts.get(task_id)
        record = self._records.get(task_id)
        if attempt is None or record is None or attempt.attempt != attempt_no:
            return
        now = time.time()
        timeout = record.task.timeout_s or 0
        error = f"no result within {timeout:g}s on {attempt.worker}"
        self._end_attempt(attempt, AttemptOutcome.TIMED_OUT, now, error)
        self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt_no))
        self.stats.timeouts += 1
        if record.attempt >= record.task.max_attempts:
            self._finalise(record.failed(error, now))
        else:
            self._requeue(
                record.requeued(f"timed out on {attempt.worker}; retrying", now, error),
                escalate_above=self._level_of(attempt.worker, record),
            )
        self.pump()

    def _level_of(self, worker: str, record: TaskRecord) -> int:
        info = self.workers.get(worker)
        return info.level(record.task.required_skill) if info is not None else 0

    def _stage(self, record: TaskRecord) -> None:
        self._ledger.record(record)

    def _stage_attempt(self, attempt: AttemptRecord) -> None:
        self._ledger.attempt(attempt)

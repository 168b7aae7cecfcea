"""The core of the manager's book: its state and the steps every transition is made of.

The book (:class:`serendib.tasks._book.TaskBook`) is the manager's state machine, in three
layers, each a module. This one holds what is in flight in memory (as mutable working
copies, see :mod:`serendib.tasks._entries`) and the steps: queue, requeue, end an attempt,
finalise, assign, and the timers of waits and attempts. :mod:`serendib.tasks._roster` adds
the workers (joining, falling silent, leaving, reconciling what they hold), and
:mod:`serendib.tasks._book` the task entry points (submissions, results, cancels,
progress). Every step stages its changes in the ledger (saved before the messages acting on
them are sent) and tells listeners. None does I/O, and all run in the manager's dispatch
loop, so no step ever races another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from serendib.tasks._entries import Entry, Lease
from serendib.tasks._ledger import Ledger
from serendib.tasks.events import EventBus, EventKind, ManagerStats
from serendib.tasks.models import (
    AttemptOutcome,
    Task,
    TaskCancel,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.retries import after_timeout, retry_level
from serendib.tasks.scheduling import Scheduler

__all__ = ["BookCore", "CallSoon"]

TIMEOUT_GRACE_S = 1.0
_FINAL_EVENTS = {
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
}

CallSoon = Callable[[Callable[[], Awaitable[None]]], None]


class BookCore:
    """Unfinished tasks, running attempts and connected workers, and the steps between.

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
        self._records: dict[str, Entry] = {}
        self._attempts: dict[str, Lease] = {}
        self._by_worker: dict[str, set[str]] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._suspects: dict[str, asyncio.TimerHandle] = {}
        self._escalate: set[str] = set()
        self._claims: asyncio.TimerHandle | None = None
        self.events = EventBus(owner)
        self.stats = ManagerStats()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of an unfinished task, as it is in memory."""
        entry = self._records.get(task_id)
        return entry.record() if entry is not None else None

    def close(self) -> None:
        """Cancel every timer."""
        if self._claims is not None:
            self._claims.cancel()
            self._claims = None
        for timer in (*self._timers.values(), *self._suspects.values()):
            timer.cancel()
        self._timers.clear()
        self._suspects.clear()

    # --- the steps ----------------------------------------------------------------------------

    def _queue(self, entry: Entry, stage: bool) -> None:
        self._records[entry.id] = entry
        task = entry.task
        self.scheduler.add_task(entry.id, task.required_skill, task.difficulty, task.priority)
        if task.wait_timeout_s is not None and entry.attempt == 0:
            self._arm(entry.id, task.wait_timeout_s, self._wait_expired, entry.id)
        if stage:
            self._ledger.record(entry)

    def _requeue(self, entry: Entry, escalate_above: int | None = None) -> None:
        task = entry.task
        best = self.scheduler.max_level(task.required_skill)
        level, escalated = retry_level(task.difficulty, escalate_above, best)
        if escalated:
            self._escalate.add(entry.id)
        self.scheduler.add_task(entry.id, task.required_skill, level, task.priority)
        self._ledger.record(entry)
        if self.events:
            self.events.emit(
                EventKind.REQUEUED,
                task_id=entry.id,
                worker=entry.worker,
                attempt=entry.attempt,
                reason=entry.reason,
            )

    def _end_attempt(
        self,
        attempt: Lease,
        outcome: AttemptOutcome,
        now: float,
        error: str | None,
        started: float | None = None,
    ) -> None:
        task_id = attempt.task_id
        self._attempts.pop(task_id, None)
        running = self._by_worker.get(attempt.worker)
        if running is not None:
            running.discard(task_id)
        if self._timers:
            timer = self._timers.pop(task_id, None)
            if timer is not None:
                timer.cancel()
        if attempt.worker in self.workers:
            self.scheduler.release(attempt.worker)
        attempt.end(outcome, now, error, started)
        self._ledger.attempt(attempt)
        if self.events:
            self.events.emit(
                EventKind.ATTEMPT_ENDED,
                task_id=task_id,
                worker=attempt.worker,
                attempt=attempt.attempt,
                reason=error or "",
                run_s=max(now - attempt.assigned_at, 0.0),
                outcome=outcome.value,
            )

    def _finalise(self, entry: Entry, attempt: Lease | None = None) -> None:
        self._records.pop(entry.id, None)
        if self._escalate:
            self._escalate.discard(entry.id)
        if self._timers:
            timer = self._timers.pop(entry.id, None)
            if timer is not None:
                timer.cancel()
        state = entry.state
        stats = self.stats
        if state is TaskState.SUCCEEDED:
            stats.succeeded += 1
        elif state is TaskState.FAILED:
            stats.failed += 1
        else:
            stats.cancelled += 1
        self._ledger.record(entry)
        if self.events:
            run_s = entry.updated_at - attempt.assigned_at if attempt is not None else None
            self.events.emit(
                _FINAL_EVENTS[state],
                task_id=entry.id,
                worker=entry.worker,
                attempt=entry.attempt,
                reason=entry.error or "",
                run_s=run_s,
            )

    def pump(self) -> None:
        """Make every assignment possible now, and stage it."""
        assignments = self.scheduler.assign()
        if not assignments:
            return
        now = time.time()
        records, leases, by_worker = self._records, self._attempts, self._by_worker
        post, stage, stage_attempt = self._ledger.post, self._ledger.record, self._ledger.attempt
        events, stats, escalate = self.events, self.stats, self._escalate
        for choice in assignments:
            task_id, worker, reason = choice.task_id, choice.worker, choice.reason
            entry = records[task_id]
            waiting_since = entry.updated_at
            entry.assign(worker, reason, now)
            escalated = task_id in escalate
            if escalated:
                escalate.discard(task_id)
                stats.escalations += 1
            attempt = Lease(task_id, entry.attempt, worker, reason, now, escalated)
            leases[task_id] = attempt
            running = by_worker.get(worker)
            if running is None:
                running = by_worker[worker] = set()
            running.add(task_id)
            stage(entry)
            stage_attempt(attempt)
            task = entry.task
            post(worker, attempt.assignment(task), attempt)
            stats.assignments += 1
            if events:
                events.emit(
                    EventKind.ASSIGNED,
                    task_id=task_id,
                    worker=worker,
                    attempt=entry.attempt,
                    reason=reason,
                    escalated=escalated,
                    wait_s=max(now - waiting_since, 0.0),
                )
            if task.timeout_s is not None:
                self._arm(
                    task_id,
                    task.timeout_s + TIMEOUT_GRACE_S,
                    self._attempt_expired,
                    task_id,
                    entry.attempt,
                )

    def _arm(self, task_id: str, delay: float, fn: Any, *args: Any) -> None:
        old = self._timers.pop(task_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[task_id] = loop.call_later(delay, lambda: self._call_soon(lambda: fn(*args)))

    async def _wait_expired(self, task_id: str) -> None:
        entry = self._records.get(task_id)
        if entry is None or entry.state is not TaskState.PENDING or entry.attempt:
            return
        self._timers.pop(task_id, None)
        task = entry.task
        if self.scheduler.max_level(task.required_skill) >= task.difficulty:
            return  # a skilled worker is connected, only busy: the task will get its turn
        reason = self.scheduler.waiting_reason(task_id) or "no eligible worker"
        self.scheduler.remove_task(task_id)
        wait = task.wait_timeout_s or 0
        entry.fail(f"no worker could take it within {wait:g}s ({reason})", time.time())
        self._finalise(entry)

    async def _attempt_expired(self, task_id: str, attempt_no: int) -> None:
        attempt = self._attempts.get(task_id)
        entry = self._records.get(task_id)
        if attempt is None or entry is None or attempt.attempt != attempt_no:
            return
        now = time.time()
        task = entry.task
        verdict = after_timeout(
            entry.attempt, task.max_attempts, attempt.worker, task.timeout_s or 0
        )
        self._end_attempt(attempt, AttemptOutcome.TIMED_OUT, now, verdict.error)
        self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt_no))
        self.stats.timeouts += 1
        if not verdict.again:
            entry.fail(verdict.error, now)
            self._finalise(entry)
        else:
            entry.requeue(verdict.reason, now, verdict.error)
            self._requeue(entry, escalate_above=self._level_of(attempt.worker, task))
        self.pump()

    def _await_claims(self, grace_s: float) -> None:
        """After ``grace_s``, abandon the resumed attempts no worker has claimed."""

        async def abandon() -> None:
            self._claims = None
            self._abandon_unclaimed(f"not claimed by its worker within {grace_s:g}s")

        loop = asyncio.get_running_loop()
        self._claims = loop.call_later(grace_s, lambda: self._call_soon(abandon))

    def _abandon_unclaimed(self, why: str, worker: str | None = None) -> None:
        """Requeue the resumed attempts still unclaimed (of ``worker`` only, if given)."""
        now = time.time()
        names = [worker] if worker is not None else list(self._by_worker)
        for name in names:
            for task_id in sorted(self._by_worker.get(name, ())):
                lease = self._attempts.get(task_id)
                entry = self._records.get(task_id)
                if lease is None or entry is None or not lease.resumed:
                    continue
                self._end_attempt(lease, AttemptOutcome.LOST, now, f"manager restarted; {why}")
                self.stats.requeued_lost += 1
                entry.requeue(f"manager restarted; {why}; requeued", now)
                self._requeue(entry)
        self.pump()

    def _level_of(self, worker: str, task: Task) -> int:
        info = self.workers.get(worker)
        return info.level(task.required_skill) if info is not None else 0

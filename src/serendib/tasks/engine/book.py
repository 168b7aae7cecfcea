"""The manager's book: unfinished tasks, attempts in flight, and every transition between.

The book is the manager's state machine. It holds the unfinished tasks and their running
attempts as mutable working copies (:mod:`serendib.tasks.engine.entries`), and is made of parts it
owns: the :class:`~serendib.tasks.scheduling.Scheduler` that chooses workers, the
:class:`~serendib.tasks.engine.roster.Roster` of connected and suspect workers, the
:class:`~serendib.tasks.engine.ledger.Ledger` that saves each change before the messages acting on
it leave, the retry policy (:mod:`serendib.tasks.retries`), timers, events and counters.
Entry points: submissions, resumed tasks, results, cancels, progress, and workers joining,
falling silent, leaving and reporting what they hold. Every step stages its changes in the
ledger and tells listeners; none does I/O, and all run in the manager's dispatch loop, so no
step ever races another.

A pending task waits in one place at a time: for its parents (``depends_on``), for its time
(``delay_s``, ``not_before``, a retry's backoff), for a permit of its ``concurrency_key``
(the holds, :mod:`serendib.tasks.engine.holds`), and then in the scheduler for a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from loguru import logger

from serendib.tasks.activity import ActivityLog
from serendib.tasks.engine.entries import Entry, Lease
from serendib.tasks.engine.holds import Dependencies, KeyLimits, Timeline
from serendib.tasks.engine.learning import Choice, TrackRecord
from serendib.tasks.engine.ledger import Ledger
from serendib.tasks.engine.roster import CallSoon, Roster
from serendib.tasks.events import EventBus, EventKind, ManagerStats
from serendib.tasks.messages import TaskAssignment, TaskCancel, TaskProgress, TaskResult
from serendib.tasks.models import (
    AttemptOutcome,
    AttemptRecord,
    Backoff,
    Task,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.retries import after_failure, after_timeout, retry_level
from serendib.tasks.scheduling import Scheduler

__all__ = ["TaskBook"]

TIMEOUT_GRACE_S = 1.0
MAX_INPUT_BYTES = 768 * 1024
"""The most a task's parents' outputs may take, encoded, to be handed to it (an assignment
travels in one message of at most 1 MiB); a task whose inputs are larger fails, saying so."""
_JUDGED = frozenset({AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT})
"""Outcomes that say something of the worker (a lost or cancelled attempt does not)."""
_FINAL_EVENTS = {
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
}


class TaskBook:
    """Unfinished tasks, running attempts and connected workers, and every transition.

    Args:
        scheduler: Chooses workers.
        ledger: Saves changes, then sends messages.
        call_soon: Runs a coroutine function in the owner's dispatch loop (for timers).
        owner: Name for log lines.
        limits: The limits per ``concurrency_key``.
        backoff: How long a retry waits when its task does not say (None: at once).
        learn: Escalate a retry to the worker with the best record for the task's kind and
            difficulty (:mod:`serendib.tasks.engine.learning`), not only to a more skilled one.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        ledger: Ledger,
        call_soon: CallSoon,
        owner: str,
        *,
        limits: KeyLimits | None = None,
        backoff: Backoff | None = None,
        learn: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.track = TrackRecord()
        self.learn = learn
        # Task id -> what was learnt for its retry (its assignment's reason says it).
        self._notes: dict[str, Choice] = {}
        self.dependencies = Dependencies()
        self.timeline = Timeline()
        self.limits = limits if limits is not None else KeyLimits()
        self.backoff = backoff
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0
        self._closed = False
        self._ledger = ledger
        self._call_soon = call_soon
        self.name = owner
        self._records: dict[str, Entry] = {}
        self._attempts: dict[str, Lease] = {}
        self._by_worker: dict[str, set[str]] = {}
        self.roster = Roster(call_soon)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._escalate: set[str] = set()
        self._claims: asyncio.TimerHandle | None = None
        self.events = EventBus(owner)
        self.activity = ActivityLog(owner)
        self.stats = ManagerStats()
        # Clients to tell of a task's outcome (task id -> clients), and the reverse.
        self._watchers: dict[str, list[str]] = {}
        self._watching: dict[str, set[str]] = {}

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
        self._closed = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.roster.close()
        self.activity.close()

    # --- the steps ----------------------------------------------------------------------------

    def _queue(
        self,
        entry: Entry,
        stage: bool,
        parents: Mapping[str, TaskRecord] | None = None,
        *,
        complete: bool = False,
    ) -> None:
        """A task unfinished and pending: it waits for its parents, its time, a permit of
        its key, then a worker. ``parents``: the records of its parents that ended and are
        no longer in memory; a parent found nowhere is taken to be on its way, or, when
        ``parents`` is ``complete``, to be unknown (the task is cancelled)."""
        self._records[entry.id] = entry
        task = entry.task
        if stage:
            self._ledger.record(entry)
        if task.depends_on and self._await_parents(entry, parents or {}, complete):
            return
        self._admit(entry)

    def _await_parents(
        self, entry: Entry, parents: Mapping[str, TaskRecord], complete: bool = False
    ) -> bool:
        """Whether ``entry`` must wait for its parents (or was cancelled: one failed, or
        is unknown)."""
        task = entry.task
        waiting: list[str] = []
        inputs: dict[str, object] = {}
        for parent in task.depends_on:
            if parent in self._records:
                waiting.append(parent)
                continue
            ended: Entry | TaskRecord | None = self._ledger.unsaved(parent)
            if ended is None:
                ended = parents.get(parent)
            if ended is None and complete:
                self._doom(entry, parent, "is unknown")
                return True
            if ended is None or not ended.state.is_final:
                waiting.append(parent)  # stored by a submission still on its way here
            elif ended.state is TaskState.SUCCEEDED:
                inputs[parent] = ended.output
            elif not task.run_anyway:
                self._doom(entry, parent, ended.state.value)
                return True
        self.dependencies.add(entry.id, waiting, inputs, run_anyway=task.run_anyway)
        if not waiting:
            return False
        entry.reason = self._parents_reason(entry.id)
        return True

    def _parents_reason(self, task_id: str) -> str:
        waits = self.dependencies.waits_for(task_id)
        entry = self._records.get(task_id)
        total = len(entry.task.depends_on) if entry is not None else len(waits)
        shown = ", ".join(waits[:5]) + (f" and {len(waits) - 5} more" if len(waits) > 5 else "")
        noun = "parent" if len(waits) == 1 else "parents"
        return f"waiting for {noun} {shown} ({total - len(waits)} of {total} done)"

    def _doom(self, entry: Entry, parent: str, how: str) -> None:
        """Cancel ``entry``, a parent of which ended without success (its own children are
        the caller's to release)."""
        entry.cancel(time.time())
        entry.error = f"parent {parent} {how}"
        entry.reason = f"cancelled: parent {parent} {how}"
        self._close(entry)

    def _admit(self, entry: Entry) -> None:
        """A pending task nothing but time and limits may hold: hold it, or schedule it."""
        if entry.not_before and entry.not_before > time.time():
            self.timeline.hold(entry.id, entry.not_before)
            self._rearm()
            return
        key = entry.task.concurrency_key
        if (
            key is not None
            and self.limits.limited(key)
            and not self.limits.admit(key, entry.id, entry.task.priority, time.time())
        ):
            return  # it waits for a permit of its key
        self._schedule(entry)

    def _schedule(self, entry: Entry) -> None:
        """Hand a pending task to the scheduler (at a higher level when it escalates)."""
        task = entry.task
        level = task.difficulty
        if entry.escalate_above is not None:
            best = self.scheduler.max_level(task.required_skill, task.kind, task.labels)
            level, escalated = retry_level(task.difficulty, entry.escalate_above, best)
            if self.learn:
                choice = self.track.best(
                    lambda name: self.roster.eligible_level(name, task),
                    task.kind,
                    task.difficulty,
                    entry.escalate_above,
                )
                if choice is not None and choice.level > level:
                    level, escalated = choice.level, True
                    self._notes[entry.id] = choice
            entry.escalate_above = None
            if escalated:
                self._escalate.add(entry.id)
        self.scheduler.add_task(
            entry.id,
            task.required_skill,
            level,
            task.priority,
            kind=task.kind,
            labels=task.labels,
            group=task.group,
        )
        if task.wait_timeout_s is not None and entry.tries == 0 and entry.id not in self._timers:
            # From when it may be assigned: its parents done, its time come, a permit taken.
            self._arm(entry.id, task.wait_timeout_s, self._wait_expired, entry.id)

    def _unqueue(self, entry: Entry) -> None:
        """Take a pending task out of wherever it waits (it is cancelled or failed)."""
        task_id = entry.id
        if task_id in self.dependencies or self.timeline.withdraw(task_id):
            return
        key = entry.task.concurrency_key
        if key is not None and self.limits.withdraw(key, task_id):
            return
        if self.scheduler.remove_task(task_id) and key is not None:
            self.limits.release(key, task_id)

    def _rearm(self) -> None:
        """Wake at the earliest time a held task may go (its time, or a permit back)."""
        times = [at for at in (self.timeline.next_at(), self.limits.next_at()) if at is not None]
        if not times or self._closed:
            return
        at = min(times)
        if self._wake is not None:
            if self._wake_at <= at:
                return
            self._wake.cancel()
        self._wake_at = at
        delay = max(at - time.time(), 0.0)
        loop = asyncio.get_running_loop()
        self._wake = loop.call_later(delay, lambda: self._call_soon(self._woken))

    async def _woken(self) -> None:
        self._wake = None
        for task_id in self.timeline.due(time.time()):
            entry = self._records.get(task_id)
            if entry is not None and entry.state is TaskState.PENDING:
                self._admit(entry)
        self.pump()

    def _requeue(
        self, entry: Entry, escalate_above: int | None = None, *, backoff: bool = False
    ) -> None:
        """Queue again a task whose attempt ended without success: above ``escalate_above``
        when a more skilled worker is connected; after its backoff when ``backoff``."""
        entry.escalate_above = escalate_above
        if backoff:
            policy = entry.task.retry or self.backoff
            delay = policy.delay(entry.id, entry.tries) if policy is not None else 0.0
            if delay > 0:
                entry.not_before = entry.updated_at + delay
                entry.reason = f"{entry.reason}; in {delay:.3g}s (backoff)"
        self._admit(entry)
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
        if attempt.worker in self.roster:
            self.scheduler.release(attempt.worker)
        entry = self._records.get(task_id)
        if entry is not None:
            task = entry.task
            if self.limits and task.concurrency_key is not None:
                self.limits.release(task.concurrency_key, task_id)
            if outcome in _JUDGED:
                self.track.note(
                    attempt.worker, task.kind, task.difficulty, outcome is AttemptOutcome.SUCCEEDED
                )
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
        """A task reached a final state: save it, tell who watches, and release (or
        cancel) the tasks waiting for it."""
        self._close(entry, attempt)
        if self.dependencies.has_children(entry.id):
            self._release_children(entry)

    def parent_found(self, record: TaskRecord) -> None:
        """A task that tasks wait for, taken to be on its way, was stored already: if it
        has ended, they learn it (as if it had just ended)."""
        if record.id not in self._records and record.state.is_final:
            self._release_children(record)

    def parents_lost(self, task_ids: list[str]) -> None:
        """Tasks taken to be on their way were never stored: those waiting for them learn
        that their parent is unknown (cancelled, unless they run anyway)."""
        for task_id in task_ids:
            if task_id not in self._records and self.dependencies.has_children(task_id):
                self._release_children((task_id, False, None, "is unknown"))

    def _release_children(self, parent: Entry | TaskRecord | tuple[str, bool, Any, str]) -> None:
        """The tasks waiting for ``parent`` (or ``(id, succeeded, output, how it ended)``)
        learn that it ended: released, or cancelled, and so on down."""
        # A loop, not recursion: a chain of 10^5 dependents may be cancelled at once.
        ended: list[tuple[str, bool, Any, str]] = [
            parent
            if isinstance(parent, tuple)
            else (parent.id, parent.state is TaskState.SUCCEEDED, parent.output, parent.state.value)
        ]
        while ended:
            released = self.dependencies.ended(*ended.pop())
            for child_id in released.ready:
                child = self._records.get(child_id)
                if child is not None and child.state is TaskState.PENDING:
                    child.reason = "its parents are done"
                    self._admit(child)
            for child_id, by, how in released.doomed:
                child = self._records.get(child_id)
                if child is not None and not child.state.is_final:
                    self._doom(child, by, how)
                    if self.dependencies.has_children(child_id):
                        ended.append((child_id, False, None, child.state.value))

    def _close(self, entry: Entry, attempt: Lease | None = None) -> None:
        self._records.pop(entry.id, None)
        if entry.task.depends_on:
            self.dependencies.forget(entry.id)
        if self._notes:
            self._notes.pop(entry.id, None)
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
        self._log_final(entry)
        if self._watchers:
            clients = self._watchers.pop(entry.id, None)
            if clients is not None:
                outcome = entry.outcome()
                for client in clients:
                    watching = self._watching.get(client)
                    if watching is not None:
                        watching.discard(entry.id)
                        if not watching:
                            del self._watching[client]
                    self._ledger.notify(client, outcome)
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

    def _log_final(self, entry: Entry) -> None:
        state = entry.state
        if self.activity.held(state.value, "WARNING" if state is TaskState.FAILED else "INFO"):
            return
        took = max(entry.updated_at - entry.submitted_at, 0.0)
        where = f" on {entry.worker}" if entry.worker else ""
        if state is TaskState.SUCCEEDED:
            self.activity.event(
                state.value,
                "task {} succeeded{} after {} attempt(s), {:.3f}s after submission",
                entry.id,
                where,
                entry.attempt,
                took,
                task_id=entry.id,
                worker=entry.worker,
                attempt=entry.attempt,
            )
            return
        self.activity.event(
            state.value,
            "task {} {}{} after {} attempt(s): {}",
            entry.id,
            state.value,
            where,
            entry.attempt,
            entry.error or entry.reason,
            level="WARNING" if state is TaskState.FAILED else "INFO",
            task_id=entry.id,
            worker=entry.worker,
            attempt=entry.attempt,
            error=entry.error,
        )

    def pump(self) -> None:
        """Make every assignment possible now, and stage it."""
        limits = self.limits
        if limits:
            records = self._records
            for task_id in limits.ready(time.time()):
                entry = records.get(task_id)
                if entry is not None:
                    self._schedule(entry)
        assignments = self.scheduler.assign()
        if not assignments:
            if limits or self.timeline:
                self._rearm()
            return
        now = time.time()
        records, leases, by_worker = self._records, self._attempts, self._by_worker
        post, stage, stage_attempt = self._ledger.post, self._ledger.record, self._ledger.attempt
        events, stats, escalate = self.events, self.stats, self._escalate
        for choice in assignments:
            task_id, worker, reason = choice.task_id, choice.worker, choice.reason
            entry = records[task_id]
            if entry.task.depends_on and self._inputs_too_large(entry):
                self.scheduler.release(worker)
                continue
            if self._notes:
                learned = self._notes.pop(task_id, None)
                if learned is not None:
                    task = entry.task
                    reason = f"{reason}; {learned.note(task.kind, task.difficulty, worker)}"
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
            post(worker, self._assignment(attempt, entry), attempt)
            if limits and task.concurrency_key is not None:
                limits.started(task.concurrency_key, task_id, now)
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
        if limits or self.timeline:
            self._rearm()

    def _inputs_too_large(self, entry: Entry) -> bool:
        """Fail ``entry`` (just taken from the scheduler) if its parents' outputs are too
        large to hand over; whether it was."""
        inputs = self.dependencies.inputs(entry.id)
        if not inputs:
            return False
        try:
            size = len(pydantic_core.to_json(inputs))
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
            size = 0
        if size <= MAX_INPUT_BYTES:
            return False
        entry.fail(
            f"its parents' outputs take {size:,} bytes: too large to hand over (at most "
            f"{MAX_INPUT_BYTES:,})",
            time.time(),
        )
        self._finalise(entry)
        return True

    def _assignment(self, lease: Lease, entry: Entry) -> TaskAssignment:
        """The message giving ``lease`` to its worker, with the task's parents' outputs."""
        task = entry.task
        if task.depends_on:
            return lease.assignment(task, self.dependencies.inputs(entry.id))
        return lease.assignment(task)

    def _arm(self, task_id: str, delay: float, fn: Any, *args: Any) -> None:
        old = self._timers.pop(task_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[task_id] = loop.call_later(delay, lambda: self._call_soon(lambda: fn(*args)))

    async def _wait_expired(self, task_id: str) -> None:
        entry = self._records.get(task_id)
        if entry is None or entry.state is not TaskState.PENDING or entry.tries:
            return
        self._timers.pop(task_id, None)
        task = entry.task
        if self.scheduler.max_level(task.required_skill, task.kind, task.labels) >= task.difficulty:
            return  # a skilled worker is connected, only busy: the task will get its turn
        reason = self.scheduler.waiting_reason(task_id) or "no eligible worker"
        self._unqueue(entry)
        wait = task.wait_timeout_s or 0
        entry.fail(f"no worker could take it within {wait:g}s ({reason})", time.time())
        self._finalise(entry)
        self.pump()  # what it released: its children, a permit of its key

    async def _attempt_expired(self, task_id: str, attempt_no: int) -> None:
        attempt = self._attempts.get(task_id)
        entry = self._records.get(task_id)
        if attempt is None or entry is None or attempt.attempt != attempt_no:
            return
        now = time.time()
        task = entry.task
        verdict = after_timeout(entry.tries, task.max_attempts, attempt.worker, task.timeout_s or 0)
        self._end_attempt(attempt, AttemptOutcome.TIMED_OUT, now, verdict.error)
        self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt_no))
        self.stats.timeouts += 1
        if not verdict.again:
            entry.fail(verdict.error, now)
            self._finalise(entry)
        else:
            entry.requeue(verdict.reason, now, verdict.error)
            self._requeue(entry, self._level_of(attempt.worker, task), backoff=True)
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
        return self.roster.level(worker, task)

    # --- clients watching outcomes ---------------------------------------------------------

    def watch(self, client: str, task_ids: list[str], *, known: bool = False) -> list[str]:
        """Tell ``client`` the outcome of each unfinished one of ``task_ids`` once it is final
        and stored; returns the others (final, or unknown), in order. ``known``: the ids
        are unfinished tasks stored and about to be queued: watch them all."""
        others = []
        records, watchers = self._records, self._watchers
        watching = self._watching.setdefault(client, set())
        for task_id in task_ids:
            if task_id not in records and not known:
                others.append(task_id)
                continue
            if task_id in watching:
                continue
            watching.add(task_id)
            found = watchers.get(task_id)
            if found is None:
                watchers[task_id] = [client]
            else:
                found.append(client)
        return others

    def unwatch(self, client: str) -> None:
        """``client`` left: forget what it watched."""
        for task_id in self._watching.pop(client, ()):
            clients = self._watchers.get(task_id)
            if clients is not None and client in clients:
                clients.remove(client)
                if not clients:
                    del self._watchers[task_id]

    @property
    def watched(self) -> int:
        """Unfinished tasks some client waits on."""
        return len(self._watchers)

    # --- workers -----------------------------------------------------------------------------

    def load(self, worker: str) -> int:
        """Attempts ``worker`` holds now (connected or suspect)."""
        return len(self._by_worker.get(worker, ()))

    @property
    def workers(self) -> dict[str, WorkerInfo]:
        """The connected workers by name, suspects included."""
        return self.roster.workers

    @property
    def suspects(self) -> list[str]:
        """Workers that fell silent and whose attempts are kept for them a while."""
        return self.roster.suspects

    def worker_joined(self, info: WorkerInfo) -> None:
        """A worker can take work (again, if it was suspect: its attempts are still its own)."""
        if self.roster.join(info):
            logger.info(
                "{}: worker {} is back; it keeps its {} attempts",
                self.name,
                info.name,
                len(self._by_worker.get(info.name, ())),
            )
        self._place_worker(info)
        self.events.emit(EventKind.WORKER_JOINED, worker=info.name)
        self.pump()

    def worker_changed(self, info: WorkerInfo) -> bool:
        """A connected worker's skills, kinds, labels or capacity changed: what it runs goes
        on, and pending work is placed again with what it has now. False if it is not
        connected (or suspect: it gets no work until it is heard from)."""
        if info.name not in self.roster or self.roster.is_suspect(info.name):
            return False
        self.roster.join(info)
        self._place_worker(info)
        self.events.emit(EventKind.WORKER_CHANGED, worker=info.name)
        self.pump()
        return True

    def _place_worker(self, info: WorkerInfo) -> None:
        running = self._by_worker.setdefault(info.name, set())
        self.scheduler.add_worker(
            info.name,
            info.skills,
            info.slots,
            load=len(running),
            kinds=info.kinds,
            labels=info.labels,
        )

    def worker_lost(self, name: str, grace_s: float) -> None:
        """A worker fell silent: it gets no new work, and its attempts go back to the queue
        only if it is still silent ``grace_s`` seconds from now (it may only be overloaded)."""
        if name not in self.roster or self.roster.is_suspect(name):
            return
        if grace_s <= 0:
            self.worker_left(name)
            return
        self.scheduler.remove_worker(name)
        logger.warning(
            "{}: worker {} fell silent: no new work for it; its {} attempts go back to the queue "
            "if it is still silent in {:g}s",
            self.name,
            name,
            len(self._by_worker.get(name, ())),
            grace_s,
        )

        async def give_up() -> None:
            self.worker_left(name, cancel=True)

        self.roster.suspect(name, grace_s, give_up)

    def worker_left(self, name: str, cancel: bool = False) -> None:
        """A worker left or was lost for good: its attempts go back to the queue.

        ``cancel``: it may still be running them (silent, not known dead): tell it to stop.
        """
        if self.roster.leave(name) is None:
            return
        self.scheduler.remove_worker(name)
        self.stats.workers_lost += 1
        self.events.emit(EventKind.WORKER_LEFT, worker=name)
        now = time.time()
        for task_id in sorted(self._by_worker.pop(name, set())):
            attempt = self._attempts.get(task_id)
            entry = self._records.get(task_id)
            if attempt is None or entry is None:
                continue
            self._end_attempt(attempt, AttemptOutcome.LOST, now, f"worker {name} lost")
            if cancel:
                self._ledger.post(name, TaskCancel(task_id=task_id, attempt=attempt.attempt))
            self.stats.requeued_lost += 1
            entry.requeue(f"worker {name} left; requeued", now)
            self._requeue(entry)
        self.pump()

    def reconcile(
        self, worker: str, holding: set[tuple[str, int]], seen: int, grace_s: float
    ) -> None:
        """Compare what ``worker`` holds with what it was given.

        An attempt it does not hold although it has handled the message that carried it
        (``seen``: the last assignment message it handled, -1 if unknown) was lost: it goes
        back to the queue. One whose message it has not handled yet may be waiting in a busy
        worker's inbox, or lost on the way with nothing after it: after ``grace_s`` it is
        sent again (a worker ignores an assignment it already has).
        """
        now = time.time()
        attempts = self._attempts
        missing = []
        unclaimed = False
        for task_id in self._by_worker.get(worker, ()):
            lease = attempts.get(task_id)
            if lease is not None and (task_id, lease.attempt) in holding:
                lease.resumed = False  # claimed: held since before a manager restart
            elif lease is not None and lease.resumed:
                unclaimed = True
            else:
                missing.append(task_id)
        if unclaimed:
            self._abandon_unclaimed(f"{worker} does not hold it", worker)
        for task_id in sorted(missing):  # usually none: a worker holds what it was given
            attempt = self._attempts.get(task_id)
            entry = self._records.get(task_id)
            if attempt is None or entry is None:
                continue
            if not attempt.seq or now - attempt.sent_at < grace_s:
                continue  # not sent yet, or sent too recently to judge
            if attempt.seq <= seen:
                reason = f"assignment to {worker} lost in transit"
                self._end_attempt(attempt, AttemptOutcome.LOST, now, reason)
                self.stats.requeued_lost += 1
                entry.requeue(f"{reason}; requeued", now)
                self._requeue(entry)
                continue
            attempt.seq = 0  # judged again once the new message is out
            self.stats.assignments_resent += 1
            self._ledger.post(worker, self._assignment(attempt, entry), attempt)
        self.pump()

    # --- entry points -------------------------------------------------------------------------

    def resume(
        self,
        records: list[TaskRecord],
        open_attempts: dict[str, AttemptRecord],
        grace_s: float,
        parents: Mapping[str, TaskRecord] | None = None,
    ) -> None:
        """Take over the unfinished tasks of a previous run.

        An attempt in flight stays its worker's for ``grace_s``: workers outlive a manager
        restart and tell the new one what they hold (their sync, sent when they join), so
        their results, including those finished while the manager was down, still count.
        One its worker does not claim in time, or says it does not hold, is abandoned (LOST)
        and requeued.

        ``parents``: the records of the ended parents of these tasks (``depends_on``).
        """
        now = time.time()
        resumed = 0
        parents = parents or {}
        waiting: list[tuple[Entry, bool]] = []
        # The attempts in flight first: they hold the permits of their keys before any
        # pending task may take one.
        for record in records:
            entry = Entry.of(record)
            if entry.state is TaskState.PENDING:
                waiting.append((entry, False))
                continue
            attempt = open_attempts.get(record.id)
            if attempt is None or attempt.attempt != entry.attempt:
                entry.requeue("manager restarted; attempt abandoned", now)
                waiting.append((entry, True))
                continue
            if record.task.depends_on:  # given out already: its parents' outputs, for a retry
                inputs: dict[str, object] = {
                    p: parents[p].output
                    for p in record.task.depends_on
                    if p in parents and parents[p].state is TaskState.SUCCEEDED
                }
                self.dependencies.add(entry.id, (), inputs, run_anyway=record.task.run_anyway)
            lease = Lease.of(attempt)
            lease.resumed = True
            if record.task.concurrency_key is not None:
                self.limits.occupy(record.task.concurrency_key, entry.id)
            self._records[entry.id] = entry
            self._attempts[entry.id] = lease
            self._by_worker.setdefault(lease.worker, set()).add(entry.id)
            resumed += 1
        # Every unfinished task is known before any waits for its parents (a child may come
        # before its parent in the store's order): a parent found nowhere is unknown.
        for entry, _ in waiting:
            self._records[entry.id] = entry
        for entry, stage in waiting:
            self._queue(entry, stage=stage, parents=parents, complete=True)
        if resumed:
            self._await_claims(grace_s)
        self.pump()

    def submitted(
        self, tasks: list[Task], at: float, parents: Mapping[str, TaskRecord] | None = None
    ) -> None:
        """Queue tasks just stored for the first time (PENDING, submitted ``at``);
        ``parents``: the records of their ended parents no longer in memory."""
        events = self.events
        for task in tasks:
            self._queue(Entry(task, at), stage=False, parents=parents)
            if events:
                events.emit(EventKind.SUBMITTED, task_id=task.id)
        self.stats.submitted += len(tasks)
        self.pump()

    def replay(
        self, record: TaskRecord, at: float, parents: Mapping[str, TaskRecord] | None = None
    ) -> TaskRecord:
        """Run a failed or cancelled task again as new attempts (its history kept).

        Raises:
            ValueError: It has not ended, or it succeeded.
        """
        if record.id in self._records:
            raise ValueError(
                f"task {record.id!r} has not ended ({self._records[record.id].state.value})"
            )
        if record.state is TaskState.SUCCEEDED:
            raise ValueError(f"task {record.id!r} succeeded: there is nothing to retry")
        if record.state not in (TaskState.FAILED, TaskState.CANCELLED):
            raise ValueError(f"task {record.id!r} has not ended ({record.state.value})")
        entry = Entry.of(record)
        entry.replay(f"replayed after it {record.state.value}", at)
        self.stats.replays += 1
        self._queue(entry, stage=True, parents=parents)
        if self.events:
            self.events.emit(EventKind.REQUEUED, task_id=entry.id, reason=entry.reason)
        return entry.record()

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
            self._unqueue(entry)
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

    def started(self, task_id: str, attempt_no: int, sender: str, at: float) -> None:
        """A leaseholder started the attempt (it was waiting in its hands until then): the
        task is RUNNING."""
        entry = self._records.get(task_id)
        attempt = self._attempts.get(task_id)
        if (
            entry is None
            or attempt is None
            or attempt.attempt != attempt_no
            or attempt.worker != sender
            or entry.state is not TaskState.ASSIGNED
        ):
            return
        entry.run(at)
        attempt.started_at = at  # stored with the attempt's end
        self._ledger.record(entry)
        if self.events:
            self.events.emit(EventKind.STARTED, task_id=task_id, worker=sender, attempt=attempt_no)

    def waiting_reason(self, record: TaskRecord) -> TaskRecord:
        """A pending record with its current reason for waiting: its parents, its time, a
        limit, or the scheduler's."""
        if record.state is not TaskState.PENDING:
            return record
        return record.waiting(self.why_waiting(record.id) or record.reason)

    def why_waiting(self, task_id: str) -> str | None:
        """Why pending task ``task_id`` waits now, for people; None if it is not pending here."""
        if task_id in self.dependencies:
            return self._parents_reason(task_id)
        until = self.timeline.until(task_id)
        entry = self._records.get(task_id)
        if until is not None and entry is not None:
            when = datetime.fromtimestamp(until, UTC).isoformat(timespec="milliseconds")
            what = "retry waits out its backoff" if entry.tries else "delayed"
            return f"{what}: not before {when} (in {max(until - time.time(), 0):.1f}s)"
        key = entry.task.concurrency_key if entry is not None else None
        if key is not None and self.limits.is_queued(key, task_id):
            return self.limits.reason(key, time.time())
        return self.scheduler.waiting_reason(task_id)

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
        verdict = after_failure(entry.tries, entry.task.max_attempts, result.worker, error)
        if not verdict.again:
            entry.fail(verdict.error, now)
            self._finalise(entry, attempt)
            return
        failed_level = self._level_of(result.worker, entry.task)
        self.stats.retries += 1
        entry.requeue(verdict.reason, now, error)
        self._requeue(entry, failed_level, backoff=True)

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

"""The task manager: an admin that assigns tasks to workers by skill and sees them through.

State lives in the store; the manager keeps the unfinished tasks in memory and works in
small steps, all in its dispatch loop: a step updates memory and *stages* the records it
changed and the messages it wants to send. A writer saves each staged batch in one store
transaction and only then sends the messages, so nothing is acted on before it is stored,
and handling never waits on the disk. Each attempt is a lease fenced by its number: a result
for any other attempt (a worker thought dead, a duplicate, a forgery) is stale and ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from loguru import logger

from serendib.admin import Admin
from serendib.agent import current_message
from serendib.errors import TaskNotFound
from serendib.handlers import on_message
from serendib.presence import AgentDetail
from serendib.tasks._ledger import Ledger
from serendib.tasks.events import EventKind, Listener, ManagerStats, TaskEvent
from serendib.tasks.models import (
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskAssignment,
    TaskCancel,
    TaskProgress,
    TaskRecord,
    TaskResult,
    TaskResults,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.protocol import (
    CancelReply,
    CancelRequest,
    ReportRequest,
    StatusReply,
    StatusRequest,
    SubmitReply,
    SubmitTasks,
    TaskPage,
    TaskQuery,
    WorkerStatus,
)
from serendib.tasks.report import Report, build_report
from serendib.tasks.scheduling import Scheduler
from serendib.tasks.store import TaskStore, open_store

__all__ = ["TaskManager"]

TIMEOUT_GRACE_S = 1.0
_FINAL_EVENTS = {
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
}


class TaskManager(Admin):
    """Assigns tasks to the workers of its workspace by skill; retries, escalates, reports.

    Args:
        name: The manager's agent name.
        port: Port of the embedded NATS server (see :class:`~serendib.Admin`).
        workspace_id: The workspace whose workers it uses.
        store: A :class:`TaskStore` or its URL (default: SQLite file ``serendib.db``).
        tasks: Tasks to submit when it starts.
        stop_when_done: End the run once every task is final (a batch run).
        attempt_unqualified: Give a task no connected worker is skilled enough for to the
            most skilled one anyway (the seed's behaviour) instead of letting it wait.
        **options: Passed on to :class:`~serendib.Admin`.
    """

    def __init__(
        self,
        name: str = "manager",
        port: int | None = None,
        *,
        workspace_id: str = "serendib",
        store: TaskStore | str | None = None,
        tasks: Iterable[Task] = (),
        stop_when_done: bool = False,
        attempt_unqualified: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, port, workspace_id=workspace_id, **options)
        self.store = (
            store if store is not None and not isinstance(store, str) else open_store(store)
        )
        self.scheduler = Scheduler(attempt_unqualified=attempt_unqualified)
        self.stop_when_done = stop_when_done
        self._initial = list(tasks)
        self._records: dict[str, TaskRecord] = {}
        self._attempts: dict[str, AttemptRecord] = {}
        self._by_worker: dict[str, set[str]] = {}
        self._worker_info: dict[str, WorkerInfo] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._escalate: set[str] = set()
        self._ledger = Ledger(self.store, self.send, self._check_done, name)
        self._listeners: list[Listener] = []
        self._done = asyncio.Event()
        self.stats = ManagerStats()
        self._started_at = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Open the store, resume unfinished tasks, and submit the initial ones."""
        await self.store.open()
        await self._resume()
        if self._initial:
            await self.submit(self._initial)
            self._initial = []
        self._check_done()

    async def _resume(self) -> None:
        open_attempts = {a.task_id: a for a in await self.store.open_attempts()}
        records = await self.store.unfinished()
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
        if records:
            logger.info(
                "{}: resumed {} unfinished tasks from {}", self.name, len(records), self.store.url
            )
        self._pump()

    async def _finish(self, drain_timeout: float | None) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self._ledger.drain()

    async def on_stop(self) -> None:
        """Close the store once everything staged is saved."""
        await self.store.close()

    async def wait_done(self) -> None:
        """Return once every submitted task is final and stored."""
        await self._done.wait()

    async def report(self) -> Report:
        """The report of every task in the store."""
        records, attempts = await asyncio.gather(
            self.store.all_records(), self.store.all_attempts()
        )
        return build_report(records, attempts)

    # --- submitting and cancelling -------------------------------------------------------------

    async def submit(self, tasks: Iterable[Task]) -> SubmitReply:
        """Store new tasks (an id already known is ignored) and queue them for assignment.

        Returns:
            Which ids were accepted and which were duplicates.
        """
        now = time.time()
        tasks = list(tasks)
        candidates: dict[str, TaskRecord] = {}
        for task in tasks:
            if task.id not in candidates and task.id not in self._records:
                candidates[task.id] = TaskRecord(task=task, submitted_at=now, updated_at=now)
        added = await self.store.add(list(candidates.values()))
        for record in added:
            self._queue(record, stage=False)
            self._emit(EventKind.SUBMITTED, task_id=record.id)
        self.stats.submitted += len(added)
        if added:
            self._done.clear()
        self._pump()
        accepted = [r.id for r in added]
        taken = set(accepted)
        return SubmitReply(accepted=accepted, duplicates=[t.id for t in tasks if t.id not in taken])

    async def cancel(self, task_id: str) -> CancelReply:
        """Cancel a task that is not final.

        Raises:
            TaskNotFound: No task has this id.
        """
        record = self._records.get(task_id)
        if record is None:
            stored = await self.store.get(task_id)
            if stored is None:
                raise TaskNotFound(task_id)
            return CancelReply(record=stored, cancelled=False)
        now = time.time()
        attempt = self._attempts.get(task_id)
        if attempt is not None and record.state in (TaskState.ASSIGNED, TaskState.RUNNING):
            self._end_attempt(attempt, AttemptOutcome.CANCELLED, now, "cancelled")
            self._ledger.post(attempt.worker, TaskCancel(task_id=task_id, attempt=attempt.attempt))
        else:
            self.scheduler.remove_task(task_id)
        cancelled = record.cancelled(now)
        self._finalise(cancelled)
        self._pump()
        return CancelReply(record=cancelled, cancelled=True)

    # --- membership ---------------------------------------------------------------------------

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        """A worker joined: add it to the scheduler and hand it work."""
        if agent.role != "worker":
            return
        try:
            info = WorkerInfo.from_attributes(agent.name, agent.attributes)
        except ValueError as e:
            logger.warning(
                "{}: worker {} ignored: bad skills/capacity: {}", self.name, agent.name, e
            )
            return
        self._worker_info[agent.name] = info
        self._by_worker.setdefault(agent.name, set())
        self._emit(EventKind.WORKER_JOINED, worker=agent.name)
        self.scheduler.add_worker(info.name, info.skills, info.capacity, load=0)
        logger.info(
            "{}: worker {} joined ({}, capacity {})",
            self.name,
            agent.name,
            ", ".join(f"{k} {v}" for k, v in info.skills.items()),
            info.capacity,
        )
        self._pump()

    async def on_agent_disconnected(self, agent: AgentDetail) -> None:
        """A worker left or was lost: its attempts go back to the queue."""
        if self._worker_info.pop(agent.name, None) is None:
            return
        self.scheduler.remove_worker(agent.name)
        self.stats.workers_lost += 1
        self._emit(EventKind.WORKER_LEFT, worker=agent.name)
        now = time.time()
        for task_id in sorted(self._by_worker.pop(agent.name, set())):
            attempt = self._attempts.get(task_id)
            record = self._records.get(task_id)
            if attempt is None or record is None:
                continue
            self._end_attempt(attempt, AttemptOutcome.LOST, now, f"worker {agent.name} lost")
            self.stats.requeued_lost += 1
            self._requeue(record.requeued(f"worker {agent.name} left; requeued", now))
        self._pump()

    # --- results ------------------------------------------------------------------------------

    @on_message
    async def _on_result(self, result: TaskResult) -> None:
        self._take_result(result, self._sender())
        self._pump()

    @on_message
    async def _on_results(self, batch: TaskResults) -> None:
        sender = self._sender()
        for result in batch.results:
            self._take_result(result, sender)
        self._pump()

    @on_message
    async def _on_progress(self, progress: TaskProgress) -> None:
        record = self._records.get(progress.task_id)
        attempt = self._attempts.get(progress.task_id)
        if (
            record is None
            or attempt is None
            or attempt.attempt != progress.attempt
            or attempt.worker != self._sender()
        ):
            return
        if record.state is TaskState.ASSIGNED:
            record = record.running(time.time())
        note = f"running on {attempt.worker}: {progress.fraction:.0%} {progress.note}".rstrip()
        record = record.waiting(note)
        self._records[record.id] = record
        self._stage(record)

    @staticmethod
    def _sender() -> str:
        envelope = current_message()
        return envelope.sender if envelope is not None else ""

    def _take_result(self, result: TaskResult, sender: str) -> None:
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
            self._emit(
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
        info = self._worker_info.get(result.worker)
        failed_level = info.level(record.task.required_skill) if info is not None else 0
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
        self._emit(
            EventKind.REQUEUED, task_id=record.id, attempt=record.attempt, reason=record.reason
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
        if attempt.worker in self._worker_info:
            self.scheduler.release(attempt.worker)
        self._stage_attempt(attempt.ended(outcome, now, error, started))

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
        if self._listeners:
            run_s = record.updated_at - attempt.assigned_at if attempt is not None else None
            self._emit(
                kind,
                task_id=record.id,
                worker=record.worker,
                attempt=record.attempt,
                reason=record.error or "",
                run_s=run_s,
            )

    def _pump(self) -> None:
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
            self._emit(
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
        reason = self.scheduler.waiting_reason(task_id) or "no eligible worker"
        self.scheduler.remove_task(task_id)
        wait = record.task.wait_timeout_s or 0
        self._finalise(record.failed(f"no worker took it within {wait:g}s ({reason})", time.time()))

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
            self._requeue(record.requeued(f"timed out on {attempt.worker}; retrying", now, error))
        self._pump()

    def _stage(self, record: TaskRecord) -> None:
        self._ledger.record(record)

    def _stage_attempt(self, attempt: AttemptRecord) -> None:
        self._ledger.attempt(attempt)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every :class:`TaskEvent` from now on (quickly, synchronously)."""
        self._listeners.append(listener)

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        if self._listeners:
            event = TaskEvent(kind, time.time(), **fields)
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception as e:
                    logger.opt(exception=e).error("{}: event listener failed", self.name)

    def _check_done(self) -> None:
        if self._records or not self._ledger.idle or self._done.is_set():
            return
        self._done.set()
        if self.stop_when_done and self.status.value == "running":
            logger.info("{}: all {} tasks are final", self.name, self.final_count)
            self._call_soon(self.stop)

    @property
    def final_count(self) -> int:
        """Tasks that reached a final state since this manager started."""
        return self.stats.succeeded + self.stats.failed + self.stats.cancelled

    @property
    def stale_results(self) -> int:
        """Results ignored because their attempt was not the current one."""
        return self.stats.stale_results

    # --- requests from clients ----------------------------------------------------------------

    @on_message
    async def _on_submit(self, request: SubmitTasks) -> SubmitReply:
        return await self.submit(request.tasks)

    @on_message
    async def _on_cancel_request(self, request: CancelRequest) -> CancelReply:
        return await self.cancel(request.task_id)

    @on_message
    async def _on_status(self, request: StatusRequest) -> StatusReply:
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        return StatusReply(
            workspace=self.workspace_id,
            counts=await self.store.counts(),
            workers=[
                WorkerStatus(
                    info=info,
                    load=self.scheduler.load(name),
                    completed=self.stats.by_worker.get(name, 0),
                )
                for name, info in self._worker_info.items()
            ],
            pending_in_memory=len(self._records),
            stale_results=self.stale_results,
            tasks_per_s=self.final_count / elapsed,
        )

    @on_message
    async def _on_query(self, query: TaskQuery) -> TaskPage:
        if query.task_id is not None:
            record = self._records.get(query.task_id) or await self.store.get(query.task_id)
            if record is None:
                raise TaskNotFound(query.task_id)
            if record.state is TaskState.PENDING:
                record = record.waiting(self.scheduler.waiting_reason(record.id) or record.reason)
            return TaskPage(records=[record])
        records, cursor = await self.store.query(
            state=query.state, worker=query.worker, after=query.after, limit=query.limit
        )
        return TaskPage(records=records, next_cursor=cursor)

    @on_message
    async def _on_report(self, request: ReportRequest) -> Report:
        return await self.report()

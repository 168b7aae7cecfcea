"""The worker: runs the attempts its manager assigns, at most ``capacity`` at a time.

Each task's ``kind`` selects a handler: an async function ``(task, context) -> output``; the
worker tells its manager which kinds it has handlers for, and its labels, so that it is only
given tasks it can run. A handler's exception becomes a failed result carrying the error text.
Results ready together travel together (one message), with the attempts that started since;
a worker that stops finishes (or abandons) its running attempts and reports them before it
leaves. Skills, labels and capacity can change while it runs (:meth:`WorkerAgent.reconfigure`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from loguru import logger
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from serendib.agent import Agent, AgentStatus, current_message
from serendib.errors import MessageError
from serendib.handlers import on_message
from serendib.limits import clip_text
from serendib.messages import summarise
from serendib.presence import AdminStarted
from serendib.tasks.activity import ActivityLog
from serendib.tasks.messages import (
    Reconfigure,
    ResultsAck,
    TaskAssignment,
    TaskAssignments,
    TaskCancel,
    TaskProgress,
    TaskResult,
    TaskResults,
    WorkerSync,
    WorkerUpdate,
)
from serendib.tasks.models import DEFAULT_SKILL, AttemptKey, Task, WorkerInfo

__all__ = ["TaskContext", "TaskFailed", "TaskHandler", "WorkerAgent", "simulate"]

PREFETCH_WINDOW_S = 0.05
"""Seconds of work a worker keeps ready when it adjusts its own prefetch."""
MAX_AUTO_PREFETCH = 1024
"""The most attempts a worker adjusting its own prefetch keeps ready: for no-op tasks, the
manager's round trip under load (a few tens of ms) is about that many runs of ~30 µs
(``docs/benchmarks.md``: 256 left single-slot workers idle between batches)."""
_TUNE_AFTER = 1  # run times seen before prefetch is first adjusted: one round trip at start
_DONE_REMEMBERED = 10_000
"""Finished attempts a worker remembers, so that a resent assignment is not run twice."""


class TaskFailed(Exception):
    """Raise from a handler to fail an attempt with a plain message (no traceback logged)."""


class TaskContext:
    """What a handler knows about the attempt it runs, and how it reports progress.

    Attributes:
        task: The task.
        attempt: The attempt number.
        worker: The worker running it.
        inputs: The outputs of the task's parents (``depends_on``) that succeeded, by id.
    """

    def __init__(
        self,
        task: Task,
        attempt: int,
        worker: WorkerAgent,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.attempt = attempt
        self.worker = worker
        self.inputs: dict[str, Any] = inputs if inputs is not None else {}

    @property
    def level(self) -> int:
        """The worker's level in the skill the task requires."""
        return self.worker.skills.get(self.task.required_skill, 0)

    @property
    def time_scale(self) -> float:
        """Seconds per difficulty level for simulated work."""
        return self.worker.time_scale

    async def progress(self, fraction: float, note: str = "") -> None:
        """Tell the manager how far the attempt has got (0.0 to 1.0)."""
        await self.worker.report_progress(
            TaskProgress(
                task_id=self.task.id,
                attempt=self.attempt,
                worker=self.worker.name,
                fraction=min(max(fraction, 0.0), 1.0),
                note=note,
            )
        )


TaskHandler = Callable[[Task, TaskContext], Awaitable[Any]]


async def simulate(task: Task, context: TaskContext) -> dict[str, Any]:
    """The seed's behaviour: take ``difficulty * time_scale`` seconds; succeed iff skilled enough.

    Raises:
        TaskFailed: The worker's level is below the task's difficulty.
    """
    if context.time_scale > 0:
        await asyncio.sleep(task.difficulty * context.time_scale)
    if context.level < task.difficulty:
        raise TaskFailed(
            f"{context.worker.name}'s {task.required_skill} {context.level} "
            f"< difficulty {task.difficulty}"
        )
    return {"level": context.level}


class WorkerAgent(Agent):
    """A worker that runs task attempts for its workspace's task manager.

    Args:
        name: Unique name in the workspace.
        skill_level: Level in the ``general`` skill (the seed's single skill).
        skills: Levels in named skills, instead of or beside ``skill_level``.
        capacity: Attempts run at once.
        workspace_id: Workspace to join.
        handlers: Handler per task kind, added to the built-in ``simulate``.
        time_scale: Seconds per difficulty level for ``simulate`` (the seed's is 1).
        labels: Labels for constraints that are not levels (``gpu``, ``region=eu``): a task
            requiring labels goes only to a worker that has them all.
        prefetch: Attempts kept ready beyond ``capacity``, so that a slot never waits a
            round trip for its next task. ``None`` (default): adjusted to keep about
            ``PREFETCH_WINDOW_S`` of work at hand from the run times seen (none for tasks
            that long or longer, up to ``MAX_AUTO_PREFETCH`` for very short ones, none
            before the first has run, then adjusted at every run up to the 32nd and every
            32 runs after that); 0: none.
        **options: Passed on to :class:`~serendib.Agent` (``admin_port``, ``transport``...).

    Raises:
        ValueError: No skill given, a level below 0, capacity below 1, or a bad label.
    """

    role: ClassVar[str] = "worker"

    def __init__(
        self,
        name: str,
        skill_level: int | None = None,
        *,
        skills: Mapping[str, int] | None = None,
        capacity: int = 1,
        workspace_id: str = "serendib",
        handlers: Mapping[str, TaskHandler] | None = None,
        time_scale: float = 1.0,
        labels: Iterable[str] = (),
        prefetch: int | None = None,
        **options: Any,
    ) -> None:
        levels = dict(skills or {})
        if skill_level is not None:
            levels.setdefault(DEFAULT_SKILL, skill_level)
        if not levels:
            raise ValueError(f"worker {name!r} needs skill_level=N or skills={{name: N}}")
        if any(level < 0 for level in levels.values()):
            raise ValueError(f"worker {name!r}: skill levels must be >= 0, got {levels}")
        if capacity < 1:
            raise ValueError(f"worker {name!r}: capacity must be >= 1, got {capacity}")
        self.skills = levels
        self.capacity = capacity
        self._auto_prefetch = prefetch is None
        self.prefetch = _auto_prefetch(capacity, None) if prefetch is None else prefetch
        self._run_s = 0.0  # moving average of attempts' run times
        self._runs = 0
        self.labels: tuple[str, ...] = tuple(sorted(set(labels)))
        self.time_scale = time_scale
        self.task_handlers: dict[str, TaskHandler] = {"simulate": simulate, **(handlers or {})}
        try:
            info = self.info_for(name)
        except ValidationError as e:
            raise ValueError(f"worker {name!r}: {summarise(e)}") from None
        super().__init__(name, workspace_id, attributes=info.attributes(), **options)
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._slots = _Slots(capacity)
        self._started: list[AttemptKey] = []
        self._started_at = 0.0
        self.activity = ActivityLog(name)
        self._outbox: list[TaskResult] = []
        self._unacked: dict[AttemptKey, TaskResult] = {}
        # Attempts finished lately (a resent assignment of one is not run again), and the
        # last assignment message handled from the current manager (see WorkerSync).
        self._done: dict[AttemptKey, None] = {}
        self._epoch = ""
        self._seen = 0
        self._sender: asyncio.Task[None] | None = None
        self.completed = 0

    def handler(self, kind: str) -> Callable[[TaskHandler], TaskHandler]:
        """Decorator registering an async ``(task, context)`` function for a task kind
        (before the worker starts, or while it runs: its manager is told)."""

        def register(fn: TaskHandler) -> TaskHandler:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError(f"task handler {fn!r} for {kind!r} must be an async function")
            self.task_handlers[kind] = fn
            self._announce()
            if self.status is AgentStatus.RUNNING:
                self._spawn(self._to_manager(WorkerUpdate(info=self.info)), "worker-update")
            return fn

        return register

    def info_for(self, name: str | None = None) -> WorkerInfo:
        """What this worker tells its manager: skills, capacity, kinds it runs, labels.

        Raises:
            pydantic.ValidationError: They break a bound (a skill name, a label...).
        """
        return WorkerInfo(
            name=name or self.name,
            skills=self.skills,
            capacity=self.capacity,
            kinds=tuple(sorted(self.task_handlers)),
            labels=self.labels,
            prefetch=self.prefetch,
        )

    @property
    def info(self) -> WorkerInfo:
        """What this worker tells its manager now."""
        return self.info_for()

    async def reconfigure(
        self,
        *,
        skills: Mapping[str, int] | None = None,
        labels: Iterable[str] | None = None,
        capacity: int | None = None,
        prefetch: int | None = None,
    ) -> WorkerInfo:
        """Change skills, labels, capacity or prefetch while running (``None`` leaves one as
        it is; a prefetch given is kept, no longer adjusted).

        What runs goes on; the manager is told at once and places pending work again with
        what this worker has now. A lower capacity starts no new attempt until enough end.

        Returns:
            What the manager is told.

        Raises:
            ValueError: A level below 0, capacity below 1, or a bad name or label.
        """
        old = (self.skills, self.labels, self.capacity, self.prefetch, self._auto_prefetch)
        if skills is not None:
            self.skills = dict(skills)
        if labels is not None:
            self.labels = tuple(sorted(set(labels)))
        if capacity is not None:
            self.capacity = capacity
            if self._auto_prefetch:
                self.prefetch = _auto_prefetch(capacity, self._run_s if self._runs else None)
        if prefetch is not None:
            self.prefetch, self._auto_prefetch = prefetch, False
        try:
            info = self.info
        except ValidationError as e:
            self.skills, self.labels, self.capacity, self.prefetch, self._auto_prefetch = old
            raise ValueError(f"worker {self.name!r}: {summarise(e)}") from None
        self._slots.resize(self.capacity)
        logger.info(
            "{}: now {}, capacity {}{}",
            self.name,
            ", ".join(f"{k} {v}" for k, v in self.skills.items()),
            self.capacity,
            f", labels {','.join(self.labels)}" if self.labels else "",
        )
        self._announce()
        if self.status is AgentStatus.RUNNING:
            await self._to_manager(WorkerUpdate(info=info))
        return info

    def _announce(self) -> None:
        """Keep the presence this worker announces (to a manager that restarts) current."""
        try:
            attributes = self.info.attributes()
        except ValidationError:
            return  # a bad kind name: refused when the worker is told to change
        self.detail = self.detail.model_copy(update={"attributes": attributes})

    @on_message
    async def _on_reconfigure(self, change: Reconfigure) -> None:
        if self._from_manager():
            await self.reconfigure(
                skills=change.skills,
                labels=change.labels,
                capacity=change.capacity,
                prefetch=change.prefetch,
            )

    @property
    def in_flight(self) -> int:
        """Attempts running or waiting for a slot."""
        return len(self._running)

    @on_message
    async def _on_assignment(self, assignment: TaskAssignment) -> None:
        if self._from_manager():
            self._accept(assignment)

    @on_message
    async def _on_assignments(self, batch: TaskAssignments) -> None:
        if not self._from_manager():
            return
        if batch.epoch != self._epoch:
            self._epoch, self._seen = batch.epoch, 0
        self._seen = max(self._seen, batch.seq)
        for assignment in batch.assignments:
            self._accept(assignment)

    @on_message
    async def _on_cancel(self, cancel: TaskCancel) -> None:
        if not self._from_manager():
            return
        running = self._running.get((cancel.task_id, cancel.attempt))
        if running is not None:
            logger.info(
                "{}: cancelling task {} (attempt {})", self.name, cancel.task_id, cancel.attempt
            )
            running.cancel()

    def _from_manager(self) -> bool:
        """Whether the message being handled comes from this worker's manager.

        Only the manager assigns, cancels and acknowledges: anyone else in the workspace
        saying so is ignored (the sender is the one its subject names, which a server with
        per-agent identities lets no one forge).
        """
        envelope = current_message()
        if envelope is None or self.admin_name is None or envelope.sender == self.admin_name:
            return True
        refused = MessageError(f"{envelope.type} comes from the manager only")
        refused.sender = envelope.sender
        self.drops.record(refused)  # counted and logged, rate-limited
        return False

    def _accept(self, assignment: TaskAssignment) -> None:
        key = (assignment.task.id, assignment.attempt)
        if (
            assignment.worker != self.name
            or key in self._running
            or key in self._unacked
            or key in self._done
        ):
            return
        task = assignment.task
        if not self.activity.held("received"):
            self.activity.event(
                "received",
                "received task {} ({}, difficulty {}, attempt {})",
                task.id,
                task.kind,
                task.difficulty,
                assignment.attempt,
                task_id=task.id,
                kind=task.kind,
                attempt=assignment.attempt,
            )
        attempt = asyncio.create_task(self._run(assignment), name=f"{self.name}-task-{task.id}")
        self._running[key] = attempt
        # A task cancelled before it starts never runs its own clean-up: this does.
        attempt.add_done_callback(lambda _: self._running.pop(key, None))

    async def _run(self, assignment: TaskAssignment) -> None:
        task, attempt = assignment.task, assignment.attempt
        try:
            await self._slots.acquire()
            try:
                started = time.time()
                self._note_started((task.id, attempt), started)
                result = await self._attempt(task, attempt, started, assignment.inputs)
            finally:
                self._slots.release()
            self._queue_result(result)
        except asyncio.CancelledError:
            self._queue_result(
                TaskResult(
                    task_id=task.id,
                    attempt=attempt,
                    worker=self.name,
                    success=False,
                    error="cancelled",
                    started_at=time.time(),
                    finished_at=time.time(),
                )
            )

    async def _attempt(
        self, task: Task, attempt: int, started: float, inputs: dict[str, Any]
    ) -> TaskResult:
        handler = self.task_handlers.get(task.kind)
        output: Any = None
        error: str | None = None
        if handler is None:
            error = f"worker {self.name} has no handler for kind {task.kind!r}"
        else:
            try:
                raw = await asyncio.wait_for(
                    handler(task, TaskContext(task, attempt, self, inputs)), task.timeout_s
                )
                output = to_jsonable_python(raw)
            except TaskFailed as e:
                error = str(e)
            except TimeoutError:
                error = f"timed out after {task.timeout_s:g}s"
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.opt(exception=e).warning(
                    "{}: task {} (attempt {}) raised", self.name, task.id, attempt
                )
                error = f"{type(e).__name__}: {e}"
        self.completed += 1
        try:
            return TaskResult(
                task_id=task.id,
                attempt=attempt,
                worker=self.name,
                success=error is None,
                output=output,
                error=None if error is None else clip_text(error),
                started_at=started,
                finished_at=time.time(),
            )
        except ValidationError as e:  # an output the manager would refuse (too deep...)
            return TaskResult(
                task_id=task.id,
                attempt=attempt,
                worker=self.name,
                success=False,
                error=clip_text(f"the handler's output cannot be sent: {summarise(e)}"),
                started_at=started,
                finished_at=time.time(),
            )

    @on_message
    async def _on_ack(self, ack: ResultsAck) -> None:
        if not self._from_manager():
            return
        for key in ack.acks:
            self._unacked.pop((key[0], key[1]), None)

    async def join(self) -> None:
        """Join, then tell the manager at once what this worker holds (see WorkerSync)."""
        await super().join()
        await self._sync()  # a manager that just restarted learns at once what this one holds
        self._spawn(self._sync_loop(), "sync")

    @on_message
    async def _on_manager_started(self, data: AdminStarted) -> None:
        if self.status is AgentStatus.RUNNING and self.admin_name in (None, data.admin):
            await self._sync()

    async def _sync(self) -> None:
        holding = [*self._running, *self._unacked]
        try:
            await self._to_manager(WorkerSync(holding=holding, epoch=self._epoch, seen=self._seen))
        except Exception as e:  # the connection is down: the sync loop tries again
            logger.debug("{}: sync not sent: {}", self.name, e)

    async def _sync_loop(self) -> None:
        """Resend unacknowledged results and tell the manager what this worker holds.

        A message can be lost when the broker restarts; results are resent until the manager
        acknowledges them, and the manager requeues any assignment this worker never saw.
        """
        period = 2 * self.heartbeat_interval
        while True:
            await asyncio.sleep(period)
            due = [r for r in self._unacked.values() if time.time() - r.finished_at > period]
            try:
                if due:
                    await self._to_manager(due[0] if len(due) == 1 else TaskResults(results=due))
            except Exception as e:  # the connection is down: try again next period
                logger.debug("{}: results not resent: {}", self.name, e)
            await self._sync()

    def _note_started(self, key: AttemptKey, at: float) -> None:
        if not self._started:
            self._started_at = at
        self._started.append(key)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_results())

    def _tune_prefetch(self, took: float) -> None:
        """Keep about PREFETCH_WINDOW_S of work ready, from a moving average of run times;
        the manager is told only when the right number has at least doubled or halved."""
        self._runs += 1
        runs = self._runs
        self._run_s = took if runs == 1 else self._run_s + (took - self._run_s) / min(runs, 64)
        if runs < _TUNE_AFTER or (runs & 31 and runs > 32):
            return
        want = _auto_prefetch(self.capacity, self._run_s)
        if want != self.prefetch and (want >= 2 * self.prefetch or 2 * want <= self.prefetch):
            self.prefetch = want
            self._announce()
            if self.status is AgentStatus.RUNNING:
                self._spawn(self._to_manager(WorkerUpdate(info=self.info)), "prefetch")

    def _queue_result(self, result: TaskResult) -> None:
        took = max(result.finished_at - result.started_at, 0.0)
        if self._auto_prefetch:
            self._tune_prefetch(took)
        if self.activity.held(*(("succeeded",) if result.success else ("failed", "WARNING"))):
            pass  # counted for the summary
        elif result.success:
            self.activity.event(
                "succeeded",
                "task {} succeeded in {:.3f}s",
                result.task_id,
                took,
                task_id=result.task_id,
                attempt=result.attempt,
                run_s=took,
            )
        else:
            self.activity.event(
                "failed",
                "task {} failed in {:.3f}s: {}",
                result.task_id,
                took,
                result.error,
                level="WARNING",
                task_id=result.task_id,
                attempt=result.attempt,
                run_s=took,
                error=result.error,
            )
        key = (result.task_id, result.attempt)
        self._unacked[key] = result
        self._done[key] = None
        if len(self._done) > _DONE_REMEMBERED:
            del self._done[next(iter(self._done))]
        self._outbox.append(result)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_results())

    async def _send_results(self) -> None:
        """Send what finished and what started, together, until nothing is left to say.

        An attempt that started and finished before this runs is reported by its result
        alone: a fast task costs no message more for being seen running.
        """
        try:
            while self._outbox or self._started:
                batch, self._outbox = self._outbox, []
                started, self._started = self._started, []
                done = self._done
                running = [key for key in started if key not in done] if started else []
                message: object
                if len(batch) == 1 and not running:
                    message = batch[0]
                else:
                    message = TaskResults(
                        results=batch, started=running, started_at=self._started_at
                    )
                try:
                    await self._to_manager(message)
                except Exception as e:
                    logger.error("{}: could not report {} results: {}", self.name, len(batch), e)
        finally:
            self._sender = None

    async def _to_manager(self, message: object) -> None:
        if self.admin_name is not None:
            await self.send(self.admin_name, message)
        else:
            await self.broadcast(message)

    async def report_progress(self, progress: TaskProgress) -> None:
        """Tell the manager how far one of this worker's attempts has got."""
        await self._to_manager(progress)

    async def _finish(self, drain_timeout: float | None) -> None:
        running = list(self._running.values())
        if running:
            logger.info("{}: finishing {} running tasks before leaving", self.name, len(running))
            _, pending = await asyncio.wait(running, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        while self._sender is not None:
            await asyncio.shield(self._sender)
        self.activity.close()
        if self._transport is not None:
            await self._transport.flush()


def _auto_prefetch(capacity: int, run_s: float | None) -> int:
    """Attempts to keep ready for ``capacity`` slots whose attempts take ``run_s`` each:
    none until run times are known, or for attempts of ``PREFETCH_WINDOW_S`` or longer (a
    round trip is small beside them); for short ones, what ``PREFETCH_WINDOW_S`` takes."""
    if run_s is None:
        return 0
    want = int(capacity * PREFETCH_WINDOW_S / max(run_s, 1e-6))
    return max(0, min(want, MAX_AUTO_PREFETCH))


class _Slots:
    """How many attempts may run at once: a semaphore whose size can change."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.capacity and not self._waiting:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # given a slot while being cancelled: pass it on
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.in_use < self.capacity:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

"""The task manager: an admin that assigns tasks to workers by skill and sees them through.

State lives in the store; the manager keeps the unfinished tasks in memory (its
:class:`~serendib.tasks.engine.book.TaskBook`) and works in small steps, all in its dispatch loop:
a step updates memory and *stages* the records it changed and the messages it wants to send.
The ledger saves each staged batch in one store transaction and only then sends the messages,
so nothing is acted on before it is stored, and handling never waits on the disk. Each
attempt is a lease fenced by its number: a result for any other attempt (a worker thought
dead, a duplicate, a forgery) is stale and ignored.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from loguru import logger

from serendib.admin import Admin
from serendib.agent import NETWORK_HEARTBEAT_S, AgentStatus, current_message
from serendib.errors import TaskNotFound, WorkerNotFound
from serendib.handlers import on_message
from serendib.limits import MAX_NOTE_CHARS, clip_text, safe_text
from serendib.messages import Envelope
from serendib.presence import AgentDetail
from serendib.tasks.engine.book import TaskBook
from serendib.tasks.engine.graph import dependency_faults, parents_first
from serendib.tasks.engine.holds import KeyLimits
from serendib.tasks.engine.ledger import DRAIN_TIMEOUT_S, Ledger
from serendib.tasks.events import Listener, ManagerStats, TaskEvent
from serendib.tasks.messages import (
    CancelReply,
    CancelRequest,
    ConfigureReply,
    ConfigureRequest,
    EventMessage,
    Reconfigure,
    ReportRequest,
    RetryReply,
    RetryRequest,
    ScheduleInfo,
    ScheduleRequest,
    SchedulesReply,
    StatusReply,
    StatusRequest,
    SubmitReply,
    SubmitTasks,
    Subscribe,
    Subscribed,
    TaskEvents,
    TaskOutcome,
    TaskPage,
    TaskProgress,
    TaskQuery,
    TaskResult,
    TaskResults,
    Watch,
    WatchReply,
    WorkerStatus,
    WorkerSync,
    WorkerUpdate,
)
from serendib.tasks.models import Backoff, Schedule, Task, TaskRecord, WorkerInfo
from serendib.tasks.recurring import Calendar
from serendib.tasks.report import Report, build_report
from serendib.tasks.scheduling import Scheduler
from serendib.tasks.store import LEASE_S, LeadLost, StoreLease, TaskStore, open_store

__all__ = ["TaskManager"]


class TaskManager(Admin):
    """Assigns tasks to the workers of its workspace by skill; retries, escalates, reports.

    Args:
        name: The manager's agent name.
        port: Port of the embedded NATS server (see :class:`~serendib.Admin`).
        workspace_id: The workspace whose workers it uses.
        store: A :class:`TaskStore` or its URL (default: SQLite file ``serendib.db``).
        tasks: Tasks to submit when it starts.
        stop_when_done: End the run once every task is final (a batch run); the report is
            then kept in ``last_report``.
        attempt_unqualified: Give a task no connected worker is skilled enough for to the
            most skilled one anyway (the seed's behaviour) instead of letting it wait.
        lost_grace_s: A worker that misses ``lost_after`` heartbeats gets no new work at
            once, but its attempts go back to the queue only if it is still silent this many
            seconds later: an overloaded worker process is not a dead one, and requeueing
            its work would only add load. Default: twice the time it takes to declare an
            agent lost (``2 * lost_after`` of the worker's heartbeats); 0 requeues at once. A
            worker that says goodbye, or comes back under a new identity (restarted),
            has its attempts requeued at once.
        resume_grace_s: After a restart, how long an attempt that was in flight stays its
            worker's, waiting for the worker to claim it (workers tell a new manager what they
            hold as soon as it starts): its result then counts, even one finished while the
            manager was down. Default: 6 network heartbeats (6 s).
        limits: At most this many tasks of each ``concurrency_key`` run at once.
        rates: At most this many tasks of each ``concurrency_key`` start per second.
        retry_backoff: How long a failed attempt's retry waits, for tasks that do not say
            (their ``retry``); None: at once.
        schedules: Recurring work, kept in the store with when each last fired (a stored
            schedule of the same name is replaced; others stay until removed).
        learn: Escalate a failed task's retry to the more skilled worker with the best
            record for its kind and difficulty (see :mod:`serendib.tasks.engine.learning`).
        standby: Lead only while holding the workspace's lease in the store (PostgreSQL, and
            a NATS server or cluster every manager of the workspace shares): ``start``
            waits, connected to nothing of the workspace, until no other manager holds it,
            then takes over as a restart on the same store does. Every write is fenced by the
            lease: once another manager took it over (or it could not be renewed for
            ``lease_s``), nothing more is stored or sent and the manager stops at once,
            ``lead_lost`` saying why (see :mod:`serendib.tasks.store.lease`).
        lease_s: How long a standby manager's lease lasts unless renewed (every third of
            it): a standby takes over within about this long of the leader's last renewal.
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
        lost_grace_s: float | None = None,
        resume_grace_s: float | None = None,
        limits: Mapping[str, int] | None = None,
        rates: Mapping[str, float] | None = None,
        retry_backoff: Backoff | None = None,
        schedules: Iterable[Schedule] = (),
        learn: bool = False,
        standby: bool = False,
        lease_s: float = LEASE_S,
        **options: Any,
    ) -> None:
        super().__init__(name, port, workspace_id=workspace_id, **options)
        if lost_grace_s is not None and lost_grace_s < 0:
            raise ValueError(f"lost_grace_s must be >= 0, got {lost_grace_s}")
        if resume_grace_s is not None and resume_grace_s < 0:
            raise ValueError(f"resume_grace_s must be >= 0, got {resume_grace_s}")
        self.lost_grace_s = lost_grace_s
        self.resume_grace_s = (
            resume_grace_s
            if resume_grace_s is not None
            else 2 * self.lost_after * NETWORK_HEARTBEAT_S
        )
        self._incarnations: dict[str, str] = {}
        self.store = open_store(store) if store is None or isinstance(store, str) else store
        self.scheduler = Scheduler(attempt_unqualified=attempt_unqualified)
        self.stop_when_done = stop_when_done
        self._initial = list(tasks)
        self._ledger = Ledger(self.store, self.send, self._check_done, name, self.detail.id)
        self.book = TaskBook(
            self.scheduler,
            self._ledger,
            self._call_soon,
            name,
            limits=KeyLimits(limits or {}, rates or {}),
            backoff=retry_backoff,
            learn=learn,
        )
        # Ids being stored by submissions not yet in the book: a task naming one as its
        # parent waits for it.
        self._arriving: Counter[str] = Counter()
        self.calendar = Calendar(self.store, self.submit, name)
        self._defined = list(schedules)
        self._done = asyncio.Event()
        self._subscribers: set[str] = set()
        self._submitting: set[asyncio.Task[Any]] = set()
        self._events: list[EventMessage] = []
        self._started_at = time.monotonic()
        self.last_report: Report | None = None
        self.lead_lost: LeadLost | None = None
        """Why this standby manager stopped leading, once it did."""
        self._lease = _standby_lease(self, lease_s) if standby else None
        self._leading: asyncio.Future[Any] | None = None
        self._abdication: asyncio.Task[None] | None = None

    @property
    def stats(self) -> ManagerStats:
        """Counters since this manager started."""
        return self.book.stats

    @property
    def workers(self) -> dict[str, WorkerInfo]:
        """The connected workers, by name, suspect ones included (see ``suspects``)."""
        return self.book.workers

    def load(self, worker: str) -> int:
        """Attempts ``worker`` holds now (0 for a worker not connected)."""
        return self.book.load(worker)

    def waiting_reason(self, task_id: str) -> str | None:
        """Why pending task ``task_id`` waits now (its parents, its time, a limit, a
        worker); None if it is not pending here."""
        return self.book.why_waiting(task_id)

    @property
    def suspects(self) -> list[str]:
        """Workers that fell silent: given no new work, their attempts kept for a grace."""
        return self.book.suspects

    @property
    def final_count(self) -> int:
        """Tasks that reached a final state since this manager started."""
        stats = self.book.stats
        return stats.succeeded + stats.failed + stats.cancelled

    @property
    def stale_results(self) -> int:
        """Results ignored because they were not the current attempt's, from its holder."""
        return self.book.stats.stale_results

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every :class:`~serendib.tasks.events.TaskEvent` from now on.

        Listeners run synchronously in the manager's loop: they must be quick.
        """
        self.book.events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self.book.events.remove(listener)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and take over its unfinished tasks, then start the admin.

        The store is open and its tasks are in memory before the manager subscribes, so the
        first result a worker sends after a restart finds the attempt it belongs to.

        Raises:
            StoreError: The store cannot be opened or read.
            BrokerStartError: The embedded NATS server could not start.
            ConnectionFailed: The transport could not connect.
        """
        await self.store.open()
        try:
            if self._lease is not None:
                await self._take_lead(self._lease)
            # Per-worker counts go on from where the previous run left them.
            self.book.stats.by_worker.update(await self.store.completed_by_worker())
            records = await self.store.unfinished()
            if records:
                open_attempts = {a.task_id: a for a in await self.store.open_attempts()}
                unfinished = {r.id for r in records}
                ended = {p for r in records for p in r.task.depends_on if p not in unfinished}
                parents = await self.store.get_many(list(ended)) if ended else {}
                self.book.resume(records, open_attempts, self.resume_grace_s, parents)
                logger.info(
                    "{}: resumed {} unfinished tasks from {}",
                    self.name,
                    len(records),
                    self.store.url,
                )
            await self.calendar.load(self._defined)
            await super().start()
        except BaseException:
            self.calendar.close()
            self.book.close()
            await self._ledger.drain()
            await self.store.close()
            if self._lease is not None:
                await self._lease.release()
            raise

    async def _take_lead(self, lease: StoreLease) -> None:
        # Until it leads, a standby is connected to the store only; stop() ends the wait.
        self._leading = asyncio.ensure_future(lease.acquire())
        try:
            await self._leading
        finally:
            self._leading = None
        lease.on_lost(self._lead_lost)

    def _lead_lost(self, error: LeadLost) -> None:
        """Another manager leads now: handle, store and send nothing more; stop at once."""
        if self.lead_lost is not None:
            return
        self.lead_lost = error
        logger.error("{}: {}; stopping", self.name, error)
        self._draining = True
        self._ledger.halt()
        for submitting in self._submitting:
            submitting.cancel()
        if self.status is AgentStatus.RUNNING:
            self._abdication = asyncio.ensure_future(self.stop(drain_timeout=1.0))

    async def _dispatch(self, envelope: Envelope) -> None:
        # A leader that may have lost its lead (paused past its lease) acts on nothing until
        # a renewal says it still leads.
        lease = self._lease
        if lease is not None and not lease.valid and not await lease.confirm():
            return
        await super()._dispatch(envelope)

    async def stop(self, drain_timeout: float | None = 10.0) -> None:
        """Stop (see :meth:`Admin.stop`); a standby still waiting for the lead stops waiting."""
        if self._leading is not None:
            self._leading.cancel()
            return
        await super().stop(drain_timeout)

    async def _say_goodbye(self) -> None:
        if self.lead_lost is None:  # else the manager leading now speaks for the workspace
            await super()._say_goodbye()

    async def on_start(self) -> None:
        """Submit the initial tasks."""
        if self.lead_lost is not None:  # lost while starting
            self._abdication = asyncio.ensure_future(self.stop(drain_timeout=1.0))
            return
        if self._initial:
            await self.submit(self._initial)
            self._initial = []
        self.calendar.arm()
        self._check_done()

    async def _finish(self, drain_timeout: float | None) -> None:
        # Submissions being stored (answered off the dispatch loop) end first: what they
        # store is queued and saved like the rest, not staged after the ledger drained.
        self.calendar.close()
        if self.lead_lost is not None:  # nothing more is stored: the leader has the store
            self.book.close()
            return
        if self._submitting:
            await asyncio.wait(set(self._submitting), timeout=drain_timeout or DRAIN_TIMEOUT_S)
        self.book.close()
        # Bounded even when handlers may take all the time they need (None) or none (0): a
        # store that is down must not keep the admin from stopping.
        await self._ledger.drain(drain_timeout or DRAIN_TIMEOUT_S)
        if self.stop_when_done:
            self.last_report = await self.report()

    async def on_stop(self) -> None:
        """Close the store once everything staged is saved; give up the lead, if held (a
        standby takes over at once)."""
        await self.store.close()
        if self._lease is not None:
            await self._lease.release()

    async def flush(self) -> None:
        """Return once every change made so far is stored (and its messages sent)."""
        await self._ledger.drain()

    async def wait_done(self) -> None:
        """Return once every submitted task is final and stored."""
        await self._done.wait()

    def _check_done(self) -> None:
        if len(self.book) or not self._ledger.idle or self._done.is_set():
            return
        self._done.set()
        if self.stop_when_done and self.status.value == "running":
            logger.info("{}: all {} tasks are final", self.name, self.final_count)
            self._call_soon(self.stop)

    async def report(self) -> Report:
        """The report of every task in the store."""
        records, attempts, quarantined = await asyncio.gather(
            self.store.all_records(), self.store.all_attempts(), self.store.quarantined()
        )
        # A pending task's stored reason is its last one; the scheduler knows the current.
        current = [self.book.waiting_reason(r) for r in records]
        return build_report(current, attempts, quarantined=quarantined)

    # --- submitting and cancelling -------------------------------------------------------------

    async def submit(self, tasks: Iterable[Task]) -> SubmitReply:
        """Store new tasks (an id already known is ignored) and queue them for assignment.

        A task naming parents (``depends_on``) is refused if a parent is unknown (neither
        stored nor in the same submission), or if it is in a dependency cycle, or if a
        parent in the same submission is refused; the others are stored.

        Returns:
            Which ids were accepted, which were duplicates, and which were refused and why.
        """
        now = time.time()
        tasks = list(tasks)
        book = self.book
        candidates: dict[str, Task] = {}
        for task in tasks:
            task_id = task.id
            if task_id not in candidates and task_id not in book:
                candidates[task_id] = task
        rejected: dict[str, str] = {}
        parents: dict[str, TaskRecord] = {}
        dependent = any(task.depends_on for task in candidates.values())
        if dependent:
            rejected = await self._check_parents(candidates, parents)
            for task_id in rejected:
                del candidates[task_id]
        arriving = list(candidates)
        self._arriving.update(arriving)
        try:
            added = await self.store.add_submitted(list(candidates.values()), now)
            accepted = [task.id for task in added]
            if len(accepted) < len(arriving):
                # Known already after all (a concurrent submission stored them).
                stored = set(accepted)
                known = [task_id for task_id in arriving if task_id not in stored]
                self._arrived(known)
                arriving = accepted
                await self._settle(known)
            if dependent:
                await self._find_parents(added, parents)
        except BaseException:
            self.book.parents_lost(arriving)  # never stored: who waits for them waits no more
            raise
        finally:
            self._arrived(arriving)
        if added:
            self._done.clear()
        self.book.submitted(added, now, parents)
        taken = set(accepted)
        duplicates = [t.id for t in tasks if t.id not in taken and t.id not in rejected]
        self.book.activity.event(
            "submissions",
            "accepted {} new tasks{}",
            len(accepted),
            f" ({len(duplicates)} already known)" if duplicates else "",
            accepted=len(accepted),
            duplicates=len(duplicates),
        )
        if rejected:
            logger.warning(
                "{}: refused {} tasks: {}",
                self.name,
                len(rejected),
                "; ".join(f"{safe_text(k)}: {v}" for k, v in list(rejected.items())[:3]),
            )
        return SubmitReply(accepted=accepted, duplicates=duplicates, rejected=rejected)

    async def _check_parents(
        self, batch: dict[str, Task], parents: dict[str, TaskRecord]
    ) -> dict[str, str]:
        """The tasks of ``batch`` to refuse, with why: an unknown parent, a cycle, or a
        refused parent in the batch. Fills ``parents`` with the stored parents' records."""
        outside = {
            p
            for task in batch.values()
            for p in task.depends_on
            if p not in batch and p not in self.book and p not in self._arriving
        }
        unseen = [p for p in outside if self._ledger.unsaved(p) is None]
        if unseen:
            parents.update(await self.store.get_many(unseen))
        rejected: dict[str, str] = {}
        for task_id, task in batch.items():
            unknown = [p for p in task.depends_on if p in outside and p in unseen]
            unknown = [p for p in unknown if p not in parents]
            if unknown:
                rejected[task_id] = f"unknown parent{'s' if len(unknown) > 1 else ''} " + (
                    ", ".join(unknown[:5])
                )
        faults = rejected | dependency_faults(batch, rejected)
        return {task_id: clip_text(why, MAX_NOTE_CHARS) for task_id, why in faults.items()}

    def _arrived(self, task_ids: list[str]) -> None:
        """``task_ids`` are no longer on their way (in the book now, or never to be)."""
        arriving = self._arriving
        for task_id in task_ids:
            left = arriving[task_id] - 1
            if left > 0:
                arriving[task_id] = left
            else:
                arriving.pop(task_id, None)

    async def _settle(self, task_ids: list[str]) -> None:
        """Tasks taken to be on their way were known already: those that ended release
        the tasks waiting for them."""
        waited = [t for t in task_ids if self.book.dependencies.has_children(t)]
        if waited:
            for record in (await self.store.get_many(waited)).values():
                self.book.parent_found(record)
            self.book.pump()

    async def _find_parents(self, tasks: list[Task], parents: dict[str, TaskRecord]) -> None:
        """Make sure ``parents`` holds the record of every parent of ``tasks`` that ended
        and is no longer in memory (one may end while another is read): returns once a
        check finds none missing, with no wait between it and the caller's next step.
        After 20 reads, what is still missing is taken to be on its way."""
        for _ in range(20):
            missing = {
                p
                for task in tasks
                for p in task.depends_on
                if p not in self.book
                and p not in self._arriving
                and self._ledger.unsaved(p) is None
                and not (p in parents and parents[p].state.is_final)
            }
            if not missing:
                return
            parents.update(await self.store.get_many(list(missing)))

    async def retry(self, task_ids: Iterable[str]) -> RetryReply:
        """Run failed or cancelled tasks again as new attempts, keeping their history: each
        goes back to the queue with ``max_attempts`` counted afresh (the report counts the
        replays). A task that succeeded or has not ended is refused, with why. Tasks run
        again together go in dependency order: a child waits for its parent's new run."""
        now = time.time()
        reply = RetryReply()
        records: dict[str, TaskRecord] = {}
        stored = []
        task_ids = list(dict.fromkeys(task_ids))
        for task_id in task_ids:
            record = self.book.get(task_id)
            if record is None:
                unsaved = self._ledger.unsaved(task_id)
                record = unsaved.record() if unsaved is not None else None
            if record is None:
                stored.append(task_id)
            else:
                records[task_id] = record
        found = await self.store.get_many(stored) if stored else {}
        for task_id in stored:
            record = self.book.get(task_id) or found.get(task_id)
            if record is None:
                reply.unknown.append(task_id)
            else:
                records[task_id] = record
        parents: dict[str, TaskRecord] = {}
        outside = [r.task for r in records.values() if r.task.depends_on]
        if outside:
            await self._find_parents(outside, parents)
        for task_id in parents_first({task_id: r.task for task_id, r in records.items()}):
            self._replay(self.book.get(task_id) or records[task_id], now, reply, parents)
        if reply.retried:
            self._done.clear()
            self.book.pump()
            logger.info("{}: {} tasks run again", self.name, len(reply.retried))
        return reply

    def _replay(
        self,
        record: TaskRecord,
        at: float,
        reply: RetryReply,
        parents: Mapping[str, TaskRecord],
    ) -> None:
        try:
            replayed = self.book.replay(record, at, parents)
        except ValueError as e:
            reply.refused[record.id] = str(e)
        else:
            reply.retried.append(record.id)
            # What tells the old run's outcome from the new run's, for the client.
            reply.attempt_bases[record.id] = replayed.attempt_base
            if record.finished_at is not None:
                reply.ended_at[record.id] = record.finished_at

    def track_record(self) -> list[tuple[str, str, int, int, int]]:
        """What the manager learnt since it started: ``(worker, kind, difficulty,
        succeeded, attempts)`` for each worker, task kind and difficulty seen."""
        return self.book.track.rows()

    async def add_schedule(self, schedule: Schedule) -> None:
        """Add recurring work (or replace the schedule of its name); it fires from now on.

        Raises:
            StoreError: The store cannot save it.
        """
        await self.calendar.add(schedule)
        logger.info("{}: schedule {} ({})", self.name, schedule.name, schedule.cron)

    async def remove_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there is none of that name (its runs so far stay)."""
        return await self.calendar.remove(name)

    def schedules(self) -> list[ScheduleInfo]:
        """The schedules, by name, with when each last fired and fires next."""
        return [
            ScheduleInfo(schedule=s, last_fired=last, next_at=at)
            for s, last, at in self.calendar.listing()
        ]

    async def configure(self, worker: str, change: Reconfigure) -> WorkerInfo:
        """Change a connected worker's skills, labels or capacity (``None`` fields stay).

        Pending work is placed again at once with what the worker has now, and the worker
        is told (it applies the change and confirms it).

        Raises:
            WorkerNotFound: No worker of that name is connected.
            ValueError: The change would make the worker invalid.
        """
        info = self.book.workers.get(worker)
        if info is None or worker in self.book.suspects:
            raise WorkerNotFound(worker)
        update = {k: v for k, v in change.model_dump().items() if v is not None}
        changed = WorkerInfo.model_validate({**info.model_dump(), **update})
        self.book.worker_changed(changed)
        logger.info("{}: worker {} reconfigured: {}", self.name, worker, _profile(changed))
        await self.send(worker, change)
        return changed

    async def cancel(self, task_id: str) -> CancelReply:
        """Cancel a task that is not final.

        Raises:
            TaskNotFound: No task has this id.
        """
        cancelled = self.book.cancel(task_id)
        if cancelled is not None:
            return CancelReply(record=cancelled, cancelled=True)
        known = await self._known(task_id)
        if known is None:
            raise TaskNotFound(task_id)
        return CancelReply(record=known, cancelled=False)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """Task ``task_id`` as this manager knows it now (its current reason if it waits),
        or None if no task has this id."""
        found = await self._known(task_id)
        return None if found is None else self.book.waiting_reason(found)

    async def _known(self, task_id: str) -> TaskRecord | None:
        """The task as this manager knows it: in memory if unfinished or not yet stored."""
        found = self.book.get(task_id)
        if found is None:
            unsaved = self._ledger.unsaved(task_id)
            found = unsaved.record() if unsaved is not None else None
        return found if found is not None else await self.store.get(task_id)

    # --- membership and results ---------------------------------------------------------------

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
        previous = self._incarnations.get(agent.name)
        self._incarnations[agent.name] = agent.id
        if previous is not None and previous != agent.id:
            # Restarted: what the old one held is lost (and any assignment of it still on its
            # way to the name is cancelled behind it).
            self.book.worker_left(agent.name, cancel=True)
        if agent.name in self.book.suspects and previous == agent.id:
            self.book.worker_joined(info)
            return
        logger.info("{}: worker {} joined ({})", self.name, agent.name, _profile(info))
        self.book.worker_joined(info)

    async def on_agent_disconnected(self, agent: AgentDetail) -> None:
        """A worker said goodbye: what it still held goes back to the queue."""
        if agent.role == "client":
            self._client_left(agent.name)
            return
        if self._incarnations.get(agent.name) == agent.id:
            del self._incarnations[agent.name]
        self.book.worker_left(agent.name)

    async def on_agent_lost(self, agent: AgentDetail) -> None:
        """A worker fell silent: no new work for it; requeue its attempts after a grace."""
        if agent.role == "client":
            # A silent client may only be slow (its next heartbeat admits it again): what it
            # watches stays, each watch ending with its task; a goodbye ends them all. Its
            # live events stop (a client gone for good must not cost every event).
            self._unsubscribe(agent.name)
            return
        grace = self.lost_grace_s
        if grace is None:
            grace = 2 * (
                self.silence_limit(agent.name) or self.lost_after * self.heartbeat_interval
            )
        self.book.worker_lost(agent.name, grace)

    @staticmethod
    def _sender() -> str:
        envelope = current_message()
        return envelope.sender if envelope is not None else ""

    @on_message
    async def _on_result(self, result: TaskResult) -> None:
        self.book.take_result(result, self._sender())
        self.book.pump()

    @on_message
    async def _on_results(self, batch: TaskResults) -> None:
        sender = self._sender()
        for key in batch.started:
            self.book.started(key[0], key[1], sender, batch.started_at or time.time())
        for result in batch.results:
            self.book.take_result(result, sender)
        self.book.pump()

    @on_message
    async def _on_worker_update(self, update: WorkerUpdate) -> None:
        info = update.info
        if info.name != self._sender():
            return  # a worker speaks for itself only
        if self.book.worker_changed(info):
            logger.info("{}: worker {} changed: {}", self.name, info.name, _profile(info))

    @on_message
    async def _on_progress(self, progress: TaskProgress) -> None:
        self.book.progress(progress, self._sender())

    @on_message
    async def _on_sync(self, sync: WorkerSync) -> None:
        holding = {(key[0], key[1]) for key in sync.holding}
        seen = sync.seen if sync.epoch == self.detail.id else -1
        self.book.reconcile(self._sender(), holding, seen, grace_s=3 * self.heartbeat_interval)

    # --- requests from clients ----------------------------------------------------------------

    @on_message
    async def _on_submit(self, request: SubmitTasks) -> None:
        # Answered once stored; the dispatch loop goes on meanwhile (results, other
        # submissions: concurrent ones are committed together by the store).
        envelope = current_message()
        assert envelope is not None
        self._reply_later(envelope, self._submit_for(request, envelope.sender))

    async def _submit_for(self, request: SubmitTasks, client: str) -> SubmitReply:
        current = asyncio.current_task()
        if current is not None:
            self._submitting.add(current)
            current.add_done_callback(self._submitting.discard)
        reply = await self.submit(request.tasks)
        if request.watch:
            self.book.watch(client, reply.accepted)  # all unfinished: just submitted
            if reply.duplicates:
                await self._watch(client, reply.duplicates)
        return reply

    @on_message
    async def _on_watch(self, request: Watch) -> WatchReply:
        return WatchReply(unknown=await self._watch(self._sender(), request.task_ids))

    async def _watch(self, client: str, task_ids: list[str]) -> list[str]:
        """Push to ``client`` the outcome of each of ``task_ids`` once it is final and
        stored (at once for those that are); returns the unknown ids. Outcomes always travel
        as pushed :class:`TaskOutcomes`, in messages of bounded size, never in a reply."""
        stored = []
        for task_id in self.book.watch(client, task_ids):
            unsaved = self._ledger.unsaved(task_id)
            if unsaved is not None and unsaved.state.is_final:
                self._ledger.notify(client, TaskOutcome.of(unsaved.record()))
            else:
                stored.append(task_id)
        if not stored:
            return []
        found = await self.store.get_many(stored)
        for record in found.values():
            if record.state.is_final:
                self._ledger.notify(client, TaskOutcome.of(record))
            else:  # stored by a submission still on its way into the book
                self.book.watch(client, [record.id], known=True)
        return [task_id for task_id in stored if task_id not in found]

    @on_message
    async def _on_subscribe(self, request: Subscribe) -> Subscribed:
        client = self._sender()
        if request.active and client:
            if not self._subscribers:
                self.add_listener(self._forward_event)
            self._subscribers.add(client)
        else:
            self._unsubscribe(client)  # its watches stay
        return Subscribed(active=client in self._subscribers)

    def _client_left(self, client: str) -> None:
        self.book.unwatch(client)
        self._unsubscribe(client)

    def _unsubscribe(self, client: str) -> None:
        if client in self._subscribers:
            self._subscribers.discard(client)
            if not self._subscribers:
                self.remove_listener(self._forward_event)

    def _forward_event(self, event: TaskEvent) -> None:
        """Batch events for the subscribers: one message each per loop turn."""
        if not self._events:
            asyncio.get_running_loop().call_soon(self._send_events)
        self._events.append(
            EventMessage(
                kind=event.kind,
                at=event.at,
                task_id=event.task_id,
                worker=event.worker,
                attempt=event.attempt,
                reason=clip_text(event.reason, MAX_NOTE_CHARS),
                escalated=event.escalated,
                wait_s=event.wait_s,
                run_s=event.run_s,
                outcome=event.outcome,
            )
        )

    def _send_events(self) -> None:
        events, self._events = self._events, []
        for start in range(0, len(events), 1_000):
            message = TaskEvents(events=events[start : start + 1_000])
            for client in list(self._subscribers):
                self._spawn(self._push(client, message), "events")

    async def _push(self, client: str, message: object) -> None:
        try:
            await self.send(client, message)
        except Exception as e:  # the client is gone: its subscription ends with it
            logger.debug("{}: could not push to {}: {}", self.name, client, e)

    @on_message
    async def _on_cancel_request(self, request: CancelRequest) -> CancelReply:
        return await self.cancel(request.task_id)

    @on_message
    async def _on_status(self, request: StatusRequest) -> StatusReply:
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        suspects = set(self.book.suspects)
        return StatusReply(
            workspace=self.workspace_id,
            counts=await self.store.counts(),
            workers=[
                WorkerStatus(
                    info=info,
                    load=self.book.load(name),
                    completed=self.stats.by_worker.get(name, 0),
                    suspect=name in suspects,
                )
                for name, info in self.book.workers.items()
            ],
            pending_in_memory=len(self.book),
            stale_results=self.stale_results,
            tasks_per_s=self.final_count / elapsed,
        )

    @on_message
    async def _on_query(self, query: TaskQuery) -> TaskPage:
        if query.task_id is not None:
            record = await self._known(query.task_id)
            if record is None:
                raise TaskNotFound(query.task_id)
            children = await self.store.children(query.task_id)
            return TaskPage(records=[self.book.waiting_reason(record)], children=children)
        records, cursor = await self.store.query(
            state=query.state, worker=query.worker, after=query.after, limit=query.limit
        )
        page = [self.book.waiting_reason(r) for r in records]  # why each pending one waits
        return TaskPage(records=page, next_cursor=cursor)

    @on_message
    async def _on_report(self, request: ReportRequest) -> Report:
        return await self.report()

    @on_message
    async def _on_retry(self, request: RetryRequest) -> RetryReply:
        return await self.retry(request.task_ids)

    @on_message
    async def _on_schedule(self, request: ScheduleRequest) -> SchedulesReply:
        if request.add is not None:
            await self.add_schedule(request.add)
        removed = request.remove is not None and await self.remove_schedule(request.remove)
        return SchedulesReply(schedules=self.schedules(), removed=removed)

    @on_message
    async def _on_configure(self, request: ConfigureRequest) -> ConfigureReply:
        return ConfigureReply(info=await self.configure(request.worker, request.change))


def _standby_lease(manager: TaskManager, ttl_s: float) -> StoreLease:
    """The lease a standby manager leads by, in its store (PostgreSQL only)."""
    store = manager.store
    make = getattr(store, "lease", None)
    if make is None or not store.url.startswith(("postgresql:", "postgres:")):
        raise ValueError(
            f"a standby manager needs a PostgreSQL task store, not {store.url}: a SQLite file "
            "is one machine's, and a leader paused in a transaction would hold its lock"
        )
    holder = f"{socket.gethostname()}/{os.getpid()}/{manager.detail.id[:6]}"
    lease: StoreLease = make(manager.workspace_id, holder, ttl_s=ttl_s, owner=manager.name)
    return lease


def _profile(info: WorkerInfo) -> str:
    """A worker's skills, capacity, kinds and labels, for a log line."""
    parts = [", ".join(f"{k} {v}" for k, v in info.skills.items()), f"capacity {info.capacity}"]
    if info.kinds is not None:
        parts.append("kinds " + ",".join(info.kinds))
    if info.labels:
        parts.append("labels " + ",".join(info.labels))
    return "; ".join(parts)

"""The dashboard's view of one task manager: queries over its store and its live state.

:class:`Dashboard` is the thin layer the HTTP routes call. It reads tasks from the durable
store (so it survives restarts and pages at any depth), asks the manager only for what lives
in memory (connected workers, their load, why a task waits, counters), and listens to the
manager's events to publish a coalesced update at most every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from loguru import logger

from serendib.agent import AgentStatus
from serendib.dashboard.live import Broadcast, LiveFeed
from serendib.dashboard.metrics import DashboardMetrics, ManagerFacts
from serendib.dashboard.schemas import (
    CancelResult,
    ManagerCounters,
    RetryResult,
    ScheduleView,
    StatsView,
    SubmitBody,
    SubmitResult,
    TaskDetail,
    TaskFilter,
    TaskPageView,
    WorkerDetail,
    WorkerView,
)
from serendib.dashboard.views import task_detail, task_row, worker_detail, worker_views
from serendib.errors import AgentNotRunning, StoreError, TaskNotFound, WorkerNotFound
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import TaskRecord, TaskState
from serendib.tasks.report import success_rate
from serendib.tasks.store.search import TaskSort

__all__ = ["Dashboard"]

_IDLE_PUBLISH_S = 2.0
_MAX_WORKERS_PUSHED = 1_000
_CURRENT_SHOWN = 100
"""A worker's current tasks shown, per state (assigned, running), at most."""
_RECENT_SHOWN = 20
"""A worker's recent tasks shown."""
_SORTS: dict[str, tuple[TaskSort, bool]] = {
    "submitted": ("submitted", False),
    "-submitted": ("submitted", True),
    "finished": ("finished", False),
    "-finished": ("finished", True),
    "id": ("id", False),
    "-id": ("id", True),
}


class Dashboard:
    """Everything the dashboard shows about ``manager``, and its live updates.

    Create it before the manager starts to see every event; :meth:`start` begins publishing
    updates and :meth:`stop` ends them (and every event stream).

    Args:
        manager: The task manager to show.
        interval_s: Least time between two live updates (events in between are coalesced).
        window_s: Seconds of throughput history charted.
    """

    def __init__(
        self, manager: TaskManager, *, interval_s: float = 0.5, window_s: int = 120
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.manager = manager
        self.interval_s = interval_s
        self.feed = LiveFeed(window_s)
        self.metrics = DashboardMetrics(
            ManagerFacts(
                stats=lambda: manager.stats,
                drops=lambda: manager.drops.counts,
                workers=lambda: len(manager.workers),
                suspects=lambda: len(manager.suspects),
                quarantined=lambda: self._quarantined,
            )
        )
        self.updates = Broadcast()
        self.started_at = time.time()
        self.tasks_version = 0
        self._counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._quarantined = 0
        self._counts_stale = True
        self._counts_due = 0.0
        self._committed = -1
        self._listening = True
        self._ticker: asyncio.Task[None] | None = None
        manager.add_listener(self._on_event)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish a first update, then one per ``interval_s`` while anything changes."""
        if self._ticker is not None:
            return
        self._listening = True
        self.updates.publish(await self._update())
        self._ticker = asyncio.create_task(self._tick_loop(), name="dashboard updates")

    async def refresh(self) -> None:
        """Publish an update made now (a new page must not start from an old one)."""
        if self._ticker is None or self.updates.closed:
            return
        try:
            self.updates.publish(await self._update())
        except Exception as e:  # the stream goes on with the latest published
            logger.opt(exception=e).error("dashboard: live update failed")

    async def stop(self) -> None:
        """Stop publishing, end every event stream, and ignore the manager from now on."""
        self._listening = False
        self.updates.close()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    # --- queries ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the manager is running (submitting and cancelling need it)."""
        return self.manager.status is AgentStatus.RUNNING

    def schedules(self) -> list[ScheduleView]:
        """The manager's schedules, by name."""
        return [
            ScheduleView(
                name=info.schedule.name,
                cron=info.schedule.cron,
                task=info.schedule.task,
                catch_up=info.schedule.catch_up,
                last_fired=info.last_fired,
                next_at=info.next_at,
            )
            for info in self.manager.schedules()
        ]

    def workers(self) -> list[WorkerView]:
        """Connected workers (in joining order), then workers lost since the dashboard began."""
        manager, suspects = self.manager, set(self.manager.suspects)
        connected = [
            (info, manager.load(name), name in suspects) for name, info in manager.workers.items()
        ]
        names = self.manager.workers.keys()
        lost = [info for name, info in self.feed.lost.items() if name not in names]
        return worker_views(connected, reversed(lost), self.feed.tallies)

    @property
    def last_counts(self) -> dict[TaskState, int]:
        """The counts read last (what to show when the store cannot be read)."""
        return dict(self._counts)

    async def counts(self) -> dict[TaskState, int]:
        """Stored tasks per state, read now (and the count of quarantined records with them).

        Raises:
            StoreError: The store cannot be read (closed, or failing).
        """
        store = self.manager.store
        counts = await store.counts()
        # Read with the counts (at the same pace): a small table, normally empty.
        self._quarantined = await store.quarantine_count()
        self._counts = dict(counts)
        return counts

    async def stats(self) -> StatsView:
        """Counts, success rate, counters, drops and throughput, with counts read now."""
        return self._stats(await self.counts())

    async def tasks(self, query: TaskFilter) -> TaskPageView:
        """One page of the task table (a store search: keyset paging along one index, at most
        10,000 stored tasks examined, the same cost at any depth).

        Raises:
            ValueError: ``query.after`` is not a cursor of ``query.sort``.
            StoreError: The store cannot be read.
        """
        sort, descending = _SORTS[query.sort]
        page = await self.manager.store.search(
            state=query.state,
            worker=query.worker,
            kind=query.kind,
            id_prefix=query.id,
            text=query.text,
            sort=sort,
            descending=descending,
            after=query.after,
            limit=query.limit,
        )
        return TaskPageView(
            tasks=[task_row(r, self._waiting_reason(r)) for r in page.records],
            next_cursor=page.next_cursor,
            truncated=page.truncated,
        )

    async def worker(self, name: str) -> WorkerDetail:
        """One worker (connected, or lost since the dashboard started): its line, its tasks
        assigned or running now, its latest tasks, and its success by difficulty.

        Raises:
            WorkerNotFound: No such worker is connected or remembered.
            StoreError: The store cannot be read.
        """
        view = next((w for w in self.workers() if w.name == name), None)
        if view is None:
            raise WorkerNotFound(name)
        store = self.manager.store
        current: list[TaskRecord] = []
        for state in (TaskState.RUNNING, TaskState.ASSIGNED):
            found = await store.search(state=state, worker=name, limit=_CURRENT_SHOWN)
            current += found.records
        recent = await store.search(worker=name, descending=True, limit=_RECENT_SHOWN)
        return worker_detail(view, current, recent.records, self.feed.tallies.get(name))

    async def task(self, task_id: str) -> TaskDetail:
        """One task and its attempts.

        Raises:
            TaskNotFound: No stored task has this id.
            StoreError: The store cannot be read.
        """
        store = self.manager.store
        record = await store.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        attempts, children = await asyncio.gather(store.attempts(task_id), store.children(task_id))
        return task_detail(record, attempts, self._waiting_reason(record), time.time(), children)

    async def submit(self, body: SubmitBody) -> SubmitResult:
        """Submit tasks to the manager.

        Raises:
            AgentNotRunning: The manager is not running.
            StoreError: The store refused them.
        """
        self._require_running("submit")
        reply = await self.manager.submit(body.tasks)
        return SubmitResult(
            accepted=reply.accepted, duplicates=reply.duplicates, rejected=reply.rejected
        )

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task that is not final.

        Raises:
            AgentNotRunning: The manager is not running.
            TaskNotFound: No task has this id.
        """
        self._require_running("cancel")
        reply = await self.manager.cancel(task_id)
        return CancelResult(cancelled=reply.cancelled, task=task_row(reply.record))

    async def retry(self, task_id: str) -> RetryResult:
        """Run a failed or cancelled task again as new attempts (its history kept).

        Raises:
            AgentNotRunning: The manager is not running.
            TaskNotFound: No task has this id.
        """
        self._require_running("retry")
        reply = await self.manager.retry([task_id])
        record = await self.manager.get_task(task_id)
        if reply.unknown or record is None:
            raise TaskNotFound(task_id)
        return RetryResult(
            retried=task_id in reply.retried,
            reason=reply.refused.get(task_id),
            task=task_row(record),
        )

    # --- internals ----------------------------------------------------------------------------

    def _require_running(self, operation: str) -> None:
        if not self.running:
            raise AgentNotRunning(self.manager.name, operation)

    def _waiting_reason(self, record: TaskRecord) -> str | None:
        if record.state is not TaskState.PENDING or not self.running:
            return None
        return self.manager.waiting_reason(record.id)

    def _on_event(self, event: TaskEvent) -> None:
        if not self._listening:
            return
        kind = event.kind
        if kind is EventKind.ASSIGNED and event.task_id:
            # What the event does not say, while the task is in the manager's memory: for
            # the success by difficulty and the latency once it ends.
            record = self.manager.book.get(event.task_id)
            if record is not None:
                self.feed.observe(event, record.task.difficulty, record.submitted_at)
            else:
                self.feed.observe(event)
        else:
            self.feed.observe(event)
        self.metrics.observe(event)
        if (kind is EventKind.WORKER_JOINED or kind is EventKind.WORKER_CHANGED) and event.worker:
            # Learn its skills now: once it has left, the manager no longer knows them.
            info = self.manager.workers.get(event.worker)
            if info is not None:
                self.feed.remember(info)

    def _stats(self, counts: dict[TaskState, int]) -> StatsView:
        stats = self.manager.stats
        now = time.time()
        self._sample_depth(now)
        return StatsView(
            workspace=self.manager.workspace_id,
            manager=self.manager.name,
            running=self.running,
            store=self.manager.store.url,
            counts=counts,
            total=sum(counts.values()),
            success_rate=success_rate(
                counts.get(TaskState.SUCCEEDED, 0), counts.get(TaskState.FAILED, 0)
            ),
            counters=ManagerCounters(
                submitted=stats.submitted,
                assignments=stats.assignments,
                retries=stats.retries,
                escalations=stats.escalations,
                requeued_lost=stats.requeued_lost,
                timeouts=stats.timeouts,
                succeeded=stats.succeeded,
                failed=stats.failed,
                cancelled=stats.cancelled,
                stale_results=stats.stale_results,
                workers_lost=stats.workers_lost,
            ),
            dropped=dict(self.manager.drops.counts),
            throughput=self.feed.throughput.snapshot(now),
            queue=self.feed.depth.snapshot(now),
            latency=self.feed.latency.snapshot(now),
            uptime_s=max(time.time() - self.started_at, 0.0),
            quarantined=self._quarantined,
        )

    async def _update(self) -> bytes:
        """The live update: stats (counts re-read when due), workers, and a tasks version."""
        now = time.monotonic()
        if self._counts_stale and now >= self._counts_due:
            # A store that is closed or failing: show the counts read last.
            with contextlib.suppress(StoreError):
                await self.counts()
            self._counts_stale = False
            # Counting scans the state index (0.3 s at 10^6 tasks): keep it a small share of
            # the store's reader, however busy the manager is.
            spent = time.monotonic() - now
            self._counts_due = time.monotonic() + max(self.interval_s, 10 * spent)
        workers = self.workers()
        payload = {
            "tasks_version": self.tasks_version,
            "stats": self._stats(dict(self._counts)).model_dump(mode="json"),
            "workers": [w.model_dump(mode="json") for w in workers[:_MAX_WORKERS_PUSHED]],
            "workers_total": len(workers),
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    def _sample_depth(self, now: float) -> None:
        self.feed.depth.sample(now, self.manager.scheduler.pending_count)

    async def _tick_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample_depth(time.time())
            happened = self.feed.take_changes()
            # Tasks changed when the store committed something: what the page then reads is
            # at least that (an event alone may precede its write).
            committed = self.manager.store.transactions
            written = committed != self._committed
            if written:
                self._committed = committed
                self.tasks_version += 1
                self._counts_stale = True
            recount = self._counts_stale and time.monotonic() >= self._counts_due
            idle = time.monotonic() - last >= _IDLE_PUBLISH_S
            if not (happened or written or recount or idle):
                continue
            try:
                self.updates.publish(await self._update())
            except Exception as e:  # an update must never end the feed
                logger.opt(exception=e).error("dashboard: live update failed")
            last = time.monotonic()

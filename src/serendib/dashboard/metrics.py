"""Prometheus metrics of one task manager, in a registry of their own.

Counters come from the manager's own running counters at scrape time (exact, and never
double-counted however many dashboards watch it); tasks by state from the store at scrape
time; the queue-wait and run-time histograms from the manager's events as they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from serendib.tasks.events import EventKind, ManagerStats, TaskEvent
from serendib.tasks.models import TaskState

__all__ = ["CONTENT_TYPE", "DashboardMetrics", "ManagerFacts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_COUNTERS = (
    ("submitted", "serendib_tasks_submitted", "Tasks accepted by the manager"),
    ("assignments", "serendib_task_assignments", "Attempts handed to workers"),
    ("retries", "serendib_task_retries", "Failed attempts retried"),
    ("escalations", "serendib_task_escalations", "Retries given to a more skilled worker"),
    ("requeued_lost", "serendib_tasks_requeued_lost", "Attempts requeued when a worker left"),
    ("timeouts", "serendib_task_timeouts", "Attempts abandoned after their timeout"),
    ("stale_results", "serendib_stale_results", "Results ignored as not the current attempt"),
    ("workers_lost", "serendib_workers_lost", "Workers that left or were lost"),
)


class ManagerFacts:
    """What a scrape reads from the manager: its counters, drops and connected workers.

    Args:
        stats: Returns the manager's running counters.
        drops: Returns the dropped bad messages by reason.
        workers: Returns the number of connected workers (suspect ones included).
        suspects: Returns the number of suspect workers (silent lately, given no new work).
        quarantined: Returns the number of records the store refused and quarantined.
    """

    def __init__(
        self,
        *,
        stats: Callable[[], ManagerStats],
        drops: Callable[[], Mapping[str, int]],
        workers: Callable[[], int],
        suspects: Callable[[], int] = lambda: 0,
        quarantined: Callable[[], int] = lambda: 0,
    ) -> None:
        self.stats = stats
        self.drops = drops
        self.workers = workers
        self.suspects = suspects
        self.quarantined = quarantined
        self.counts: Mapping[TaskState, int] = {}

    def collect(self) -> Iterable[Metric]:
        """The metrics of this scrape (the prometheus_client collector protocol)."""
        stats = self.stats()
        for field, name, text in _COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(stats, field))
        finished = CounterMetricFamily(
            "serendib_tasks_finished", "Tasks that reached a final state", labels=["outcome"]
        )
        for outcome, value in (
            ("succeeded", stats.succeeded),
            ("failed", stats.failed),
            ("cancelled", stats.cancelled),
        ):
            finished.add_metric([outcome], value)
        yield finished
        dropped = CounterMetricFamily(
            "serendib_dropped_messages", "Bad messages dropped by the manager", labels=["reason"]
        )
        for reason, value in sorted(self.drops().items()):
            dropped.add_metric([reason], value)
        yield dropped
        yield GaugeMetricFamily(
            "serendib_workers_connected", "Workers connected now", value=self.workers()
        )
        yield GaugeMetricFamily(
            "serendib_workers_suspect",
            "Connected workers silent lately: given no new work, their attempts kept",
            value=self.suspects(),
        )
        yield GaugeMetricFamily(
            "serendib_quarantined_records",
            "Records the task store refused to save, kept in its quarantine table",
            value=self.quarantined(),
        )
        tasks = GaugeMetricFamily("serendib_tasks", "Stored tasks by state", labels=["state"])
        for state in TaskState:
            tasks.add_metric([state.value], self.counts.get(state, 0))
        yield tasks


class DashboardMetrics:
    """One manager's metrics in their own :class:`~prometheus_client.CollectorRegistry`.

    Args:
        facts: The manager's counters, drops and workers, read at scrape time.
    """

    def __init__(self, facts: ManagerFacts) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.facts = facts
        self.registry.register(facts)
        self.queue_wait = Histogram(
            "serendib_task_queue_wait_seconds",
            "Seconds a task waited in the queue before an attempt was assigned",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "serendib_task_run_seconds",
            "Seconds from assignment to the final result of a task's last attempt",
            ["outcome"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )

    def observe(self, event: TaskEvent) -> None:
        """Feed the histograms from one manager event."""
        if event.kind is EventKind.ASSIGNED and event.wait_s is not None:
            self.queue_wait.observe(event.wait_s)
        elif event.run_s is not None and event.kind in (EventKind.SUCCEEDED, EventKind.FAILED):
            self.run_time.labels(event.kind.value).observe(max(event.run_s, 0.0))

    def render(self, counts: Mapping[TaskState, int]) -> bytes:
        """The text exposition of every metric, with ``counts`` as the tasks-by-state gauge."""
        self.facts.counts = counts
        return generate_latest(self.registry)

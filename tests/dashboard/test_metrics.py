"""Prometheus metrics: a registry per dashboard, counters at scrape time, event histograms."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from serendib.dashboard.metrics import DashboardMetrics, ManagerFacts
from serendib.subjects import direct_subject
from serendib.tasks.events import EventKind, ManagerStats, TaskEvent
from serendib.tasks.models import Task, TaskState
from serendib.transports import MemoryTransport
from tests.dashboard.conftest import WORKSPACE, gate_task, running_system, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def facts(stats: ManagerStats, drops: dict[str, int] | None = None) -> ManagerFacts:
    return ManagerFacts(
        stats=lambda: stats, drops=lambda: drops or {}, workers=lambda: 2, suspects=lambda: 1
    )


def test_counters_are_the_managers_at_scrape_time() -> None:
    stats = ManagerStats(submitted=5, assignments=7, retries=2, escalations=1, workers_lost=1)
    metrics = DashboardMetrics(facts(stats, {"DecodeError": 3}))
    stats.succeeded = 4

    found = samples(metrics.render({TaskState.PENDING: 1, TaskState.SUCCEEDED: 4}).decode())

    assert found[("serendib_tasks_submitted_total", ())] == 5
    assert found[("serendib_task_assignments_total", ())] == 7
    assert found[("serendib_task_retries_total", ())] == 2
    assert found[("serendib_task_escalations_total", ())] == 1
    assert found[("serendib_workers_lost_total", ())] == 1
    assert found[("serendib_workers_connected", ())] == 2
    assert found[("serendib_workers_suspect", ())] == 1
    assert found[("serendib_tasks_finished_total", (("outcome", "succeeded"),))] == 4
    assert found[("serendib_dropped_messages_total", (("reason", "DecodeError"),))] == 3
    assert found[("serendib_tasks", (("state", "pending"),))] == 1
    assert found[("serendib_tasks", (("state", "succeeded"),))] == 4
    assert found[("serendib_tasks", (("state", "failed"),))] == 0


def test_histograms_take_queue_wait_and_run_time_from_events() -> None:
    metrics = DashboardMetrics(facts(ManagerStats()))
    for event in (
        TaskEvent(EventKind.ASSIGNED, 0.0, task_id="a", wait_s=0.002),
        TaskEvent(EventKind.ASSIGNED, 0.0, task_id="b", wait_s=40.0),
        TaskEvent(EventKind.SUCCEEDED, 0.0, task_id="a", run_s=0.3),
        TaskEvent(EventKind.FAILED, 0.0, task_id="b", run_s=3.0),
        TaskEvent(EventKind.CANCELLED, 0.0, task_id="c"),
    ):
        metrics.observe(event)

    found = samples(metrics.render({}).decode())

    wait = "serendib_task_queue_wait_seconds"
    assert found[(f"{wait}_count", ())] == 2
    assert found[(f"{wait}_bucket", (("le", "0.005"),))] == 1
    assert found[(f"{wait}_bucket", (("le", "60.0"),))] == 2
    assert found[(f"{wait}_sum", ())] == 40.002
    run = "serendib_task_run_seconds"
    assert found[(f"{run}_count", (("outcome", "succeeded"),))] == 1
    assert found[(f"{run}_count", (("outcome", "failed"),))] == 1
    assert found[(f"{run}_bucket", (("le", "0.5"), ("outcome", "succeeded")))] == 1


def test_each_dashboard_has_its_own_registry() -> None:
    first = DashboardMetrics(facts(ManagerStats(submitted=1)))
    second = DashboardMetrics(facts(ManagerStats(submitted=2)))

    assert first.registry is not second.registry
    assert samples(first.render({}).decode())[("serendib_tasks_submitted_total", ())] == 1
    assert samples(second.render({}).decode())[("serendib_tasks_submitted_total", ())] == 2
    assert REGISTRY.get_sample_value("serendib_tasks_submitted_total") is None


async def test_metrics_of_a_running_manager(tmp_path: Path) -> None:
    async with running_system(tmp_path / "tasks.db") as system, system.client() as client:
        # Fails on Junior, is retried on Intermediate (an escalation), then succeeds.
        await system.submit(gate_task("flaky", payload={"fail_attempts": [1]}))
        await system.submit(Task(id="waits", difficulty=10))
        system.gates.open("flaky")
        await until(lambda: system.manager.stats.succeeded == 1, "flaky to succeed")
        await system.workers[0].stop()
        await until(lambda: len(system.manager.workers) == 2, "Junior to leave")
        intruder = MemoryTransport(system.hub)
        subject = direct_subject(WORKSPACE, "manager", "intruder")
        await intruder.publish(subject, b"\x00not a message")
        await until(lambda: system.manager.drops.total == 1, "the bad message to be dropped")

        async def stored() -> bool:
            return (await system.manager.store.counts())[TaskState.SUCCEEDED] == 1

        await until(stored, "flaky to be stored")
        response = await client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("serendib_tasks", (("state", "succeeded"),))] == 1
    assert found[("serendib_tasks", (("state", "pending"),))] == 1
    assert found[("serendib_tasks_submitted_total", ())] == 2
    assert found[("serendib_task_assignments_total", ())] == 2
    assert found[("serendib_task_retries_total", ())] == 1
    assert found[("serendib_task_escalations_total", ())] == 1
    assert found[("serendib_workers_lost_total", ())] == 1
    assert found[("serendib_workers_connected", ())] == 2
    assert found[("serendib_dropped_messages_total", (("reason", "DecodeError"),))] == 1
    assert found[("serendib_task_queue_wait_seconds_count", ())] == 2
    assert found[("serendib_task_run_seconds_count", (("outcome", "succeeded"),))] == 1

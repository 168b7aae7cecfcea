"""The task manager end to end, on every transport: assignment, retries, loss, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from serendib import Agent
from serendib.errors import TaskNotFound
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskAssignment, TaskResult, TaskResults
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import TaskContext, TaskFailed, WorkerAgent
from tests.helpers import DEADLINE, until
from tests.tasks.conftest import StartWorker

MakeManager = Callable[..., Awaitable[TaskManager]]
SEED = [
    Task(id=1, description="Simple calculation", difficulty=2),
    Task(id=2, description="Data analysis", difficulty=5),
    Task(id=3, description="Machine learning model training", difficulty=8),
]


class Events:
    """Collects a manager's events; waits for the one a test expects."""

    def __init__(self, manager: TaskManager) -> None:
        self.seen: list[TaskEvent] = []
        self._changed = asyncio.Event()
        manager.add_listener(self._on_event)

    def _on_event(self, event: TaskEvent) -> None:
        self.seen.append(event)
        self._changed.set()

    async def wait_for(
        self, kind: EventKind, task_id: str | None = None, count: int = 1
    ) -> list[TaskEvent]:
        async def matching() -> list[TaskEvent]:
            while True:
                found = [e for e in self.seen if e.kind is kind and task_id in (None, e.task_id)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(matching(), DEADLINE)


async def finished(manager: TaskManager) -> None:
    await asyncio.wait_for(manager.wait_done(), DEADLINE)


async def workers_known(manager: TaskManager, count: int) -> None:
    await until(lambda: manager.scheduler.worker_count == count, what=f"{count} workers")


async def test_each_seed_task_goes_to_the_least_skilled_eligible_worker(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    for name, level in [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]:
        await start_worker(name, level)
    await workers_known(manager, 3)
    await manager.submit(SEED)
    await finished(manager)
    attempts = {a.task_id: a for a in await manager.store.all_attempts()}
    assert {k: a.worker for k, a in attempts.items()} == {
        "1": "Junior",
        "2": "Intermediate",
        "3": "Senior",
    }
    assert (
        attempts["2"].reason
        == "Intermediate: least skilled eligible (general 6 >= 5), 1/1 slots in use"
    )
    report = await manager.report()
    assert report.success_rate == 1.0
    assert report.succeeded == 3


async def test_tasks_submitted_before_workers_wait_with_a_reason_then_run(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    await manager.submit([Task(id="hard", difficulty=8)])
    reason = manager.scheduler.waiting_reason("hard")
    assert reason is not None
    assert reason.startswith("waiting for a worker with general >= 8")
    stored = await manager.store.get("hard")
    assert stored is not None
    assert stored.state is TaskState.PENDING
    await start_worker("junior", 3)
    await workers_known(manager, 1)
    reason = manager.scheduler.waiting_reason("hard")
    assert reason is not None
    assert reason.startswith("waiting for a worker with general >= 8")
    await start_worker("senior", 9)
    await finished(manager)
    record = await manager.store.get("hard")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.worker == "senior"


async def test_a_task_nobody_can_take_fails_when_its_wait_deadline_passes(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    await start_worker("junior", 3)
    await manager.submit([Task(id="x", difficulty=9, wait_timeout_s=0.2)])
    await finished(manager)
    record = await manager.store.get("x")
    assert record is not None
    assert record.state is TaskState.FAILED
    assert record.attempt == 0
    assert record.error is not None
    assert "general >= 9" in record.error
    report = await manager.report()
    assert [row.id for row in report.never_assigned] == ["x"]


async def test_attempt_unqualified_lets_the_most_skilled_worker_try_and_fail(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(attempt_unqualified=True)
    await start_worker("junior", 3)
    await start_worker("mid", 6)
    await workers_known(manager, 2)
    await manager.submit([Task(id="x", difficulty=9, max_attempts=1)])
    await finished(manager)
    record = await manager.store.get("x")
    assert record is not None
    assert record.state is TaskState.FAILED
    assert record.worker == "mid"
    assert record.error is not None
    assert "general 6 < difficulty 9" in record.error


async def test_a_failed_attempt_is_retried_on_a_more_skilled_worker(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    async def fails_on_junior(task: Task, context: TaskContext) -> str:
        if context.worker.name == "junior":
            raise TaskFailed("junior dropped it")
        return context.worker.name

    manager = await manager_factory()
    for name, level in [("junior", 5), ("senior", 9)]:
        await start_worker(name, level, handlers={"flaky": fails_on_junior})
    await workers_known(manager, 2)
    await manager.submit([Task(id="t", difficulty=4, kind="flaky")])
    await finished(manager)
    record = await manager.store.get("t")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.output == "senior"
    attempts = await manager.store.attempts("t")
    assert [(a.worker, a.outcome, a.escalated) for a in attempts] == [
        ("junior", AttemptOutcome.FAILED, False),
        ("senior", AttemptOutcome.SUCCEEDED, True),
    ]
    assert attempts[0].error == "junior dropped it"
    assert manager.stats.escalations == 1


async def test_a_task_fails_after_its_last_attempt_with_the_handlers_error(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    async def broken(task: Task, context: TaskContext) -> None:
        raise ValueError("disk on fire")

    manager = await manager_factory(
        tasks=[Task(id="t", difficulty=1, kind="broken", max_attempts=2)]
    )
    await start_worker("w", 5, handlers={"broken": broken})
    await finished(manager)
    record = await manager.store.get("t")
    assert record is not None
    assert record.state is TaskState.FAILED
    assert record.attempt == 2
    assert record.error is not None
    assert "ValueError: disk on fire" in record.error


async def test_capacity_bounds_concurrent_attempts_on_a_worker(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def work(task: Task, context: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    manager = await manager_factory(
        tasks=[Task(id=f"t{i}", difficulty=1, kind="work") for i in range(30)]
    )
    await start_worker("w", 5, capacity=3, handlers={"work": work})
    await until(lambda: running == 3, what="three attempts running")
    gate.set()
    await finished(manager)
    assert manager.stats.succeeded == 30
    assert peak == 3


async def test_same_task_id_submitted_twice_is_one_task(manager_factory: MakeManager) -> None:
    manager = await manager_factory()
    first = await manager.submit([Task(id="a", difficulty=1), Task(id="b", difficulty=1)])
    second = await manager.submit([Task(id="a", difficulty=5), Task(id="c", difficulty=1)])
    assert first.accepted == ["a", "b"]
    assert (second.accepted, second.duplicates) == (["c"], ["a"])
    record = await manager.store.get("a")
    assert record is not None
    assert record.task.difficulty == 1


async def test_a_lost_workers_attempt_goes_back_to_the_queue(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    hold = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        await hold.wait()

    manager = await manager_factory(tasks=[Task(id="t", difficulty=3, kind="job")])
    events = Events(manager)
    doomed = await start_worker("doomed", 9, handlers={"job": stuck})
    await events.wait_for(EventKind.ASSIGNED, "t")
    await start_worker("backup", 5, handlers={"job": _succeed})
    _crash(doomed)
    await finished(manager)
    record = await manager.store.get("t")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.worker == "backup"
    attempts = await manager.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    hold.set()


async def test_an_attempt_past_its_timeout_is_retried_and_its_late_result_ignored(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    release = asyncio.Event()

    async def slow_once(task: Task, context: TaskContext) -> str:
        if context.attempt == 1:
            await release.wait()
        return f"attempt {context.attempt}"

    manager = await manager_factory(
        tasks=[Task(id="t", difficulty=1, kind="slow", timeout_s=0.05, max_attempts=3)]
    )
    await start_worker("w", 5, capacity=2, handlers={"slow": slow_once})
    await finished(manager)
    record = await manager.store.get("t")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.output == "attempt 2"
    outcomes = [a.outcome for a in await manager.store.attempts("t")]
    assert outcomes[0] in (AttemptOutcome.TIMED_OUT, AttemptOutcome.FAILED)
    assert outcomes[-1] is AttemptOutcome.SUCCEEDED


async def test_results_from_anyone_but_the_leaseholder_are_stale(
    manager_factory: MakeManager, start_worker: StartWorker, hub_url: str, workspace: str
) -> None:
    hold = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        await hold.wait()

    manager = await manager_factory(tasks=[Task(id="t", difficulty=1, kind="job")])
    events = Events(manager)
    await start_worker("w", 5, handlers={"job": stuck})
    await events.wait_for(EventKind.ASSIGNED, "t")
    async with Agent("mallory", workspace, transport=hub_url, role="worker") as mallory:
        for forged in (
            TaskResult(task_id="t", attempt=1, worker="mallory", success=True),
            TaskResult(task_id="t", attempt=1, worker="w", success=True),
            TaskResult(task_id="t", attempt=2, worker="w", success=True),
            TaskResult(task_id="nope", attempt=1, worker="mallory", success=True),
        ):
            await mallory.send("manager", forged)
        await events.wait_for(EventKind.STALE_RESULT, count=4)
    await manager._ledger.drain()
    record = await manager.store.get("t")
    assert record is not None
    assert record.state is TaskState.RUNNING  # started, and no forged result ended it
    hold.set()
    await finished(manager)
    assert manager.stats.succeeded == 1
    assert manager.stale_results == 4
    # The two naming the running attempt are on its record; attempt 2 and "nope" have none.
    assert [a.stale_results for a in await manager.store.attempts("t")] == [2]
    assert (await manager.report()).attempts.stale_results == 2


async def test_cancel_a_pending_and_a_running_task(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    manager = await manager_factory(
        tasks=[Task(id="run", difficulty=1, kind="job"), Task(id="wait", difficulty=9)]
    )
    await start_worker("w", 5, handlers={"job": stuck})
    await asyncio.wait_for(entered.wait(), DEADLINE)
    assert (await manager.cancel("wait")).cancelled
    assert (await manager.cancel("run")).cancelled
    await asyncio.wait_for(cancelled.wait(), DEADLINE)
    await finished(manager)
    for task_id in ("run", "wait"):
        record = await manager.store.get(task_id)
        assert record is not None
        assert record.state is TaskState.CANCELLED
    again = await manager.cancel("run")
    assert not again.cancelled
    with pytest.raises(TaskNotFound):
        await manager.cancel("never")


async def test_progress_marks_the_task_running(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go = asyncio.Event()

    async def long(task: Task, context: TaskContext) -> None:
        await context.progress(0.5, "halfway")
        await go.wait()

    manager = await manager_factory(tasks=[Task(id="t", difficulty=1, kind="long")])
    events = Events(manager)
    await start_worker("w", 5, handlers={"long": long})
    await events.wait_for(EventKind.ASSIGNED, "t")

    async def running() -> bool:
        await manager._ledger.drain()
        record = await manager.store.get("t")
        return record is not None and record.state is TaskState.RUNNING

    await until(running, what="the task RUNNING in the store")
    record = await manager.store.get("t")
    assert record is not None
    assert "halfway" in record.reason
    go.set()
    await finished(manager)


async def _succeed(task: Task, context: TaskContext) -> str:
    return "ok"


def _crash(worker: WorkerAgent) -> None:
    """Silence a worker as a crash would: no more heartbeats, no goodbye, no results."""
    for task in list(worker._background):
        task.cancel()
    worker._draining = True
    worker._to_manager = _drop  # type: ignore[method-assign]


async def _drop(message: Any) -> None:
    return None


async def test_an_assignment_lost_in_transit_is_requeued(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(tasks=[Task(id="t", difficulty=1)])
    events = Events(manager)
    forgetful = await start_worker("forgetful", 5)
    lost_once: list[str] = []
    accept = forgetful._accept

    def drop_first(assignment: TaskAssignment) -> None:
        if not lost_once:
            lost_once.append(assignment.task.id)
            return
        accept(assignment)

    forgetful._accept = drop_first  # type: ignore[method-assign]
    await events.wait_for(EventKind.REQUEUED, "t")
    await finished(manager)
    attempts = await manager.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert attempts[0].error == "assignment to forgetful lost in transit"


async def test_a_result_lost_in_transit_is_resent_and_counted_once(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    worker = await start_worker("w", 5)
    send = worker._to_manager
    dropped: list[object] = []

    async def drop_first_result(message: object) -> None:
        if isinstance(message, TaskResult | TaskResults) and not dropped:
            dropped.append(message)
            return
        await send(message)

    worker._to_manager = drop_first_result  # type: ignore[method-assign]
    await manager.submit([Task(id="t", difficulty=1)])
    await finished(manager)
    assert dropped
    attempts = await manager.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.SUCCEEDED]
    await until(lambda: not worker._unacked, what="the resent result acknowledged")

"""What a worker can run (kinds, labels), changed while it runs, and what it says about tasks.

A manager and workers on every transport of the suite: tasks reach only workers that have a
handler for their kind and every label they require; a waiting task says what is missing;
skills, labels and capacity change live (from the worker or through the manager) and pending
work is placed again; an attempt is RUNNING as soon as its worker starts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from loguru import logger

from serendib import Agent
from serendib.errors import WorkerNotFound
from serendib.tasks.activity import ActivityLog
from serendib.tasks.events import EventKind
from serendib.tasks.messages import ConfigureReply, ConfigureRequest, Reconfigure
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import TaskContext
from tests.helpers import until
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished


async def primes(task: Task, context: TaskContext) -> int:
    stop = int(task.payload.get("stop", 100))
    return sum(1 for n in range(2, stop) if all(n % d for d in range(2, int(n**0.5) + 1)))


async def test_a_task_goes_only_to_a_worker_with_a_handler_for_its_kind(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    tasks = [
        Task(id="p", difficulty=2, kind="primes", payload={"stop": 30}),
        Task(id="odd", difficulty=1, kind="nobody-runs-this"),
    ]
    manager = await manager_factory(tasks=tasks)
    events = Events(manager)
    await start_worker("expert", 9)  # skilled, but only simulate
    await start_worker("primer", 3, handlers={"primes": primes})
    [done] = await events.wait_for(EventKind.SUCCEEDED, "p")
    assert done.worker == "primer"
    await manager.flush()
    record = await manager.store.get("p")
    assert record is not None
    assert record.output == 10
    assert manager.waiting_reason("odd") == (
        "waiting for a worker with general >= 1, kind nobody-runs-this "
        "(no connected worker handles kind 'nobody-runs-this')"
    )
    [pending] = (await manager.store.query(state=TaskState.PENDING))[0]
    assert "no connected worker handles kind 'nobody-runs-this'" in (
        manager.book.waiting_reason(pending).reason
    )


async def test_required_labels_pick_the_worker_and_a_missing_one_is_named(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    tasks = [
        Task(id="train", difficulty=2, labels=("gpu", "region=eu")),
        Task(id="tpu", difficulty=2, labels=("tpu",)),
    ]
    manager = await manager_factory(tasks=tasks)
    events = Events(manager)
    await start_worker("cpu", 9, labels=["region=eu"])
    await start_worker("gpu-eu", 5, labels=["gpu", "region=eu"])
    [done] = await events.wait_for(EventKind.SUCCEEDED, "train")
    assert done.worker == "gpu-eu"
    assert manager.workers["gpu-eu"].labels == ("gpu", "region=eu")
    reason = manager.waiting_reason("tpu")
    assert reason is not None
    assert reason.endswith("(no connected worker has label 'tpu')")


async def test_an_attempt_is_running_as_soon_as_its_worker_starts_it(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go = asyncio.Event()

    async def quiet(task: Task, context: TaskContext) -> None:
        await go.wait()  # never reports progress

    manager = await manager_factory(tasks=[Task(id="t", difficulty=1, kind="quiet")])
    events = Events(manager)
    await start_worker("w", 5, handlers={"quiet": quiet})
    [started] = await events.wait_for(EventKind.STARTED, "t")
    assert started.worker == "w"
    record = manager.book.get("t")
    assert record is not None
    assert record.state is TaskState.RUNNING
    await manager.flush()
    stored = await manager.store.get("t")
    assert stored is not None
    assert stored.state is TaskState.RUNNING
    go.set()
    await finished(manager)
    [attempt] = await manager.store.attempts("t")
    assert attempt.started_at is not None
    assert attempt.started_at <= (attempt.finished_at or 0)


async def test_a_fast_task_is_reported_by_its_result_alone(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(tasks=[Task(id=f"t{i}", difficulty=1) for i in range(20)])
    events = Events(manager)
    await start_worker("w", 5, capacity=4)
    await finished(manager)
    # Finished before the worker said anything: no separate "started" on the way.
    assert not [e for e in events.seen if e.kind is EventKind.STARTED]
    assert manager.stats.succeeded == 20


async def test_a_worker_reconfigured_live_gets_the_work_it_can_now_do(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go = asyncio.Event()

    async def hold(task: Task, context: TaskContext) -> None:
        await go.wait()

    tasks = [Task(id="py", difficulty=7, required_skill="python")]
    tasks += [Task(id=f"h{i}", difficulty=1, kind="hold") for i in range(2)]
    manager = await manager_factory(tasks=tasks)
    events = Events(manager)
    worker = await start_worker("w", 5, handlers={"hold": hold})
    await events.wait_for(EventKind.STARTED, count=1)
    assert manager.load("w") == 1  # capacity 1: one hold task runs, one waits
    assert (manager.waiting_reason("py") or "").endswith("(no connected worker has python)")

    info = await worker.reconfigure(skills={"general": 5, "python": 8}, capacity=3)
    assert info.capacity == 3
    await events.wait_for(EventKind.STARTED, count=2)  # the second hold task
    [py] = await events.wait_for(EventKind.SUCCEEDED, "py")
    assert py.worker == "w"
    assert manager.workers["w"].skills == {"general": 5, "python": 8}
    assert manager.load("w") == 2
    go.set()
    await finished(manager)
    assert manager.stats.succeeded == 3


async def test_the_manager_reconfigures_a_worker_for_a_client(
    manager_factory: MakeManager, start_worker: StartWorker, hub_url: str, workspace: str
) -> None:
    manager = await manager_factory(tasks=[Task(id="g", difficulty=1, labels=("gpu",))])
    events = Events(manager)
    worker = await start_worker("w", 5)
    await until(lambda: "w" in manager.workers, what="w known")
    async with Agent("cli", workspace, transport=hub_url, role="client") as client:
        change = Reconfigure(labels=("gpu",), capacity=2)
        reply = await client.request("manager", ConfigureRequest(worker="w", change=change))
    assert isinstance(reply, ConfigureReply)
    assert reply.info.labels == ("gpu",)
    assert reply.info.capacity == 2
    assert reply.info.skills == {"general": 5}  # left as it was
    [done] = await events.wait_for(EventKind.SUCCEEDED, "g")
    assert done.worker == "w"
    await until(lambda: worker.labels == ("gpu",) and worker.capacity == 2, what="w changed")
    with pytest.raises(WorkerNotFound, match="nobody"):
        await manager.configure("nobody", Reconfigure(capacity=1))


async def test_a_handler_added_while_running_is_announced(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(tasks=[Task(id="late", difficulty=1, kind="late")])
    events = Events(manager)
    worker = await start_worker("w", 5)
    await until(lambda: "w" in manager.workers, what="w known")
    assert "handles kind 'late'" in (manager.waiting_reason("late") or "")

    @worker.handler("late")
    async def late(task: Task, context: TaskContext) -> str:
        return "ran"

    [done] = await events.wait_for(EventKind.SUCCEEDED, "late")
    assert done.worker == "w"


async def test_a_bad_reconfiguration_is_refused_and_changes_nothing(
    start_worker: StartWorker, manager_factory: MakeManager
) -> None:
    await manager_factory()
    worker = await start_worker("w", 5, labels=["gpu"])
    with pytest.raises(ValueError, match="labels"):
        await worker.reconfigure(labels=["not a label"])
    assert worker.labels == ("gpu",)
    with pytest.raises(ValueError, match="w"):
        await worker.reconfigure(skills={})
    assert worker.skills == {"general": 5}


# --- what workers and the manager log about tasks -----------------------------------------------


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str, dict[str, object]]]]:
    """(level, message, fields) of every log line from now on."""
    seen: list[tuple[str, str, dict[str, object]]] = []
    sink = logger.add(
        lambda m: seen.append((m.record["level"].name, m.record["message"], m.record["extra"])),
        level="DEBUG",
    )
    yield seen
    logger.remove(sink)


async def test_workers_and_the_manager_log_each_task_with_its_outcome(
    manager_factory: MakeManager,
    start_worker: StartWorker,
    lines: list[tuple[str, str, dict[str, object]]],
) -> None:
    manager = await manager_factory(
        tasks=[Task(id="ok", difficulty=1), Task(id="bad", difficulty=9, max_attempts=1)],
        attempt_unqualified=True,
    )
    await start_worker("w", 5)
    await finished(manager)
    text = [message for _, message, _ in lines]
    assert "w: received task ok (simulate, difficulty 1, attempt 1)" in text
    assert any(m.startswith("w: task ok succeeded in ") for m in text)
    [failed] = [(lvl, m, f) for lvl, m, f in lines if m.startswith("w: task bad failed")]
    assert failed[0] == "WARNING"
    assert "w's general 5 < difficulty 9" in failed[1]
    assert failed[2]["task_id"] == "bad"
    assert any(m.startswith("manager: task ok succeeded on w after 1 attempt(s)") for m in text)
    [final] = [(lvl, m) for lvl, m, _ in lines if m.startswith("manager: task bad failed on w")]
    assert final[0] == "WARNING"
    assert any(m.startswith("manager: accepted 2 new tasks") for m in text)


def test_past_its_budget_the_activity_log_summarises(
    lines: list[tuple[str, str, dict[str, object]]],
) -> None:
    log = ActivityLog("w", per_second=3)
    for i in range(10):
        log.event("succeeded" if i % 5 else "failed", "task {} done", i, task_id=str(i))
    log.close()
    mine = [(lvl, m, f) for lvl, m, f in lines if m.startswith("w: ")]
    assert [m for _, m, _ in mine[:3]] == ["w: task 0 done", "w: task 1 done", "w: task 2 done"]
    assert mine[0][2]["task_id"] == "0"
    [(level, summary, fields)] = mine[3:]
    assert level == "INFO"
    assert summary == "w: ... and 7 more task events in the last 1s: failed 1, succeeded 6"
    assert fields["summary"] == {"succeeded": 6, "failed": 1}

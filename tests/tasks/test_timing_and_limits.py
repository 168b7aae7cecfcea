"""Delays, backoff, limits per key and fairness between groups, through the manager."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from serendib.tasks.events import EventKind
from serendib.tasks.models import Backoff, Task, TaskState
from serendib.tasks.worker import TaskContext, TaskFailed
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished


async def test_a_delayed_task_waits_for_its_time_and_says_so(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    events = Events(manager)
    await start_worker("w", 5)
    at = datetime.fromtimestamp(time.time() + 0.4, UTC).isoformat()
    submitted = time.time()
    await manager.submit(
        [
            Task(id="later", difficulty=1, delay_s=0.3),
            Task(id="at", difficulty=1, not_before=at),
            Task(id="now", difficulty=1),
        ]
    )
    waiting = await manager.get_task("later")
    assert waiting is not None
    assert waiting.reason.startswith("delayed: not before ")
    await finished(manager)
    assigned = {e.task_id: e.at for e in events.seen if e.kind is EventKind.ASSIGNED}
    assert assigned["later"] >= submitted + 0.3
    assert assigned["at"] >= datetime.fromisoformat(at).timestamp()
    assert assigned["now"] < assigned["later"]


async def test_failed_attempts_back_off_by_the_factor_and_go_to_more_skilled_workers(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    async def flaky(task: Task, context: TaskContext) -> int:
        if context.level < 9:
            raise TaskFailed(f"level {context.level} is not enough")
        return context.level

    manager = await manager_factory()
    events = Events(manager)
    for name, level in (("junior", 2), ("middle", 5), ("senior", 9)):
        await start_worker(name, level, handlers={"flaky": flaky})
    backoff = Backoff(base_s=0.2, factor=2, jitter=0)
    await manager.submit([Task(id="t", difficulty=1, kind="flaky", max_attempts=3, retry=backoff)])
    await finished(manager)
    ended = [e for e in events.seen if e.kind is EventKind.ATTEMPT_ENDED]
    assigned = [e for e in events.seen if e.kind is EventKind.ASSIGNED]
    assert [e.worker for e in assigned] == ["junior", "middle", "senior"]
    assert assigned[1].escalated
    assert assigned[2].escalated
    assert assigned[1].at - ended[0].at >= 0.2
    assert assigned[2].at - ended[1].at >= 0.4
    record = await manager.store.get("t")
    assert record is not None
    assert (record.state, record.output) == (TaskState.SUCCEEDED, 9)


async def test_the_managers_backoff_applies_to_tasks_that_do_not_say_and_survives_a_restart(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    async def fail_once(task: Task, context: TaskContext) -> str:
        if context.attempt == 1:
            raise TaskFailed("first attempts fail")
        return "ok"

    manager = await manager_factory(retry_backoff=Backoff(base_s=0.6, jitter=0))
    events = Events(manager)
    worker = await start_worker("w", 5, handlers={"once": fail_once})
    await manager.submit([Task(id="t", difficulty=1, kind="once")])
    [failed] = await events.wait_for(EventKind.REQUEUED, "t")
    waiting = await manager.get_task("t")
    assert waiting is not None
    assert waiting.reason.startswith("retry waits out its backoff: not before ")
    await manager.stop()
    await worker.stop()

    again = await manager_factory(retry_backoff=Backoff(base_s=0.6, jitter=0))
    after = Events(again)
    await start_worker("w2", 5, handlers={"once": fail_once})
    await finished(again)
    [assigned] = [e for e in after.seen if e.kind is EventKind.ASSIGNED]
    assert assigned.at >= failed.at + 0.6  # the wait outlived the manager
    record = await again.store.get("t")
    assert record is not None
    assert (record.state, record.attempt) == (TaskState.SUCCEEDED, 2)


async def test_a_concurrency_key_runs_at_most_its_limit_across_workers_and_says_so(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    gate = asyncio.Event()
    running: set[str] = set()
    most = 0

    async def db(task: Task, context: TaskContext) -> None:
        nonlocal most
        running.add(task.id)
        most = max(most, len(running))
        await gate.wait()
        running.discard(task.id)

    manager = await manager_factory(limits={"db": 2})
    events = Events(manager)
    await start_worker("a", 5, capacity=4, handlers={"db": db})
    await start_worker("b", 5, capacity=4, handlers={"db": db})
    tasks = [Task(id=f"q{i}", difficulty=1, kind="db", concurrency_key="db") for i in range(8)]
    await manager.submit([*tasks, Task(id="free", difficulty=1, kind="db")])
    await events.wait_for(EventKind.STARTED, count=3)  # two of db, and the free one
    held = await manager.get_task("q7")
    assert held is not None
    assert held.reason == "held by the limit of 'db': 2 of 2 running or about to"
    gate.set()
    await finished(manager)
    assert most == 2 + 1  # "free" runs beside them
    report = await manager.report()
    assert report.succeeded == 9


async def test_a_rate_spaces_the_starts_of_a_key(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(rates={"api": 4})
    await start_worker("w", 5, capacity=10)
    await manager.submit(
        [Task(id=f"call{i}", difficulty=1, concurrency_key="api") for i in range(10)]
    )
    await finished(manager)
    # The attempts' own assignment times (an event's time is when it was told, later).
    starts = sorted(a.assigned_at for a in await manager.store.all_attempts())
    assert len(starts) == 10
    for first, fifth in zip(starts, starts[4:], strict=False):
        assert fifth - first >= 1.0 - 1e-3  # never 5 starts within a second


async def test_groups_take_turns_so_a_big_group_does_not_delay_a_small_one(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    order: list[str] = []

    async def note(task: Task, context: TaskContext) -> None:
        order.append(task.id)

    manager = await manager_factory()
    big = [Task(id=f"big{i}", difficulty=1 + i % 3, kind="note", group="big") for i in range(60)]
    small = [Task(id=f"small{i}", difficulty=1, kind="note", group="small") for i in range(5)]
    await manager.submit(big)
    await manager.submit(small)
    await start_worker("w", 5, handlers={"note": note})
    await finished(manager)
    assert len(order) == 65
    last_small = max(order.index(t.id) for t in small)
    assert last_small < 12  # served in turns with the big group, not after its 60


async def test_without_groups_the_hardest_go_first(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    order: list[str] = []

    async def note(task: Task, context: TaskContext) -> Any:
        order.append(task.id)

    manager = await manager_factory()
    await manager.submit(
        [Task(id=f"d{level}", difficulty=level, kind="note") for level in (1, 3, 2)]
    )
    await start_worker("w", 5, handlers={"note": note})
    await finished(manager)
    assert order == ["d3", "d2", "d1"]

"""Work that depends on work: parents before children, their outputs as inputs, refusals."""

from __future__ import annotations

import asyncio
from typing import Any

from serendib.tasks.events import EventKind
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import TaskContext, TaskFailed
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished


class Recorder:
    """A handler that returns its task's payload, after failing when told, and records
    what it saw (its inputs, and which tasks had succeeded by then)."""

    def __init__(self) -> None:
        self.inputs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    async def __call__(self, task: Task, context: TaskContext) -> Any:
        self.order.append(task.id)
        self.inputs[task.id] = dict(context.inputs)
        if task.payload.get("fail"):
            raise TaskFailed(f"{task.id} was told to fail")
        return task.payload.get("value", task.id)


def step(task_id: str, *parents: str, **options: Any) -> Task:
    payload = {"value": options.pop("value", task_id.upper()), "fail": options.pop("fail", False)}
    return Task(
        id=task_id,
        difficulty=1,
        kind="step",
        depends_on=parents,
        payload=payload,
        max_attempts=1,
        **options,
    )


async def state_of(manager: TaskManager, task_id: str) -> TaskState:
    record = await manager.get_task(task_id)
    assert record is not None
    return record.state


async def test_a_diamond_runs_parents_first_and_hands_children_their_outputs(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    handler = Recorder()
    manager = await manager_factory()
    await start_worker("w", 5, capacity=4, handlers={"step": handler})
    # Submitted children first: order within a submission does not matter.
    reply = await manager.submit(
        [step("d", "b", "c"), step("b", "a", value=2), step("c", "a", value=3), step("a", value=1)]
    )
    assert sorted(reply.accepted) == ["a", "b", "c", "d"]
    await finished(manager)
    assert handler.order[0] == "a"
    assert handler.order[-1] == "d"
    assert handler.inputs == {"a": {}, "b": {"a": 1}, "c": {"a": 1}, "d": {"b": 2, "c": 3}}
    for task_id in "abcd":
        assert await state_of(manager, task_id) is TaskState.SUCCEEDED


async def test_a_waiting_child_says_what_it_waits_for(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    gate = asyncio.Event()

    async def slow(task: Task, context: TaskContext) -> str:
        await gate.wait()
        return task.id

    manager = await manager_factory()
    events = Events(manager)
    await start_worker("w", 5, capacity=2, handlers={"slow": slow})
    await manager.submit(
        [
            Task(id="p1", difficulty=1, kind="slow"),
            Task(id="p2", difficulty=1, kind="slow"),
            Task(id="child", difficulty=1, kind="slow", depends_on=["p1", "p2"]),
        ]
    )
    await events.wait_for(EventKind.STARTED, "p2")
    record = await manager.get_task("child")
    assert record is not None
    assert record.state is TaskState.PENDING
    assert record.reason == "waiting for parents p1, p2 (0 of 2 done)"
    gate.set()
    await finished(manager)
    assert await state_of(manager, "child") is TaskState.SUCCEEDED


async def test_a_failed_parent_cancels_its_descendants_unless_they_run_anyway(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    handler = Recorder()
    manager = await manager_factory()
    await start_worker("w", 5, capacity=4, handlers={"step": handler})
    await manager.submit(
        [
            step("ok"),
            step("bad", fail=True),
            step("child", "ok", "bad"),
            step("grandchild", "child"),
            step("cleanup", "ok", "bad", run_anyway=True),
        ]
    )
    await finished(manager)
    child = await manager.get_task("child")
    grandchild = await manager.get_task("grandchild")
    assert child is not None
    assert grandchild is not None
    assert (child.state, child.error) == (TaskState.CANCELLED, "parent bad failed")
    assert (grandchild.state, grandchild.error) == (TaskState.CANCELLED, "parent child cancelled")
    assert await state_of(manager, "cleanup") is TaskState.SUCCEEDED
    assert handler.inputs["cleanup"] == {"ok": "OK"}  # the failed parent gave nothing
    assert "child" not in handler.order
    assert "grandchild" not in handler.order


async def test_unknown_parents_and_cycles_are_refused_and_the_rest_accepted(
    manager_factory: MakeManager,
) -> None:
    manager = await manager_factory()
    reply = await manager.submit(
        [
            step("fine"),
            step("orphan", "nobody"),
            step("below-orphan", "orphan"),
            step("x", "y"),
            step("y", "z"),
            step("z", "x"),
            step("below-cycle", "x"),
            step("after-fine", "fine"),
        ]
    )
    assert sorted(reply.accepted) == ["after-fine", "fine"]
    assert reply.rejected == {
        "orphan": "unknown parent nobody",
        "below-orphan": "parent orphan was refused",
        "x": "in a dependency cycle: x -> y -> z -> x",
        "y": "in a dependency cycle: x -> y -> z -> x",
        "z": "in a dependency cycle: x -> y -> z -> x",
        "below-cycle": "depends on a dependency cycle",
    }
    assert await manager.get_task("orphan") is None  # nothing refused is stored


async def test_a_parent_that_ended_before_its_child_was_submitted_still_counts(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    handler = Recorder()
    manager = await manager_factory()
    await start_worker("w", 5, handlers={"step": handler})
    await manager.submit([step("early", value={"rows": 3}), step("doomed", fail=True)])
    await finished(manager)
    reply = await manager.submit([step("late", "early"), step("late-doomed", "doomed")])
    assert sorted(reply.accepted) == ["late", "late-doomed"]
    await finished(manager)
    assert handler.inputs["late"] == {"early": {"rows": 3}}
    doomed = await manager.get_task("late-doomed")
    assert doomed is not None
    assert doomed.state is TaskState.CANCELLED
    assert doomed.error == "parent doomed failed"
    assert await manager.store.children("early") == ["late"]


async def test_dependencies_survive_a_manager_restart(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    gate = asyncio.Event()
    handler = Recorder()

    async def gated(task: Task, context: TaskContext) -> Any:
        await gate.wait()
        return await handler(task, context)

    manager = await manager_factory()
    events = Events(manager)
    worker = await start_worker("w", 5, capacity=2, handlers={"step": gated})
    await manager.submit(
        [step("first", value=10), step("second", "first"), step("third", "second")]
    )
    await events.wait_for(EventKind.STARTED, "first")
    await manager.stop()

    again = await manager_factory()
    gate.set()
    await finished(again)
    assert handler.inputs["second"] == {"first": 10}
    assert handler.inputs["third"] == {"second": "SECOND"}
    assert await state_of(again, "third") is TaskState.SUCCEEDED
    await worker.stop()


async def test_a_parent_and_its_child_run_again_together_in_order(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    handler = Recorder()
    manager = await manager_factory()
    broken = await start_worker("w", 5, capacity=2, handlers={"step": handler})
    await manager.submit([step("parent", fail=True), step("child", "parent")])
    await finished(manager)
    assert await state_of(manager, "child") is TaskState.CANCELLED
    await broken.stop()

    # The cause fixed: a worker whose handler no longer fails.
    async def fixed(task: Task, context: TaskContext) -> Any:
        handler.order.append(task.id)
        handler.inputs[task.id] = dict(context.inputs)
        return task.id

    await start_worker("fixed", 6, handlers={"step": fixed})
    reply = await manager.retry(["child", "parent"])
    assert sorted(reply.retried) == ["child", "parent"]
    await finished(manager)
    assert await state_of(manager, "child") is TaskState.SUCCEEDED
    assert handler.inputs["child"] == {"parent": "parent"}

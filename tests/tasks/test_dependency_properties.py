"""Properties of dependencies and limits through a real manager and workers, on random graphs:
never a child before its parents, never more than N running per key, never a task lost or
run to success twice."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import TaskContext, TaskFailed, WorkerAgent
from serendib.transports.memory import MemoryHub, MemoryTransport
from tests.helpers import DEADLINE


@dataclass
class Graph:
    tasks: list[Task]
    limit: int


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    size = draw(st.integers(1, 14))
    tasks = []
    for i in range(size):
        parents = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        tasks.append(
            Task(
                id=f"t{i}",
                difficulty=1,
                kind="work",
                depends_on=[f"t{p}" for p in parents],
                run_anyway=draw(st.booleans()),
                concurrency_key=draw(st.sampled_from([None, "k"])),
                max_attempts=1,
                payload={"fail": draw(st.integers(0, 5)) == 0},
            )
        )
    order = draw(st.permutations(tasks))  # a submission's order does not matter
    return Graph(list(order), draw(st.integers(1, 3)))


@dataclass
class Seen:
    most_keyed: int = 0
    keyed: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)


async def run_graph(graph: Graph, store: str) -> tuple[Seen, dict[str, TaskState]]:
    seen = Seen()
    keyed = {t.id for t in graph.tasks if t.concurrency_key}

    async def work(task: Task, context: TaskContext) -> str:
        seen.started.append(task.id)
        if task.id in keyed:
            seen.keyed.add(task.id)
            seen.most_keyed = max(seen.most_keyed, len(seen.keyed))
        await asyncio.sleep(0)  # let others start beside it
        seen.keyed.discard(task.id)
        if task.payload["fail"]:
            raise TaskFailed("told to")
        return task.id

    hub = MemoryHub.private()
    manager = TaskManager(
        workspace_id="p", transport=MemoryTransport(hub), store=store, limits={"k": graph.limit}
    )
    manager.add_listener(seen.events.append)
    await manager.start()
    workers = [
        WorkerAgent(
            f"w{i}",
            5,
            capacity=3,
            workspace_id="p",
            transport=MemoryTransport(hub),
            handlers={"work": work},
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            await worker.start()
        reply = await manager.submit(graph.tasks)
        assert sorted(reply.accepted) == sorted(t.id for t in graph.tasks)
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
        found = await manager.store.get_many([t.id for t in graph.tasks])
        return seen, {task_id: r.state for task_id, r in found.items()}
    finally:
        for worker in workers:
            await worker.stop(drain_timeout=1)
        await manager.stop()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(graph=graphs())
def test_children_never_run_before_their_parents_and_every_task_ends_once(graph: Graph) -> None:
    with tempfile.TemporaryDirectory() as directory:
        seen, states = asyncio.run(run_graph(graph, str(Path(directory) / "t.db")))

    by_id = {t.id: t for t in graph.tasks}
    assert set(states) == set(by_id)  # nothing lost
    assert all(state.is_final for state in states.values())
    assert len(seen.started) == len(set(seen.started))  # nothing run twice
    assert seen.most_keyed <= graph.limit
    ended_at: dict[str, float] = {}
    for event in seen.events:
        if event.kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED):
            ended_at.setdefault(event.task_id or "", event.at)
    for event in seen.events:
        if event.kind is not EventKind.ASSIGNED:
            continue
        task = by_id[event.task_id or ""]
        for parent in task.depends_on:
            assert ended_at[parent] <= event.at  # parents first, always
            if not task.run_anyway:
                assert states[parent] is TaskState.SUCCEEDED
    for task in graph.tasks:
        failed_parent = any(states[p] is not TaskState.SUCCEEDED for p in task.depends_on)
        if failed_parent and not task.run_anyway:
            assert states[task.id] is TaskState.CANCELLED
        elif task.payload["fail"]:
            assert states[task.id] is TaskState.FAILED
        else:
            assert states[task.id] is TaskState.SUCCEEDED

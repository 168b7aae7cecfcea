"""Prefetch: a worker keeps assignments ready beyond its running slots, and loses none.

The manager gives a worker up to ``capacity + prefetch`` attempts; the worker runs
``capacity`` at a time and starts the next the moment a slot frees. Prefetched attempts are
ASSIGNED (not running) until they start, can be cancelled, and go back to the queue with
their worker.
"""

from __future__ import annotations

import asyncio

from serendib.tasks.events import EventKind
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import (
    MAX_AUTO_PREFETCH,
    PREFETCH_WINDOW_S,
    TaskContext,
    WorkerAgent,
    _auto_prefetch,
)
from tests.helpers import until
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, _crash, finished


def gate() -> tuple[asyncio.Event, object]:
    go = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await go.wait()
        return task.id

    return go, held


async def test_a_single_slot_worker_holds_its_prefetch_and_runs_one_at_a_time(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go, held = gate()
    manager = await manager_factory(
        tasks=[Task(id=f"t{i}", difficulty=1, kind="held") for i in range(6)]
    )
    events = Events(manager)
    await start_worker("w", 5, capacity=1, prefetch=3, handlers={"held": held})
    await events.wait_for(EventKind.ASSIGNED, count=4)
    await events.wait_for(EventKind.STARTED, count=1)
    assert manager.load("w") == 4  # 1 running + 3 ready; 2 wait in the manager
    assert manager.scheduler.pending_count == 2
    states = [r.state for r in (manager.book.get(f"t{i}") for i in range(6)) if r is not None]
    assert states.count(TaskState.RUNNING) == 1
    assert states.count(TaskState.ASSIGNED) == 3
    assert "waiting for a free slot" in (manager.waiting_reason("t5") or "")
    go.set()
    await finished(manager)
    assert manager.stats.succeeded == 6


async def test_a_prefetched_task_can_be_cancelled_before_it_starts(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go, held = gate()
    manager = await manager_factory(
        tasks=[Task(id=f"t{i}", difficulty=1, kind="held") for i in range(3)]
    )
    events = Events(manager)
    await start_worker("w", 5, capacity=1, prefetch=2, handlers={"held": held})
    await events.wait_for(EventKind.ASSIGNED, count=3)
    [running] = await events.wait_for(EventKind.STARTED)
    waiting = next(f"t{i}" for i in range(3) if f"t{i}" != running.task_id)
    reply = await manager.cancel(waiting)
    assert reply.cancelled
    go.set()
    await finished(manager)
    assert manager.stats.cancelled == 1
    assert manager.stats.succeeded == 2
    started = {e.task_id for e in events.seen if e.kind is EventKind.STARTED}
    assert waiting not in started


async def test_prefetched_tasks_go_back_to_the_queue_when_their_worker_is_lost(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    go, held = gate()
    manager = await manager_factory(
        tasks=[Task(id=f"t{i}", difficulty=1, kind="held") for i in range(4)],
        lost_grace_s=0,
    )
    events = Events(manager)
    doomed = await start_worker("doomed", 2, capacity=1, prefetch=3, handlers={"held": held})
    await events.wait_for(EventKind.ASSIGNED, count=4)
    assert manager.load("doomed") == 4
    _crash(doomed)
    await start_worker("spare", 9, capacity=4, handlers={"held": held})
    await events.wait_for(EventKind.REQUEUED, count=4)
    go.set()
    await finished(manager)
    finals = [e for e in events.seen if e.kind is EventKind.SUCCEEDED]
    assert sorted(e.task_id or "" for e in finals) == [f"t{i}" for i in range(4)]
    assert {e.worker for e in finals} == {"spare"}


async def test_a_worker_adjusts_its_prefetch_to_its_tasks_and_tells_the_manager(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(tasks=[Task(id=f"t{i}", difficulty=1) for i in range(300)])
    assert WorkerAgent("idle", 5).prefetch == 0  # before any task has run: none
    worker = await start_worker("w", 5, capacity=1)  # prefetch adjusted (the default)
    await finished(manager)
    # Instant tasks: many ready (how many depends on the run times seen, under 0.8 ms each
    # here however busy the machine), and the manager places that many.
    adjusted = worker.prefetch
    assert adjusted >= 64
    await until(lambda: manager.workers["w"].prefetch == adjusted, what="told")
    assert manager.workers["w"].slots == 1 + adjusted
    info = await worker.reconfigure(prefetch=0)  # fixed from now on
    assert info.prefetch == 0
    await until(lambda: manager.workers["w"].prefetch == 0, what="told")


def test_the_adjusted_prefetch_is_the_window_of_work_within_its_bounds() -> None:
    assert _auto_prefetch(1, None) == 0  # nothing has run yet
    assert _auto_prefetch(1, 2 * PREFETCH_WINDOW_S) == 0  # long tasks: a round trip is small
    assert _auto_prefetch(1, 2.0) == 0
    assert _auto_prefetch(1, PREFETCH_WINDOW_S / 10) == 10
    assert _auto_prefetch(4, PREFETCH_WINDOW_S / 10) == 40  # per slot
    assert _auto_prefetch(1, 1e-6) == _auto_prefetch(8, 0.0) == MAX_AUTO_PREFETCH

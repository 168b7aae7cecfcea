"""A slow worker is not a lost one.

An overloaded worker process misses heartbeats without being dead, and handles its inbox
late; requeueing its work would run every attempt twice and add load where there is already
too much. A worker that falls silent is *suspect*: the manager stops giving it work at once,
requeues its attempts only after ``lost_grace_s``, and gives them back to it if it is heard
from before then. One that says goodbye, or comes back under a new identity (restarted), has
lost what it held: requeued at once. An assignment still waiting in a busy worker's inbox is
sent again, not requeued.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from serendib import Agent, on_message
from serendib.tasks.events import EventKind
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import StatusReply, StatusRequest
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import TaskContext, WorkerAgent
from tests.helpers import DEADLINE, until
from tests.tasks.conftest import HEARTBEAT, StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished

LONG_GRACE_S = 60.0
"""Longer than any test's deadline: a test that passes never waited for it."""


def _silence(worker: WorkerAgent) -> None:
    """Stop the worker's heartbeats and syncs, as a starved event loop would."""
    for task in list(worker._background):
        task.cancel()


async def _drop(message: object) -> None:
    return None


def _resume(worker: WorkerAgent) -> None:
    worker._spawn(worker._heartbeat_loop(), "heartbeat")


async def test_a_silent_worker_gets_no_new_work_and_keeps_its_attempts_when_it_returns(
    manager_factory: MakeManager, start_worker: StartWorker, hub_url: str, workspace: str
) -> None:
    hold = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await hold.wait()
        return f"done by {context.worker.name}"

    manager = await manager_factory(
        tasks=[Task(id="first", difficulty=1, kind="job")], lost_grace_s=LONG_GRACE_S
    )
    events = Events(manager)
    slow = await start_worker("slow", 5, capacity=2, handlers={"job": held})
    await events.wait_for(EventKind.ASSIGNED, "first")

    _silence(slow)
    await until(lambda: manager.suspects == ["slow"], what="the silent worker suspect")
    async with Agent("client", workspace, transport=hub_url) as client:
        status = await client.request("manager", StatusRequest(), timeout=DEADLINE)
    assert isinstance(status, StatusReply)
    assert [(w.info.name, w.load, w.suspect) for w in status.workers] == [("slow", 1, True)]
    await manager.submit([Task(id="second", difficulty=1, kind="job")])
    queued = manager.book.get("second")  # in memory: assignments are made as it is queued
    assert queued is not None
    assert queued.state is TaskState.PENDING, queued.reason  # not given to "slow"

    _resume(slow)
    await events.wait_for(EventKind.ASSIGNED, "second")
    assert manager.book.suspects == []
    hold.set()
    await finished(manager)

    for task_id in ("first", "second"):
        record = await manager.store.get(task_id)
        assert record is not None
        assert (record.state, record.output) == (TaskState.SUCCEEDED, "done by slow")
        outcomes = [a.outcome for a in await manager.store.attempts(task_id)]
        assert outcomes == [AttemptOutcome.SUCCEEDED]
    assert manager.stats.requeued_lost == 0


async def _silent_holder(
    manager_factory: MakeManager, start_worker: StartWorker, name: str, grace_s: float
) -> tuple[TaskManager, WorkerAgent, asyncio.Event]:
    """A manager whose task "t" is held by worker ``name``, which then falls silent.

    Returns the manager, the worker, and the event that lets the worker's handler end.
    """
    hold = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        await hold.wait()

    manager = await manager_factory(
        tasks=[Task(id="t", difficulty=1, kind="job")], lost_grace_s=grace_s
    )
    events = Events(manager)
    holder = await start_worker(name, 5, handlers={"job": stuck})
    await events.wait_for(EventKind.ASSIGNED, "t")
    _silence(holder)
    await until(lambda: manager.suspects == [name], what="the silent worker suspect")
    return manager, holder, hold


async def _by_name(task: Task, context: TaskContext) -> str:
    return context.worker.name


async def _requeued_and_done_by(manager: TaskManager, worker: str) -> None:
    """Task "t" ended: its first attempt LOST, then SUCCEEDED on ``worker``."""
    await finished(manager)
    record = await manager.store.get("t")
    assert record is not None
    assert (record.state, record.output) == (TaskState.SUCCEEDED, worker)
    attempts = await manager.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert manager.suspects == []


async def test_a_silent_workers_attempts_are_requeued_when_the_grace_runs_out(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager, gone, hold = await _silent_holder(manager_factory, start_worker, "gone", 0.5)
    await start_worker("backup", 5, handlers={"job": _by_name})

    await _requeued_and_done_by(manager, "backup")
    # It was only silent, not dead: told to drop the attempt that went elsewhere.
    await until(lambda: gone.in_flight == 0, what="the requeued attempt cancelled on 'gone'")
    hold.set()


async def test_a_worker_restarted_under_the_same_name_loses_its_attempts_at_once(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager, first, hold = await _silent_holder(manager_factory, start_worker, "w", LONG_GRACE_S)
    first._to_manager = _drop  # type: ignore[method-assign]
    await first.stop(drain_timeout=0)  # its goodbye names an identity already lost
    second = await start_worker("w", 5, handlers={"job": _by_name})

    await _requeued_and_done_by(manager, "w")
    assert second.completed == 1
    hold.set()


async def test_a_goodbye_from_a_silent_worker_requeues_its_attempts_at_once(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager, leaving, hold = await _silent_holder(
        manager_factory, start_worker, "leaving", LONG_GRACE_S
    )
    await start_worker("backup", 5, handlers={"job": _by_name})
    leaving._to_manager = _drop  # type: ignore[method-assign]
    await leaving.stop(drain_timeout=0)  # only its goodbye reaches the manager

    await _requeued_and_done_by(manager, "backup")
    hold.set()


class Stall(BaseModel):
    """Holds up a worker's inbox until released, as a busy process would."""


class StallingWorker(WorkerAgent):
    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.unblock = asyncio.Event()

    @on_message
    async def _stall(self, stall: Stall) -> None:
        await self.unblock.wait()


async def test_an_assignment_waiting_in_a_busy_workers_inbox_is_resent_not_requeued(
    manager_factory: MakeManager, hub_url: str, workspace: str
) -> None:
    runs: list[int] = []

    async def job(task: Task, context: TaskContext) -> str:
        runs.append(context.attempt)
        return "ok"

    manager = await manager_factory()
    busy = StallingWorker(
        "busy",
        5,
        workspace_id=workspace,
        transport=hub_url,
        heartbeat_interval=HEARTBEAT,
        time_scale=0,
        handlers={"job": job},
    )
    await busy.start()
    try:
        await until(lambda: "busy" in manager.workers, what="the worker known")
        await manager.send("busy", Stall())
        await manager.submit([Task(id="t", difficulty=1, kind="job")])
        await until(lambda: manager.stats.assignments_resent >= 2, what="the assignment resent")
        busy.unblock.set()
        await finished(manager)
    finally:
        await busy.stop()

    assert runs == [1]  # the copies that came after the first were ignored
    outcomes = [a.outcome for a in await manager.store.attempts("t")]
    assert outcomes == [AttemptOutcome.SUCCEEDED]
    assert manager.stats.requeued_lost == 0

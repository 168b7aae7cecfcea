"""A manager restarted on the same store takes over what its workers still hold.

Workers outlive a manager restart. The attempts they hold stay theirs for a grace: a result
finished while the manager was down, or after it is back, counts; the task does not run
again. An attempt no worker claims goes back to the queue.
"""

from __future__ import annotations

import asyncio

from serendib.tasks.events import EventKind
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import TaskContext
from tests.helpers import until
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished

LONG_S = 60.0
"""Longer than any test's deadline: a test that passes never waited for it."""


async def test_results_of_attempts_held_across_a_manager_restart_count_once(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    hold = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await hold.wait()
        return f"{task.id} by {context.worker.name}"

    first = await manager_factory(
        tasks=[Task(id=f"t{i}", difficulty=1, kind="job") for i in range(3)],
        resume_grace_s=LONG_S,
    )
    events = Events(first)
    worker = await start_worker("w", 5, capacity=3, handlers={"job": held})
    await events.wait_for(EventKind.ASSIGNED, count=3)
    await first.stop()

    hold.set()  # they finish while no manager runs: the results wait on the worker
    await until(lambda: worker.in_flight == 0, what="the attempts finished on the worker")
    second = await manager_factory(resume_grace_s=LONG_S)
    await finished(second)

    for i in range(3):
        record = await second.store.get(f"t{i}")
        assert record is not None
        assert (record.state, record.output) == (TaskState.SUCCEEDED, f"t{i} by w")
        attempts = await second.store.attempts(f"t{i}")
        assert [a.outcome for a in attempts] == [AttemptOutcome.SUCCEEDED]
    assert second.stats.requeued_lost == 0
    assert second.stale_results == 0
    assert second.stats.by_worker == {"w": 3}  # counted once, and kept across the restart
    third = await manager_factory()
    assert third.stats.by_worker == {"w": 3}


async def test_an_attempt_its_worker_does_not_hold_is_requeued_when_the_manager_restarts(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    hold = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await hold.wait()
        return context.worker.name

    first = await manager_factory(tasks=[Task(id="t", difficulty=1, kind="job")])
    events = Events(first)
    gone = await start_worker("w", 5, handlers={"job": held})
    await events.wait_for(EventKind.ASSIGNED, "t")
    await first.stop()
    await gone.stop(drain_timeout=0)  # the attempt dies with this run of "w"
    hold.set()

    second = await manager_factory(resume_grace_s=LONG_S)
    await start_worker("w", 5, handlers={"job": held})  # a new run: it holds nothing
    await finished(second)
    attempts = await second.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert "w does not hold it" in (attempts[0].error or "")


async def test_an_attempt_nobody_claims_is_requeued_after_the_grace(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    hold = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await hold.wait()
        return context.worker.name

    first = await manager_factory(tasks=[Task(id="t", difficulty=1, kind="job")])
    events = Events(first)
    gone = await start_worker("gone", 5, handlers={"job": held})
    await events.wait_for(EventKind.ASSIGNED, "t")
    await first.stop()
    await gone.stop(drain_timeout=0)
    hold.set()

    second: TaskManager = await manager_factory(resume_grace_s=0.2)
    await start_worker("other", 5, handlers={"job": held})
    await finished(second)
    record = await second.store.get("t")
    assert record is not None
    assert (record.state, record.output) == (TaskState.SUCCEEDED, "other")
    attempts = await second.store.attempts("t")
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert "not claimed by its worker" in (attempts[0].error or "")

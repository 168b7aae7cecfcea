"""Replay: failed or cancelled tasks run again as new attempts, their history kept."""

from __future__ import annotations

import asyncio

import pytest

from serendib import AsyncClient
from serendib.tasks.events import EventKind
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskOutcome
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import TaskContext
from tests.helpers import until
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished


async def test_a_failed_task_runs_again_with_fresh_attempts_and_keeps_its_history(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(
        tasks=[Task(id="hard", difficulty=8, max_attempts=2)], attempt_unqualified=True
    )
    await start_worker("junior", 3)
    await finished(manager)
    failed = await manager.store.get("hard")
    assert failed is not None
    assert (failed.state, failed.attempt) == (TaskState.FAILED, 2)

    events = Events(manager)
    await start_worker("senior", 9)
    reply = await manager.retry(["hard", "hard"])
    assert (reply.retried, reply.refused, reply.unknown) == (["hard"], {}, [])
    [done] = await events.wait_for(EventKind.SUCCEEDED, "hard")
    assert done.worker == "senior"
    await manager.flush()
    record = await manager.store.get("hard")
    assert record is not None
    assert (record.state, record.attempt, record.replays, record.attempt_base) == (
        TaskState.SUCCEEDED,
        3,
        1,
        2,
    )
    outcomes = [a.outcome for a in await manager.store.attempts("hard")]
    assert outcomes == [AttemptOutcome.FAILED, AttemptOutcome.FAILED, AttemptOutcome.SUCCEEDED]
    report = await manager.report()
    assert report.attempts.replays == 1
    assert report.succeeded == 1


async def test_what_cannot_be_retried_is_refused_with_why(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    hold = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        await hold.wait()

    manager = await manager_factory(
        tasks=[Task(id="ok", difficulty=1), Task(id="busy", difficulty=1, kind="stuck")]
    )
    events = Events(manager)
    await start_worker("w", 5, handlers={"stuck": stuck}, capacity=2)
    await events.wait_for(EventKind.SUCCEEDED, "ok")
    await events.wait_for(EventKind.STARTED, "busy")
    reply = await manager.retry(["ok", "busy", "nosuch"])
    assert reply.retried == []
    assert "succeeded" in reply.refused["ok"]
    assert "has not ended (running)" in reply.refused["busy"]
    assert reply.unknown == ["nosuch"]
    # A cancelled task may run again.
    await manager.cancel("busy")
    hold.set()
    assert (await manager.retry(["busy"])).retried == ["busy"]
    await finished(manager)
    assert (await manager.store.get("busy")).state is TaskState.SUCCEEDED  # type: ignore[union-attr]


async def test_a_replay_survives_a_manager_restart(
    manager_factory: MakeManager, store_url: str, hub_url: str, workspace: str
) -> None:
    first = await manager_factory(
        tasks=[Task(id="t", difficulty=1, wait_timeout_s=0.01)], stop_when_done=False
    )
    await finished(first)  # failed: no worker within its wait
    await first.retry(["t"])
    await first.stop()
    second = TaskManager("manager", workspace_id=workspace, transport=hub_url, store=store_url)
    await second.start()
    try:
        assert second.waiting_reason("t") is not None  # pending again, after the restart
        record = second.book.get("t")
        assert record is not None
        assert (record.replays, record.attempt_base) == (1, 0)
    finally:
        await second.stop()


async def test_the_client_retries_and_is_told_the_new_outcome(
    manager_factory: MakeManager, start_worker: StartWorker, hub_url: str, workspace: str
) -> None:
    await manager_factory(attempt_unqualified=True)
    await start_worker("junior", 3)
    async with AsyncClient(nats=hub_url, workspace=workspace, timeout=10) as client:
        handle = await client.submit(Task(id="x", difficulty=6, max_attempts=1))
        assert (await handle.outcome(timeout=10)).state is TaskState.FAILED
        await start_worker("senior", 9)
        reply = await client.retry(["x"])
        assert reply.retried == ["x"]
        assert (await handle.outcome(timeout=10)).state is TaskState.SUCCEEDED


async def test_an_old_outcome_told_after_the_retry_ends_neither_a_wait_nor_a_handle(
    manager_factory: MakeManager,
    start_worker: StartWorker,
    hub_url: str,
    workspace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await manager_factory(attempt_unqualified=True)
    await start_worker("junior", 3)
    async with AsyncClient(nats=hub_url, workspace=workspace, timeout=10) as client:
        waited, handle = await client.submit(
            [Task(id=i, difficulty=6, max_attempts=1) for i in ("waited", "handle")]
        )
        for ended in (await client.wait(["waited", "handle"], timeout=10)).values():
            assert (ended.state, ended.attempt) == (TaskState.FAILED, 1)
        # Watches made before the retry: of one a wait, of the other a submission again. The
        # manager pushes the old outcomes, and they come after the retry's reply (as they may:
        # a push goes out once the ledger has flushed, a reply at once).
        late: list[TaskOutcome] = []
        told = client._told
        monkeypatch.setattr(client, "_told", late.extend)
        client.forget(["waited"])
        waiting = asyncio.create_task(waited.outcome(timeout=10))
        await client.submit(Task(id="handle", difficulty=6, max_attempts=1))
        await until(lambda: len(late) == 2, what="the old outcomes pushed")
        await start_worker("senior", 9)

        reply = await client.retry(["waited", "handle"])
        monkeypatch.setattr(client, "_told", told)
        told(late)

        for new in (await waiting, await handle.outcome(timeout=10)):
            assert (new.state, new.attempt, new.worker) == (TaskState.SUCCEEDED, 2, "senior")
        assert reply.attempt_bases == {"waited": 1, "handle": 1}


async def test_a_retried_task_that_ends_again_without_an_attempt_is_told_so(
    manager_factory: MakeManager, hub_url: str, workspace: str
) -> None:
    """Its new outcome has the attempt of the old one (its base): told all the same."""
    await manager_factory(stop_when_done=False)
    async with AsyncClient(nats=hub_url, workspace=workspace, timeout=10) as client:
        handle = await client.submit(Task(id="t", difficulty=1, wait_timeout_s=0.05))
        old = await handle.outcome(timeout=10)
        assert (old.state, old.attempt) == (TaskState.FAILED, 0)  # no worker came

        reply = await client.retry(["t"])

        new = await handle.outcome(timeout=10)
        assert (new.state, new.attempt) == (TaskState.FAILED, 0)
        assert old.finished_at is not None
        assert new.finished_at is not None
        assert new.finished_at > old.finished_at
        assert (reply.attempt_bases, reply.ended_at) == ({"t": 0}, {"t": old.finished_at})

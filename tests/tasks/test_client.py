"""The client: submit from a program, be pushed the outcomes, read, cancel, reconfigure.

A manager and workers on every transport of the suite, the client joining as another agent
(across processes it is the same code: see tests/test_client_processes.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from serendib import AsyncClient, Client, ResultError, TaskNotFound, WorkerNotFound
from serendib.tasks.events import EventKind
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import TaskContext
from tests.helpers import until
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import MakeManager


@pytest.fixture
async def client(hub_url: str, workspace: str) -> AsyncIterator[Callable[..., AsyncClient]]:
    made: list[AsyncClient] = []

    def make(**options: Any) -> AsyncClient:
        found = AsyncClient(nats=hub_url, workspace=workspace, timeout=10, **options)
        made.append(found)
        return found

    yield make
    for found in made:
        await found.close()


async def echo(task: Task, context: TaskContext) -> object:
    return task.payload


async def test_submit_one_task_and_await_its_result(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    await manager_factory()
    await start_worker("w", 5, handlers={"echo": echo})
    async with client() as c:
        handle = await c.submit({"id": "t1", "difficulty": 2, "kind": "echo", "payload": {"x": 1}})
        assert handle.id == "t1"
        assert await handle.result(timeout=10) == {"x": 1}
        outcome = await c.outcome("t1")
        assert outcome.state is TaskState.SUCCEEDED
        assert outcome.worker == "w"
        assert outcome.attempt == 1


async def test_many_tasks_stream_in_chunks_and_complete_as_they_come(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    manager = await manager_factory()
    await start_worker("w1", 5, capacity=8)
    await start_worker("w2", 9, capacity=8)
    tasks = [Task(id=f"t{i}", difficulty=1 + i % 9) for i in range(2_000)]
    async with client(chunk=128, window=3) as c:
        handles = await c.submit(tasks)
        assert [h.id for h in handles] == [t.id for t in tasks]
        seen = [o.task_id async for o in c.as_completed(h.id for h in handles)]
    assert sorted(seen) == sorted(t.id for t in tasks)
    assert manager.stats.succeeded == 2_000
    assert manager.stats.submitted == 2_000


async def test_submission_is_idempotent_by_id_and_already_final_tasks_answer_at_once(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    manager = await manager_factory()
    await start_worker("w", 5)
    async with client() as c:
        first = await c.submit([Task(id="a", difficulty=1), Task(id="b", difficulty=1)])
        await c.wait([h.id for h in first], timeout=10)
    async with client() as again:  # another client, told of the old ones in the reply
        summary = await again.submit_many(
            [{"id": "a", "difficulty": 1}, {"id": "c", "difficulty": 1}], watch=True
        )
        assert (summary.accepted, summary.duplicates) == (1, 1)
        outcomes = await again.wait(["a", "c"], timeout=10)
    assert {o.state for o in outcomes.values()} == {TaskState.SUCCEEDED}
    assert manager.stats.submitted == 3


async def test_failures_and_cancels_raise_with_the_reason_and_unknown_ids_are_errors(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    hold = asyncio.Event()

    async def stuck(task: Task, context: TaskContext) -> None:
        await hold.wait()

    manager = await manager_factory(attempt_unqualified=True)
    await start_worker("w", 3, handlers={"stuck": stuck}, capacity=2)
    async with client() as c:
        bad = await c.submit(Task(id="hard", difficulty=9, max_attempts=1))
        with pytest.raises(ResultError, match=r"'hard' failed: .*general 3 < difficulty 9"):
            await bad.result(timeout=10)
        slow = await c.submit(Task(id="slow", difficulty=1, kind="stuck"))
        assert await slow.cancel() is True
        with pytest.raises(ResultError, match="'slow' cancelled"):
            await slow.result(timeout=10)
        assert await c.cancel("slow") is False  # ended already
        with pytest.raises(TaskNotFound, match="nosuch"):
            await c.result("nosuch", timeout=10)
        with pytest.raises(TaskNotFound, match="nosuch"):
            await c.get("nosuch")
        with pytest.raises(TaskNotFound):
            await c.cancel("nosuch")
        with pytest.raises(ValueError, match="task 0: difficulty"):
            await c.submit({"id": "x", "difficulty": 99})
    hold.set()
    assert manager.stats.failed == 1


async def test_result_waits_for_the_outcome_while_the_task_runs(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    go = asyncio.Event()

    async def gated(task: Task, context: TaskContext) -> str:
        await go.wait()
        return "done"

    manager = await manager_factory()
    await start_worker("w", 5, handlers={"gated": gated})
    async with client() as c:
        await c.submit(Task(id="g", difficulty=1, kind="gated"), watch=False)
        waiting = asyncio.create_task(c.result("g", timeout=10))
        started = await _event(manager, EventKind.STARTED)
        assert getattr(started, "task_id", None) == "g"
        assert not waiting.done()
        go.set()
        assert await waiting == "done"


async def _event(manager: TaskManager, kind: EventKind) -> object:
    seen: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    def on(event: object) -> None:
        if getattr(event, "kind", None) is kind and not seen.done():
            seen.set_result(event)

    manager.add_listener(on)
    try:
        return await asyncio.wait_for(seen, 10)
    finally:
        manager.remove_listener(on)


async def test_reading_listing_status_configure_and_events(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    await manager_factory()
    worker = await start_worker("w", 5)
    async with client() as c:
        async with c.events() as events:
            await c.submit([Task(id="e1", difficulty=1)])
            kinds = []
            async for event in events:
                assert event.task_id == "e1"
                kinds.append(event.kind)
                if event.kind is EventKind.SUCCEEDED:
                    break
        assert kinds[0] is EventKind.SUBMITTED
        assert EventKind.ASSIGNED in kinds
        record = await c.get("e1")
        assert record.id == "e1"
        page = await c.list(limit=10)
        assert [r.id for r in page.records] == ["e1"]
        status = await c.status()
        assert [w.info.name for w in status.workers] == ["w"]
        info = await c.configure("w", labels=["gpu"], capacity=2)
        assert (info.labels, info.capacity) == (("gpu",), 2)
        with pytest.raises(WorkerNotFound):
            await c.configure("nobody", capacity=1)
        with pytest.raises(ValueError, match="capacity"):
            await c.configure("w", capacity=0)
    await until(lambda: worker.capacity == 2 and worker.labels == ("gpu",), what="w changed")


def test_the_synchronous_client_from_a_thread_without_a_loop(
    hub_url: str, workspace: str, tmp_path: object
) -> None:
    if hub_url.startswith("memory://"):
        pytest.skip("the in-process transport lives in one event loop; the sync client has its own")
    from serendib.tasks.worker import WorkerAgent

    async def serve(ready: asyncio.Event, stop: asyncio.Event) -> None:
        manager = TaskManager(
            "manager", workspace_id=workspace, transport=hub_url, store=f"{tmp_path}/t.db"
        )
        worker = WorkerAgent("w", 5, workspace_id=workspace, transport=hub_url, time_scale=0)
        await manager.start()
        await worker.start()
        ready.set()
        await stop.wait()
        await worker.stop()
        await manager.stop()

    import threading

    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    server = threading.Thread(target=loop.run_until_complete, args=(serve(ready, stop),))
    server.start()
    try:
        asyncio.run_coroutine_threadsafe(ready.wait(), loop).result(20)
        with Client(nats=hub_url, workspace=workspace, timeout=10) as c:
            handles = c.submit([{"id": f"s{i}", "difficulty": 1} for i in range(50)])
            assert sorted(o.task_id for o in c.as_completed(h.id for h in handles)) == sorted(
                h.id for h in handles
            )
            assert handles[0].result(timeout=10) == {"level": 5}
            assert c.wait(["s1", "s2"], timeout=10)["s1"].succeeded
            with pytest.raises(TaskNotFound):
                c.get("nosuch")
    finally:
        loop.call_soon_threadsafe(stop.set)
        server.join(30)
        loop.close()


async def test_a_client_declared_lost_while_waiting_is_still_told(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    go = asyncio.Event()

    async def gated(task: Task, context: TaskContext) -> str:
        await go.wait()
        return "done"

    manager = await manager_factory()
    await start_worker("w", 5, handlers={"gated": gated})
    async with client() as c:
        handle = await c.submit(Task(id="g", difficulty=1, kind="gated"))
        waiting = asyncio.create_task(handle.result(timeout=10))
        [me] = [a for a in manager.agents if a.name == c.name]
        await manager.on_agent_lost(me)  # silent for a while: a stopped process, a slow loop
        go.set()
        assert await waiting == "done"


async def test_a_submission_sent_without_asking_for_a_reply_is_still_stored(
    manager_factory: MakeManager, hub_url: str, workspace: str
) -> None:
    from serendib import Agent
    from serendib.tasks.messages import SubmitTasks

    manager = await manager_factory()
    submitted = asyncio.Event()
    manager.add_listener(lambda e: submitted.set() if e.kind is EventKind.SUBMITTED else None)
    async with Agent("fire-and-forget", workspace, transport=hub_url, role="client") as agent:
        await agent.send("manager", SubmitTasks(tasks=[Task(id="quiet", difficulty=1)]))
        await asyncio.wait_for(submitted.wait(), 10)
    await manager.flush()
    assert (await manager.store.get("quiet")) is not None


async def test_closing_an_event_stream_keeps_the_clients_watches(
    manager_factory: MakeManager, start_worker: StartWorker, client: Callable[..., AsyncClient]
) -> None:
    go = asyncio.Event()

    async def gated(task: Task, context: TaskContext) -> str:
        await go.wait()
        return "done"

    await manager_factory()
    await start_worker("w", 5, handlers={"gated": gated})
    async with client() as c:
        handle = await c.submit(Task(id="kept", difficulty=1, kind="gated"))
        async with c.events():
            pass  # subscribed, then unsubscribed
        go.set()
        assert await handle.result(timeout=10) == "done"


async def test_a_bad_task_in_a_stream_stops_it_after_the_chunks_before_it(
    manager_factory: MakeManager, client: Callable[..., AsyncClient]
) -> None:
    manager = await manager_factory()
    items: list[dict[str, object]] = [{"id": f"s{i}", "difficulty": 1} for i in range(35)]
    items.append({"id": "bad", "difficulty": 0})
    async with client(chunk=10, window=4) as c:
        with pytest.raises(ValueError, match="task 35: difficulty"):
            await c.submit_many(items)
    assert manager.stats.submitted == 30  # three whole chunks; the fourth held the bad one

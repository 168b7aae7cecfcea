"""The manager's ledger: a message leaves only once the state it acts on is stored.

An assignment is a lease: if it reached a worker before being stored, a manager that crashed
in between would not know the lease existed. These tests watch the order of "stored" and
"received" with a store that is slow, and one that fails and comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from serendib.errors import StoreError
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptKey, AttemptOutcome, Task, TaskAssignment, TaskState
from serendib.tasks.store import AttemptRow, TaskStore, TaskUpdate, open_store
from serendib.tasks.worker import WorkerAgent
from tests.helpers import DEADLINE

Log = list[str]


def _store_with(
    store_url: str, before: Callable[[], Awaitable[None]], log: Log | None = None
) -> TaskStore:
    """The store at ``store_url``; its ``update`` awaits ``before()`` first (which may raise,
    as a database that went away), then logs what it stored in ``log``."""
    store = open_store(store_url)
    update = store.update

    async def watched(
        tasks: Sequence[TaskUpdate] = (),
        attempts: Sequence[AttemptRow] = (),
        stale: Sequence[AttemptKey] = (),
    ) -> None:
        await before()
        await update(tasks, attempts, stale)
        if log is not None:
            log.extend(f"stored {t.id} {t.state}" for t in tasks)

    setattr(store, "update", watched)  # noqa: B010 - this store instance only
    return store


def _failing(times: int, log: Log) -> Callable[[], Awaitable[None]]:
    """A ``before`` that fails the first ``times`` updates."""
    left = [times]

    async def before() -> None:
        if left[0] > 0:
            left[0] -= 1
            log.append("update failed")
            raise StoreError("the database went away")

    return before


class WatchedWorker(WorkerAgent):
    def __init__(self, log: Log, *args: object, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.log = log

    def _accept(self, assignment: TaskAssignment) -> None:
        self.log.append(f"received {assignment.task.id}")
        super()._accept(assignment)


async def _run(tmp_path: Path, hub_url: str, workspace: str, failures: int) -> tuple[Log, Path]:
    log: Log = []
    url = str(tmp_path / "tasks.db")
    manager = TaskManager(
        workspace_id=workspace,
        transport=hub_url,
        store=_store_with(url, _failing(failures, log), log),
        heartbeat_interval=0.1,
    )
    await manager.start()
    worker = WatchedWorker(
        log,
        "w",
        5,
        workspace_id=workspace,
        transport=hub_url,
        heartbeat_interval=0.1,
        time_scale=0,
    )
    await worker.start()
    try:
        await manager.submit([Task(id=f"t{n}", difficulty=1) for n in range(5)])
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
    finally:
        await worker.stop()
        await manager.stop()
    return log, Path(url)


def _check_order(log: Log) -> None:
    for n in range(5):
        assigned = log.index(f"stored t{n} assigned")
        received = log.index(f"received t{n}")
        finished = log.index(f"stored t{n} succeeded")
        assert assigned < received < finished, log


async def test_an_assignment_reaches_its_worker_only_after_it_is_stored(
    tmp_path: Path, hub_url: str, workspace: str
) -> None:
    log, _ = await _run(tmp_path, hub_url, workspace, failures=0)
    _check_order(log)


async def test_a_failed_save_is_retried_and_nothing_it_holds_is_sent_before(
    tmp_path: Path, hub_url: str, workspace: str
) -> None:
    log, path = await _run(tmp_path, hub_url, workspace, failures=2)

    assert log[:2] == ["update failed", "update failed"]
    _check_order(log)
    async with open_store(str(path)) as store:
        records = await store.all_records()
        attempts = await store.all_attempts()
    assert [(r.id, r.state, r.attempt) for r in records] == [
        (f"t{n}", TaskState.SUCCEEDED, 1) for n in range(5)
    ]
    assert [a.outcome for a in attempts] == [AttemptOutcome.SUCCEEDED] * 5


async def test_a_task_read_while_its_change_is_being_saved_shows_the_change(
    tmp_path: Path, hub_url: str, workspace: str
) -> None:
    saving = asyncio.Event()
    release = asyncio.Event()

    async def held() -> None:
        saving.set()
        await release.wait()

    store = _store_with(str(tmp_path / "tasks.db"), held)
    manager = TaskManager(workspace_id=workspace, transport=hub_url, store=store)
    await manager.start()
    try:
        await manager.submit([Task(id="t", difficulty=3)])
        first = await manager.cancel("t")
        await asyncio.wait_for(saving.wait(), DEADLINE)
        again = await manager.cancel("t")  # the store still says "pending"

        assert (first.cancelled, first.record.state) == (True, TaskState.CANCELLED)
        assert (again.cancelled, again.record.state) == (False, TaskState.CANCELLED)
        stored = await store.get("t")
        assert stored is not None
        assert stored.state is TaskState.PENDING  # the change is still on its way
        release.set()
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
        stored = await store.get("t")
        assert stored is not None
        assert stored.state is TaskState.CANCELLED
    finally:
        release.set()
        await manager.stop()

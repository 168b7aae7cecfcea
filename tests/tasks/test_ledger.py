"""The manager's ledger: a message leaves only once the state it acts on is stored.

An assignment is a lease: if it reached a worker before being stored, a manager that crashed
in between would not know the lease existed. These tests watch the order of "stored" and
"received" with a store that is slow, and one that fails and comes back; and that a record
the store refuses is quarantined without holding up the rest, and a store that stays down
does not hold up stopping.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest
from loguru import logger

from serendib.cli.client import offline_report
from serendib.errors import StoreError
from serendib.tasks.engine.entries import Entry, Lease
from serendib.tasks.engine.ledger import Ledger
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskAssignment, TaskCancel
from serendib.tasks.models import (
    AttemptKey,
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskRecord,
    TaskState,
)
from serendib.tasks.store import AttemptRow, Rejected, TaskStore, TaskUpdate, open_store
from serendib.tasks.store.group_commit import SqlTaskStore
from serendib.tasks.worker import WorkerAgent
from tests.helpers import DEADLINE, until

POSTGRES_ENV = "SERENDIB_TEST_POSTGRES_URL"

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
    ) -> list[Rejected]:
        await before()
        rejected = await update(tasks, attempts, stale)
        if log is not None:
            log.extend(f"stored {t.id} {t.state}" for t in tasks)
        return rejected

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


# --- a store that refuses records, is down for a while, or for good ----------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh schema of the PostgreSQL at $SERENDIB_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "tasks.db")
        return
    base = os.environ.get(POSTGRES_ENV, "")
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: CI must test the PostgreSQL task store")
        pytest.skip(f"PostgreSQL store not tested: set {POSTGRES_ENV}=postgresql://... to test it")
    import psycopg
    from psycopg import sql

    schema = f"serendib_test_{uuid.uuid4().hex[:12]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def store(any_store_url: str) -> AsyncIterator[TaskStore]:
    async with open_store(any_store_url) as opened:
        yield opened


@pytest.fixture
def errors() -> Iterator[list[str]]:
    """The ERROR lines logged during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="ERROR", format="{message}")
    yield lines
    logger.remove(sink)


class Sent:
    """The ledger's ``send``: records what went to whom, and wakes whoever waits for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []
        self.changed = asyncio.Event()

    async def __call__(self, worker: str, message: object) -> None:
        self.messages.append((worker, message))
        self.changed.set()


def _records(count: int) -> list[TaskRecord]:
    return [TaskRecord(task=Task(id=f"t{n}", difficulty=1)) for n in range(count)]


def _assign(entry: Entry) -> Lease:
    """Move ``entry`` to its next attempt, on worker "w"; the lease of that attempt."""
    entry.state, entry.attempt, entry.worker, entry.reason = (
        TaskState.ASSIGNED,
        entry.attempt + 1,
        "w",
        "fit",
    )
    record = AttemptRecord(
        task_id=entry.id, attempt=entry.attempt, worker="w", reason="fit", assigned_at=1.0
    )
    return Lease.of(record)


def _break(store: TaskStore, times: float, log: list[str]) -> None:
    """Make the next ``times`` transactions of ``store`` fail as a locked or lost database."""
    backend = cast(SqlTaskStore, store)._backend
    begin = backend._begin
    left = [times]

    def failing() -> None:
        if left[0] > 0:
            left[0] -= 1
            log.append("outage")
            if store.url.startswith("postgres"):
                import psycopg

                raise psycopg.OperationalError("server closed the connection unexpectedly")
            raise sqlite3.OperationalError("database is locked")
        begin()

    setattr(backend, "_begin", failing)  # noqa: B010 - this backend instance only


async def test_a_refused_record_is_quarantined_and_the_rest_of_its_batch_is_saved(
    store: TaskStore, errors: list[str]
) -> None:
    records = _records(5)
    await store.add(records)
    sent = Sent()
    ledger = Ledger(store, sent, lambda: None, "test")
    entries = [Entry.of(r) for r in records]
    leases = [_assign(entry) for entry in entries]
    # What validation at the network's edge now keeps out: an attempt number beyond 64 bits
    # and, for PostgreSQL, NUL in text.
    entries[1].attempt = leases[1].attempt = 10**30
    leases[3].worker = "w\x00" if store.url.startswith("postgres") else "w"
    for entry, lease in zip(entries, leases, strict=True):
        ledger.record(entry)
        ledger.attempt(lease)
        ledger.post(lease.worker, TaskCancel(task_id=lease.task_id, attempt=1))

    assert await ledger.drain()

    stored = {r.id: r for r in await store.all_records()}
    assert stored["t1"] == records[1]  # refused: the store keeps what it had
    assert {r.id: (r.state, r.attempt) for r in stored.values() if r.id != "t1"} == {
        f"t{n}": (TaskState.ASSIGNED, 1) for n in (0, 2, 3, 4)
    }
    refused_attempts = {"t1"} | ({"t3"} if store.url.startswith("postgres") else set())
    assert {a.task_id for a in await store.all_attempts()} == {
        f"t{n}" for n in range(5)
    } - refused_attempts
    quarantined = await store.quarantined()
    assert sorted((q.kind, q.task_id) for q in quarantined) == sorted(
        [("task", "t1")] + [("attempt", task_id) for task_id in refused_attempts]
    )
    assert all(q.error for q in quarantined)
    assert ledger.quarantined == len(quarantined)
    report = await offline_report(store.url)  # what `serendib report --store` prints
    assert [(row.kind, row.task_id) for row in report.quarantine] == [
        (q.kind, q.task_id) for q in quarantined
    ]
    # Its messages still go out: the manager went on, the quarantine says what the store missed.
    assert sorted(m.task_id for _, m in sent.messages if isinstance(m, TaskCancel)) == [
        f"t{n}" for n in range(5)
    ]
    (line,) = [e for e in errors if "refused" in e]
    assert f"refused {len(quarantined)} of 10 records" in line
    assert "'t1'" in line

    # Later batches flow.
    entries[4].state = TaskState.RUNNING
    ledger.record(entries[4])
    assert await ledger.drain()
    again = await store.get("t4")
    assert again is not None
    assert again.state is TaskState.RUNNING
    assert ledger.idle


async def test_an_outage_is_retried_until_the_store_is_back_and_nothing_is_quarantined(
    store: TaskStore, errors: list[str]
) -> None:
    records = _records(3)
    await store.add(records)
    log: list[str] = []
    _break(store, 3, log)
    sent = Sent()
    ledger = Ledger(store, sent, lambda: None, "test")
    entries = [Entry.of(r) for r in records]
    for entry in entries:
        ledger.attempt(_assign(entry))
        ledger.record(entry)
    ledger.post("w", TaskCancel(task_id="t0", attempt=1))

    await asyncio.wait_for(sent.changed.wait(), DEADLINE)

    assert log == ["outage"] * 3
    assert [(r.state, r.attempt) for r in await store.all_records()] == [
        (TaskState.ASSIGNED, 1)
    ] * 3  # stored before the message left
    assert len(await store.all_attempts()) == 3
    assert await store.quarantine_count() == 0
    assert ledger.quarantined == 0
    assert len([e for e in errors if "retrying" in e]) == 3
    assert await ledger.drain()


async def test_drain_gives_up_on_a_store_that_stays_down_within_its_timeout(
    store: TaskStore, errors: list[str]
) -> None:
    records = _records(2)
    await store.add(records)
    log: list[str] = []
    _break(store, float("inf"), log)
    sent = Sent()
    ledger = Ledger(store, sent, lambda: None, "test")
    entries = [Entry.of(r) for r in records]
    for entry in entries:
        ledger.attempt(_assign(entry))
        ledger.record(entry)
    ledger.post("w", TaskCancel(task_id="t0", attempt=1))
    await until(lambda: bool(log), what="the first failed save")
    ledger.stale(("t0", 1))  # staged while the first save fails

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await asyncio.wait_for(ledger.drain(timeout=0.5), DEADLINE)

    assert loop.time() - started < DEADLINE / 2
    assert ledger.idle
    assert sent.messages == []  # it acts on state the store does not hold
    (line,) = [e for e in errors if "did not save" in e]
    assert "2 tasks, 2 attempts, 1 stale results, and 1 messages" in line
    assert [(r.state, r.attempt) for r in await store.all_records()] == [(TaskState.PENDING, 0)] * 2


async def test_stopping_a_manager_whose_store_is_down_ends_in_bounded_time(
    tmp_path: Path, hub_url: str, workspace: str, errors: list[str]
) -> None:
    store = open_store(str(tmp_path / "tasks.db"))
    manager = TaskManager(workspace_id=workspace, transport=hub_url, store=store)
    await manager.start()
    try:
        await manager.submit([Task(id=f"t{n}", difficulty=3) for n in range(3)])
        await until(lambda: manager._ledger.idle, what="the submission saved")
        log: list[str] = []
        _break(store, float("inf"), log)
        await manager.cancel("t0")  # staged; its save fails, again and again
        await until(lambda: bool(log), what="the first failed save")
    finally:
        await asyncio.wait_for(manager.stop(drain_timeout=0.5), DEADLINE)

    assert any("did not save" in e and "1 tasks" in e for e in errors)
    async with open_store(str(tmp_path / "tasks.db")) as reopened:
        stored = await reopened.get("t0")
    assert stored is not None
    assert stored.state is TaskState.PENDING  # the store never took the cancel

"""The lease a standby manager leads by, and the fence it puts on its store's writes.

On SQLite and PostgreSQL: the first manager to ask leads (epoch 1) and a standby waits while
it renews; a lease given up is taken over at once, one left to lapse once it expires by the
database's clock; a write after another manager took over is refused (:class:`LeadLost`,
naming who leads now) and stores nothing, and every write after it fails at once; a renewal
that finds another epoch loses the lead. On PostgreSQL, the row locks that make this exact: a
leader's write transaction holds a takeover off until it commits, never a renewal. And at the
manager: a standby takes over a stopped leader's tasks, a manager that lost the lead stops at
once without saying goodbye for the workspace, and a standby needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from serendib.agent import AgentStatus
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptOutcome, Task, TaskRecord, TaskState
from serendib.tasks.store import LeadLost, open_store
from serendib.tasks.store.group_commit import SqlTaskStore
from serendib.tasks.store.urls import _postgres_target
from serendib.tasks.worker import WorkerAgent
from tests.helpers import postgres_test_url, until

WS = "lease-test"
LEASE = 0.6
"""A short lease, so that lapses and renewals happen within a test."""


def _postgres_schema() -> Iterator[str]:
    import psycopg

    base = postgres_test_url()
    schema = f"serendib_lease_{uuid.uuid4().hex[:12]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store no other test uses: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
        return
    yield from _postgres_schema()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema()


class Stores:
    """Stores opened on one database, as several managers' would be; closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[SqlTaskStore] = []

    async def open(self) -> SqlTaskStore:
        store = open_store(self.url)
        assert isinstance(store, SqlTaskStore)
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[Stores]:
    made = Stores(store_url)
    yield made
    for store in made.opened:
        if store._lease is not None:
            await store._lease.release()
        await store.close()


class Raw:
    """The store's database reached directly, in the store's own dialect: to play another
    manager (or a crashed one) on the lease row, and to read what is stored."""

    def __init__(self, store: SqlTaskStore, url: str) -> None:
        backend = store._backend
        self.lease_sql = backend.lease_sql
        dialect = backend.sql.dialect
        self.leases, self.tasks, self.clock, self.p = (
            dialect.leases,
            dialect.tasks,
            dialect.clock,
            dialect.param,
        )
        self.postgres = dialect.row_locks
        self.url = url

    def connect(self) -> Any:
        if self.postgres:
            import psycopg

            return psycopg.connect(_postgres_target(self.url)[0], autocommit=True)
        return sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        text = sql.format(leases=self.leases, tasks=self.tasks, now=self.clock, p=self.p)
        conn = self.connect()
        try:
            cursor = conn.execute(text, params)
            return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def take_over(self, holder: str) -> None:
        """Another manager takes the lease over by force (the one holding it paused)."""
        self.run(
            "UPDATE {leases} SET holder = {p}, epoch = epoch + 1, expires_at = {now} + 60 "
            "WHERE workspace = {p}",
            (holder, WS),
        )

    def task_ids(self) -> list[str]:
        return [row[0] for row in self.run("SELECT id FROM {tasks} ORDER BY seq")]


def record(task_id: str) -> TaskRecord:
    return TaskRecord(task=Task(id=task_id, difficulty=1))


# --- the lease --------------------------------------------------------------------------------


async def test_the_first_to_ask_leads_and_a_standby_waits_until_it_gives_up(
    stores: Stores,
) -> None:
    a, b = await stores.open(), await stores.open()
    lease_a = a.lease(WS, "A", ttl_s=LEASE)
    lease_b = b.lease(WS, "B", ttl_s=LEASE)

    fence = await lease_a.acquire()
    assert (fence.holder, fence.epoch) == ("A", 1)
    waiting = asyncio.ensure_future(lease_b.acquire())
    # A renews every third of its lease: over three lease lengths, B never gets in.
    done, _ = await asyncio.wait({waiting}, timeout=3 * LEASE)
    assert not done
    state = await lease_b.state()
    assert state is not None
    assert (state.holder, state.epoch) == ("A", 1)
    assert 0 < state.remaining_s <= LEASE
    assert lease_a.valid

    given_up = time.monotonic()
    await lease_a.release()
    taken = await asyncio.wait_for(waiting, 10)
    assert (taken.holder, taken.epoch) == ("B", 2)
    assert time.monotonic() - given_up < LEASE  # at once, not once the lease would lapse
    assert not lease_a.valid


async def test_a_lease_left_to_lapse_is_taken_over_once_it_expires_by_the_databases_clock(
    stores: Stores,
) -> None:
    b = await stores.open()
    raw = Raw(b, stores.url)
    # A manager that died holding epoch 7, its lease expiring 1 s from now by the database.
    raw.run(
        "INSERT INTO {leases} (workspace, holder, epoch, acquired_at, expires_at) "
        "VALUES ({p}, 'crashed', 7, {now}, {now} + 1.0)",
        (WS,),
    )
    lease = b.lease(WS, "B", ttl_s=LEASE)
    began = time.monotonic()
    fence = await asyncio.wait_for(lease.acquire(), 10)
    assert (fence.holder, fence.epoch) == ("B", 8)
    assert time.monotonic() - began >= 0.9


async def test_a_write_after_another_took_over_stores_nothing_and_says_who_leads(
    stores: Stores,
) -> None:
    a = await stores.open()
    raw = Raw(a, stores.url)
    lease = a.lease(WS, "A", ttl_s=LEASE)
    lost: list[LeadLost] = []
    lease.on_lost(lost.append)
    await lease.acquire()
    await a.add([record("before")])

    raw.take_over("B")  # A was paused meanwhile
    with pytest.raises(LeadLost, match=r"workspace 'lease-test' to B \(epoch 2\)"):
        await a.add([record("after")])

    assert [(e.holder, e.epoch) for e in lost] == [("B", 2)]  # told once
    assert lease.lost is not None
    assert not lease.valid
    assert await lease.confirm() is False
    transactions = a.transactions
    for write in (
        a.add([record("later")]),
        a.save([record("saved")]),
        a.update([]),  # nothing to write: nothing to refuse
        a.save_schedules([("nightly", "0 0 * * *", 0.0)]),
    ):
        try:
            await write
        except LeadLost as e:
            assert e.holder == "B"  # noqa: PT017 - each write's own error
    assert a.transactions == transactions  # refused at once, without a transaction
    assert raw.task_ids() == ["before"]


async def test_a_renewal_that_finds_another_epoch_loses_the_lead(stores: Stores) -> None:
    a = await stores.open()
    lease = a.lease(WS, "A", ttl_s=LEASE)
    lost: list[LeadLost] = []
    lease.on_lost(lost.append)
    await lease.acquire()
    assert await lease.confirm() is True

    Raw(a, stores.url).take_over("B")
    await until(lambda: bool(lost), 5, "the renewal to find the lead taken")
    assert (lost[0].holder, lost[0].epoch) == ("B", 2)
    assert "to B (epoch 2)" in str(lost[0])
    with pytest.raises(LeadLost):
        await a.add([record("after")])
    assert Raw(a, stores.url).task_ids() == []


async def test_a_store_holds_one_lease_and_a_lease_a_sensible_length(stores: Stores) -> None:
    a = await stores.open()
    with pytest.raises(ValueError, match=r"between 0\.3 and 600"):
        a.lease(WS, "A", ttl_s=0.01)
    a.lease(WS, "A")
    with pytest.raises(ValueError, match="already has a lease"):
        a.lease(WS, "A2")


# --- PostgreSQL: the locks that make it exact --------------------------------------------------


async def test_a_leaders_write_transaction_holds_a_takeover_off_but_never_a_renewal(
    postgres_url: str,
) -> None:
    import psycopg

    made = Stores(postgres_url)
    try:
        store = await made.open()
        raw = Raw(store, postgres_url)
        sql = raw.lease_sql
        raw.run(
            "INSERT INTO {leases} (workspace, holder, epoch, acquired_at, expires_at) "
            "VALUES ({p}, 'A', 1, {now}, {now} + 60)",
            (WS,),
        )
        leader, other = raw.connect(), raw.connect()
        try:
            leader.execute("BEGIN")
            assert leader.execute(sql.check, (WS,)).fetchall() == [("A", 1)]  # its fence check
            other.execute("SET lock_timeout = '300ms'")
            # A renewal goes through while the leader's transaction runs...
            assert other.execute(sql.renew, (60.0, WS, "A", 1)).rowcount == 1
            raw.run("UPDATE {leases} SET expires_at = {now} - 1 WHERE workspace = {p}", (WS,))
            # ... a takeover of the lapsed lease waits for it.
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(sql.take_over, (WS, "B", 60.0))
            leader.execute("COMMIT")
            other.execute(sql.take_over, (WS, "B", 60.0))
            assert other.execute(sql.read, (WS,)).fetchall()[0][:2] == ("B", 2)
        finally:
            leader.close()
            other.close()
    finally:
        for store in made.opened:
            await store.close()


async def test_the_leaders_writer_is_named_after_its_epoch_and_ends_idle_transactions(
    postgres_url: str,
) -> None:
    made = Stores(postgres_url)
    try:
        store = await made.open()
        lease = store.lease(WS, "A", ttl_s=3.0)
        fence = await lease.acquire()
        await store.add([record("t1")])  # the writer connection, as it writes
        names = Raw(store, postgres_url).run(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE {p}",
            (f"serendib {WS} epoch%",),
        )
        assert names == [(f"serendib {WS} epoch 1",)]
        assert fence.label == f"serendib {WS} epoch 1"
        writer = store._backend._writer  # type: ignore[attr-defined]
        shown = writer.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert shown == ("2s",)
        await lease.release()
    finally:
        for store in made.opened:
            await store.close()


# --- the manager ------------------------------------------------------------------------------


async def test_a_standby_manager_needs_a_postgres_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="standby manager needs a PostgreSQL task store"):
        TaskManager(store=str(tmp_path / "tasks.db"), standby=True)


async def test_a_standby_takes_over_a_stopped_leaders_tasks_and_a_lost_one_stops_at_once(
    postgres_url: str,
) -> None:
    hub = f"memory://lease-{uuid.uuid4().hex[:10]}"

    def manager() -> TaskManager:
        return TaskManager(
            workspace_id=WS,
            transport=hub,
            store=postgres_url,
            standby=True,
            lease_s=LEASE,
            heartbeat_interval=0.1,
            resume_grace_s=0.5,
        )

    first, second, third = manager(), manager(), manager()
    worker = WorkerAgent(
        "w", 10, workspace_id=WS, transport=hub, heartbeat_interval=0.1, time_scale=0.0
    )
    standby = None
    try:
        await first.start()
        await worker.start()
        standby = asyncio.ensure_future(second.start())
        await first.submit([Task(id=f"t{i}", difficulty=1) for i in range(20)])
        await first.wait_done()
        assert not standby.done()  # it waits, connected to no one
        assert second.status is AgentStatus.CREATED

        await first.submit([Task(id=f"u{i}", difficulty=1, timeout_s=5) for i in range(20)])
        await first.stop()  # gives the lead up: the standby takes over at once
        await asyncio.wait_for(standby, 10)
        assert first.lead_lost is None
        await asyncio.wait_for(second.wait_done(), 20)

        # A third waits; the lead is taken by force (the second paused past its lease, say).
        third_start = asyncio.ensure_future(third.start())
        assert isinstance(second.store, SqlTaskStore)
        Raw(second.store, postgres_url).take_over("elsewhere")
        await until(lambda: second.status is AgentStatus.STOPPED, 10, "the lost leader to stop")
        assert second.lead_lost is not None
        assert second.lead_lost.holder == "elsewhere"
        await third.stop()  # a standby waiting stops waiting
        with pytest.raises(asyncio.CancelledError):
            await third_start
    finally:
        for agent in (worker, first, second, third):
            await agent.stop()
        if standby is not None and not standby.done():
            standby.cancel()

    async with open_store(postgres_url) as store:
        records = await store.all_records()
        attempts = await store.all_attempts()
    assert len(records) == 40
    assert all(r.state is TaskState.SUCCEEDED for r in records)
    wins = [a.task_id for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED]
    assert sorted(wins) == sorted(r.id for r in records)  # each counted once

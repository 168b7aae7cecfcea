"""The task store: one contract suite over SQLite and PostgreSQL, plus URL handling."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest

from serendib.errors import RecordRefused, StoreError, StoreNotFound
from serendib.tasks.engine.entries import Entry
from serendib.tasks.models import AttemptOutcome, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store import (
    TaskStore,
    TaskUpdate,
    attempt_row,
    open_store,
    redact_url,
)
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.group_commit import SqlTaskStore
from serendib.tasks.store.rows import (
    TASK_COLUMNS,
    Dialect,
    PendingWrite,
    Statements,
    plan_batch,
    quarantine_row,
    safe_text,
    task_row,
)
from serendib.tasks.store.search import (
    SearchQuery,
    SearchStatements,
    prefix_successor,
)
from serendib.tasks.store.sqlite import SqliteBackend
from serendib.tasks.store.urls import _postgres_target
from tests.helpers import postgres_test_url

# --- fixtures ---------------------------------------------------------------------------------


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store no other test uses: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
        return
    base = postgres_test_url()
    schema = f"serendib_test_{uuid.uuid4().hex[:12]}"
    yield _with_schema(base, schema)
    _drop_schema(base, schema)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[TaskStore]:
    """The store at ``store_url``, open."""
    async with open_store(store_url) as opened:
        yield opened


def task(n: int, **fields: Any) -> TaskRecord:
    """A pending task numbered ``n`` (ids sort in number order)."""
    spec = Task(id=f"t{n:05d}", difficulty=1 + n % 10, payload={"n": n}, **fields)
    return TaskRecord(task=spec, submitted_at=1_000.0 + n, updated_at=1_000.0 + n)


def attempt(record: TaskRecord, **fields: Any) -> AttemptRecord:
    """The running attempt of an assigned ``record``."""
    assert record.worker is not None
    return AttemptRecord(
        task_id=record.id,
        attempt=record.attempt,
        worker=record.worker,
        reason=record.reason,
        assigned_at=record.updated_at,
        **fields,
    )


def ids(records: Sequence[TaskRecord]) -> list[str]:
    return [r.id for r in records]


async def page_through(store: TaskStore, limit: int, **filters: Any) -> list[TaskRecord]:
    """Every page of ``store.query(**filters)``, concatenated."""
    found: list[TaskRecord] = []
    cursor: int | None = None
    while True:
        page, cursor = await store.query(after=cursor, limit=limit, **filters)
        assert len(page) <= limit
        found += page
        if cursor is None:
            return found
        assert len(page) == limit


class Unserializable:
    """Not JSON."""


# --- adding -----------------------------------------------------------------------------------


async def test_add_inserts_only_new_ids_and_returns_them_in_input_order(store: TaskStore) -> None:
    first = [task(0), task(1), task(2)]
    assert await store.add(first) == first

    again = task(1, description="resubmitted")
    fourth, fourth_twice = task(3), task(3, description="second copy in one call")
    assert await store.add([again, fourth, fourth_twice, task(4)]) == [fourth, task(4)]

    assert await store.get("t00001") == first[1]
    assert await store.get("t00003") == fourth
    assert ids(await store.all_records()) == ["t00000", "t00001", "t00002", "t00003", "t00004"]


async def test_add_submitted_stores_the_records_add_would_and_skips_known_ids(
    store: TaskStore,
) -> None:
    at = 1_800_000_000.25
    tasks = [
        Task(id="plain", difficulty=2),
        Task(id="later", difficulty=3, delay_s=5.0, labels=("gpu",), payload={"n": [1, 2]}),
        Task(id="dated", difficulty=4, not_before=at + 60, depends_on=("plain",)),
    ]
    await store.add([task(0)])

    added = await store.add_submitted([tasks[0], Task(id=task(0).id, difficulty=9), *tasks], at)

    assert added == tasks  # the known id and the repeat left out, in input order
    for spec in tasks:
        not_before = spec.eligible_at(at) if spec.not_before or spec.delay_s else 0.0
        expected = TaskRecord(task=spec, submitted_at=at, updated_at=at, not_before=not_before)
        assert await store.get(spec.id) == expected
    assert await store.get(task(0).id) == task(0)
    assert await store.children("plain") == ["dated"]


async def test_concurrent_adds_of_one_new_id_insert_it_once(store: TaskStore) -> None:
    results = await asyncio.gather(*(store.add([task(7, description=str(i))]) for i in range(5)))

    assert [len(r) for r in results] == [1, 0, 0, 0, 0]
    assert await store.get("t00007") == results[0][0]


async def test_add_with_a_record_that_is_not_json_stores_nothing(store: TaskStore) -> None:
    bad = task(1).model_copy(update={"output": Unserializable()})

    with pytest.raises(StoreError, match="t00001"):
        await store.add([task(0), bad])

    assert await store.all_records() == []


async def test_a_failed_transaction_stores_nothing_and_fails_every_call_in_it(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cast(SqlTaskStore, store)._backend
    upsert = backend._upsert

    def fail_on_attempts(table: str, rows: Sequence[Any]) -> None:
        if table == "attempts":
            raise backend.driver_errors[0]("disk on fire")
        upsert(table, rows)

    monkeypatch.setattr(backend, "_upsert", fail_on_attempts)
    assigned = task(1).assigned("w1", "fit", 2_000.0)
    before = store.transactions

    results = await asyncio.gather(
        store.add([task(0)]), store.save([assigned], [attempt(assigned)]), return_exceptions=True
    )

    for result in results:
        assert isinstance(result, StoreError)
        assert "disk on fire" in str(result)
        assert store.url in str(result)
    assert store.transactions == before
    monkeypatch.undo()
    assert await store.all_records() == []
    assert await store.add([task(0)]) == [task(0)]


# --- saving and reading -----------------------------------------------------------------------


async def test_saved_records_come_back_exactly(store: TaskStore) -> None:
    spec = Task(
        id="é-1",
        description="naïve ✓",
        difficulty=10,
        kind="custom",
        payload={"nested": {"list": [1, 2.5, None, "x"]}, "big": 2**70},
        priority=-3,
        required_skill="sql",
        max_attempts=5,
        timeout_s=1.25,
        wait_timeout_s=30.0,
    )
    submitted = TaskRecord(task=spec, submitted_at=1_795_834_437.6611004, updated_at=1.5)
    assigned = submitted.assigned("w-1", "least skilled eligible", 1_795_834_438.1)
    first = attempt(assigned, started_at=1_795_834_438.2)
    retry = assigned.requeued("worker lost", 1_795_834_439.0, error="lost")
    second_try = retry.assigned("w-2", "escalated", 1_795_834_440.0)
    second = attempt(second_try, escalated=True, stale_results=2)
    done = second_try.succeeded({"answer": [42, {"ok": True}], "ratio": 0.1}, 1_795_834_441.5)

    await store.add([submitted])
    await store.save([assigned], [first])
    await store.save([done], [first.ended(AttemptOutcome.LOST, 1_795_834_439.0, "lost"), second])

    assert await store.get("é-1") == done
    assert await store.attempts("é-1") == [
        first.ended(AttemptOutcome.LOST, 1_795_834_439.0, "lost"),
        second,
    ]
    assert await store.get("nope") is None
    assert await store.attempts("nope") == []


def update_of(record: TaskRecord) -> TaskUpdate:
    """What the manager writes of ``record`` (through its working copy)."""
    return Entry.of(record).update()


async def test_updates_change_tasks_in_place_and_come_back_exactly(store: TaskStore) -> None:
    records = [task(n) for n in range(1_100)]  # several multi-row statements
    await store.add(records)
    assigned = [r.assigned(f"w-{r.id[-1]}", "least skilled eligible", 2.5) for r in records]
    attempts = [attempt(r) for r in assigned]
    await store.update([update_of(r) for r in assigned], [attempt_row(a) for a in attempts])
    done = [
        r.succeeded({"n": n, "list": [1, None]}, 3.5) if n % 3 else r.failed("boom", 3.5)
        for n, r in enumerate(assigned)
    ]
    ended = [a.ended(AttemptOutcome.SUCCEEDED, 3.5, None, 3.0) for a in attempts]
    late = (ended[0].task_id, 1)
    await asyncio.gather(
        store.update([update_of(r) for r in done[:500]], [attempt_row(a) for a in ended]),
        store.update([update_of(r) for r in done[500:]], stale=[late, late, ("nope", 1)]),
        store.update([update_of(r.requeued("ignored", 9.0)) for r in (task(9_999),)]),
        store.update(stale=[late]),
    )

    assert await store.all_records() == done
    counted = ended[0].model_copy(update={"stale_results": 3})
    assert await store.all_attempts() == sorted([counted, *ended[1:]], key=lambda a: a.task_id)
    assert await store.get(task(9_999).id) is None
    counts = await store.counts()
    assert counts[TaskState.SUCCEEDED] == sum(1 for r in done if r.state is TaskState.SUCCEEDED)
    assert counts[TaskState.FAILED] == len(done) - counts[TaskState.SUCCEEDED]
    assert counts[TaskState.ASSIGNED] == counts[TaskState.PENDING] == 0


class _GatedWrites:
    """Holds the backend's first write until released, and notes every batch it writes."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.write = backend.write
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[PendingWrite]] = []

    def __call__(self, writes: Sequence[PendingWrite]) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        self.batches.append(list(writes))
        return self.write(writes)

    async def until_writing(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30)


@pytest.fixture
def gated(store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> _GatedWrites:
    backend = cast(SqlTaskStore, store)._backend
    gate = _GatedWrites(backend)
    monkeypatch.setattr(backend, "write", gate)
    return gate


async def test_updates_go_ahead_of_queued_additions_which_commit_in_bounded_batches(
    store: TaskStore, gated: _GatedWrites
) -> None:
    first = task(0)
    adding = asyncio.ensure_future(store.add([first]))
    await gated.until_writing()  # the writer holds this add: what follows queues up
    more = [task(n) for n in range(1, 6_001)]
    added = [asyncio.ensure_future(store.add(more[i : i + 1_000])) for i in range(0, 6_000, 1_000)]
    done = first.assigned("w-1", "fit", 2.0)
    updating = asyncio.ensure_future(store.update([update_of(done)]))
    await asyncio.sleep(0)  # every call queued
    gated.release.set()

    await asyncio.gather(adding, updating, *added)

    kinds = [["add" if w.add else "update" for w in batch] for batch in gated.batches]
    assert kinds[:2] == [["add"], ["update"]]  # the update went ahead of six additions
    assert all(kind == ["add"] * len(kind) for kind in kinds[2:])
    assert max(sum(w.size for w in batch) for batch in gated.batches) <= 1_000
    assert await store.all_records() == [done, *more]


async def test_an_update_never_goes_ahead_of_a_queued_save(
    store: TaskStore, gated: _GatedWrites
) -> None:
    adding = asyncio.ensure_future(store.add([task(0)]))
    await gated.until_writing()
    new = task(1).assigned("w-1", "fit", 2.0)
    saving = asyncio.ensure_future(store.save([new]))
    done = new.succeeded({"ok": True}, 3.0)
    updating = asyncio.ensure_future(store.update([update_of(done)]))
    await asyncio.sleep(0)
    gated.release.set()

    await asyncio.gather(adding, saving, updating)

    assert await store.get(done.id) == done  # updated after it was saved, not dropped


async def test_save_inserts_a_task_it_has_not_seen(store: TaskStore) -> None:
    await store.save([task(5)])

    assert await store.add([task(5)]) == []
    assert await store.all_records() == [task(5)]


async def test_the_latest_save_wins_when_saves_are_batched_together(store: TaskStore) -> None:
    versions = [task(1).waiting(f"reason {i}") for i in range(20)]
    assigned = task(2).assigned("w", "fit", 2_000.0)
    running = attempt(assigned)

    await asyncio.gather(
        *(store.save([v]) for v in versions),
        store.save(attempts=[running]),
        store.save(attempts=[running.ended(AttemptOutcome.SUCCEEDED, 2_001.0)]),
    )

    assert await store.get("t00001") == versions[-1]
    assert await store.attempts("t00002") == [running.ended(AttemptOutcome.SUCCEEDED, 2_001.0)]


async def test_a_record_that_is_not_json_fails_only_its_own_save(store: TaskStore) -> None:
    bad = task(1).model_copy(update={"output": Unserializable()})

    results = await asyncio.gather(store.save([task(0)]), store.save([bad]), return_exceptions=True)

    assert results[0] is None
    assert isinstance(results[1], StoreError)
    assert await store.all_records() == [task(0)]


async def test_many_concurrent_saves_all_land_in_few_transactions(store: TaskStore) -> None:
    records = [task(n) for n in range(2_000)]
    before = store.transactions

    await asyncio.gather(*(store.save([r]) for r in records))

    assert store.transactions - before <= 20
    assert await store.all_records() == records


# --- queries ----------------------------------------------------------------------------------


def _mixed(count: int) -> list[TaskRecord]:
    """Tasks in every state, their workers w0..w2 in turn."""
    records = []
    for n in range(count):
        record = task(n)
        kind = n % 6
        if kind >= 1:
            record = record.assigned(f"w{n % 3}", "fit", 2_000.0 + n)
        if kind >= 2:
            record = record.running(2_001.0 + n)
        if kind == 3:
            record = record.succeeded(n, 2_002.0 + n)
        elif kind == 4:
            record = record.failed("too hard", 2_002.0 + n)
        elif kind == 5:
            record = record.cancelled(2_002.0 + n)
        records.append(record)
    return records


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"state": TaskState.RUNNING},
        {"state": TaskState.SUCCEEDED},
        {"worker": "w1"},
        {"state": TaskState.CANCELLED, "worker": "w2"},
        {"worker": "nobody"},
    ],
    ids=["all", "running", "succeeded", "worker", "state-and-worker", "none"],
)
async def test_query_pages_return_every_matching_task_once_in_submission_order(
    store: TaskStore, filters: dict[str, Any]
) -> None:
    records = _mixed(100)
    await store.add([task(n) for n in range(100)])
    await store.save(records)
    expected = [
        r
        for r in records
        if r.state == filters.get("state", r.state) and r.worker == filters.get("worker", r.worker)
    ]

    for limit in (1, 7, len(expected) or 1, 1_000):
        assert await page_through(store, limit, **filters) == expected


async def test_the_last_full_page_has_no_next_cursor(store: TaskStore) -> None:
    await store.add([task(n) for n in range(10)])

    page, cursor = await store.query(limit=5)
    assert (ids(page), cursor is not None) == ([f"t0000{n}" for n in range(5)], True)
    page, cursor = await store.query(after=cursor, limit=5)
    assert (ids(page), cursor) == ([f"t0000{n}" for n in range(5, 10)], None)


async def test_query_refuses_a_limit_below_one(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.query(limit=0)


async def test_counts_have_every_state(store: TaskStore) -> None:
    assert await store.counts() == dict.fromkeys(TaskState, 0)

    await store.save(_mixed(14))

    assert await store.counts() == {
        TaskState.PENDING: 3,
        TaskState.ASSIGNED: 3,
        TaskState.RUNNING: 2,
        TaskState.SUCCEEDED: 2,
        TaskState.FAILED: 2,
        TaskState.CANCELLED: 2,
    }


async def test_unfinished_and_open_attempts_are_what_a_restart_resumes(store: TaskStore) -> None:
    records = _mixed(30)
    await store.add([task(n) for n in reversed(range(30))])
    await store.save(records)
    running = [attempt(r) for r in records if r.state is TaskState.RUNNING]
    ended = [attempt(r, outcome=AttemptOutcome.FAILED) for r in records if r.state.is_final]
    await store.save(attempts=running + ended)

    unfinished = [r for r in reversed(records) if not r.state.is_final]
    assert await store.unfinished() == unfinished
    assert await store.open_attempts() == running
    assert await store.all_attempts() == sorted(
        running + ended, key=lambda a: (a.task_id, a.attempt)
    )


# --- searches ---------------------------------------------------------------------------------


def _searchable(count: int) -> list[TaskRecord]:
    """:func:`_mixed` tasks of kinds a and b, described "Job n" (odd ones "job n urgent"),
    finishing out of submission order."""
    records = []
    for record in _mixed(count):
        n = int(record.id[1:])
        describe = f"Job {n}" if n % 2 == 0 else f"job {n} URGENT"
        spec = record.task.model_copy(update={"kind": "ab"[n % 4 == 0], "description": describe})
        changes: dict[str, Any] = {"task": spec}
        if record.finished_at is not None:
            changes["finished_at"] = 3_000.0 + (n * 37) % count  # not in submission order
        records.append(record.model_copy(update=changes))
    return records


def _expected(records: list[TaskRecord], **query: Any) -> list[TaskRecord]:
    """What ``search(**query)`` pages through, computed in Python."""
    text = (query.get("text") or "").lower()
    found = [
        r
        for r in records
        if r.state == query.get("state", r.state)
        and r.worker == query.get("worker", r.worker)
        and r.task.kind == query.get("kind", r.task.kind)
        and r.id.startswith(query.get("id_prefix") or "")
        and text in r.task.description.lower()
        and (query.get("sort") != "finished" or r.finished_at is not None)
    ]
    sort = query.get("sort", "submitted")
    seq = {r.id: i for i, r in enumerate(records)}
    keys: dict[str, Any] = {
        "submitted": lambda r: seq[r.id],
        "finished": lambda r: (r.finished_at, seq[r.id]),
        "id": lambda r: r.id,
    }
    return sorted(found, key=keys[sort], reverse=query.get("descending", False))


async def search_through(
    store: TaskStore, limit: int, scan: int, **query: Any
) -> tuple[list[TaskRecord], int]:
    """Every page of ``store.search(**query)``, concatenated, and how many were cut short."""
    found: list[TaskRecord] = []
    cursor: str | None = None
    short = 0
    for _ in range(10_000):
        page = await store.search(after=cursor, limit=limit, scan=scan, **query)
        assert len(page.records) <= limit
        found += page.records
        short += page.truncated
        if page.next_cursor is None:
            assert not page.truncated
            return found, short
        assert page.truncated or len(page.records) == limit
        cursor = page.next_cursor
    raise AssertionError("the search never ended")


SEARCHES = [
    {},
    {"descending": True},
    {"state": TaskState.RUNNING},
    {"state": TaskState.SUCCEEDED, "worker": "w1"},
    {"worker": "w2", "descending": True},
    {"kind": "a"},
    {"kind": "b", "state": TaskState.PENDING},
    {"text": "urgent"},
    {"text": "JOB 1", "kind": "b"},
    {"id_prefix": "t0001"},
    {"sort": "id", "descending": True},
    {"sort": "id", "id_prefix": "t0002"},
    {"sort": "id", "id_prefix": "t0003", "state": TaskState.FAILED, "descending": True},
    {"sort": "finished"},
    {"sort": "finished", "descending": True, "worker": "w0"},
    {"sort": "finished", "text": "urgent", "state": TaskState.CANCELLED},
    {"worker": "nobody"},
]


@pytest.mark.parametrize("query", SEARCHES, ids=[str(q) for q in SEARCHES])
async def test_a_search_pages_through_every_match_once_in_its_order(
    store: TaskStore, query: dict[str, Any]
) -> None:
    records = _searchable(120)
    await store.add([task(n) for n in range(120)])
    await store.save(records)
    expected = _expected(records, **query)

    for limit, scan in ((7, 10_000), (1_000, 10_000), (5, 9), (3, 1)):
        found, _ = await search_through(store, limit, scan, **query)
        assert ids(found) == ids(expected), (limit, scan)
        assert found == expected


async def test_a_rare_match_comes_in_short_pages_each_examining_at_most_scan_rows(
    store: TaskStore,
) -> None:
    await store.add([task(n) for n in range(50)])
    await store.save([task(49).assigned("w9", "fit", 2_000.0)])

    first = await store.search(worker="w9", state=TaskState.SUCCEEDED, limit=10, scan=20)
    rare, short = await search_through(store, 10, 20, id_prefix="t00049")

    assert (first.records, first.truncated) == ([], False)  # the worker's index: one row
    assert ids(rare) == ["t00049"]
    assert short == 2  # rows 1-20 and 21-40 examined, no match: two short pages


async def test_a_search_refuses_a_bad_cursor_or_limit(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="not a cursor of the 'finished' order"):
        await store.search(sort="finished", after="12")
    with pytest.raises(ValueError, match="not a cursor of the 'submitted' order"):
        await store.search(after="1.5:2")
    with pytest.raises(ValueError, match="not a cursor of the 'id' order"):
        await store.search(sort="id", after=str(2**63))  # beyond any sequence number
    with pytest.raises(ValueError, match="limit"):
        await store.search(limit=0)
    with pytest.raises(ValueError, match="scan"):
        await store.search(scan=0)


def test_an_id_prefix_range_ends_at_its_successor() -> None:
    assert prefix_successor("ab") == "ac"
    assert prefix_successor("a\ud7ff") == "a\ue000"
    assert prefix_successor("a\U0010ffff") == "b"
    assert prefix_successor("\U0010ffff") is None


_MANY = 20_000
_FILL = (
    "INSERT INTO serendib_tasks (id, state, attempt, worker, reason, difficulty, priority, "
    "required_skill, kind, submitted_at, updated_at, finished_at, task) "
    "SELECT 'x' || i, CASE WHEN i % 100 = 0 THEN 'running' ELSE 'succeeded' END, 1, "
    "'w' || (i % 10), '', 1, 0, 'general', 'k' || (i % 5), i, i, "
    "CASE WHEN i % 100 = 0 THEN NULL ELSE i END, {task} FROM {numbers}"
)


class _Explainer:
    """Fills a store's table with :data:`_MANY` tasks (analysed), then shows the query plans
    of a first search page over them, its window (a few rows of each filter's) in the
    proportion of 10^4 rows to 2 x 10^6."""

    def __init__(self, store: TaskStore, store_url: str) -> None:
        sql = _backend(store).sql
        d = sql.dialect
        self.statements = SearchStatements(
            d.param, d.tasks, sql.task_columns, d.description, d.find
        )
        self.postgres = _is_postgres(store)
        if self.postgres:
            import psycopg

            parts = urlsplit(store_url)
            self.conn: Any = psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True)
            self.conn.execute(f'SET search_path TO "{parts.query.removeprefix("schema=")}"')
            numbers = f"generate_series(1, {_MANY}) AS i"
            self.conn.execute(_FILL.format(task="'{}'::json", numbers=numbers))
            self.conn.execute("ANALYZE serendib_tasks")
        else:
            self.conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
            numbers = "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            numbers += f"WHERE i < {_MANY}) SELECT i FROM n)"
            self.conn.execute(_FILL.format(task="'{}'", numbers=numbers))
            self.conn.execute("ANALYZE")
        self.columns = sql.task_columns

    def plans(self, **query: Any) -> list[str]:
        """The plans of the window's end (when there is one) and of the page."""
        search = SearchQuery(**query)
        end = self.statements.window_end(search, None, _MANY // 200)
        statements = [end] if end is not None else []
        until = None
        if end is not None:
            keys = end[0].replace(self.columns, "seq, finished_at, id", 1)
            seq, finished_at, task_id = self.conn.execute(keys, end[1]).fetchone()
            record = TaskRecord(task=Task(id=task_id, difficulty=1))
            if finished_at is not None:
                record = record.assigned("w", "fit", 0.0).succeeded(None, finished_at)
            until = (seq, record)
        statements.append(self.statements.page(search, None, 50, until))
        explain = "EXPLAIN" if self.postgres else "EXPLAIN QUERY PLAN"
        found = [self.conn.execute(f"{explain} {sql}", p).fetchall() for sql, p in statements]
        return ["\n".join(str(row[0 if self.postgres else -1]) for row in rows) for rows in found]


WALKS: list[tuple[dict[str, Any], str]] = [
    ({"state": TaskState.RUNNING, "worker": "w1"}, "serendib_tasks_state"),
    ({"worker": "w1", "state": TaskState.SUCCEEDED}, "serendib_tasks_worker"),
    ({"kind": "k1", "text": "x"}, "serendib_tasks_kind"),
    ({"kind": "k1", "descending": True}, "serendib_tasks_kind"),
    ({"sort": "finished", "descending": True, "state": TaskState.FAILED}, "finished"),
    ({"sort": "id", "id_prefix": "x1", "worker": "w1"}, ""),
    ({"text": "x", "descending": True}, ""),
]


async def test_every_search_walks_an_index_without_sorting(
    store: TaskStore, store_url: str
) -> None:
    explainer = _Explainer(store, store_url)
    try:
        plans = [(query, index, explainer.plans(**query)) for query, index in WALKS]
    finally:
        explainer.conn.close()

    for query, index, statements in plans:
        for position, plan in enumerate(statements):
            bounded = position == 1  # a page up to its window's end: at most the window
            if explainer.postgres:
                # The planner weighs indexes by the table's statistics: any, but no table scan.
                assert "Index" in plan, (query, plan)
                assert "Seq Scan" not in plan, (query, plan)
                assert bounded or "Sort" not in plan.replace("Sort Key", ""), (query, plan)
            else:
                assert "TEMP B-TREE" not in plan, (query, plan)  # no sort of the rows found
                assert index in plan, (query, plan)  # the walk chosen: others cannot use one


# --- lifecycle and durability -----------------------------------------------------------------


async def test_records_survive_close_and_reopen(store_url: str) -> None:
    records = _mixed(12)
    running = [attempt(r) for r in records if r.worker is not None]
    async with open_store(store_url) as first:
        await first.add([task(n) for n in range(12)])
        await first.save(records, running)

    again = open_store(store_url)
    await again.open()
    await again.open()
    try:
        assert await again.all_records() == records
        assert await again.all_attempts() == running
        assert await again.add([task(0)]) == []
    finally:
        await again.close()


async def test_a_closed_store_refuses_work_and_can_be_reopened(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(StoreError, match="open"):
        await store.get("t00000")
    await store.open()

    # gather starts the save first: it is queued when close begins, so close must commit it.
    await asyncio.gather(store.save([task(0)]), store.close(), store.close())
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.save([task(1)])
    await store.open()
    assert await store.all_records() == [task(0)]
    await store.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from serendib.tasks.models import Task, TaskRecord
    from serendib.tasks.store import open_store

    async def main(url):
        async with open_store(url) as store:
            async def one(n):
                await store.save([TaskRecord(task=Task(id=f"k{n:07d}", difficulty=1))])
                print(n, flush=True)

            n = 0
            while True:
                await asyncio.gather(*(one(n + i) for i in range(50)))
                n += 50

    asyncio.run(main(sys.argv[1]))
    """
)


async def _stored_ids(url: str) -> set[str]:
    async with open_store(url) as store:
        return {r.id for r in await store.all_records()}


def test_every_acknowledged_save_survives_sigkill(store_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, store_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 1_000:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        acknowledged += [int(line) for line in child.stdout]
        _, errors = child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == -signal.SIGKILL, errors
    assert len(acknowledged) >= 1_000
    stored = asyncio.run(_stored_ids(store_url))
    assert {f"k{n:07d}" for n in acknowledged} <= stored


async def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with open_store(str(path)):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE serendib_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()

    with pytest.raises(StoreError, match="schema version 99"):
        await open_store(str(path)).open()


async def test_a_store_that_cannot_be_opened_says_where(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()

    with pytest.raises(StoreError, match=r"opening the task store at sqlite:////.*dir\.db failed"):
        await open_store(str(tmp_path / "dir.db")).open()


async def test_a_postgres_store_that_cannot_be_opened_hides_its_password() -> None:
    parts = urlsplit(postgres_test_url())
    port = f":{parts.port}" if parts.port else ""
    url = urlunsplit(parts._replace(netloc=f"nosuchrole:hunter2@{parts.hostname}{port}"))

    with pytest.raises(StoreError, match=r"nosuchrole:\*\*\*@") as raised:
        await open_store(url).open()
    assert "hunter2" not in str(raised.value)
    assert raised.value.url == redact_url(url)
    assert raised.value.url is not None
    assert "nosuchrole:***@" in raised.value.url


async def test_an_in_memory_store_works_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite://:memory:") as store:
        assert store.url == "sqlite://:memory:"
        await store.add([task(0)])
        assert await store.query(state=TaskState.PENDING) == ([task(0)], None)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


# --- opening for reading only (create=False) -------------------------------------------------


def _postgres_tables(url: str) -> list[str] | None:
    """The tables of the schema a PostgreSQL store URL names, or None if there is no schema."""
    import psycopg

    conninfo, schema = _postgres_target(url)
    assert schema is not None
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,):
            return None
        found = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return sorted(str(name) for (name,) in found)


def _what_exists(store_url: str) -> object:
    """What a store URL's location holds: the SQLite files, or the PostgreSQL schema's tables."""
    if store_url.startswith("sqlite:///"):
        folder = Path(store_url[len("sqlite:///") :]).parent
        return sorted(p.name for p in folder.rglob("*"))
    return _postgres_tables(store_url)


async def test_a_reader_open_of_a_missing_store_raises_and_creates_nothing(
    store_url: str,
) -> None:
    before = await asyncio.to_thread(_what_exists, store_url)
    store = open_store(store_url, create=False)

    with pytest.raises(StoreNotFound, match="no task store at") as raised:
        await store.open()

    assert raised.value.url == store.url
    assert await asyncio.to_thread(_what_exists, store_url) == before  # no file, no schema
    with pytest.raises(StoreError, match="call open"):
        await store.all_records()


async def test_a_reader_opens_an_existing_store_and_reads_it(store_url: str) -> None:
    async with open_store(store_url) as writer:
        await writer.add([task(0), task(1)])

    async with open_store(store_url, create=False) as reader:
        assert await reader.all_records() == [task(0), task(1)]
        assert (await reader.counts())[TaskState.PENDING] == 2


async def test_a_reader_leaves_a_sqlite_file_that_is_no_store_as_it_was(tmp_path: Path) -> None:
    empty, other = tmp_path / "empty.db", tmp_path / "other.db"
    empty.touch()
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    contents = {path: path.read_bytes() for path in (empty, other)}

    for path in (empty, other):
        with pytest.raises(StoreNotFound, match=rf"no task store at sqlite:///.*{path.name}"):
            await open_store(str(path), create=False).open()

    assert {path: path.read_bytes() for path in (empty, other)} == contents
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert left == ["empty.db", "other.db"]


async def test_a_reader_does_not_create_a_directory_or_an_in_memory_store(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        await open_store(str(tmp_path / "sub" / "tasks.db"), create=False).open()
    with pytest.raises(StoreNotFound, match="sqlite://:memory:"):
        await open_store("sqlite://:memory:", create=False).open()
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_a_reader_creates_no_tables_in_an_empty_postgres_schema() -> None:
    import psycopg
    from psycopg import sql

    base = postgres_test_url()
    schema = f"serendib_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = _with_schema(base, schema)
    try:
        with pytest.raises(StoreNotFound, match="no task store at postgresql://"):
            await open_store(url, create=False).open()
        assert await asyncio.to_thread(_postgres_tables, url) == []
    finally:
        _drop_schema(base, schema)


# --- batching and statements, pure ----------------------------------------------------------


def test_a_batch_applies_writes_in_call_order() -> None:
    add = PendingWrite(True, [("a", 1), ("b", 1), ("a", 2)], [])
    save = PendingWrite(False, [("b", 9), ("c", 1)], [("b", 1, "first"), ("b", 1, "second")])
    late_add = PendingWrite(True, [("c", 5), ("d", 1)], [])

    plan = plan_batch([add, save, late_add], existing={"b"})

    assert plan.tasks == [("a", 1), ("b", 9), ("c", 1), ("d", 1)]
    assert plan.attempts == [("b", 1, "second")]
    assert plan.inserted == [[0], [], [1]]
    assert plan.updates == []


def _update(task_id: str, state: str) -> TaskUpdate:
    return TaskUpdate(task_id, state, 1, "w", "r", 2.0, None, None, None)


def test_a_batch_folds_updates_into_full_rows_and_full_rows_replace_updates() -> None:
    full = task_row(task(1))
    first = PendingWrite(False, (), (), [_update(full[0], "assigned"), _update("x", "running")])
    save = PendingWrite(False, [full], [])
    then = PendingWrite(False, (), (), [_update(full[0], "succeeded")])
    add_x = PendingWrite(True, [("x", "pending")], [])

    plan = plan_batch([first, save, then], existing=set())
    (row,) = plan.tasks
    assert dict(zip(TASK_COLUMNS, row, strict=True)) == {
        **dict(zip(TASK_COLUMNS, full, strict=True)),
        **_update(full[0], "succeeded")._asdict(),
    }
    assert plan.updates == [_update("x", "running")]

    # An update of an id that was not stored when it came is dropped if an add inserts it.
    late = plan_batch([PendingWrite(False, (), (), [_update("x", "running")]), add_x], set())
    assert late.updates == []
    assert late.tasks == [("x", "pending")]


@pytest.mark.parametrize("count", [1, 5, 66, 67, 512, 2_000])
def test_upserts_carry_every_row_once_in_order_in_power_of_two_statements(count: int) -> None:
    sql = Statements(
        Dialect(param="?", max_params=999, tasks="t", attempts="a", meta="m", counts="c")
    )
    width = len(TASK_COLUMNS)
    rows = [(f"id{n}", *range(width - 1)) for n in range(count)]

    statements = list(sql.upserts("tasks", rows))

    assert [v for _, params in statements for v in params] == [v for row in rows for v in row]
    for text, params in statements:
        size = len(params) // width
        assert size & (size - 1) == 0
        assert len(params) <= 999
        assert text == sql.upsert_text("tasks", size)
        assert text.count("?") == len(params)
    per_statement = 1 << (999 // width).bit_length() - 1  # the most rows within 999 values
    assert len(statements) <= count // per_statement + 6


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "sqlite:///{cwd}/serendib.db"),
        ("", "sqlite:///{cwd}/serendib.db"),
        ("sqlite:///data/run.db", "sqlite:///{cwd}/data/run.db"),
        ("sqlite:////srv/serendib/run.db", "sqlite:////srv/serendib/run.db"),
        ("sqlite:///run.db?synchronous=full", "sqlite:///{cwd}/run.db?synchronous=full"),
        ("runs/run.sqlite", "sqlite:///{cwd}/runs/run.sqlite"),
        ("/srv/run.sqlite3", "sqlite:////srv/run.sqlite3"),
        ("sqlite://:memory:", "sqlite://:memory:"),
        ("postgresql://u:secret@db:5433/tasks", "postgresql://u:***@db:5433/tasks"),
        ("postgres://db/tasks?schema=run_1", "postgres://db/tasks?schema=run_1"),
    ],
)
def test_open_store_understands_its_urls(
    url: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert open_store(url).url == expected.format(cwd=tmp_path.resolve())


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@db/tasks",
        "tasks.txt",
        "sqlite://host/tasks.db",
        "sqlite:///tasks.db?journal=off",
        "postgresql://db/tasks?schema=no-dashes",
    ],
)
def test_open_store_refuses_other_urls_saying_what_it_accepts(url: str) -> None:
    with pytest.raises(StoreError) as raised:
        open_store(url)

    message = str(raised.value)
    assert "secret" not in message
    assert "sqlite:///" in message or "schema" in message or "synchronous" in message


@pytest.mark.parametrize(
    ("url", "conninfo", "schema"),
    [
        ("postgresql://db/tasks", "postgresql://db/tasks", None),
        ("postgres://u:p@db/t?sslmode=require", "postgres://u:p@db/t?sslmode=require", None),
        (
            "postgresql://db/t?options=-c%20statement_timeout%3D5s&schema=run_1",
            "postgresql://db/t?options=-c%20statement_timeout%3D5s",
            "run_1",
        ),
    ],
)
def test_the_schema_parameter_is_taken_out_of_the_connection_url(
    url: str, conninfo: str, schema: str | None
) -> None:
    assert _postgres_target(url) == (conninfo, schema)


def test_a_postgres_url_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "serendib.tasks.store.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)

    with pytest.raises(ImportError, match=r"pip install 'serendib\[postgres\]'"):
        open_store("postgresql://db/tasks")


async def test_counts_follow_every_state_change_and_survive_reopening(store_url: str) -> None:
    """Counts are kept by the database as rows change state, not recounted on each read."""
    store = open_store(store_url)
    await store.open()
    records = [TaskRecord(task=Task(id=f"c{i}", difficulty=1)) for i in range(30)]
    await store.add(records)
    assigned = [r.assigned("w", "why", 1.0) for r in records[:20]]
    await store.save(assigned)
    await store.save([r.succeeded(None, 2.0) for r in assigned[:12]])
    await store.save([r.failed("no", 2.0) for r in assigned[12:15]])
    await store.save([r.succeeded(None, 3.0) for r in assigned[:12]])  # same state again
    expected = {
        TaskState.PENDING: 10,
        TaskState.ASSIGNED: 5,
        TaskState.SUCCEEDED: 12,
        TaskState.FAILED: 3,
    }
    counts = await store.counts()
    assert {k: v for k, v in counts.items() if v} == expected
    await store.close()
    reopened = open_store(store_url)
    await reopened.open()
    try:
        assert {k: v for k, v in (await reopened.counts()).items() if v} == expected
    finally:
        await reopened.close()


# --- refused records and the quarantine ---------------------------------------------------------


def _is_postgres(store: TaskStore) -> bool:
    return store.url.startswith(("postgresql://", "postgres://"))


def _backend(store: TaskStore) -> Backend:
    return cast(SqlTaskStore, store)._backend


async def test_update_stores_all_but_the_refused_records_and_quarantines_them(
    store: TaskStore,
) -> None:
    records = [task(n) for n in range(1_100)]  # several multi-row statements
    await store.add(records)
    assigned = [r.assigned("w", "fit", 2.0) for r in records]
    updates = [update_of(r) for r in assigned]
    rows = [attempt_row(attempt(r)) for r in assigned]
    # An int beyond 64 bits (beyond 4300 digits, even: it has no repr) fails on both
    # databases; PostgreSQL text cannot hold NUL; SQLite integers stop at 2**63 - 1.
    updates[3] = updates[3]._replace(attempt=10**5000, error="x\x00\ud800" + "y" * 10_000)
    stale = [(records[0].id, 1), (records[1].id, 10**30)]
    if _is_postgres(store):
        rows[700] = rows[700]._replace(worker="w\x00rm")
        # An attempt number beyond every attempt is merely not found; NUL in an id is refused.
        stale[1] = (records[1].id + "\x00", 1)
    else:
        rows[700] = rows[700]._replace(attempt=2**63)
    before = await store.quarantine_count()

    rejected, added = await asyncio.gather(
        store.update(updates, rows, stale), store.add([task(5_000)])
    )

    assert [(r.kind, r.position) for r in rejected] == [("task", 3), ("attempt", 700), ("stale", 1)]
    assert added == [task(5_000)]  # a write batched with the refused ones is not affected
    stored = await store.all_records()
    assert stored[3] == records[3]  # the refused change is not stored...
    assert stored[:3] + stored[4:1_100] == assigned[:3] + assigned[4:]  # ...every other is
    attempts = await store.all_attempts()
    assert len(attempts) == 1_099
    assert rows[700].task_id not in {a.task_id for a in attempts}
    assert next(a for a in attempts if a.task_id == records[0].id).stale_results == 1

    assert await store.quarantine_count() == before + 3
    quarantined = await store.quarantined()
    assert [(q.kind, q.task_id) for q in quarantined] == [
        ("task", records[3].id),
        ("attempt", records[700].id),
        ("stale", safe_text(stale[1][0])),
    ]
    assert [q.seq for q in quarantined] == sorted(q.seq for q in quarantined)
    task_q, attempt_q, stale_q = quarantined
    assert task_q.attempt is None
    assert stale_q.attempt == str(stale[1][1])
    for q, r in zip(quarantined, rejected, strict=True):
        assert r.error
        assert r.error in q.error
    content = json.loads(task_q.record)
    assert content["id"] == records[3].id
    assert content["state"] == "assigned"
    assert content["attempt"] == "<int of 16610 bits too large to show>"
    assert content["error"].startswith("x\x00\ud800yyy")
    assert "more characters" in content["error"]
    assert "\x00" not in task_q.record  # escaped: JSON text is ASCII
    attempt_content = json.loads(attempt_q.record)
    assert attempt_content["worker"] == rows[700].worker
    if not _is_postgres(store):
        assert attempt_content["attempt"] == str(2**63)  # beyond 64 bits: its repr
    assert attempt_q.attempt == str(rows[700].attempt)
    assert await store.quarantined(limit=1) == quarantined[:1]

    # Later writes go through; the refused records can be written once they are right.
    assert await store.update([update_of(assigned[3])], [attempt_row(attempt(assigned[3]))]) == []
    assert await store.get(records[3].id) == assigned[3]


async def test_an_add_with_a_refused_record_fails_alone(store: TaskStore) -> None:
    bad = task(1).model_copy(update={"attempt": 10**30})
    assigned = task(2).assigned("w", "fit", 2.0)
    await store.add([task(2)])

    results = await asyncio.gather(
        store.add([task(0)]),
        store.add([task(3), bad]),
        store.update([update_of(assigned)]),
        return_exceptions=True,
    )

    assert results[0] == [task(0)]
    assert isinstance(results[1], RecordRefused)
    assert store.url in str(results[1])
    assert results[2] == []
    assert ids(await store.all_records()) == ["t00002", "t00000"]
    assert await store.get("t00002") == assigned
    assert await store.quarantined() == []  # an add fails its caller: nothing to quarantine


async def test_an_unavailable_store_fails_the_update_and_quarantines_nothing(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(store)
    outage: Exception
    if _is_postgres(store):
        import psycopg

        outage = psycopg.OperationalError("server closed the connection unexpectedly")
    else:
        outage = sqlite3.OperationalError("database is locked")
    update = backend._update

    def locked(rows: Sequence[TaskUpdate]) -> None:
        raise outage

    await store.add([task(0)])
    monkeypatch.setattr(backend, "_update", locked)
    assigned = task(0).assigned("w", "fit", 2.0)

    with pytest.raises(StoreError, match=str(outage)):
        await store.update([update_of(assigned)], [attempt_row(attempt(assigned))])

    monkeypatch.setattr(backend, "_update", update)
    assert await store.all_records() == [task(0)]
    assert await store.all_attempts() == []
    assert await store.quarantine_count() == 0
    assert await store.update([update_of(assigned)]) == []
    assert await store.get("t00000") == assigned


async def test_the_quarantine_survives_reopening_and_is_added_to_older_stores(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    async with open_store(str(path)) as store:
        await store.add([task(0)])
    with sqlite3.connect(path) as conn:  # a store made before the quarantine table existed
        conn.execute("DROP TABLE serendib_quarantine")
        for column in ("replays", "attempt_base", "not_before"):  # added by versions 4, 5
            conn.execute(f"ALTER TABLE serendib_tasks DROP COLUMN {column}")
        conn.execute("DROP TABLE serendib_edges")
        conn.execute("UPDATE serendib_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()

    async with open_store(str(path)) as store:
        refused = update_of(task(0).assigned("w", "fit", 2.0))._replace(attempt=2**64)
        assert [r.kind for r in await store.update([refused])] == ["task"]
    async with open_store(str(path)) as store:
        (quarantined,) = await store.quarantined()
        assert (quarantined.kind, quarantined.task_id) == ("task", "t00000")
        assert "too large" in quarantined.error
        assert await store.all_records() == [task(0)]


def test_sqlite_tells_refused_records_from_an_unavailable_database() -> None:
    backend = SqliteBackend(None)
    refused = [
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        TypeError("odd"),
        sqlite3.IntegrityError("NOT NULL constraint failed"),
        sqlite3.ProgrammingError("Error binding parameter 1: type 'object' is not supported"),
    ]
    unavailable = [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.DatabaseError("database disk image is malformed"),
        sqlite3.ProgrammingError("Cannot operate on a closed database."),
        StoreError("the task store is not open"),
        OSError("no space left"),
    ]
    assert [backend.is_data_error(e) for e in refused] == [True] * len(refused)
    assert [backend.is_data_error(e) for e in unavailable] == [False] * len(unavailable)


def test_postgres_tells_refused_records_from_an_unavailable_database() -> None:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import errors

    from serendib.tasks.store.postgres import PostgresBackend

    backend = PostgresBackend("postgresql://db/tasks", "postgresql://db/tasks", None)
    refused = [
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        errors.NumericValueOutOfRange("integer out of range"),
        errors.NotNullViolation("null value"),
        psycopg.ProgrammingError("cannot adapt type 'object'"),
        ValueError("Exceeds the limit (4300 digits) for integer string conversion"),
    ]
    unavailable = [
        psycopg.OperationalError("connection lost"),
        errors.AdminShutdown("terminating connection"),
        errors.UndefinedTable("relation does not exist"),
        psycopg.InterfaceError("the connection is closed"),
        StoreError("the task store is not open"),
    ]
    assert [backend.is_data_error(e) for e in refused] == [True] * len(refused)
    assert [backend.is_data_error(e) for e in unavailable] == [False] * len(unavailable)


def test_a_quarantine_row_holds_anything_as_text() -> None:
    huge = 10**5000
    row = quarantine_row(
        "attempt",
        ("t\x00", huge, "w" * 5_000, "r", "running", math.inf, None, math.nan, "e", True, 0),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        12.5,
    )
    at, kind, task_id, attempt_text, error, record = row
    assert (at, kind, task_id) == (12.5, "attempt", "t\\x00")
    assert attempt_text == "<int of 16610 bits too large to show>"
    assert error == "OverflowError: Python int too large to convert to SQLite INTEGER"
    assert record.isascii()
    content = json.loads(record)
    assert content["task_id"] == "t\x00"
    assert content["assigned_at"] == "inf"
    assert content["finished_at"] == "nan"
    assert content["worker"].startswith("w" * 4_096 + "... (904 more characters)")
    assert content["escalated"] is True
    assert safe_text("a" * 2_000, 10) == "aaaaaaaaaa... (1990 more characters)"
    assert safe_text("\ud800\x00") == "\\ud800\\x00"


# --- dependencies, times and schedules (schema step 5) ----------------------------------------


async def test_children_are_read_in_submission_order_and_times_kept(store: TaskStore) -> None:
    parent = task(0)
    first = TaskRecord(task=Task(id="c1", difficulty=1, depends_on=["t00000"]), not_before=5.0)
    second = TaskRecord(task=Task(id="c2", difficulty=1, depends_on=["t00000", "c1"]))
    await store.add([parent, first, second])
    await store.add([first])  # a duplicate adds no edge

    assert await store.children("t00000") == ["c1", "c2"]
    assert await store.children("c1") == ["c2"]
    assert await store.children("c2") == []
    assert await store.children("t00000", limit=1) == ["c1"]
    stored = await store.get("c1")
    assert stored is not None
    assert stored.not_before == 5.0
    later = update_of(stored)._replace(not_before=9.5)
    await store.update([later])
    again = await store.get("c1")
    assert again is not None
    assert again.not_before == 9.5


async def test_schedules_are_saved_replaced_and_deleted(store: TaskStore) -> None:
    await store.save_schedules([("a", '{"x": 1}', 1.0), ("b", '{"y": 2}', 2.0)])
    await store.save_schedules([("a", '{"x": 3}', 4.0), ("b", None, 0.0)])
    assert await store.schedules() == [("a", '{"x": 3}', 4.0)]

"""Schema migrations: a store made by an older Serendib is upgraded in place, on SQLite and
PostgreSQL; a newer one is refused; a current one is left alone."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from serendib.errors import StoreError
from serendib.tasks.models import AttemptOutcome, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store import TaskUpdate, attempt_row, open_store
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.migrations import LATEST, Migration, pending, postgres, sqlite
from serendib.tasks.store.rows import TASK_COLUMNS, quarantine_row, task_row
from serendib.tasks.store.sqlite import SqliteBackend
from tests.helpers import postgres_test_url

_SINCE = {"replays": 4, "attempt_base": 4, "not_before": 5}
"""The task columns added after version 1, with the version that added each."""


class RawStore:
    """A store's database reached without the store: to build old versions and look inside."""

    param = ""
    """How the database spells a parameter."""

    def __init__(
        self, url: str, backend: Backend, migrations: Sequence[Migration], prefix: str = ""
    ) -> None:
        self.url = url
        self.sql = backend.sql
        self.migrations = migrations
        self.prefix = prefix
        """What table and index names are qualified with (a PostgreSQL schema)."""

    def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run ``statements`` (with their parameters) in one transaction."""
        raise NotImplementedError

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        raise NotImplementedError

    def objects(self) -> set[str]:
        """The names of the store's tables, indexes and triggers."""
        raise NotImplementedError

    def version(self) -> str | None:
        """The recorded schema version."""
        rows = self.fetch(self.sql.schema_version)
        return str(rows[0][0]) if rows else None

    def build(self, version: int, *, leave_out: str = "", tasks: Sequence[TaskRecord] = ()) -> None:
        """Make the store as Serendib made it at ``version``, holding ``tasks`` (and their
        attempts), without the statements that mention ``leave_out``."""
        statements: list[tuple[str, Sequence[Any]]] = [
            (sql, ())
            for step in self.migrations[:version]
            for sql in step.statements
            if not (leave_out and leave_out in sql)
        ]
        statements.append((self.sql.set_schema_version, (str(version),)))
        # The task columns of that version (the last are the newest).
        columns = [c for c in TASK_COLUMNS if version >= _SINCE.get(c, 1)]
        marks = ", ".join(self.param for _ in columns)
        insert = f"INSERT INTO {self.prefix}serendib_tasks ({', '.join(columns)}) VALUES ({marks})"
        statements += [(insert, task_row(r)[: len(columns)]) for r in tasks]
        statements += [
            (self.sql.upsert_text("attempts", 1), tuple(attempt_row(a)))
            for r in tasks
            for a in _attempts_of(r)
        ]
        self.run(statements)


class SqliteRaw(RawStore):
    param = "?"

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:///{path}", SqliteBackend(path), sqlite())
        self.path = path

    def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def objects(self) -> set[str]:
        return {name for (name,) in self.fetch("SELECT name FROM sqlite_master")}


class PostgresRaw(RawStore):
    param = "%s"

    def __init__(self, base: str, schema: str) -> None:
        from serendib.tasks.store.postgres import PostgresBackend

        url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
        backend = PostgresBackend(base, url, schema)
        super().__init__(url, backend, postgres(schema), f'"{schema}".')
        self.base = base
        self.schema = schema

    def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        import psycopg

        with psycopg.connect(self.base) as conn:  # one transaction, committed on exit
            for sql, params in statements:
                conn.execute(sql, params or None)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            return conn.execute(sql, params or None).fetchall()

    def objects(self) -> set[str]:
        names = self.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "UNION SELECT indexname FROM pg_indexes WHERE schemaname = %s "
            "UNION SELECT trigger_name FROM information_schema.triggers "
            "WHERE event_object_schema = %s",
            (self.schema, self.schema, self.schema),
        )
        return {name for (name,) in names}

    def drop(self) -> None:
        self.run([(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE', ())])


@pytest.fixture(params=["sqlite", "postgres"])
def raw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawStore]:
    """An empty store no other test uses, reached directly: a SQLite file or a PostgreSQL
    schema."""
    if request.param == "sqlite":
        yield SqliteRaw(tmp_path / "tasks.db")
        return
    store = PostgresRaw(postgres_test_url(), f"serendib_migrations_{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        store.drop()


@pytest.fixture
def upgrades() -> Iterator[list[str]]:
    """The "upgraded task store" lines logged while the test runs."""
    lines: list[str] = []

    def sink(message: Any) -> None:
        if "upgraded task store" in str(message):
            lines.append(str(message).rstrip("\n"))

    sink_id = logger.add(sink, level="INFO", format="{level} {message}")
    yield lines
    logger.remove(sink_id)


def _tasks() -> list[TaskRecord]:
    pending_ = TaskRecord(task=Task(id="old-pending", difficulty=1), submitted_at=1.0)
    running = TaskRecord(task=Task(id="old-running", difficulty=2), submitted_at=2.0)
    done = TaskRecord(task=Task(id="old-done", difficulty=3), submitted_at=3.0)
    return [
        pending_,
        running.assigned("w1", "fit", 4.0),
        done.assigned("w2", "fit", 5.0).succeeded({"answer": 42}, 6.0),
    ]


def _attempts_of(record: TaskRecord) -> list[AttemptRecord]:
    if record.attempt == 0 or record.worker is None:
        return []
    outcome = AttemptOutcome.SUCCEEDED if record.state.is_final else AttemptOutcome.RUNNING
    return [
        AttemptRecord(
            task_id=record.task.id,
            attempt=record.attempt,
            worker=record.worker,
            reason="fit",
            outcome=outcome,
            assigned_at=record.updated_at,
            finished_at=record.finished_at,
        )
    ]


def _refused_update(record: TaskRecord) -> TaskUpdate:
    return TaskUpdate(record.task.id, "assigned", 2**64, "w", "fit", 9.0, None, None, None)


# --- the steps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "migrations", [sqlite(), postgres(None), postgres("run_1")], ids=["sqlite", "pg", "pg-schema"]
)
def test_the_steps_are_numbered_in_order_up_to_the_latest(
    migrations: tuple[Migration, ...],
) -> None:
    assert [step.version for step in migrations] == list(range(1, LATEST + 1))
    assert all(step.statements and step.summary for step in migrations)
    # Step 1 is version 1 as released: the quarantine came with step 2.
    assert not any("serendib_quarantine" in sql for sql in migrations[0].statements)
    assert any("serendib_quarantine" in sql for sql in migrations[1].statements)


def test_pending_steps_follow_the_stored_version() -> None:
    steps = sqlite()

    assert pending(None, steps, "db") == list(steps)
    assert [step.version for step in pending("1", steps, "db")] == list(range(2, LATEST + 1))
    assert pending(str(LATEST), steps, "db") == []


@pytest.mark.parametrize("found", ["0", "-1", "1.0", " 2", "two", "", "²"])
def test_a_version_that_no_serendib_makes_is_refused(found: str) -> None:
    with pytest.raises(StoreError, match="which no Serendib makes") as raised:
        pending(found, sqlite(), "sqlite:///x.db")
    assert raised.value.url == "sqlite:///x.db"


# --- upgrading a store ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leave_out",
    ["", "serendib_count"],
    ids=["version-1", "version-1-before-counts"],
)
async def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_tasks(
    raw: RawStore, upgrades: list[str], leave_out: str
) -> None:
    records = _tasks()
    raw.build(1, leave_out=leave_out, tasks=records)
    assert raw.version() == "1"
    assert not any("quarantine" in name for name in raw.objects())

    async with open_store(raw.url) as store:
        assert await store.all_records() == records
        assert [a.task_id for a in await store.open_attempts()] == ["old-running"]
        assert await store.completed_by_worker() == {"w2": 1}
        counts = {state: n for state, n in (await store.counts()).items() if n}
        assert counts == {TaskState.PENDING: 1, TaskState.ASSIGNED: 1, TaskState.SUCCEEDED: 1}
        rejected = await store.update([_refused_update(records[0])])
        assert [r.kind for r in rejected] == ["task"]
        (quarantined,) = await store.quarantined()
        assert quarantined.task_id == "old-pending"
        await store.save([records[0].assigned("w1", "fit", 10.0)])
        assert (await store.counts())[TaskState.ASSIGNED] == 2
        url = store.url

    assert raw.version() == str(LATEST)
    assert upgrades == [f"INFO upgraded task store {url} from version 1 to {LATEST}"]
    assert raw.objects() == _objects_of_a_new_store(raw)  # the same tables, indexes, triggers


def _objects_of_a_new_store(raw: RawStore) -> set[str]:
    other: RawStore
    if isinstance(raw, SqliteRaw):
        other = SqliteRaw(raw.path.with_name("fresh.db"))
        other.build(LATEST)
        return other.objects()
    assert isinstance(raw, PostgresRaw)
    other = PostgresRaw(raw.base, f"{raw.schema}_fresh")
    try:
        other.build(LATEST)
        return other.objects()
    finally:
        other.drop()


async def test_a_version_1_store_that_has_the_quarantine_keeps_its_records(
    raw: RawStore, upgrades: list[str]
) -> None:
    """A recent version-1 Serendib made the quarantine table without a new version."""
    records = _tasks()
    raw.build(2, tasks=records)
    refused = quarantine_row("task", tuple(_refused_update(records[0])), OverflowError("big"), 7.0)
    raw.run(
        [
            (raw.sql.quarantine, refused),
            (raw.sql.set_schema_version, ("1",)),
        ]
    )

    async with open_store(raw.url) as store:
        (kept,) = await store.quarantined()
        assert (kept.kind, kept.task_id, kept.quarantined_at) == ("task", "old-pending", 7.0)
        assert await store.all_records() == records
        await store.update([_refused_update(records[1])])
        assert await store.quarantine_count() == 2

    assert raw.version() == str(LATEST)
    assert len(upgrades) == 1


async def test_opening_a_current_store_again_changes_nothing(
    raw: RawStore, upgrades: list[str]
) -> None:
    async with open_store(raw.url) as store:
        await store.add([TaskRecord(task=Task(id="t1", difficulty=1))])
    assert raw.version() == str(LATEST)
    # Had a step run again, its CREATE INDEX IF NOT EXISTS would bring the index back.
    raw.run([("DROP INDEX " + raw.prefix + "serendib_tasks_worker", ())])

    async with open_store(raw.url) as store:
        assert [r.task.id for r in await store.all_records()] == ["t1"]

    assert "serendib_tasks_worker" not in raw.objects()
    assert raw.version() == str(LATEST)
    assert upgrades == []


async def test_a_store_of_a_newer_version_is_refused_saying_to_upgrade_serendib(
    raw: RawStore, upgrades: list[str]
) -> None:
    raw.build(LATEST, tasks=_tasks())
    raw.run([(raw.sql.set_schema_version, ("99",))])
    store = open_store(raw.url)

    with pytest.raises(StoreError, match=r"schema version 99, newer .*upgrade Serendib") as raised:
        await store.open()

    assert raised.value.url == store.url
    assert raw.version() == "99"  # untouched
    assert upgrades == []
    with pytest.raises(StoreError, match="is new"):
        await store.get("old-pending")  # not left half open

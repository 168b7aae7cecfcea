"""Task store writes through SQLAlchemy 2 Core, to set beside ``bench.store`` (issue #11 item 5).

The question: could SQLAlchemy Core carry the task store within 10% of today's write rate?
This module swaps only the layer that runs SQL. The real group-commit store
(:class:`~serendib.tasks.store.group_commit.SqlTaskStore`) and the real batch planning
(:class:`~serendib.tasks.store.backend.Backend`) drive a backend whose statements are
SQLAlchemy Core: ``insert(...).on_conflict_do_update(...)`` of tasks and attempts, run as an
executemany by ``connection.execute(stmt, list_of_dicts)``, and ``select(...).where(
id.in_(bindparam(..., expanding=True)))`` for the ids an ``add`` finds already stored. The
schema is the real one, made by the real migrations; transactions are the real ones (SQLite
``BEGIN IMMEDIATE`` through SQLAlchemy's documented ``begin`` event; PostgreSQL ``BEGIN`` and
the same advisory lock). The workload is ``bench.store``'s write cases, unchanged (its
``_lifecycle``): add, assign, finish; one save per task, batches of 1,000, four batches in
flight; best of three runs each.

How SQLAlchemy runs the executemany (``STYLE``, or ``SERENDIB_BENCH_SQLALCHEMY=a,b`` to set
which are measured):

- ``executemany``: plain Core executemany, which SQLAlchemy hands to the driver's
  ``cursor.executemany`` (psycopg 3 pipelines it, as the hand-written PostgreSQL backend does;
  sqlite3 steps once per row).
- ``insertmanyvalues``: the same statements with ``RETURNING`` added, which makes SQLAlchemy
  batch the rows into multi-row ``INSERT ... VALUES (...), (...)`` statements (its
  "insertmanyvalues" mode, pages of ``insertmanyvalues_page_size`` rows) as the hand-written
  SQLite backend does with 512 rows a statement.

Defaults: the faster of the two on each database. ``update`` (the manager's own write path,
which bench.store does not exercise) is Core ``update(...).where(id == bindparam(...))`` run
as an executemany. The stale-result counts and the quarantine (never on these paths) and the
statements run at open go through the driver's SQL text; reads are not measured.

Two tables: first the write path alone, the same encoded batches handed to
``Backend.write`` of the hand-written backend and of this one in turn (no event loop, so the
difference is the SQL layer's), then ``bench.store``'s write cases through the whole store.

Run alone: ``python -m bench.store_sqlalchemy [--quick] [--json]``; PostgreSQL when
SERENDIB_TEST_POSTGRES_URL is set. ``python -m bench.store_sqlalchemy --profile [PostgreSQL]``
prints a cProfile of the SQLAlchemy write path (SQLite by default).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._util import Table, module_main
from bench.store import (
    BATCH,
    IN_FLIGHT,
    POSTGRES_ENV,
    REPEATS,
    WAVE,
    _drop_schema,
    _lifecycle,
    _tasks,
)
from serendib.tasks.models import AttemptOutcome, AttemptRecord
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.group_commit import SqlTaskStore
from serendib.tasks.store.protocol import TaskUpdate, attempt_row
from serendib.tasks.store.rows import (
    ATTEMPT_COLUMNS,
    TASK_COLUMNS,
    UPDATE_COLUMNS,
    PendingWrite,
    Row,
    task_row,
)
from serendib.urls import redact_url

__all__ = ["STYLE", "SqlAlchemyBackend", "run"]

STYLE = {"SQLite": "insertmanyvalues", "PostgreSQL": "executemany"}
"""The executemany style measured on each database unless SERENDIB_BENCH_SQLALCHEMY says."""
STYLES = ("executemany", "insertmanyvalues")
_IN_CHUNK = 500  # ids per IN (...), as the real backend


def _tables(schema: str | None, postgres: bool) -> tuple[Any, Any]:
    """The tasks and attempts tables as SQLAlchemy sees them (made by the real migrations)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    class JsonText(sa.types.TypeDecorator[str]):
        """JSON text the caller has encoded; PostgreSQL gets it as ``%s::json``, as today."""

        impl = sa.Text
        cache_ok = True

        def bind_expression(self, bindvalue: Any) -> Any:
            return sa.cast(bindvalue, postgresql.JSON)

    # Types that need no bind processing, as the hand-written backends bind plain values
    # (escalated: a bool PostgreSQL takes as boolean and SQLite as an integer).
    text, number, integer = sa.Text, sa.Float, sa.Integer
    escalated = sa.Boolean if postgres else sa.Integer
    json_text = JsonText if postgres else sa.Text
    meta = sa.MetaData(schema=schema)
    types = {
        "attempt": integer,
        "difficulty": integer,
        "priority": integer,
        "stale_results": integer,
        "escalated": escalated,
        "submitted_at": number,
        "updated_at": number,
        "finished_at": number,
        "assigned_at": number,
        "started_at": number,
        "task": json_text,
        "output": json_text,
    }
    tasks = sa.Table(
        "serendib_tasks",
        meta,
        sa.Column("seq", sa.BigInteger, unique=True),
        sa.Column("id", text, primary_key=True),
        *(sa.Column(c, types.get(c, text)) for c in TASK_COLUMNS[1:]),
    )
    attempts = sa.Table(
        "serendib_attempts",
        meta,
        sa.Column("task_id", text, primary_key=True),
        sa.Column("attempt", integer, primary_key=True),
        *(sa.Column(c, types.get(c, text)) for c in ATTEMPT_COLUMNS[2:]),
    )
    return tasks, attempts


class SqlAlchemyBackend(Backend):
    """The write path of :class:`SqliteBackend` or :class:`PostgresBackend` in SQLAlchemy Core.

    ``template``: the hand-written backend of the same database; its statement texts (for
    opening and reads), migrations, URL and judgement of refused records are reused, so only
    the measured write path differs.
    """

    def __init__(self, template: Backend, engine_url: str, schema: str | None, style: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy import event

        # The hand-written backend's dialect: the same table names, statement texts, schema.
        super().__init__(template.sql._dialect, template.migrations)
        self.url = f"{template.url} (SQLAlchemy Core, {style})"
        self.shares_connection = template.shares_connection
        self.driver_errors = (sa.exc.DBAPIError, *template.driver_errors)
        self._template = template
        self._postgres = engine_url.startswith("postgresql")
        self._engine = sa.create_engine(engine_url)
        if not self._postgres:

            @event.listens_for(self._engine, "connect")
            def connect(dbapi_connection: Any, _record: Any) -> None:
                # SQLAlchemy's recipe: sqlite3 emits no BEGIN of its own, the begin event does.
                dbapi_connection.isolation_level = None
                dbapi_connection.execute("PRAGMA journal_mode = WAL")
                dbapi_connection.execute("PRAGMA synchronous = NORMAL")
                dbapi_connection.execute("PRAGMA cache_size = -65536")

            @event.listens_for(self._engine, "begin")
            def begin(conn: Any) -> None:
                if conn is self._writer:  # the reader reads outside transactions, as today
                    conn.exec_driver_sql("BEGIN IMMEDIATE")

        self._lock_key = zlib.crc32(f"serendib task store {schema or ''}".encode())
        self._writer: Any = None
        self._reader: Any = None
        self._transaction: Any = None
        self._build(schema, style)

    def _build(self, schema: str | None, style: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql, sqlite

        tasks, attempts = _tables(schema, self._postgres)
        insert = postgresql.insert if self._postgres else sqlite.insert

        def upsert(table: Any, key: Sequence[str], columns: Sequence[str]) -> Any:
            stmt = insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c[c] for c in key],
                set_={c: stmt.excluded[c] for c in columns if c not in key},
            )
            # RETURNING turns SQLAlchemy's executemany into batched multi-row statements.
            return stmt.returning(table.c[key[0]]) if style == "insertmanyvalues" else stmt

        self._upserts = {
            "tasks": (upsert(tasks, ["id"], TASK_COLUMNS), TASK_COLUMNS),
            "attempts": (
                upsert(attempts, ["task_id", "attempt"], ATTEMPT_COLUMNS),
                ATTEMPT_COLUMNS,
            ),
        }
        self._update_stmt = (
            sa.update(tasks)
            .where(tasks.c.id == sa.bindparam("b_id"))
            .values({c: sa.bindparam(f"b_{c}") for c in UPDATE_COLUMNS[1:]})
        )
        self._existing_stmt = sa.select(tasks.c.id).where(
            tasks.c.id.in_(sa.bindparam("ids", expanding=True))
        )

    def is_data_error(self, error: BaseException) -> bool:
        """As the hand-written backend judges the driver's error SQLAlchemy wraps."""
        import sqlalchemy as sa

        if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
            error = error.orig
        return self._template.is_data_error(error)

    def _connect_writer(self) -> None:
        self._writer = self._engine.connect()

    def _has_meta(self) -> bool:
        import sqlalchemy as sa

        return bool(sa.inspect(self._writer).has_table("serendib_meta", schema=self._schema()))

    def _schema(self) -> str | None:
        return self._upserts["tasks"][0].table.schema

    def _connect_reader(self) -> None:
        self._reader = self._engine.connect()
        if not self._postgres:
            self._reader.exec_driver_sql("PRAGMA query_only = ON")
            self._reader.rollback()

    def close_writer(self) -> None:
        """Close the writer connection and the engine's pool."""
        if self._writer is not None:
            conn, self._writer = self._writer, None
            conn.close()
        self._engine.dispose()

    def close_reader(self) -> None:
        """Close the reader connection."""
        if self._reader is not None:
            conn, self._reader = self._reader, None
            conn.close()

    def _begin(self) -> None:
        import sqlalchemy as sa

        self._transaction = self._writer.begin()
        if self._postgres:
            self._writer.execute(sa.select(sa.func.pg_advisory_xact_lock(self._lock_key)))

    def _commit(self) -> None:
        self._transaction.commit()

    def _rollback(self) -> None:
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()

    def _upsert(self, table: str, rows: Sequence[Row]) -> None:
        stmt, columns = self._upserts[table]
        self._writer.execute(stmt, [dict(zip(columns, row, strict=True)) for row in rows])

    def _update(self, rows: Sequence[TaskUpdate]) -> None:
        names = [f"b_{c}" for c in UPDATE_COLUMNS]
        self._writer.execute(
            self._update_stmt, [dict(zip(names, row, strict=True)) for row in rows]
        )

    def _existing(self, ids: list[str]) -> set[str]:
        unique = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            found.update(self._writer.execute(self._existing_stmt, {"ids": chunk}).scalars())
        return found

    # Opening, the stale counts and the quarantine: the real store's statement texts.

    def _executemany(self, sql: str, rows: Sequence[Row]) -> None:
        self._writer.exec_driver_sql(sql, list(rows))

    def _execute(self, sql: str) -> None:
        self._writer.exec_driver_sql(sql)

    def _write_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return [tuple(r) for r in self._writer.exec_driver_sql(sql, tuple(params))]

    def _read_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        conn = self._writer if self.shares_connection else self._reader
        rows = [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]
        conn.rollback()  # end what SQLAlchemy began, so the next read sees new commits
        return rows


async def _writes(store: SqlTaskStore, label: str, count: int) -> Table:
    writes = Table(
        f"Task store writes, SQLAlchemy Core: {label}",
        ["case", "rows", "seconds", "rows/s", "rows/cpu-s", "transactions"],
        notes=[
            f"{count:,} tasks per mode; waves of {WAVE:,} concurrent saves; batches of {BATCH:,} "
            f"tasks; best of {REPEATS} runs; the workload of bench.store",
            "rows/cpu-s: rows per second of this process's CPU time (the machine may be shared)",
        ],
    )
    async with store:
        for mode in ("one save per task", "batches of 1,000", f"{IN_FLIGHT} batches in flight"):
            runs = [await _lifecycle(store, count, mode, f"{mode[0]}{r}-") for r in range(REPEATS)]
            for phase in zip(*runs, strict=True):
                writes.rows.append(max(phase, key=lambda row: float(row["rows/s"] or 0)))
    return writes


# --- the write path alone: the same encoded batches into either backend, no event loop ------


def _phases(count: int) -> list[tuple[str, list[PendingWrite]]]:
    """Encoded batches of BATCH tasks: add, save assigned, save finished (bench.store's
    phases), then the manager's fast path: ``update`` of state and attempt rows."""
    submitted = _tasks(count, "p-")
    now = time.time()
    assigned = [r.assigned(f"w{n % 64}", "fit", now) for n, r in enumerate(submitted)]
    running = [
        AttemptRecord(task_id=r.id, attempt=1, worker=r.worker or "", assigned_at=now)
        for r in assigned
    ]
    finished = [r.running(now).succeeded({"ok": True}, now) for r in assigned]
    ended = [a.ended(AttemptOutcome.SUCCEEDED, now, started_at=now) for a in running]
    retried = [r.assigned(f"w{n % 64}", "fit", now + 1) for n, r in enumerate(submitted)]

    def chunks(make: Callable[[slice], PendingWrite]) -> list[PendingWrite]:
        return [make(slice(i, i + BATCH)) for i in range(0, count, BATCH)]

    def update(part: slice) -> PendingWrite:
        updates = [
            TaskUpdate(r.id, r.state.value, 2, r.worker, r.reason, now, None, None, None)
            for r in retried[part]
        ]
        rows = [attempt_row(a) for a in ended[part]]
        return PendingWrite(False, (), rows, updates, split=True)

    return [
        ("add", chunks(lambda p: PendingWrite(True, [task_row(r) for r in submitted[p]], []))),
        (
            "save: assign",
            chunks(
                lambda p: PendingWrite(
                    False, [task_row(r) for r in assigned[p]], [attempt_row(a) for a in running[p]]
                )
            ),
        ),
        (
            "save: finish",
            chunks(
                lambda p: PendingWrite(
                    False, [task_row(r) for r in finished[p]], [attempt_row(a) for a in ended[p]]
                )
            ),
        ),
        ("update (the manager's path)", chunks(update)),
    ]


def _write_path(backend: Backend, phases: list[tuple[str, list[PendingWrite]]]) -> list[float]:
    """Rows per second of each phase, one transaction per batch, in this thread."""
    backend.open_writer()
    try:
        rates = []
        for _, writes in phases:
            start = time.perf_counter()
            for write in writes:
                backend.write([write])
            rates.append(sum(w.size for w in writes) / (time.perf_counter() - start))
        return rates
    finally:
        backend.close_writer()


@contextmanager
def _databases() -> Iterator[list[tuple[str, Callable[[str], Backend]]]]:
    """(label, make backend: "hand-written" or a style) for SQLite and, if set, PostgreSQL;
    every call makes a new, empty store."""
    from serendib.tasks.store.sqlite import SqliteBackend

    made: list[str] = []
    postgres = os.environ.get(POSTGRES_ENV)
    with tempfile.TemporaryDirectory(prefix="serendib-bench-") as directory:

        def sqlite(kind: str) -> Backend:
            path = Path(directory) / f"{uuid.uuid4().hex[:8]}.db"
            template = SqliteBackend(path)
            if kind == "hand-written":
                return template
            return SqlAlchemyBackend(template, f"sqlite:///{path}", None, kind)

        def pg(kind: str) -> Backend:
            from serendib.tasks.store.postgres import PostgresBackend

            assert postgres is not None
            schema = f"serendib_bench_{uuid.uuid4().hex[:8]}"
            made.append(schema)
            template = PostgresBackend(postgres, redact_url(postgres), schema)
            if kind == "hand-written":
                return template
            engine_url = "postgresql+psycopg://" + postgres.split("://", 1)[1]
            return SqlAlchemyBackend(template, engine_url, schema, kind)

        databases: list[tuple[str, Callable[[str], Backend]]] = [("SQLite", sqlite)]
        if postgres:
            databases.append(("PostgreSQL", pg))
        try:
            yield databases
        finally:
            for schema in made:
                _drop_schema(postgres or "", schema)


def _write_path_table(quick: bool) -> Table:
    count = 10_000 if quick else 50_000
    table = Table(
        "Task store write path alone: hand-written SQL vs SQLAlchemy Core",
        ["case", "hand-written rows/s", "SQLAlchemy rows/s", "SQLAlchemy / hand"],
        notes=[
            f"{count:,} tasks encoded beforehand, {BATCH:,} a transaction, Backend.write called "
            "in one thread (no event loop); median of "
            f"{REPEATS} interleaved runs; SQLAlchemy style: the database's default (STYLE)",
        ],
    )
    phases = _phases(count)
    with _databases() as databases:
        for label, make in databases:
            style = _styles(label)[0]
            hand: list[list[float]] = []
            core: list[list[float]] = []
            for _ in range(REPEATS):
                hand.append(_write_path(make("hand-written"), phases))
                core.append(_write_path(make(style), phases))
            for i, (name, _) in enumerate(phases):
                h = statistics.median(run[i] for run in hand)
                c = statistics.median(run[i] for run in core)
                table.rows.append(
                    {
                        "case": f"{label}: {name}",
                        "hand-written rows/s": h,
                        "SQLAlchemy rows/s": c,
                        "SQLAlchemy / hand": c / h,
                    }
                )
    return table


def profile(database: str = "SQLite", top: int = 25) -> None:
    """Print where the SQLAlchemy write path spends its time (cProfile, by own time)."""
    import cProfile
    import pstats

    phases = _phases(10_000)
    with _databases() as databases:
        make = dict(databases)[database]
        backend = make(_styles(database)[0])
        profiler = cProfile.Profile()
        profiler.runcall(_write_path, backend, phases)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def _styles(database: str) -> list[str]:
    chosen = os.environ.get("SERENDIB_BENCH_SQLALCHEMY")
    if not chosen:
        return [STYLE[database]]
    styles = [s.strip() for s in chosen.split(",") if s.strip()]
    unknown = set(styles) - set(STYLES)
    if unknown:
        raise SystemExit(f"SERENDIB_BENCH_SQLALCHEMY: unknown style(s) {sorted(unknown)}")
    return styles


def run(quick: bool = False) -> list[Table]:
    """Measure SQLite, and PostgreSQL when its test URL is set."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        return [Table("SQLAlchemy Core store writes", [], notes=["sqlalchemy is not installed"])]
    count = 20_000 if quick else 100_000
    tables = [_write_path_table(quick)]
    with _databases() as databases:
        for label, make in databases:
            for style in _styles(label):
                store = SqlTaskStore(make(style))
                tables.append(asyncio.run(_writes(store, f"{label}, {style}", count)))
    return tables


if __name__ == "__main__":
    if sys.argv[1:2] == ["--profile"]:  # --profile [SQLite|PostgreSQL]
        profile(*sys.argv[2:3])
        raise SystemExit(0)
    raise SystemExit(module_main(run, __doc__))

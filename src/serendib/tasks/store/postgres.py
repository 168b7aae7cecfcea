"""The PostgreSQL backend of the task store: psycopg 3, a writer and a reader connection.

The tables live in the connection's default schema, or in ``?schema=NAME`` (created if
missing). Every write transaction first takes a transaction-level advisory lock named after
the schema, so two processes writing one store serialise and ``add`` stays exact ("insert
the ids that are new"). Batches go out with ``executemany``, which psycopg pipelines; a commit
is as durable as the server's ``synchronous_commit`` makes it (on by default: fsynced). A
connection that breaks is replaced on the next call; the call that saw it break fails.
Statements are built from constants and the schema name (validated by ``open_store``); data
always travels as parameters. The tables are made and upgraded by
:func:`serendib.tasks.store.migrations.postgres`.

A standby manager's lease (:mod:`serendib.tasks.store.lease`) has a third connection, with
short timeouts (connect, TCP, statements) so that a store cut off is noticed within seconds.
Once the manager leads, its writer connection is named after its epoch
(``application_name``, as ``pg_stat_activity`` shows it) and ends a transaction left idle
for two thirds of the lease (``idle_in_transaction_session_timeout``): a leader paused in the
middle of one cannot hold the store's locks while a standby takes over.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

try:
    import psycopg
    from psycopg import pq
except ImportError as e:  # pragma: no cover - exercised by hiding psycopg
    raise ImportError(
        "the PostgreSQL task store needs psycopg: pip install 'serendib[postgres]'",
        name=e.name,
    ) from e

from serendib.errors import StoreError
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.migrations import postgres as postgres_migrations
from serendib.tasks.store.protocol import TaskUpdate
from serendib.tasks.store.rows import Dialect, Row

__all__ = ["PostgresBackend"]

Connection = psycopg.Connection[tuple[Any, ...]]


class PostgresBackend(Backend):
    """A PostgreSQL database (optionally one schema of it)."""

    driver_errors = (psycopg.Error,)

    def is_data_error(self, error: BaseException) -> bool:
        """Whether PostgreSQL or psycopg refused a record for its content.

        Refused: a ``DataError`` (NUL in text, found by psycopg before sending; a number out
        of its column's range), an ``IntegrityError`` (a constraint), a value psycopg cannot
        adapt (a ``ProgrammingError`` without an SQLSTATE: it never reached the server), text
        that is not UTF-8. Unavailable: an ``OperationalError`` (connection lost, server
        shutting down), any other server error.
        """
        if isinstance(error, psycopg.DataError | psycopg.IntegrityError):
            return True
        if isinstance(error, psycopg.ProgrammingError):
            return error.sqlstate is None
        return super().is_data_error(error)

    def __init__(self, conninfo: str, url: str, schema: str | None, *, create: bool = True) -> None:
        prefix = f'"{schema}".' if schema else ""
        super().__init__(
            Dialect(
                param="%s",
                max_params=65_535,  # unused: rows go one per statement, pipelined
                tasks=f"{prefix}serendib_tasks",
                attempts=f"{prefix}serendib_attempts",
                meta=f"{prefix}serendib_meta",
                counts=f"{prefix}serendib_counts",
                quarantine=f"{prefix}serendib_quarantine",
                edges=f"{prefix}serendib_edges",
                schedules=f"{prefix}serendib_schedules",
                json_param="{}::json",
                json_text="{}::text",
                description="(task ->> 'description')",
                find="strpos({}, {})",
                leases=f"{prefix}serendib_leases",
                clock="CAST(extract(epoch FROM clock_timestamp()) AS double precision)",
                row_locks=True,
            ),
            postgres_migrations(schema),
            create=create,
        )
        self.url = url
        self._conninfo = conninfo
        self._prefix = prefix
        self._lock_key = zlib.crc32(f"serendib task store {schema or ''}".encode())
        self._writer: Connection | None = None
        self._reader: Connection | None = None

    def _connect(self) -> Connection:
        return psycopg.connect(self._conninfo, autocommit=True, application_name="serendib")

    def _connect_writer(self) -> None:
        self._writer = self._connect()
        self._fenced_session()

    def connect_lease(self) -> Connection:
        """A connection for a lease: autocommit, and quick to fail when the store is cut off
        (2 s to connect, 1.5 s for unacknowledged data, 1 s per statement)."""
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            application_name="serendib lease",
            connect_timeout=2,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=2,
            tcp_user_timeout=1500,
        )
        conn.execute("SET statement_timeout = 1000")
        return conn

    def _fenced_session(self) -> None:
        fence, conn = self.fence, self._writer
        if fence is None or conn is None or conn.closed:
            return
        conn.execute(
            "SELECT set_config('application_name', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (fence.label, str(max(int(fence.ttl_s * 2000 / 3), 100))),
        )

    def _has_meta(self) -> bool:
        found = self._write_fetch("SELECT to_regclass(%s)", (f"{self._prefix}serendib_meta",))
        return found[0][0] is not None

    def _connect_reader(self) -> None:
        self._reader = self._connect()

    def close_writer(self) -> None:
        """Close the writer connection."""
        if self._writer is not None:
            conn, self._writer = self._writer, None
            conn.close()

    def close_reader(self) -> None:
        """Close the reader connection."""
        if self._reader is not None:
            conn, self._reader = self._reader, None
            conn.close()

    def _writing(self) -> Connection:
        if self._writer is None:
            raise StoreError(f"the task store at {self.url} is not open", url=self.url)
        if self._writer.broken or self._writer.closed:
            self._writer = self._connect()
            self._fenced_session()
        return self._writer

    def _begin(self) -> None:
        conn = self._writing()
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))

    def _commit(self) -> None:
        self._writing().execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._writer
        idle = pq.TransactionStatus.IDLE
        if conn is not None and not conn.closed and conn.info.transaction_status != idle:
            conn.execute("ROLLBACK")

    def _upsert(self, table: str, rows: Sequence[Row]) -> None:
        # executemany is pipelined by psycopg; one statement of many rows costs more here.
        with self._writing().cursor() as cursor:
            cursor.executemany(self.sql.upsert_text(table, 1), rows)

    def _update(self, rows: Sequence[TaskUpdate]) -> None:
        with self._writing().cursor() as cursor:
            cursor.executemany(self.sql.update_one, [(*row[1:], row[0]) for row in rows])

    def _executemany(self, sql: str, rows: Sequence[Row]) -> None:
        with self._writing().cursor() as cursor:
            cursor.executemany(sql, rows)

    def _execute(self, sql: str) -> None:
        self._writing().execute(sql)

    def _write_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._writing().execute(sql, params).fetchall()

    def _read_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        if self._reader is None:
            raise StoreError(f"the task store at {self.url} is not open", url=self.url)
        if self._reader.broken or self._reader.closed:
            self._reader = self._connect()
        return self._reader.execute(sql, params).fetchall()

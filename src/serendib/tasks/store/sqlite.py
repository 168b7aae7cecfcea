"""The SQLite backend of the task store: one file, WAL mode, a writer and a reader connection.

Durability: WAL with ``synchronous=NORMAL`` (the default) makes a commit survive the process
being killed (SIGKILL included), because the commit is in the WAL file once ``COMMIT``
returns; after a power loss or OS crash the last commits may be lost, never the database's
consistency. ``?synchronous=full`` fsyncs every commit and survives power loss too, at a cost
that batching keeps small. ``BEGIN IMMEDIATE`` takes the write lock, so two processes on
one file serialise; a reader never waits for the writer.

Rows go in as multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO UPDATE`` statements
of up to 512 rows, not ``executemany``: :mod:`sqlite3` releases the GIL around every step, so
with one step per row a busy event loop makes the writer thread wait for the GIL at every
row (measured: 3-6x slower); with one step per 512 rows it costs ~30% less CPU as well.
The tables are made and upgraded by :func:`serendib.tasks.store.migrations.sqlite`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serendib.errors import StoreError, StoreNotFound
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.migrations import sqlite as sqlite_migrations
from serendib.tasks.store.protocol import TaskUpdate
from serendib.tasks.store.rows import Dialect, Row

__all__ = ["SqliteBackend"]

_BUSY_TIMEOUT_S = 30.0
# SQLite's default limit on parameters in one statement (999 before 3.32).
_MAX_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)  # UPDATE ... FROM


class SqliteBackend(Backend):
    """A SQLite file, or a private in-memory database (one connection then)."""

    driver_errors = (sqlite3.Error,)
    _REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)

    def is_data_error(self, error: BaseException) -> bool:
        """Whether SQLite refused a record for its content, not for being unavailable.

        Refused: a constraint or a value it cannot bind (an integer beyond 64 bits is an
        ``OverflowError``, a type it does not know a ``ProgrammingError``). Unavailable: an
        ``OperationalError`` (locked, disk I/O, disk full), a corrupt file, a closed
        connection.
        """
        if isinstance(error, sqlite3.ProgrammingError):
            return "closed" not in str(error)  # "Cannot operate on a closed database."
        return isinstance(error, self._REFUSED) or super().is_data_error(error)

    def __init__(
        self, path: Path | None, synchronous: str = "normal", *, create: bool = True
    ) -> None:
        super().__init__(
            Dialect(
                param="?",
                max_params=_MAX_PARAMS,
                tasks="serendib_tasks",
                attempts="serendib_attempts",
                meta="serendib_meta",
                counts="serendib_counts",
            ),
            sqlite_migrations(),
            create=create,
        )
        self._path = path
        self._synchronous = synchronous.upper()
        self.shares_connection = path is None
        option = "?synchronous=full" if self._synchronous == "FULL" else ""
        self.url = "sqlite://:memory:" if path is None else f"sqlite:///{path}{option}"
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._path is None:
            if not self.create:  # a private in-memory database never exists before
                raise StoreNotFound(self.url)
            return sqlite3.connect(":memory:", isolation_level=None)
        if not self.create:
            if not self._path.is_file():
                raise StoreNotFound(self.url)
            # mode=rw: open the file if it is there, never create it.
            uri = f"{self._path.as_uri()}?mode=rw"
            return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the directory of the task store {self.url}: {e}", url=self.url
            ) from e
        # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves.
        return sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

    def _connect_writer(self) -> None:
        self._writer = self._connect()

    def connect_lease(self) -> sqlite3.Connection:
        """A connection of its own for a lease (a file only), waiting at most 1 s for the
        file's lock."""
        if self._path is None:
            raise StoreError(
                f"the task store at {self.url} cannot hold a lease: it is private to its "
                "connection",
                url=self.url,
            )
        return sqlite3.connect(
            self._path, timeout=1.0, isolation_level=None, check_same_thread=False
        )

    def _configure_writer(self) -> None:
        # After the existence check: a reader leaves a file that is no store as it found it.
        conn = self._writing()
        if self._path is not None:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA cache_size = -65536")

    def _has_meta(self) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'serendib_meta'"
        return bool(self._writing().execute(sql).fetchall())

    def _connect_reader(self) -> None:
        self._reader = conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA cache_size = -65536")

    def close_writer(self) -> None:
        """Close the writer connection (the last one to close checkpoints the WAL)."""
        if self._writer is not None:
            conn, self._writer = self._writer, None
            conn.close()

    def close_reader(self) -> None:
        """Close the reader connection."""
        if self._reader is not None:
            conn, self._reader = self._reader, None
            conn.close()

    def _writing(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError(f"the task store at {self.url} is not open", url=self.url)
        return self._writer

    def _begin(self) -> None:
        self._writing().execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._writing().execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._writing()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _upsert(self, table: str, rows: Sequence[Row]) -> None:
        # Many rows per statement, not executemany: sqlite3 releases the GIL around each
        # step, and a step per row lets a busy event loop stall the writer at every row.
        conn = self._writing()
        for sql, params in self.sql.upserts(table, rows):
            conn.execute(sql, params)

    def _update(self, rows: Sequence[TaskUpdate]) -> None:
        conn = self._writing()
        if not _UPDATE_FROM:
            conn.executemany(self.sql.update_one, [(*row[1:], row[0]) for row in rows])
            return
        for sql, params in self.sql.updates(rows):
            conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Row]) -> None:
        self._writing().executemany(sql, rows)

    def _execute(self, sql: str) -> None:
        self._writing().execute(sql)

    def _write_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._writing().execute(sql, params).fetchall()

    def _read_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        conn = self._writer if self.shares_connection else self._reader
        if conn is None:
            raise StoreError(f"the task store at {self.url} is not open", url=self.url)
        return conn.execute(sql, params).fetchall()

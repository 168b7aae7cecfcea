"""The synchronous side of the SQL task stores: one database, driven from two threads.

A :class:`Backend` connects and runs SQL; the asynchronous group-commit store around it is
:class:`serendib.tasks._store_base.SqlTaskStore`. Subclasses: SQLite
(:mod:`serendib.tasks._sqlite_store`) and PostgreSQL (:mod:`serendib.tasks._postgres_store`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from serendib.errors import StoreError
from serendib.tasks._store_sql import (
    SCHEMA_VERSION,
    Dialect,
    PendingWrite,
    Row,
    Statements,
    attempt_from_row,
    plan_batch,
    record_from_row,
)
from serendib.tasks.models import AttemptRecord, TaskRecord, TaskState
from serendib.tasks.store import TaskUpdate

__all__ = ["Backend"]

_IN_CHUNK = 500
"""Ids per ``IN (...)`` query."""


class Backend(ABC):
    """One database driven synchronously from the store's writer and reader threads.

    The writer connection is used only from the writer thread and the reader connection only
    from the reader thread (the same thread when ``shares_connection``).
    """

    url: str
    shares_connection = False
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, dialect: Dialect) -> None:
        self.sql = Statements(dialect)

    @abstractmethod
    def _connect_writer(self) -> None:
        """Connect the writer; create the schema (and record its version) if missing."""

    @abstractmethod
    def _connect_reader(self) -> None:
        """Connect the reader."""

    @abstractmethod
    def close_writer(self) -> None:
        """Close the writer connection, if open. Never raises."""

    @abstractmethod
    def close_reader(self) -> None:
        """Close the reader connection, if open. Never raises."""

    @abstractmethod
    def _begin(self) -> None:
        """Start a write transaction holding the store's write lock."""

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _upsert(self, table: str, rows: Sequence[Row]) -> None:
        """Insert or replace ``rows`` (distinct keys) of ``table``: "tasks" or "attempts"."""

    @abstractmethod
    def _update(self, rows: Sequence[TaskUpdate]) -> None:
        """Change the state columns of stored tasks (distinct ids) in place."""

    @abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Row]) -> None:
        """Run one statement once per row, on the writer."""

    @abstractmethod
    def _write_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]: ...

    @abstractmethod
    def _read_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]: ...

    @contextmanager
    def _failing_as(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.driver_errors as e:
            raise StoreError(
                f"{what} the task store at {self.url} failed: {e}", url=self.url
            ) from e

    @contextmanager
    def _decoding(self) -> Iterator[None]:
        try:
            yield
        except ValueError as e:  # pydantic's ValidationError and JSON errors included
            raise StoreError(
                f"the task store at {self.url} holds a record this Serendib cannot read: {e}",
                url=self.url,
            ) from e

    def open_writer(self) -> None:
        """Connect the writer and create the schema if it is missing."""
        with self._failing_as("opening"):
            self._connect_writer()
            found = self._write_fetch(self.sql.schema_version, ())
        if found and found[0][0] != SCHEMA_VERSION:
            raise StoreError(
                f"the task store at {self.url} has schema version {found[0][0]}, this Serendib "
                f"uses version {SCHEMA_VERSION}: open it with a matching Serendib, or use a new "
                "store",
                url=self.url,
            )

    def open_reader(self) -> None:
        """Connect the reader."""
        with self._failing_as("opening"):
            self._connect_reader()

    def write(self, writes: Sequence[PendingWrite]) -> list[list[int]]:
        """Apply a batch in one transaction; per write, the indexes of the rows it inserted."""
        with self._failing_as(f"writing {sum(w.size for w in writes)} rows to"):
            self._begin()
            try:
                existing = self._existing([row[0] for w in writes if w.add for row in w.task_rows])
                plan = plan_batch(writes, existing)
                if plan.tasks:
                    self._upsert("tasks", plan.tasks)
                if plan.updates:
                    self._update(plan.updates)
                if plan.attempts:
                    self._upsert("attempts", plan.attempts)
                if plan.stale:
                    self._executemany(self.sql.count_stale, plan.stale)
                self._commit()
            except BaseException:
                with suppress(*self.driver_errors):
                    self._rollback()
                raise
        return plan.inserted

    def _existing(self, ids: list[str]) -> set[str]:
        unique = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            found.update(row[0] for row in self._write_fetch(self.sql.existing(len(chunk)), chunk))
        return found

    def read_tasks(self, sql: str, params: Sequence[Any]) -> list[tuple[int, TaskRecord]]:
        """Tasks (with their sequence numbers) selected by one of :class:`Statements`."""
        with self._failing_as("reading tasks from"):
            rows = self._read_fetch(sql, params)
        with self._decoding():
            return [record_from_row(row) for row in rows]

    def read_attempts(self, sql: str, params: Sequence[Any]) -> list[AttemptRecord]:
        """Attempts selected by one of :class:`Statements`."""
        with self._failing_as("reading attempts from"):
            rows = self._read_fetch(sql, params)
        with self._decoding():
            return [attempt_from_row(row) for row in rows]

    def read_counts(self) -> dict[TaskState, int]:
        """Tasks per state, every state present."""
        with self._failing_as("counting tasks in"):
            rows = self._read_fetch(self.sql.counts, ())
        counts = dict.fromkeys(TaskState, 0)
        with self._decoding():
            for state, count in rows:
                counts[TaskState(state)] = count
        return counts

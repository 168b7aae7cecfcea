"""The synchronous side of the SQL task stores: one database, driven from two threads.

A :class:`Backend` connects and runs SQL; the asynchronous group-commit store around it is
:class:`serendib.tasks.store.group_commit.SqlTaskStore`. Subclasses: SQLite
(:mod:`serendib.tasks.store.sqlite`) and PostgreSQL (:mod:`serendib.tasks.store.postgres`).

Failures are of two kinds, told apart by :meth:`Backend.is_data_error` (each backend knows its
driver's errors): the database *refusing a record* for its content (an integer beyond 64
bits, NUL in PostgreSQL text, text that is not UTF-8, a value of a type it cannot bind), which
fails again however often it is retried; and the database being *unavailable* (locked, disk
or connection lost, closed), which may pass. A batch is first written as it is, so a batch
that succeeds costs nothing extra. If a record is refused, the batch is written again in one
transaction, each write in a savepoint: an ``add`` or ``save`` with a refused record fails
alone (:class:`~serendib.errors.RecordRefused`), an ``update`` is bisected until the refused
records are isolated; they are quarantined (``serendib_quarantine``) and the rest is stored.
An unavailable database fails the whole batch, as before.

A standby manager's store is *fenced* once it leads (:mod:`serendib.tasks.store.lease`):
every write transaction first checks that the workspace's lease still carries its epoch, and
aborts with :class:`~serendib.tasks.store.lease.LeadLost` if not (a write that fails for an
outage checks again, so a connection the database ended during a pause says why).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, TypeVar

from loguru import logger

from serendib.errors import RecordRefused, SerendibError, StoreError, StoreNotFound
from serendib.tasks.models import AttemptRecord, TaskRecord, TaskState
from serendib.tasks.store.lease import Fence, LeadLost, LeaseStatements, check_fence
from serendib.tasks.store.migrations import Migration, pending
from serendib.tasks.store.protocol import QuarantinedRecord, Rejected, TaskUpdate
from serendib.tasks.store.rows import (
    Dialect,
    PendingWrite,
    Plan,
    Row,
    Statements,
    Written,
    attempt_from_row,
    error_text,
    plan_batch,
    quarantine_row,
    quarantined_from_row,
    record_from_row,
)

_Item = tuple[str, int, Any]
"""A record of a split write: its kind ("task", "attempt", "stale"), index and row."""

__all__ = ["Backend"]

T = TypeVar("T")
_IN_CHUNK = 500
"""Ids per ``IN (...)`` query."""


class Backend(ABC):
    """One database driven synchronously from the store's writer and reader threads.

    The writer connection is used only from the writer thread and the reader connection only
    from the reader thread (the same thread when ``shares_connection``). With ``create``
    False the backend opens only a store that exists (:class:`~serendib.errors.StoreNotFound`
    otherwise) and creates nothing: no file, directory, schema or table.
    """

    url: str
    shares_connection = False
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(
        self, dialect: Dialect, migrations: Sequence[Migration], *, create: bool = True
    ) -> None:
        self.sql = Statements(dialect)
        self.lease_sql = LeaseStatements(dialect)
        self.migrations = tuple(migrations)
        self.create = create
        self.fence: Fence | None = None
        """Set (from the writer thread) once this store's manager leads: every write
        transaction checks it first."""

    @abstractmethod
    def _connect_writer(self) -> None:
        """Connect the writer (the schema is then migrated by :meth:`open_writer`)."""

    @abstractmethod
    def _has_meta(self) -> bool:
        """Whether ``serendib_meta`` exists, on the writer (False: a new store)."""

    def _configure_writer(self) -> None:  # noqa: B027 - a hook: most backends need nothing
        """Hook: set the writer up, once the store exists or may be created."""

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
    def _execute(self, sql: str) -> None:
        """Run one statement without parameters or results, on the writer."""

    def is_data_error(self, error: BaseException) -> bool:
        """Whether ``error`` is the database refusing a record for its content.

        Such an error is tied to the rows written and recurs however often they are written
        again; anything else (the database locked, its disk or connection lost, the store
        closed) is an outage, which may pass. Backends add their driver's errors.

        Args:
            error: What writing raised.
        """
        # Binding: an int beyond the driver's range, text that is not UTF-8, an odd type.
        # Serendib's own errors (a closed store) are never the data's fault.
        return isinstance(error, OverflowError | ValueError | TypeError) and not isinstance(
            error, SerendibError
        )

    @abstractmethod
    def _write_fetch(self, sql: str, params: Sequence[Any]) -> list[Row]: ...

    def connect_lease(self) -> Any:
        """A new connection of its own for a lease (autocommit; ``execute`` returns a
        cursor with ``rowcount`` and ``fetchall``), or :class:`StoreError` if this store
        cannot hold one."""
        raise StoreError(f"the task store at {self.url} cannot hold a lease", url=self.url)

    def set_fence(self, fence: Fence | None) -> None:
        """Fence every write transaction from now on with ``fence`` (None: no more). Call
        from the writer thread."""
        self.fence = fence
        self._fenced_session()

    def _fenced_session(self) -> None:  # noqa: B027 - a hook: SQLite needs nothing
        """Hook: set the writer connection up for :attr:`fence` (if connected)."""

    def _check_fence(self) -> None:
        """Inside a write transaction: raise :class:`LeadLost` if the fence is gone."""
        fence = self.fence
        if fence is not None:
            rows = self._write_fetch(self.lease_sql.check, (fence.workspace,))
            check_fence(fence, rows, self.url)

    def _fenced(self, apply: Callable[[], T]) -> T:
        self._check_fence()
        return apply()

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
        """Connect the writer and bring the schema to this Serendib's version.

        In one transaction holding the store's write lock: read the recorded schema version,
        apply every migration after it (all of them for a new store), record the last one,
        and rebuild the counts per state. A store already at this version runs no migration;
        a store made by an older Serendib is upgraded (logged at INFO).

        Raises:
            StoreNotFound: ``create`` is False and there is no store (nothing was created).
            StoreError: The database cannot be opened, or its schema version is newer than
                this Serendib knows.
        """
        with self._failing_as("opening"):
            self._connect_writer()
            if not self.create and not self._has_meta():
                raise StoreNotFound(self.url)
            self._configure_writer()
            found, applied = self._in_transaction(self._migrate)
        if found is not None and applied:
            logger.info(
                "upgraded task store {} from version {} to {}", self.url, found, applied[-1]
            )

    def _migrate(self) -> tuple[str | None, list[int]]:
        # Inside the opening transaction: what the store recorded, and the steps applied.
        found = None
        if self._has_meta():
            rows = self._write_fetch(self.sql.schema_version, ())
            found = str(rows[0][0]) if rows else None
        steps = pending(found, self.migrations, self.url)
        for step in steps:
            for statement in step.statements:
                self._execute(statement)
        if steps:
            self._executemany(self.sql.set_schema_version, [(str(steps[-1].version),)])
        for statement in self.sql.recount:
            self._execute(statement)
        return found, [step.version for step in steps]

    def open_reader(self) -> None:
        """Connect the reader."""
        with self._failing_as("opening"):
            self._connect_reader()

    def write(self, writes: Sequence[PendingWrite]) -> list[Written]:
        """Apply a batch in one transaction; per write, what it inserted or had refused.

        Raises:
            StoreError: The database is unavailable: nothing of the batch is stored.
        """
        what = f"writing {sum(w.size for w in writes)} rows to"
        try:
            inserted = self._in_transaction(lambda: self._fenced(lambda: self._apply_batch(writes)))
        except LeadLost:
            raise
        except Exception as e:
            if not self.is_data_error(e):
                raise self._outage(what, e) from e
        else:
            return [Written(rows) for rows in inserted]
        # Rare: a record was refused. Write the batch again, isolating what is refused.
        try:
            return self._in_transaction(lambda: self._fenced(lambda: self._apply_apart(writes)))
        except LeadLost:
            raise
        except Exception as e:
            raise self._outage(what, e) from e

    def _outage(self, what: str, error: Exception) -> Exception:
        # A fenced store asks again whether it still leads: a connection the database ended
        # while this process was paused is the lead lost, not an outage to retry.
        if self.fence is not None and isinstance(error, self.driver_errors):
            try:
                self._in_transaction(self._check_fence)
            except LeadLost as lost:
                return lost
            except Exception as e:  # still unavailable: the first failure says it
                logger.debug("checking the lease of {} failed too: {}", self.url, e)
        return self._failure(what, error)

    def _failure(self, what: str, error: Exception) -> Exception:
        if isinstance(error, self.driver_errors):
            return StoreError(f"{what} the task store at {self.url} failed: {error}", url=self.url)
        return error

    def _in_transaction(self, apply: Callable[[], T]) -> T:
        self._begin()
        try:
            result = apply()
            self._commit()
        except BaseException:
            with suppress(*self.driver_errors):
                self._rollback()
            raise
        return result

    def _apply_batch(self, writes: Sequence[PendingWrite]) -> list[list[int]]:
        existing = self._existing([row[0] for w in writes if w.add for row in w.task_rows])
        plan = plan_batch(writes, existing)
        self._apply(plan)
        return plan.inserted

    def _apply(self, plan: Plan) -> None:
        if plan.tasks:
            self._upsert("tasks", plan.tasks)
        if plan.edges:
            self._upsert("edges", plan.edges)
        if plan.updates:
            self._update(plan.updates)
        if plan.attempts:
            self._upsert("attempts", plan.attempts)
        if plan.stale:
            self._executemany(self.sql.count_stale, plan.stale)
        if plan.schedules:
            self._upsert("schedules", plan.schedules)
        if plan.unscheduled:
            self._executemany(self.sql.unschedule, plan.unscheduled)

    def _apply_apart(self, writes: Sequence[PendingWrite]) -> list[Written]:
        # In call order, each write on its own (so "existing" is what earlier ones left), in
        # a savepoint so that a refused one leaves nothing behind.
        done: list[Written] = []
        quarantine: list[Row] = []
        for write in writes:
            if write.split:
                done.append(Written([], self._apply_split(write, quarantine)))
                continue
            try:
                inserted = self._saving_point(partial(self._apply_batch, [write]))[0]
            except Exception as e:
                if not self.is_data_error(e):
                    raise
                refused = RecordRefused(
                    f"the task store at {self.url} refused a record: {error_text(e)}", url=self.url
                )
                done.append(Written([], error=refused))
            else:
                done.append(Written(inserted))
        if quarantine:
            self._executemany(self.sql.quarantine, quarantine)
        return done

    def _saving_point(self, apply: Callable[[], T]) -> T:
        self._execute(self.sql.savepoint)
        try:
            result = apply()
        except BaseException:
            self._execute(self.sql.to_savepoint)
            self._execute(self.sql.release_savepoint)
            raise
        self._execute(self.sql.release_savepoint)
        return result

    def _apply_split(self, write: PendingWrite, quarantine: list[Row]) -> tuple[Rejected, ...]:
        # The write's records in the order a plan applies them (tasks, attempts, then stale
        # counts, which must follow their attempts): bisected in contiguous halves, in order.
        items: list[_Item] = [("task", i, row) for i, row in enumerate(write.task_updates)]
        items += [("attempt", i, row) for i, row in enumerate(write.attempt_rows)]
        items += [("stale", i, key) for i, key in enumerate(write.stale)]
        rejected: list[Rejected] = []
        self._bisect(items, 0, len(items), rejected, quarantine)
        return tuple(rejected)

    def _bisect(
        self,
        items: list[_Item],
        start: int,
        end: int,
        rejected: list[Rejected],
        quarantine: list[Row],
    ) -> None:
        if start >= end:
            return
        part = items[start:end]
        write = PendingWrite(
            False,
            (),
            [row for kind, _, row in part if kind == "attempt"],
            [row for kind, _, row in part if kind == "task"],
            [row for kind, _, row in part if kind == "stale"],
        )
        try:
            self._saving_point(lambda: self._apply(plan_batch([write], set())))
        except Exception as e:
            if not self.is_data_error(e):
                raise
            if end - start == 1:
                kind, index, row = items[start]
                rejected.append(Rejected(kind, index, error_text(e)))
                quarantine.append(quarantine_row(kind, row, e, time.time()))
                return
            middle = (start + end) // 2
            self._bisect(items, start, middle, rejected, quarantine)
            self._bisect(items, middle, end, rejected, quarantine)

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

    def read_quarantined(self, limit: int | None) -> list[QuarantinedRecord]:
        """Quarantined records, oldest first (at most ``limit``)."""
        with self._failing_as("reading quarantined records from"):
            if limit is None:
                rows = self._read_fetch(self.sql.quarantined, ())
            else:
                rows = self._read_fetch(self.sql.quarantined_some, (limit,))
        return [quarantined_from_row(row) for row in rows]

    def read_schedules(self) -> list[tuple[str, str, float]]:
        """Every schedule saved: ``(name, spec, last_fired)``."""
        with self._failing_as("reading schedules from"):
            rows = self._read_fetch(self.sql.schedules, ())
        return [(str(name), str(spec), float(last)) for name, spec, last in rows]

    def read_children(self, task_id: str, limit: int) -> list[str]:
        """The tasks that depend on ``task_id``."""
        with self._failing_as("reading dependents from"):
            rows = self._read_fetch(self.sql.children, (task_id, limit))
        return [str(row[0]) for row in rows]

    def read_completed_by_worker(self) -> dict[str, int]:
        """Succeeded attempts per worker."""
        with self._failing_as("counting attempts in"):
            rows = self._read_fetch(self.sql.completed_by_worker, ())
        return {str(worker): int(count) for worker, count in rows}

    def read_quarantine_count(self) -> int:
        """How many records are quarantined."""
        with self._failing_as("counting quarantined records in"):
            rows = self._read_fetch(self.sql.quarantine_count, ())
        return int(rows[0][0])

"""The group-commit task store shared by SQLite and PostgreSQL.

Writes: ``add`` and ``save`` encode their records at once (so a record that is not JSON fails
its own caller only), queue them with a future and wake the store's one writer coroutine. The
writer takes everything queued (up to ``_MAX_BATCH_ROWS`` rows), applies it in call order as
ONE transaction in a dedicated writer thread, commits, then resolves every caller's future:
a thousand concurrent saves become a handful of transactions, and nobody is acknowledged
before their data is committed. While one transaction runs, the next batch queues up, so
batches grow with load and no timer adds latency when the store is idle. Updates (the
manager's state changes, which hold up its messages to workers and clients) go ahead of
queued additions, in transactions of their own, and additions commit at most
``_MAX_ADD_ROWS`` rows at a time: a large submission delays the work already running by one
such transaction at most (a task is updated only once its ``add`` has returned, so no update
depends on an addition still queued; an update never passes a queued ``save``). Within a batch the
last write of a task (or attempt) wins, and an ``add`` skips ids that are already stored or
written earlier in the batch, so a task's submission order is the order of its first write.
If the database is unavailable, every call in the transaction fails with :class:`StoreError`
and nothing of it is stored; the writer carries on with the next batch. If it refuses a
record for its content, only that record's call is affected (see
:mod:`serendib.tasks.store.backend`): an ``add`` or ``save`` fails alone with
:class:`~serendib.errors.RecordRefused`, an ``update`` stores the rest and returns the
refused records, quarantined. A cancelled call may still be stored.

Reads run on a second connection in a second thread, so they never wait behind a write; each
sees every write acknowledged before it started. Backends (:class:`Backend`) only connect
and run SQL; statements, row encoding and batch planning are shared and pure
(:mod:`serendib.tasks.store.rows`).

A standby manager's store holds a lease (:meth:`SqlTaskStore.lease`): once it leads, every
write transaction is fenced by it. A write that finds the lead lost fails with
:class:`~serendib.tasks.store.lease.LeadLost`, the lease is told, and every write after it
fails at once, without reaching the database.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from types import TracebackType
from typing import Any, Self, TypeVar

from serendib.errors import StoreError
from serendib.tasks.models import AttemptKey, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store.backend import Backend
from serendib.tasks.store.lease import LEASE_S, Fence, LeadLost, StoreLease
from serendib.tasks.store.protocol import (
    AttemptRow,
    QuarantinedRecord,
    Rejected,
    TaskUpdate,
    attempt_row,
)
from serendib.tasks.store.rows import PendingWrite, Written, submitted_row, task_row
from serendib.tasks.store.search import (
    SEARCH_SCAN,
    SearchQuery,
    SearchStatements,
    TaskPage,
    TaskSort,
    cursor_of,
)

_MAX_BATCH_ROWS = 50_000
_MAX_ADD_ROWS = 1_000
"""Rows of additions per transaction: an update waiting behind one waits that long at most."""
_IDS_PER_READ = 500  # ids per query: within every driver's parameter limit
T = TypeVar("T")


# --- the asynchronous store -------------------------------------------------------------------


class _Status(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_Queued = tuple[PendingWrite, "asyncio.Future[Written]"]


class SqlTaskStore:
    """A :class:`~serendib.tasks.store.TaskStore` over a :class:`Backend`, with group commit."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._status = _Status.NEW
        self._queue: deque[_Queued] = deque()
        self._updates: deque[_Queued] = deque()
        self._saves = 0  # saves queued: updates keep behind them
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._transactions = 0
        self._lease: StoreLease | None = None
        self._lost: LeadLost | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._status.value}>"

    @property
    def url(self) -> str:
        """Where the store is, password redacted."""
        return self._backend.url

    @property
    def transactions(self) -> int:
        """Write transactions committed since :meth:`open`."""
        return self._transactions

    async def open(self) -> None:
        """Connect, create or upgrade the schema (see :mod:`.migrations`). Idempotent."""
        if self._status is _Status.OPEN:
            return
        if self._status is _Status.CLOSING:
            raise StoreError(
                f"the task store at {self.url} is closing; wait for close() first", url=self.url
            )
        loop = asyncio.get_running_loop()
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="serendib-store-writer")
        self._read_pool = self._write_pool
        if not self._backend.shares_connection:
            self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="serendib-store-reader")
        try:
            await loop.run_in_executor(self._write_pool, self._backend.open_writer)
            if self._read_pool is not self._write_pool:
                await loop.run_in_executor(self._read_pool, self._backend.open_reader)
        except BaseException:
            await self._disconnect()
            raise
        self._queue.clear()
        self._updates.clear()
        self._saves = 0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._transactions = 0
        self._status = _Status.OPEN
        self._writer = loop.create_task(self._write_loop(), name=f"task store writer {self.url}")

    async def close(self) -> None:
        """Commit every queued write, then close the connections. Idempotent."""
        if self._status is _Status.CLOSING:
            await self._closed.wait()
            return
        if self._status is not _Status.OPEN:
            return
        self._status = _Status.CLOSING
        self._wake.set()
        try:
            if self._writer is not None:
                await self._writer
        finally:
            self._writer = None
            await self._disconnect()
            self._status = _Status.CLOSED
            self._closed.set()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def lease(
        self, workspace: str, holder: str, *, ttl_s: float = LEASE_S, owner: str = "manager"
    ) -> StoreLease:
        """The lease of ``workspace`` in this store, for the manager ``holder`` (its id, unique
        to its run): :meth:`StoreLease.acquire` waits for it and fences this store's writes
        with it. One lease per store.

        Raises:
            ValueError: ``ttl_s`` is out of range, or this store already has a lease.
        """
        if self._lease is not None:
            raise ValueError(f"the task store at {self.url} already has a lease")
        lease = StoreLease(
            self._backend, workspace, holder, ttl_s=ttl_s, owner=owner, fence=self._fence
        )
        lease.on_lost(self._lead_lost)
        self._lease = lease
        return lease

    async def _fence(self, fence: Fence | None) -> None:
        self._check_open("fence writes")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write_pool, self._backend.set_fence, fence)

    def _lead_lost(self, error: LeadLost) -> None:
        if self._lost is None:
            self._lost = error

    async def add(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Insert the tasks whose id is new; return those inserted, in input order."""
        self._check_open("add")
        if not records:
            return []
        edges = [(parent, r.id) for r in records for parent in r.task.depends_on]
        written = await self._submit(
            PendingWrite(True, [task_row(r) for r in records], [], edges=edges)
        )
        return [records[index] for index in written.inserted]

    async def add_submitted(self, tasks: Sequence[Task], at: float) -> list[Task]:
        """Insert the records of ``tasks`` submitted at ``at`` whose id is new; return the
        tasks inserted, in input order."""
        self._check_open("add")
        if not tasks:
            return []
        edges = [(parent, t.id) for t in tasks for parent in t.depends_on]
        written = await self._submit(
            PendingWrite(True, [submitted_row(t, at) for t in tasks], [], edges=edges)
        )
        return [tasks[index] for index in written.inserted]

    async def save(
        self, records: Sequence[TaskRecord] = (), attempts: Sequence[AttemptRecord] = ()
    ) -> None:
        """Insert or replace task and attempt records; durable on return."""
        self._check_open("save")
        if records or attempts:
            rows = [task_row(r) for r in records]
            await self._submit(PendingWrite(False, rows, [attempt_row(a) for a in attempts]))

    async def update(
        self,
        tasks: Sequence[TaskUpdate] = (),
        attempts: Sequence[AttemptRow] = (),
        stale: Sequence[AttemptKey] = (),
    ) -> list[Rejected]:
        """Change tasks' state in place, write attempts, count stale results; durable on return.

        Returns the records the database refused (quarantined), usually none.
        """
        self._check_open("update")
        if not (tasks or attempts or stale):
            return []
        written = await self._submit(PendingWrite(False, (), attempts, tasks, stale, split=True))
        return list(written.rejected)

    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of task ``task_id``, or None."""
        found = await self._read(self._backend.read_tasks, self._backend.sql.get, (task_id,))
        return found[0][1] if found else None

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """The stored records of those of ``task_ids`` that are stored, by id."""
        found: dict[str, TaskRecord] = {}
        ids = list(dict.fromkeys(task_ids))
        step = _IDS_PER_READ
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            sql = self._backend.sql.get_many(len(chunk))
            for _, record in await self._read(self._backend.read_tasks, sql, tuple(chunk)):
                found[record.id] = record
        return found

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        """Every attempt of task ``task_id``, by attempt number."""
        sql = self._backend.sql.attempts_of
        return await self._read(self._backend.read_attempts, sql, (task_id,))

    async def unfinished(self) -> list[TaskRecord]:
        """Every non-final task, in submission order."""
        found = await self._read(self._backend.read_tasks, self._backend.sql.unfinished, ())
        return [record for _, record in found]

    async def open_attempts(self) -> list[AttemptRecord]:
        """Every attempt whose outcome is RUNNING."""
        sql = self._backend.sql.open_attempts
        return await self._read(self._backend.read_attempts, sql, ())

    async def query(
        self,
        *,
        state: TaskState | None = None,
        worker: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[TaskRecord], int | None]:
        """One page of tasks in submission order and the next page's cursor (None at the end)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        params: list[Any] = [after if after is not None else 0]
        if state is not None:
            params.append(TaskState(state).value)
        if worker is not None:
            params.append(worker)
        params.append(limit + 1)
        sql = self._backend.sql.query(state=state is not None, worker=worker is not None)
        found = await self._read(self._backend.read_tasks, sql, params)
        cursor = found[limit - 1][0] if len(found) > limit else None
        return [record for _, record in found[:limit]], cursor

    async def search(
        self,
        *,
        state: TaskState | None = None,
        worker: str | None = None,
        kind: str | None = None,
        id_prefix: str | None = None,
        text: str | None = None,
        sort: TaskSort = "submitted",
        descending: bool = False,
        after: str | None = None,
        limit: int = 100,
        scan: int = SEARCH_SCAN,
    ) -> TaskPage:
        """One page of matching tasks in the order asked for, at most ``scan`` rows examined."""
        query = SearchQuery(
            None if state is None else TaskState(state),
            worker,
            kind,
            id_prefix or None,
            text or None,
            sort,
            descending,
        )
        sql = self._backend.sql
        d = sql.dialect
        statements = SearchStatements(d.param, d.tasks, sql.task_columns, d.description, d.find)
        read = self._backend.read_tasks
        end = statements.window_end(query, after, scan)
        until = None
        if end is not None:
            last = await self._read(read, *end)
            until = last[0] if last else None
        found = await self._read(read, *statements.page(query, after, limit, until))
        if len(found) > limit:
            seq, record = found[limit - 1]
            return TaskPage([r for _, r in found[:limit]], cursor_of(sort, seq, record), False)
        records = [r for _, r in found]
        if until is None:  # the walk ended before the window's bound: nothing more
            return TaskPage(records, None, False)
        seq, record = until
        return TaskPage(records, cursor_of(sort, seq, record), True)

    async def counts(self) -> dict[TaskState, int]:
        """Tasks per state; every state is a key."""
        return await self._read(self._backend.read_counts)

    async def all_records(self) -> list[TaskRecord]:
        """Every task, in submission order."""
        found = await self._read(self._backend.read_tasks, self._backend.sql.all_records, ())
        return [record for _, record in found]

    async def all_attempts(self) -> list[AttemptRecord]:
        """Every attempt, by task id and attempt number."""
        sql = self._backend.sql.all_attempts
        return await self._read(self._backend.read_attempts, sql, ())

    async def quarantined(self, limit: int | None = None) -> list[QuarantinedRecord]:
        """Records ``update`` refused, oldest first (at most ``limit`` when given)."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        return await self._read(self._backend.read_quarantined, limit)

    async def completed_by_worker(self) -> dict[str, int]:
        """Succeeded attempts per worker name, over the whole store."""
        return await self._read(self._backend.read_completed_by_worker)

    async def save_schedules(self, schedules: Sequence[tuple[str, str | None, float]]) -> None:
        """Save schedules ``(name, spec, last_fired)`` (a spec of None deletes one); durable
        on return."""
        self._check_open("save schedules")
        if schedules:
            await self._submit(PendingWrite(False, (), (), schedules=schedules))

    async def schedules(self) -> list[tuple[str, str, float]]:
        """Every saved schedule: ``(name, spec, last_fired)``, by name."""
        return await self._read(self._backend.read_schedules)

    async def children(self, task_id: str, limit: int = 1_000) -> list[str]:
        """The ids of the tasks that depend on ``task_id`` (at most ``limit``, in
        submission order)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        return await self._read(self._backend.read_children, task_id, limit)

    async def quarantine_count(self) -> int:
        """How many records ``update`` has refused and quarantined."""
        return await self._read(self._backend.read_quarantine_count)

    def _check_open(self, operation: str) -> None:
        if self._status is not _Status.OPEN:
            raise StoreError(
                f"cannot {operation}: the task store at {self.url} is {self._status.value}"
                + (" (call open() first)" if self._status is _Status.NEW else ""),
                url=self.url,
            )

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        self._check_open("read")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, function, *args)

    async def _submit(self, write: PendingWrite) -> Written:
        if self._lost is not None:
            raise self._lost.copy()
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        if write.split and not self._saves:
            self._updates.append((write, future))
        else:
            self._saves += _is_save(write)
            self._queue.append((write, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._queue or self._updates):
                if self._status is not _Status.OPEN:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            writes = [write for write, _ in batch]
            try:
                if self._lost is not None:
                    raise self._lost
                done = await loop.run_in_executor(self._write_pool, self._backend.write, writes)
            except Exception as e:
                if isinstance(e, LeadLost) and self._lost is None:
                    self._lost = e
                    if self._lease is not None:
                        self._lease.lose(e)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(_own_copy(e))
                continue
            self._transactions += 1
            for (_, future), written in zip(batch, done, strict=True):
                if future.done():
                    continue
                if written.error is not None:
                    future.set_exception(written.error)
                else:
                    future.set_result(written)

    def _take_batch(self) -> list[_Queued]:
        # Updates first, in a transaction of their own: they are the manager's state changes,
        # which hold up the messages to workers and clients, while an addition is a submission
        # whose reply can wait. An update is of tasks stored already (a task is known to be
        # updated only once its add returned), so none depends on an addition still queued;
        # it never passes a queued save.
        queue, limit = (self._updates, _MAX_BATCH_ROWS) if self._updates else (self._queue, 0)
        batch = [queue.popleft()]
        rows = batch[0][0].size
        if not limit:
            limit = _MAX_ADD_ROWS if batch[0][0].add else _MAX_BATCH_ROWS
        while queue and rows + queue[0][0].size <= limit:
            batch.append(queue.popleft())
            rows += batch[-1][0].size
        self._saves -= sum(_is_save(write) for write, _ in batch if queue is self._queue)
        return batch

    async def _disconnect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._read_pool is not None and self._read_pool is not self._write_pool:
            await loop.run_in_executor(self._read_pool, self._backend.close_reader)
            self._read_pool.shutdown(wait=False)
        if self._write_pool is not None:
            await loop.run_in_executor(self._write_pool, self._backend.close_writer)
            self._write_pool.shutdown(wait=False)
        self._read_pool = self._write_pool = None


def _is_save(write: PendingWrite) -> bool:
    # A save (insert or replace) may write a task that an update after it changes.
    return not (write.add or write.split) and bool(write.task_rows or write.attempt_rows)


def _own_copy(error: Exception) -> Exception:
    # Each failed caller gets its own exception object, so tracebacks do not pile up on one.
    if isinstance(error, LeadLost):
        return error.copy()
    if not isinstance(error, StoreError):
        return error
    copy = StoreError(*error.args, url=error.url)
    copy.__cause__ = error.__cause__
    return copy

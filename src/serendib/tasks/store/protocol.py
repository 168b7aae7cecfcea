"""What the task store speaks: the :class:`TaskStore` Protocol and its plain row types.

:class:`TaskUpdate` and :class:`AttemptRow` are what the manager writes on its fast path
(:meth:`TaskStore.update`); :class:`Rejected` and :class:`QuarantinedRecord` are records the
database refused. The implementation is :class:`serendib.tasks.store.group_commit.SqlTaskStore`,
made by :func:`serendib.tasks.store.open_store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from serendib.tasks.models import AttemptKey, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store.search import SEARCH_SCAN, TaskPage, TaskSort

__all__ = [
    "AttemptRow",
    "QuarantinedRecord",
    "Rejected",
    "TaskStore",
    "TaskUpdate",
    "attempt_row",
]


class TaskUpdate(NamedTuple):
    """The part of a stored task that changes after submission: what :meth:`TaskStore.update`
    writes (the task's spec, submission time and sequence number stay as inserted).

    ``output`` is the output already encoded as JSON text (None for no output).
    """

    id: str
    state: str
    attempt: int
    worker: str | None
    reason: str
    updated_at: float
    finished_at: float | None
    output: str | None
    error: str | None
    replays: int = 0
    attempt_base: int = 0
    not_before: float | None = None


class AttemptRow(NamedTuple):
    """An :class:`~serendib.tasks.models.AttemptRecord` as a plain row (no validation): what
    :meth:`TaskStore.update` writes. ``outcome`` is an ``AttemptOutcome`` value."""

    task_id: str
    attempt: int
    worker: str
    reason: str
    outcome: str
    assigned_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    escalated: bool
    stale_results: int


class Rejected(NamedTuple):
    """One record of an :meth:`TaskStore.update` call that the store refused and quarantined.

    Attributes:
        kind: Which argument it was in: ``"task"`` (``tasks``), ``"attempt"`` (``attempts``)
            or ``"stale"`` (``stale``).
        position: Its index in that argument.
        error: Why the database or its driver refused it (e.g. an integer beyond 64 bits).
    """

    kind: str
    position: int
    error: str


class QuarantinedRecord(NamedTuple):
    """A record the store refused to save, kept as text so that it is not lost unseen.

    Attributes:
        seq: Order of quarantining (increasing).
        quarantined_at: When (Unix time).
        kind: ``"task"`` (a task's new state), ``"attempt"`` (an attempt row) or ``"stale"``
            (a stale result to count on an attempt).
        task_id: The task it is about (escaped and truncated if it was not storable text).
        attempt: The attempt number as text (it may not fit an integer: that can be why it
            is here); None for a task's state.
        error: Why it was refused.
        record: The record's fields as a JSON object; values JSON cannot hold exactly (an
            integer beyond 64 bits, a non-finite float, another type) are their ``repr``,
            long strings are truncated.
    """

    seq: int
    quarantined_at: float
    kind: str
    task_id: str
    attempt: str | None
    error: str
    record: str


def attempt_row(record: AttemptRecord) -> AttemptRow:
    """``record`` as an :class:`AttemptRow`."""
    return AttemptRow(
        record.task_id,
        record.attempt,
        record.worker,
        record.reason,
        record.outcome.value,
        record.assigned_at,
        record.started_at,
        record.finished_at,
        record.error,
        record.escalated,
        record.stale_results,
    )


@runtime_checkable
class TaskStore(Protocol):
    """The task manager's source of truth: task records and attempt records.

    Every write method returns only once its data is committed, so a caller may act on (or
    acknowledge) a state change as soon as ``save`` returns. Records are frozen pydantic
    models and come back equal to what was stored. Use it as ``async with open_store(url) as
    store:`` or call :meth:`open` and :meth:`close`.
    """

    @property
    def url(self) -> str:
        """Where the store is, for people: the URL with any password replaced by ``***``."""
        ...

    @property
    def transactions(self) -> int:
        """Write transactions committed since :meth:`open` (one per batch of queued writes)."""
        ...

    async def open(self) -> None:
        """Connect, and create the schema if it is missing or upgrade it if it is older.
        Idempotent.

        Raises:
            StoreError: The database cannot be opened, or holds a schema version newer than
                this Serendib knows.
        """
        ...

    async def close(self) -> None:
        """Commit every queued write, then close the connections. Idempotent."""
        ...

    async def __aenter__(self) -> Self:
        """Open the store (see :meth:`open`)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store (see :meth:`close`)."""
        ...

    async def add(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Insert the tasks whose id is new; leave tasks already stored untouched.

        Submitting an id twice (in one call or across calls) is one task: the first wins.
        All or nothing: on error nothing of ``records`` is stored.

        Args:
            records: New tasks, usually PENDING.

        Returns:
            The records actually inserted, in input order.

        Raises:
            RecordRefused: The database refused a record's content (nothing of this call is
                stored; other calls are not affected).
            StoreError: The write failed, or a record cannot be encoded as JSON.
        """
        ...

    async def add_submitted(self, tasks: Sequence[Task], at: float) -> list[Task]:
        """:meth:`add` of the records of ``tasks`` just submitted at ``at``
        (:meth:`TaskRecord.submitted <serendib.tasks.models.TaskRecord>`: pending, never
        attempted), without building them: the manager's path for submissions.

        Returns:
            The tasks actually inserted, in input order.

        Raises:
            RecordRefused: As :meth:`add`.
            StoreError: As :meth:`add`.
        """
        ...

    async def save(
        self, records: Sequence[TaskRecord] = (), attempts: Sequence[AttemptRecord] = ()
    ) -> None:
        """Insert or replace task records (by task id) and attempt records (by task, attempt).

        Calls are applied in the order they were made: a later save of a record wins.

        Args:
            records: Full task records.
            attempts: Full attempt records.

        Raises:
            RecordRefused: The database refused a record's content (nothing of this call is
                stored; other calls are not affected).
            StoreError: The write failed, or a record cannot be encoded as JSON.
        """
        ...

    async def update(
        self,
        tasks: Sequence[TaskUpdate] = (),
        attempts: Sequence[AttemptRow] = (),
        stale: Sequence[AttemptKey] = (),
    ) -> list[Rejected]:
        """Change stored tasks' state, and insert or replace attempts: the manager's fast path.

        Like :meth:`save`, applied in call order, but a task is changed in place (its spec is
        not written again) and nothing is validated: the caller builds the rows from records
        it holds. An update of a task id that is not stored changes nothing.

        The records of one call are stored independently: a record the database refuses for
        its content (an integer beyond 64 bits, NUL in PostgreSQL text, text that is not
        UTF-8, a value of the wrong type) does not stop the others. It is *quarantined*: kept
        as text in the store (see :meth:`quarantined`), in the same transaction as the rest,
        and returned. A call of which nothing is refused costs no more than before: records
        are isolated (by bisecting the batch) only once a batch has failed.

        Args:
            tasks: The new state of tasks.
            attempts: Attempts to insert or replace.
            stale: Attempts that received one more stale result each (counted in their
                ``stale_results`` after ``attempts`` are written; unknown ones are ignored).

        Returns:
            The refused (and quarantined) records, by argument and position; empty when every
            record is stored.

        Raises:
            StoreError: The store is unavailable (closed, locked, disk or connection lost):
                nothing of the call is stored, and the same call may be retried.
        """
        ...

    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of task ``task_id``, or None if there is none."""
        ...

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """The stored records of those of ``task_ids`` that are stored, by id."""
        ...

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        """Every attempt of task ``task_id``, by attempt number."""
        ...

    async def unfinished(self) -> list[TaskRecord]:
        """Every task not in a final state, in submission order: what a restart resumes."""
        ...

    async def open_attempts(self) -> list[AttemptRecord]:
        """Every attempt whose outcome is RUNNING: what a restart must reconcile."""
        ...

    async def query(
        self,
        *,
        state: TaskState | None = None,
        worker: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[TaskRecord], int | None]:
        """One page of tasks in submission order, filtered by state and/or worker.

        Paging is by key, not offset, so every page costs the same at any depth.

        Args:
            state: Only tasks in this state.
            worker: Only tasks whose latest attempt went to this worker.
            after: The cursor returned with the previous page; None for the first page.
            limit: Most records in the page (at least 1).

        Returns:
            The page and the cursor of the next page, or None when this page is the last.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        ...

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
        """One page of tasks matching every filter given, in the order ``sort``.

        Each page walks one index and examines at most ``scan`` rows, so it costs about
        the same at any size and depth; a page whose filters match rarely may come back
        short, ``truncated``, with a cursor to go on (see :mod:`serendib.tasks.store.search`).

        Args:
            state: Only tasks in this state.
            worker: Only tasks whose latest attempt went to this worker.
            kind: Only tasks of this kind.
            id_prefix: Only tasks whose id starts with this.
            text: Only tasks whose description contains this, ignoring case.
            sort: ``submitted`` (submission order), ``finished`` (finish time: finished
                tasks only) or ``id``.
            descending: Latest (or greatest) first.
            after: The cursor returned with the previous page; None for the first page.
            limit: Most records in the page (at least 1).
            scan: Most rows examined (at least 1).

        Returns:
            The page, the next page's cursor (None at the end) and whether it was cut short.

        Raises:
            ValueError: ``limit`` or ``scan`` below 1, or ``after`` not a cursor of ``sort``.
        """
        ...

    async def counts(self) -> dict[TaskState, int]:
        """How many tasks are in each state; every state is a key (0 when none)."""
        ...

    async def completed_by_worker(self) -> dict[str, int]:
        """Succeeded attempts per worker name, over the whole store (what a restarted manager
        starts its per-worker counts from)."""
        ...

    async def all_records(self) -> list[TaskRecord]:
        """Every task, in submission order (loads them all: for the final report)."""
        ...

    async def all_attempts(self) -> list[AttemptRecord]:
        """Every attempt, by task id and attempt number."""
        ...

    async def quarantined(self, limit: int | None = None) -> list[QuarantinedRecord]:
        """Records :meth:`update` refused, oldest first (at most ``limit`` when given)."""
        ...

    async def quarantine_count(self) -> int:
        """How many records :meth:`update` has refused and quarantined, ever."""
        ...

    async def save_schedules(self, schedules: Sequence[tuple[str, str | None, float]]) -> None:
        """Save schedules ``(name, spec, last_fired)`` (a spec of None deletes one); durable
        on return."""
        ...

    async def schedules(self) -> list[tuple[str, str, float]]:
        """Every saved schedule: ``(name, spec, last_fired)``, by name."""
        ...

    async def children(self, task_id: str, limit: int = 1_000) -> list[str]:
        """The ids of the tasks that depend on ``task_id`` (at most ``limit``, in
        submission order)."""
        ...

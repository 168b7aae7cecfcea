"""What the SQL task stores share, all pure: row encoding, batch planning and statements.

Schema (the same in SQLite and PostgreSQL, tables prefixed ``serendib_``):

- ``serendib_tasks``: one row per task. ``seq`` is the submission order (SQLite: the rowid,
  ``INTEGER PRIMARY KEY``; PostgreSQL: an identity column), ``id`` is unique. The task spec
  is stored as JSON in ``task`` and the output as JSON in ``output``; the fields queries need
  (``state``, ``worker``, ``difficulty``, ``priority``, ``required_skill``, ``kind``, times,
  ``attempt``, ``reason``, ``error``) are plain columns, so the file can be read with SQL.
- Indexes ``(state, seq)`` and ``(worker, seq)``: ``query`` pages by key (``seq > cursor``)
  along one of them, so a page costs the same at 10^6 tasks as at 10, and ``unfinished``
  reads only the non-final tasks. ``(kind, seq)`` and ``(finished_at, seq)`` of finished
  tasks serve ``search`` too (:mod:`serendib.tasks.store.search`).
- ``serendib_attempts``: one row per ``(task_id, attempt)`` (the primary key), with a partial
  index on the RUNNING ones for ``open_attempts``.
- ``serendib_meta``: ``schema_version``; opening a store of an older version upgrades it in
  place, a newer one fails clearly (the DDL and its numbered steps are in
  :mod:`serendib.tasks.store.migrations`).
- ``serendib_quarantine``: records an ``update`` could not store because the database refused
  their content (see :func:`quarantine_row`): all text, escaped and truncated, so that the
  table itself can hold anything. Added by migration 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import pydantic_core

from serendib.errors import StoreError
from serendib.tasks.models import AttemptKey, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store.protocol import QuarantinedRecord, Rejected, TaskUpdate

Row = tuple[Any, ...]

TASK_COLUMNS = (
    "id",
    "state",
    "attempt",
    "worker",
    "reason",
    "difficulty",
    "priority",
    "required_skill",
    "kind",
    "submitted_at",
    "updated_at",
    "finished_at",
    "task",
    "output",
    "error",
    "replays",
    "attempt_base",
    "not_before",
)
_TASK_READ = (
    "seq",
    "state",
    "attempt",
    "worker",
    "reason",
    "submitted_at",
    "updated_at",
    "finished_at",
    "task",
    "output",
    "error",
    "replays",
    "attempt_base",
    "not_before",
)
ATTEMPT_COLUMNS = (
    "task_id",
    "attempt",
    "worker",
    "reason",
    "outcome",
    "assigned_at",
    "started_at",
    "finished_at",
    "error",
    "escalated",
    "stale_results",
)
UPDATE_COLUMNS = TaskUpdate._fields
_JSON_COLUMNS = frozenset({"task", "output"})
# Where each field of a TaskUpdate goes in a row of TASK_COLUMNS.
_UPDATE_AT = tuple(TASK_COLUMNS.index(c) for c in UPDATE_COLUMNS)
_ROWS_PER_STATEMENT = 512
QUARANTINE_COLUMNS = ("quarantined_at", "kind", "task_id", "attempt", "error", "record")
_KEY_LIMIT = 1_000
"""Characters kept of a quarantined record's task id, attempt and error."""
_VALUE_LIMIT = 4_096
"""Characters kept of each string in a quarantined record's JSON."""
_INT64 = range(-(2**63), 2**63)
_PENDING = TaskState.PENDING.value
_UNFINISHED = ", ".join(f"'{state.value}'" for state in TaskState if not state.is_final)


def task_row(record: TaskRecord) -> Row:
    """The task table row of ``record``, in :data:`TASK_COLUMNS` order."""
    task = record.task
    try:
        spec = task.model_dump_json()
        output = None if record.output is None else pydantic_core.to_json(record.output).decode()
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as e:
        raise StoreError(
            f"task {task.id!r} cannot be stored: it is not JSON-compatible: {e}"
        ) from e
    return (
        task.id,
        record.state.value,
        record.attempt,
        record.worker,
        record.reason,
        task.difficulty,
        task.priority,
        task.required_skill,
        task.kind,
        record.submitted_at,
        record.updated_at,
        record.finished_at,
        spec,
        output,
        record.error,
        record.replays,
        record.attempt_base,
        record.not_before or None,
    )


def submitted_row(task: Task, at: float) -> Row:
    """The task table row of ``task`` just submitted at ``at``: that of
    ``task_row(TaskRecord(task=task, submitted_at=at, updated_at=at, not_before=...))``, made
    without the record (the submission path, tens of thousands a second)."""
    try:
        spec = task.model_dump_json()
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as e:
        raise StoreError(
            f"task {task.id!r} cannot be stored: it is not JSON-compatible: {e}"
        ) from e
    not_before = task.eligible_at(at) if task.not_before or task.delay_s else None
    return (
        task.id,
        _PENDING,
        0,
        None,
        "",
        task.difficulty,
        task.priority,
        task.required_skill,
        task.kind,
        at,
        at,
        None,
        spec,
        None,
        None,
        0,
        0,
        not_before or None,
    )


def record_from_row(row: Row) -> tuple[int, TaskRecord]:
    """The submission sequence number and the record of a row read with :class:`Statements`."""
    seq, state, attempt, worker, reason, submitted, updated, finished, spec, output, error = row[
        :11
    ]
    replays, attempt_base, not_before = row[11:14]
    record = TaskRecord(
        task=Task.model_validate_json(spec),
        state=state,
        attempt=attempt,
        worker=worker,
        reason=reason,
        submitted_at=submitted,
        updated_at=updated,
        finished_at=finished,
        output=None if output is None else json.loads(output),
        error=error,
        replays=replays,
        attempt_base=attempt_base,
        not_before=not_before or 0.0,
    )
    return seq, record


def attempt_from_row(row: Row) -> AttemptRecord:
    """The attempt record of a row in :data:`ATTEMPT_COLUMNS` order."""
    return AttemptRecord.model_validate(dict(zip(ATTEMPT_COLUMNS, row, strict=True)))


def safe_text(value: object, limit: int = _KEY_LIMIT) -> str:
    """``value`` (its ``repr`` if it is not a string) as text any database column can hold.

    At most ``limit`` characters are kept (the rest is counted), NUL (refused by PostgreSQL
    text) becomes ``\\x00`` and lone surrogates (refused by UTF-8) become ``\\udXXX``.
    """
    text = _truncated(value if isinstance(value, str) else _repr(value), limit)
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _truncated(text: str, limit: int) -> str:
    return (
        text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
    )


def error_text(error: BaseException) -> str:
    """``error`` as its type and message, as text any database column can hold."""
    return safe_text(f"{type(error).__name__}: {error}")


def _repr(value: object) -> str:
    try:
        return repr(value)
    except ValueError:  # an int of more than 4300 digits (sys.get_int_max_str_digits)
        size = f" of {value.bit_length()} bits" if isinstance(value, int) else ""
        return f"<{type(value).__name__}{size} too large to show>"


def _json_safe(value: object) -> object:
    # What json.dumps renders exactly, and every column can hold; anything else as its repr.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else _repr(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _repr(value)
    if isinstance(value, str):
        return _truncated(value, _VALUE_LIMIT)  # JSON escapes NUL and surrogates
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value[:64]]
    return safe_text(value, _VALUE_LIMIT)


def quarantine_row(kind: str, record: object, error: BaseException, at: float) -> Row:
    """The ``serendib_quarantine`` row (in :data:`QUARANTINE_COLUMNS` order) of a refused record.

    Args:
        kind: ``"task"`` (a :class:`TaskUpdate`), ``"attempt"`` (an attempt row, in
            :data:`ATTEMPT_COLUMNS` order) or ``"stale"`` (an :data:`AttemptKey`).
        record: The refused record.
        error: Why it was refused.
        at: When (Unix time).
    """
    if kind == "task" and isinstance(record, tuple) and len(record) == len(UPDATE_COLUMNS):
        fields: dict[str, object] = dict(zip(UPDATE_COLUMNS, record, strict=True))
        task_id, attempt = record[0], None
    elif kind == "attempt" and isinstance(record, tuple) and len(record) == len(ATTEMPT_COLUMNS):
        fields = dict(zip(ATTEMPT_COLUMNS, record, strict=True))
        task_id, attempt = record[0], record[1]
    elif isinstance(record, tuple) and len(record) == 2:
        fields = {"task_id": record[0], "attempt": record[1]}
        task_id, attempt = record
    else:  # not the shape it should be: keep what it was
        fields = {"record": record}
        task_id, attempt = "", None
    # ensure_ascii: the JSON text is ASCII, so NUL and surrogates travel as \u escapes.
    text = json.dumps({name: _json_safe(v) for name, v in fields.items()}, ensure_ascii=True)
    return (
        at,
        kind,
        safe_text(task_id),
        None if attempt is None else safe_text(attempt),
        error_text(error),
        text,
    )


def quarantined_from_row(row: Row) -> QuarantinedRecord:
    """The quarantined record of a row read with :attr:`Statements.quarantined`."""
    seq, at, kind, task_id, attempt, error, record = row
    return QuarantinedRecord(int(seq), float(at), kind, task_id, attempt, error, record)


@dataclass(slots=True)
class PendingWrite:
    """One ``add``, ``save`` or ``update`` call, encoded, waiting for the writer.

    ``split``: its records may be stored apart (an ``update``): if the database refuses some,
    the others are stored and the refused ones quarantined; otherwise a refused record fails
    the whole call (``add``, ``save``).
    """

    add: bool
    task_rows: Sequence[Row]
    attempt_rows: Sequence[Row]
    task_updates: Sequence[TaskUpdate] = ()
    stale: Sequence[AttemptKey] = ()
    split: bool = False
    edges: Sequence[tuple[str, str]] = ()
    """``(parent, child)`` for the tasks an ``add`` inserts that depend on others."""
    schedules: Sequence[tuple[str, str | None, float]] = ()
    """``(name, spec, last_fired)`` of schedules to save; a spec of None deletes one."""

    @property
    def size(self) -> int:
        """Rows it writes at most."""
        return (
            len(self.task_rows)
            + len(self.attempt_rows)
            + len(self.task_updates)
            + len(self.stale)
            + len(self.edges)
            + len(self.schedules)
        )


class Written(NamedTuple):
    """What the writer did with one :class:`PendingWrite` of a committed batch.

    Attributes:
        inserted: The indexes of the task rows it inserted (an ``add``).
        rejected: Its records refused and quarantined (a ``split`` write).
        error: Set when the whole write was refused (nothing of it is stored).
    """

    inserted: list[int]
    rejected: tuple[Rejected, ...] = ()
    error: StoreError | None = None


@dataclass(slots=True)
class Plan:
    """What one transaction writes: rows to upsert, tasks to change in place, and for each
    write of the batch the indexes of the task rows it inserted (empty but for an add)."""

    tasks: list[Row]
    updates: list[TaskUpdate]
    attempts: list[Row]
    inserted: list[list[int]]
    stale: list[tuple[int, str, int]] = field(default_factory=list)
    """(how many more, task id, attempt): stale results to count, after the attempts."""
    edges: list[Row] = field(default_factory=list)
    """``(parent, child)`` of the tasks inserted."""
    schedules: list[Row] = field(default_factory=list)
    """``(name, spec, last_fired)`` to save."""
    unscheduled: list[Row] = field(default_factory=list)
    """``(name,)`` of the schedules to delete."""


def plan_batch(writes: Sequence[PendingWrite], existing: set[str]) -> Plan:
    """Merge queued writes, in call order, into what one transaction writes.

    The last write of a key wins, at the position of its first write. An update of a task
    that a full row of the same batch writes is folded into that row; a full row after an
    update replaces it; an update of a task neither stored nor written before it is dropped.

    Args:
        writes: The batch, oldest first.
        existing: Which of the ids the batch adds are already stored.
    """
    tasks: dict[str, Row] = {}
    updates: dict[str, TaskUpdate] = {}
    attempts: dict[tuple[str, int], Row] = {}
    stale: dict[AttemptKey, int] = {}
    inserted: list[list[int]] = []
    edges: list[Row] = []
    schedules: dict[str, tuple[str, str | None, float]] = {}
    for write in writes:
        for schedule in write.schedules:
            schedules[schedule[0]] = schedule
        new: list[int] = []
        if write.add:
            added = set()
            for index, row in enumerate(write.task_rows):
                if row[0] not in existing and row[0] not in tasks:
                    tasks[row[0]] = row
                    updates.pop(row[0], None)  # it was not stored when that update came
                    new.append(index)
                    added.add(row[0])
            edges += [edge for edge in write.edges if edge[1] in added]
        else:
            for row in write.task_rows:
                tasks[row[0]] = row
                updates.pop(row[0], None)
            for update in write.task_updates:
                full = tasks.get(update.id)
                if full is None:
                    updates[update.id] = update
                else:
                    patched = list(full)
                    for at, value in zip(_UPDATE_AT, update, strict=True):
                        patched[at] = value
                    tasks[update.id] = tuple(patched)
            for row in write.attempt_rows:
                attempts[row[0], row[1]] = row
            for key in write.stale:
                stale[key] = stale.get(key, 0) + 1
        inserted.append(new)
    return Plan(
        list(tasks.values()),
        list(updates.values()),
        list(attempts.values()),
        inserted,
        [(n, task_id, attempt) for (task_id, attempt), n in stale.items()],
        edges,
        [s for s in schedules.values() if s[1] is not None],
        [(s[0],) for s in schedules.values() if s[1] is None],
    )


@dataclass(frozen=True)
class Dialect:
    """How one database spells parameters, tables and JSON columns."""

    param: str
    max_params: int
    tasks: str
    attempts: str
    meta: str
    counts: str
    edges: str = "serendib_edges"
    schedules: str = "serendib_schedules"
    json_param: str = "{}"
    json_text: str = "{}"
    quarantine: str = "serendib_quarantine"
    description: str = "json_extract(task, '$.description')"
    """A task's description, read from its JSON spec."""
    find: str = "instr({}, {})"
    """Where a substring starts in a text (1-based; 0 when absent)."""
    leases: str = "serendib_leases"
    clock: str = "((julianday('now') - 2440587.5) * 86400.0)"
    """The database's clock, in seconds since the Unix epoch (leases expire by it)."""
    row_locks: bool = False
    """Whether a transaction locks rows (PostgreSQL), not the whole database (SQLite)."""


class Statements:
    """The SQL both backends run, written once for a :class:`Dialect`."""

    def __init__(self, d: Dialect) -> None:
        p = d.param
        values = ", ".join(
            d.json_param.format(p) if c in _JSON_COLUMNS else p for c in TASK_COLUMNS
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in TASK_COLUMNS[1:])
        self._upsert = {
            "tasks": (
                f"INSERT INTO {d.tasks} ({', '.join(TASK_COLUMNS)}) VALUES ",
                f"({values})",
                f" ON CONFLICT (id) DO UPDATE SET {updates}",
            ),
            "attempts": (
                f"INSERT INTO {d.attempts} ({', '.join(ATTEMPT_COLUMNS)}) VALUES ",
                f"({', '.join(p for _ in ATTEMPT_COLUMNS)})",
                " ON CONFLICT (task_id, attempt) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in ATTEMPT_COLUMNS[2:]),
            ),
            "edges": (
                f"INSERT INTO {d.edges} (parent, child) VALUES ",
                f"({p}, {p})",
                " ON CONFLICT (parent, child) DO NOTHING",
            ),
            "schedules": (
                f"INSERT INTO {d.schedules} (name, spec, last_fired) VALUES ",
                f"({p}, {p}, {p})",
                " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, "
                "last_fired = excluded.last_fired",
            ),
        }
        self.unschedule = f"DELETE FROM {d.schedules} WHERE name = {p}"
        self.schedules = f"SELECT name, spec, last_fired FROM {d.schedules} ORDER BY name"
        self._upsert_texts: dict[tuple[str, int], str] = {}
        # Tasks change in place: one row per statement (executemany), or many rows per
        # statement through a VALUES list (SQLite >= 3.33, UPDATE ... FROM).
        changed = UPDATE_COLUMNS[1:]
        self.update_one = (
            f"UPDATE {d.tasks} SET "
            + ", ".join(
                f"{c} = {d.json_param.format(p) if c in _JSON_COLUMNS else p}" for c in changed
            )
            + f" WHERE id = {p}"
        )
        self.count_stale = (
            f"UPDATE {d.attempts} SET stale_results = stale_results + {p} "
            f"WHERE task_id = {p} AND attempt = {p}"
        )
        self._update_many = (
            f"WITH v ({', '.join(UPDATE_COLUMNS)}) AS (VALUES ",
            f"({', '.join(p for _ in UPDATE_COLUMNS)})",
            f") UPDATE {d.tasks} SET "
            + ", ".join(f"{c} = v.{c}" for c in changed)
            + f" FROM v WHERE {d.tasks}.id = v.id",
        )
        columns = ", ".join(d.json_text.format(c) if c in _JSON_COLUMNS else c for c in _TASK_READ)
        tasks = f"SELECT {columns} FROM {d.tasks}"
        self.task_columns = columns
        """The columns a task is read from (:func:`record_from_row`), from its table or a
        subquery of it."""
        attempts = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM {d.attempts}"
        self.get = f"{tasks} WHERE id = {p}"
        self.unfinished = f"{tasks} WHERE state IN ({_UNFINISHED}) ORDER BY seq"
        self.all_records = f"{tasks} ORDER BY seq"
        # Counts per state are kept by triggers on the tasks table (see the backends), so
        # reading them costs the same at any size; recount rebuilds them when a store opens.
        self.counts = f"SELECT state, n FROM {d.counts}"
        self.recount = (
            f"DELETE FROM {d.counts}",
            f"INSERT INTO {d.counts} (state, n) "
            f"SELECT state, count(*) FROM {d.tasks} GROUP BY state",
        )
        self.attempts_of = f"{attempts} WHERE task_id = {p} ORDER BY attempt"
        self.open_attempts = f"{attempts} WHERE outcome = 'running' ORDER BY task_id, attempt"
        self.all_attempts = f"{attempts} ORDER BY task_id, attempt"
        self.schema_version = f"SELECT value FROM {d.meta} WHERE key = 'schema_version'"
        self.set_schema_version = (
            f"INSERT INTO {d.meta} (key, value) VALUES ('schema_version', {p}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.quarantine = (
            f"INSERT INTO {d.quarantine} ({', '.join(QUARANTINE_COLUMNS)}) "
            f"VALUES ({', '.join(p for _ in QUARANTINE_COLUMNS)})"
        )
        self.quarantined = (
            f"SELECT seq, {', '.join(QUARANTINE_COLUMNS)} FROM {d.quarantine} ORDER BY seq"
        )
        self.quarantined_some = f"{self.quarantined} LIMIT {p}"
        self.quarantine_count = f"SELECT count(*) FROM {d.quarantine}"
        self.children = (
            f"SELECT e.child FROM {d.edges} e JOIN {d.tasks} t ON t.id = e.child "
            f"WHERE e.parent = {p} ORDER BY t.seq LIMIT {p}"
        )
        self.completed_by_worker = (
            f"SELECT worker, count(*) FROM {d.attempts} WHERE outcome = 'succeeded' GROUP BY worker"
        )
        # Isolating refused records: one savepoint at a time, so one name is enough.
        self.savepoint = "SAVEPOINT serendib_split"
        self.to_savepoint = "ROLLBACK TO SAVEPOINT serendib_split"
        self.release_savepoint = "RELEASE SAVEPOINT serendib_split"
        self._tasks_select = tasks
        self._dialect = d
        self.dialect = d
        """How this database spells things (for statements built elsewhere: searches)."""

    def upserts(self, table: str, rows: Sequence[Row]) -> Iterator[tuple[str, list[Any]]]:
        """Statements inserting or replacing ``rows`` of ``table`` ("tasks" or "attempts").

        Each statement carries many rows (a power of two, at most :data:`_ROWS_PER_STATEMENT`
        and within the driver's parameter limit), so there are few statement texts to prepare
        and cache, and the driver releases the GIL once per statement rather than per row.
        Rows must have distinct keys (PostgreSQL refuses to update a row twice in one
        statement): :func:`plan_batch` makes them so.
        """
        width = len(rows[0]) if rows else 1
        size = _ROWS_PER_STATEMENT
        while size > 1 and size * width > self._dialect.max_params:
            size //= 2
        start = 0
        while start < len(rows):
            while size > len(rows) - start:
                size //= 2
            chunk = rows[start : start + size]
            yield self.upsert_text(table, size), list(chain.from_iterable(chunk))
            start += size

    def updates(self, rows: Sequence[TaskUpdate]) -> Iterator[tuple[str, list[Any]]]:
        """Multi-row statements changing tasks in place (see :meth:`upserts`); SQLite only."""
        return self.upserts("updates", rows)

    def upsert_text(self, table: str, rows: int) -> str:
        """The statement inserting or replacing ``rows`` rows of ``table``."""
        text = self._upsert_texts.get((table, rows))
        if text is None:
            head, row, tail = self._update_many if table == "updates" else self._upsert[table]
            text = self._upsert_texts[table, rows] = head + ", ".join([row] * rows) + tail
        return text

    def query(self, *, state: bool, worker: bool) -> str:
        """A page of tasks after a ``seq``, optionally filtered; parameters in that order."""
        p = self._dialect.param
        where = [f"seq > {p}"]
        if state:
            where.append(f"state = {p}")
        if worker:
            where.append(f"worker = {p}")
        return f"{self._tasks_select} WHERE {' AND '.join(where)} ORDER BY seq LIMIT {p}"

    def get_many(self, count: int) -> str:
        """The records of ``count`` ids (those stored)."""
        marks = ", ".join(self._dialect.param for _ in range(count))
        return f"{self._tasks_select} WHERE id IN ({marks})"

    def existing(self, count: int) -> str:
        """Which of ``count`` ids are stored."""
        marks = ", ".join(self._dialect.param for _ in range(count))
        return f"SELECT id FROM {self._dialect.tasks} WHERE id IN ({marks})"

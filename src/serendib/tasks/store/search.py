"""Searching the task table: filters, three orders and keyset paging, each page bounded.

:meth:`~serendib.tasks.store.protocol.TaskStore.search` walks ONE index in the order asked
for, so that a page costs about the same at 10^6 stored tasks as at 10:

- ``submitted`` (``seq``): along ``(state, seq)``, ``(worker, seq)`` or ``(kind, seq)`` when
  that filter is given (a state that is not final first: its tasks are few; then the
  worker, the kind, a final state), otherwise along ``seq`` itself;
- ``finished`` (``finished_at, seq``): along the partial index of finished tasks (only
  final tasks have a finish time; it is written once, so the index costs the hot update
  path nothing, unlike one on ``updated_at``, which moves with every state change);
- ``id``: along the unique index of ids, within the range of an id prefix when one is given.

The filter the index serves is the *driving* one. Every other filter (and a description
search, which no index serves) is checked on the rows of that walk, written so that no index
can serve it (the planner keeps to the walk), and on at most ``scan`` of them (a *window*):
a first query finds the window's last row along the index alone, and the page is the first
``limit`` matches up to it. When the window ends before the page is full, the page is
returned short with ``truncated`` set and a cursor that goes on after the window, so no
request examines more than ``scan`` rows, however rare the matches.

Cursors are opaque text: the ``seq`` of the last row for ``submitted`` and ``id`` (an id is
looked up from it, through the primary key), ``finished_at:seq`` for ``finished``.

An id prefix is a range of the id index (``id >= prefix AND id < successor``) checked
exactly (``substr``): exact on SQLite (binary order) and on PostgreSQL databases whose
collation orders by code point (``C``, ``C.UTF-8``); with a linguistic collation an id
whose prefix sorts outside that range (punctuation) may be missed. A description search
matches a substring, ignoring case (ASCII letters only, on SQLite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from serendib.tasks.models import TaskRecord, TaskState

__all__ = [
    "SEARCH_SCAN",
    "SearchQuery",
    "TaskPage",
    "TaskSort",
    "SearchStatements",
    "cursor_of",
    "prefix_successor",
]

TaskSort = Literal["submitted", "finished", "id"]
"""The orders of :meth:`TaskStore.search`: submission, finish time, id."""

SEARCH_SCAN = 10_000
"""Rows one search request examines at most, by default (see the module's description)."""

_KEYS: dict[str, tuple[str, ...]] = {
    "submitted": ("seq",),
    "finished": ("finished_at", "seq"),
    "id": ("id",),
}
_MAX_SEQ = 2**63 - 1
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


class TaskPage(NamedTuple):
    """One page of a search.

    Attributes:
        records: The matching tasks, in the order asked for.
        next_cursor: Pass as ``after`` for the next page; None when there is no more.
        truncated: The page stopped at the bound of rows examined before it was full: more
            may match after ``next_cursor``.
    """

    records: list[TaskRecord]
    next_cursor: str | None
    truncated: bool


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What a search asks for (see :meth:`TaskStore.search`)."""

    state: TaskState | None = None
    worker: str | None = None
    kind: str | None = None
    id_prefix: str | None = None
    text: str | None = None
    sort: TaskSort = "submitted"
    descending: bool = False


def prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (code point
    order), or None when there is none (every character is the largest code point)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code in _SURROGATES:  # not characters: text cannot hold them
            code = _SURROGATES.stop
        if code <= _MAX_CODE_POINT:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def cursor_of(sort: TaskSort, seq: int, record: TaskRecord) -> str:
    """The cursor after ``record`` (stored as ``seq``) in the order ``sort``."""
    if sort == "finished":
        return f"{record.finished_at!r}:{seq}"
    return str(seq)


def _parse_cursor(sort: TaskSort, cursor: str) -> list[Any]:
    """The key values of ``cursor`` for ``sort``.

    Raises:
        ValueError: It is not a cursor of that order.
    """
    try:
        if sort == "finished":
            at, _, seq = cursor.partition(":")
            finished = float(at)
            if not math.isfinite(finished):
                raise ValueError(cursor)
            return [finished, _seq(seq)]
        return [_seq(cursor)]
    except ValueError:
        raise ValueError(f"{cursor!r} is not a cursor of the {sort!r} order") from None


def _seq(text: str) -> int:
    """A sequence number (a 64-bit integer that is not negative) written in decimal."""
    if not (text.isascii() and text.isdecimal()) or int(text) > _MAX_SEQ:
        raise ValueError(text)
    return int(text)


def _driving(query: SearchQuery) -> str | None:
    """The filter the walked index serves, if any."""
    if query.sort == "id":
        return "id_prefix" if query.id_prefix else None
    if query.sort == "finished":
        return None
    if query.state is not None and not query.state.is_final:
        return "state"
    for name in ("worker", "kind", "state"):
        if getattr(query, name) is not None:
            return name
    return None


@dataclass(frozen=True, slots=True)
class SearchStatements:
    """The SQL of search pages for one database (pure).

    Attributes:
        param: The driver's parameter mark.
        tasks: The tasks table's (qualified) name.
        columns: The columns a task is read from (as
            :func:`~serendib.tasks.store.rows.record_from_row` decodes them).
        description: The SQL expression of a task's description.
        find: The SQL call locating a substring, with ``{}`` for the text and the substring.
    """

    param: str
    tasks: str
    columns: str
    description: str
    find: str

    def window_end(
        self, query: SearchQuery, after: str | None, scan: int
    ) -> tuple[str, list[Any]] | None:
        """The last row the page after ``after`` may examine (the ``scan``-th of the walk),
        found along the walked index alone; None when the index serves every filter (the
        page then stops at its ``limit``).

        Raises:
            ValueError: ``scan`` below 1, or ``after`` not a cursor of the order.
        """
        if scan < 1:
            raise ValueError(f"scan must be at least 1, not {scan}")
        walk, params, residual, _ = self._conditions(query, after)
        if not residual:
            return None
        p = self.param
        inner = (
            f"SELECT seq FROM {self.tasks}{_where(walk)} "
            f"ORDER BY {_order(query)} LIMIT 1 OFFSET {p}"
        )
        return f"SELECT {self.columns} FROM {self.tasks} WHERE seq = ({inner})", [*params, scan - 1]

    def page(
        self,
        query: SearchQuery,
        after: str | None,
        limit: int,
        until: tuple[int, TaskRecord] | None = None,
    ) -> tuple[str, list[Any]]:
        """A page (``limit + 1`` rows at most) after ``after``, walking no further than
        ``until`` (the :meth:`window_end` row) when given.

        Raises:
            ValueError: ``limit`` below 1, or ``after`` not a cursor of the order.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        walk, params, residual, residual_params = self._conditions(query, after)
        p = self.param
        if until is not None:
            op = ">=" if query.descending else "<="
            seq, record = until
            if query.sort == "finished":
                walk.append(f"(finished_at, seq) {op} ({p}, {p})")
                params += [record.finished_at, seq]
            elif query.sort == "id":
                walk.append(f"id {op} {p}")
                params.append(record.id)
            else:
                walk.append(f"seq {op} {p}")
                params.append(seq)
        where = _where(walk + residual)
        sql = f"SELECT {self.columns} FROM {self.tasks}{where} ORDER BY {_order(query)} LIMIT {p}"
        return sql, [*params, *residual_params, limit + 1]

    def _conditions(
        self, query: SearchQuery, after: str | None
    ) -> tuple[list[str], list[Any], list[str], list[Any]]:
        """The walk's conditions (those the walked index serves) and the residual ones, each
        with their parameters."""
        p = self.param
        walk: list[str] = []
        params: list[Any] = []
        if query.sort == "finished":
            walk.append("finished_at IS NOT NULL")  # the partial index's condition
        if after is not None:
            values = _parse_cursor(query.sort, after)
            op = "<" if query.descending else ">"
            if query.sort == "finished":
                walk.append(f"(finished_at, seq) {op} ({p}, {p})")
            elif query.sort == "id":
                walk.append(f"id {op} (SELECT id FROM {self.tasks} WHERE seq = {p})")
            else:
                walk.append(f"seq {op} {p}")
            params += values
        # Residual conditions are written so that no index can serve them (``IS TRUE``): the
        # planner walks the index chosen here, which bounds what a page examines.
        residual: list[str] = []
        residual_params: list[Any] = []
        driving = _driving(query)
        for name in ("state", "worker", "kind"):
            value = getattr(query, name)
            if value is None:
                continue
            value = value.value if isinstance(value, TaskState) else value
            if name == driving:
                walk.append(f"{name} = {p}")
                params.append(value)
            else:
                residual.append(f"({name} = {p}) IS TRUE")
                residual_params.append(value)
        if query.id_prefix:
            prefix = query.id_prefix
            if driving == "id_prefix":
                walk.append(f"id >= {p}")
                params.append(prefix)
                upper = prefix_successor(prefix)
                if upper is not None:
                    walk.append(f"id < {p}")
                    params.append(upper)
            # Exact whatever the collation's order of that range: checked on each row.
            residual.append(f"substr(id, 1, {p}) = {p}")
            residual_params += [len(prefix), prefix]
        if query.text:
            residual.append(f"{self.find.format(f'lower({self.description})', p)} > 0")
            residual_params.append(query.text.lower())
        return walk, params, residual, residual_params


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _order(query: SearchQuery) -> str:
    way = "DESC" if query.descending else "ASC"
    return ", ".join(f"{key} {way}" for key in _KEYS[query.sort])

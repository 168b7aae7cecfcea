"""The run's report: success rate, per-worker and per-difficulty tallies, attempts and latency.

Pure: it reads task and attempt records and returns a frozen model (``--json``) or a table
rendered to a string; no I/O, no event loop. One pass over each input, plus sorting for percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import StringIO

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table
from rich.text import Text

from serendib.tasks.models import AttemptOutcome, AttemptRecord, TaskRecord, TaskState

__all__ = [
    "AttemptStats",
    "DifficultyRow",
    "DurationStats",
    "LatencyStats",
    "Report",
    "UnassignedRow",
    "WorkerRow",
    "build_report",
    "percentile",
    "render_report",
]

_UNFINISHED = frozenset({TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING})
_DECIDED = frozenset({TaskState.SUCCEEDED, TaskState.FAILED})
_RESULTS = frozenset({AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED})
_TAKEN_BACK = frozenset({AttemptOutcome.LOST, AttemptOutcome.TIMED_OUT})


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerRow(_Row):
    """One worker's attempts.

    Attributes:
        name: The worker.
        attempts: Attempts it was given (of any outcome, running ones included).
        succeeded: Attempts it reported as succeeded.
        failed: Attempts it reported as failed.
        lost: Attempts taken back from it because it was lost or timed out.
        mean_run_s: Mean run time (``finished_at - started_at``) of its succeeded and failed
            attempts that carry both times; None when there are none.
        success_rate: ``succeeded / (succeeded + failed)``; None when both are 0.
    """

    name: str
    attempts: int
    succeeded: int
    failed: int
    lost: int
    mean_run_s: float | None
    success_rate: float | None


class DifficultyRow(_Row):
    """The tasks of one difficulty.

    Attributes:
        difficulty: The difficulty (1-10).
        tasks: Tasks of this difficulty, in any state.
        succeeded: Of which succeeded.
        failed: Of which failed.
        success_rate: ``succeeded / (succeeded + failed)``; None when both are 0.
    """

    difficulty: int
    tasks: int
    succeeded: int
    failed: int
    success_rate: float | None


class AttemptStats(_Row):
    """Counts over all attempts.

    Attributes:
        total: Attempts made.
        retries: Attempts beyond a task's first (attempt number > 1).
        escalations: Attempts given to a more skilled worker after a failure.
        lost: Attempts whose worker was lost.
        timed_out: Attempts abandoned for running past the task's timeout.
        cancelled: Attempts ended by cancelling their task.
        stale_results: Results that arrived after their attempt had ended (never counted).
    """

    total: int
    retries: int
    escalations: int
    lost: int
    timed_out: int
    cancelled: int
    stale_results: int


class DurationStats(_Row):
    """A distribution of durations, in seconds; every statistic is None when ``count`` is 0.

    Percentiles are nearest-rank (see :func:`percentile`), so each is an observed duration.
    """

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class LatencyStats(_Row):
    """How long things took.

    Attributes:
        end_to_end: ``finished_at - submitted_at`` of tasks that succeeded or failed after at
            least one attempt (tasks failed for want of a worker are in ``never_assigned``).
        run: ``finished_at - started_at`` of succeeded and failed attempts that carry both times.
    """

    end_to_end: DurationStats
    run: DurationStats


class UnassignedRow(_Row):
    """A task that never reached a worker, and why.

    Attributes:
        id: The task's id.
        difficulty: Its difficulty.
        required_skill: The skill it needs.
        state: PENDING (still waiting) or FAILED (e.g. no eligible worker before its deadline).
        reason: Why: the failure's error, or the reason it waits; empty when none was recorded.
    """

    id: str
    difficulty: int
    required_skill: str
    state: TaskState
    reason: str


class Report(_Row):
    """Everything the report says, as one frozen model (``model_dump_json()`` for ``--json``).

    Attributes:
        total: Tasks.
        by_state: Tasks per state; every :class:`TaskState` value is a key.
        succeeded: Tasks that succeeded.
        failed: Tasks that failed.
        cancelled: Tasks that were cancelled.
        unfinished: Tasks pending, assigned or running.
        success_rate: The seed's headline: ``succeeded / (succeeded + failed)``. Cancelled and
            unfinished tasks are excluded, since they have no verdict; None when no task has
            succeeded or failed.
        per_worker: One row per worker that was given an attempt, sorted by name.
        per_difficulty: One row per difficulty that occurs, sorted by difficulty.
        attempts: Counts over all attempts.
        latency: End-to-end and run-time distributions.
        never_assigned: Tasks with no attempt that failed or still wait, sorted by id.
    """

    total: int
    by_state: dict[str, int]
    succeeded: int
    failed: int
    cancelled: int
    unfinished: int
    success_rate: float | None
    per_worker: list[WorkerRow]
    per_difficulty: list[DifficultyRow]
    attempts: AttemptStats
    latency: LatencyStats
    never_assigned: list[UnassignedRow]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` by the nearest-rank method.

    The result is the smallest value such that at least ``q`` percent of the values are less
    than or equal to it: the value of rank ``max(1, ceil(q / 100 * n))`` in sorted order. It is
    always one of the values (no interpolation); ``q = 0`` gives the minimum, ``q = 100`` the
    maximum.

    Args:
        values: The data, in any order (they are sorted here, not in place).
        q: The percentile, from 0 to 100.

    Returns:
        The percentile, or None when ``values`` is empty.

    Raises:
        ValueError: If ``q`` is not between 0 and 100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, got {q!r}")
    return _nearest_rank(sorted(values), q)


def _nearest_rank(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered) / 100))
    return ordered[rank - 1]


def _rate(succeeded: int, failed: int) -> float | None:
    decided = succeeded + failed
    return succeeded / decided if decided else None


def _durations(values: list[float]) -> DurationStats:
    if not values:
        return DurationStats(count=0, mean=None, p50=None, p95=None, p99=None, max=None)
    values.sort()
    return DurationStats(
        count=len(values),
        mean=math.fsum(values) / len(values),
        p50=_nearest_rank(values, 50),
        p95=_nearest_rank(values, 95),
        p99=_nearest_rank(values, 99),
        max=values[-1],
    )


@dataclass(slots=True)
class _Tally:
    """Running counts for one worker's attempts or one difficulty's tasks."""

    count: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    run_total: float = 0.0
    run_count: int = 0


def _unassigned_row(record: TaskRecord) -> UnassignedRow:
    # A failed task's error says why it failed; a waiting task's reason says what it waits for.
    if record.state is TaskState.FAILED:
        reason = record.error or record.reason
    else:
        reason = record.reason or record.error or ""
    return UnassignedRow(
        id=record.id,
        difficulty=record.task.difficulty,
        required_skill=record.task.required_skill,
        state=record.state,
        reason=reason,
    )


def build_report(records: Iterable[TaskRecord], attempts: Iterable[AttemptRecord]) -> Report:
    """Summarise a run from its stored task and attempt records.

    Each input is read once; the cost is linear in their sizes plus sorting the durations.

    Args:
        records: Every task's record (in any order).
        attempts: Every attempt's record (in any order).

    Returns:
        The report.
    """
    by_state = dict.fromkeys(TaskState, 0)
    difficulties: dict[int, _Tally] = {}
    end_to_end: list[float] = []
    unassigned: list[UnassignedRow] = []
    for record in records:
        state = record.state
        by_state[state] += 1
        tally = difficulties.get(record.task.difficulty)
        if tally is None:
            tally = difficulties[record.task.difficulty] = _Tally()
        tally.count += 1
        tally.succeeded += state is TaskState.SUCCEEDED
        tally.failed += state is TaskState.FAILED
        if record.attempt == 0:
            if state is TaskState.PENDING or state is TaskState.FAILED:
                unassigned.append(_unassigned_row(record))
        elif state in _DECIDED and record.finished_at is not None:
            end_to_end.append(record.finished_at - record.submitted_at)

    workers: dict[str, _Tally] = {}
    outcomes = dict.fromkeys(AttemptOutcome, 0)
    retries = escalations = stale = 0
    run: list[float] = []
    for attempt in attempts:
        outcome = attempt.outcome
        outcomes[outcome] += 1
        retries += attempt.attempt > 1
        escalations += attempt.escalated
        stale += attempt.stale_results
        worker = workers.get(attempt.worker)
        if worker is None:
            worker = workers[attempt.worker] = _Tally()
        worker.count += 1
        worker.succeeded += outcome is AttemptOutcome.SUCCEEDED
        worker.failed += outcome is AttemptOutcome.FAILED
        worker.lost += outcome in _TAKEN_BACK
        # Only a reported result's times measure a run: a lost or timed-out attempt's end is
        # when the manager gave up on it, which says more about its timeouts than the work.
        if (
            outcome in _RESULTS
            and attempt.started_at is not None
            and attempt.finished_at is not None
        ):
            seconds = attempt.finished_at - attempt.started_at
            run.append(seconds)
            worker.run_total += seconds
            worker.run_count += 1

    succeeded, failed = by_state[TaskState.SUCCEEDED], by_state[TaskState.FAILED]
    unassigned.sort(key=lambda row: row.id)
    return Report(
        total=sum(by_state.values()),
        by_state={state.value: count for state, count in by_state.items()},
        succeeded=succeeded,
        failed=failed,
        cancelled=by_state[TaskState.CANCELLED],
        unfinished=sum(by_state[state] for state in _UNFINISHED),
        success_rate=_rate(succeeded, failed),
        per_worker=[
            WorkerRow(
                name=name,
                attempts=w.count,
                succeeded=w.succeeded,
                failed=w.failed,
                lost=w.lost,
                mean_run_s=w.run_total / w.run_count if w.run_count else None,
                success_rate=_rate(w.succeeded, w.failed),
            )
            for name, w in sorted(workers.items())
        ],
        per_difficulty=[
            DifficultyRow(
                difficulty=difficulty,
                tasks=d.count,
                succeeded=d.succeeded,
                failed=d.failed,
                success_rate=_rate(d.succeeded, d.failed),
            )
            for difficulty, d in sorted(difficulties.items())
        ],
        attempts=AttemptStats(
            total=sum(outcomes.values()),
            retries=retries,
            escalations=escalations,
            lost=outcomes[AttemptOutcome.LOST],
            timed_out=outcomes[AttemptOutcome.TIMED_OUT],
            cancelled=outcomes[AttemptOutcome.CANCELLED],
            stale_results=stale,
        ),
        latency=LatencyStats(end_to_end=_durations(end_to_end), run=_durations(run)),
        never_assigned=unassigned,
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


def _headline(report: Report) -> str:
    if report.success_rate is None:
        return "Success rate: n/a (no task has succeeded or failed yet)"
    decided = report.succeeded + report.failed
    return (
        f"Success rate: {_percent(report.success_rate)} "
        f"({report.succeeded} of {_plural(decided, 'task')})"
    )


def _duration_line(label: str, stats: DurationStats, unit: str) -> str:
    if stats.count == 0:
        return f"{label}: no data"
    return (
        f"{label} ({_plural(stats.count, unit)}): p50 {_seconds(stats.p50)}, "
        f"p95 {_seconds(stats.p95)}, p99 {_seconds(stats.p99)}, "
        f"mean {_seconds(stats.mean)}, max {_seconds(stats.max)}"
    )


def _worker_table(rows: list[WorkerRow]) -> Table:
    table = Table(title="Per worker", title_justify="left")
    table.add_column("Worker")
    for heading in ("Attempts", "Succeeded", "Failed", "Lost", "Mean run", "Success"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            Text(row.name),
            str(row.attempts),
            str(row.succeeded),
            str(row.failed),
            str(row.lost),
            _seconds(row.mean_run_s),
            _percent(row.success_rate),
        )
    return table


def _difficulty_table(rows: list[DifficultyRow]) -> Table:
    table = Table(title="Per difficulty", title_justify="left")
    for heading in ("Difficulty", "Tasks", "Succeeded", "Failed", "Success"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            str(row.difficulty),
            str(row.tasks),
            str(row.succeeded),
            str(row.failed),
            _percent(row.success_rate),
        )
    return table


def _unassigned_table(rows: list[UnassignedRow], limit: int) -> Table:
    table = Table(title="Never assigned", title_justify="left")
    table.add_column("Task")
    table.add_column("Difficulty", justify="right")
    table.add_column("Skill")
    table.add_column("State")
    table.add_column("Reason")
    for row in rows[:limit]:
        table.add_row(
            Text(row.id),
            str(row.difficulty),
            Text(row.required_skill),
            row.state.value,
            Text(row.reason or "-"),
        )
    return table


def render_report(report: Report, *, width: int = 100, max_unassigned: int = 20) -> str:
    """The report as plain-text tables for a terminal.

    The headline comes first, then the per-worker and per-difficulty tables, a line on attempts,
    latency lines, and the tasks that never found a worker with their reasons (only if any).

    Args:
        report: The report.
        width: Columns to fit into.
        max_unassigned: At most this many never-assigned tasks are listed; the rest are counted.

    Returns:
        The text, without colour or escape codes.
    """
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=False,
        color_system=None,
        emoji=False,
        highlight=False,
    )
    out = console.print
    out(_headline(report), markup=False)
    out(
        f"Tasks: {report.total} ({report.succeeded} succeeded, {report.failed} failed, "
        f"{report.cancelled} cancelled, {report.unfinished} unfinished)",
        markup=False,
    )
    if report.per_worker:
        out()
        out(_worker_table(report.per_worker))
    if report.per_difficulty:
        out()
        out(_difficulty_table(report.per_difficulty))
    a = report.attempts
    out()
    out(
        f"Attempts: {a.total} ({_plural(a.retries, 'retry', 'retries')}, "
        f"{_plural(a.escalations, 'escalation')}; {a.lost} lost, {a.timed_out} timed out, "
        f"{a.cancelled} cancelled; {_plural(a.stale_results, 'stale result')})",
        markup=False,
    )
    out(_duration_line("Latency, end to end", report.latency.end_to_end, "task"), markup=False)
    out(_duration_line("Run time", report.latency.run, "attempt"), markup=False)
    if report.never_assigned:
        out()
        out(_unassigned_table(report.never_assigned, max_unassigned))
        hidden = len(report.never_assigned) - max_unassigned
        if hidden > 0:
            out(f"... and {hidden} more", markup=False)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"

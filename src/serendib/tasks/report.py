"""The run's report: success rate, per-worker and per-difficulty tallies, attempts and latency,
and the records the store refused (quarantined).

Pure: it reads task and attempt records and returns a frozen model (``--json``) or a table
rendered to a string (:func:`render_report`, from ``_report_render``); no I/O, no event loop.
One pass over each input, plus sorting for percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from serendib.tasks._report_render import render_report
from serendib.tasks.models import AttemptOutcome, AttemptRecord, TaskRecord, TaskState
from serendib.tasks.store import QuarantinedRecord

__all__ = [
    "AttemptStats",
    "DifficultyRow",
    "DurationStats",
    "LatencyStats",
    "QuarantineRow",
    "Report",
    "UnassignedRow",
    "WorkerRow",
    "build_report",
    "percentile",
    "render_report",
    "success_rate",
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
        replays: Times a failed or cancelled task was run again (``serendib retry``).
    """

    total: int
    retries: int
    escalations: int
    lost: int
    timed_out: int
    cancelled: int
    stale_results: int
    replays: int = 0


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


class QuarantineRow(_Row):
    """A record the store refused to save: the store missed that change.

    Attributes:
        task_id: The task it is about.
        kind: ``task`` (a state change), ``attempt`` (an attempt) or ``stale`` (a stale result).
        attempt: The attempt number as stored (text: it may not fit an integer); None for a
            state change.
        error: Why the store refused it.
        quarantined_at: When (Unix time).
    """

    task_id: str
    kind: str
    attempt: str | None
    error: str
    quarantined_at: float


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
        quarantined: Records the store refused to save (see
            :meth:`~serendib.tasks.store.TaskStore.quarantined`).
        quarantine: Those records, oldest first.
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
    quarantined: int = 0
    quarantine: list[QuarantineRow] = []


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


def success_rate(succeeded: int, failed: int) -> float | None:
    """The seed's headline, ``succeeded / (succeeded + failed)``; None when neither happened.

    Cancelled and unfinished work has no verdict, so it is not counted either way. The
    report, the dashboard and the metrics all use this one definition.
    """
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


def build_report(
    records: Iterable[TaskRecord],
    attempts: Iterable[AttemptRecord],
    *,
    quarantined: Iterable[QuarantinedRecord] = (),
) -> Report:
    """Summarise a run from its stored task and attempt records.

    Each input is read once; the cost is linear in their sizes plus sorting the durations.

    Args:
        records: Every task's record (in any order).
        attempts: Every attempt's record (in any order).
        quarantined: The records the store refused (in any order; listed oldest first).

    Returns:
        The report.
    """
    by_state = dict.fromkeys(TaskState, 0)
    difficulties: dict[int, _Tally] = {}
    end_to_end: list[float] = []
    unassigned: list[UnassignedRow] = []
    replays = 0
    for record in records:
        replays += record.replays
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

    quarantine = [
        QuarantineRow(
            task_id=q.task_id,
            kind=q.kind,
            attempt=q.attempt,
            error=q.error,
            quarantined_at=q.quarantined_at,
        )
        for q in sorted(quarantined, key=lambda q: q.seq)
    ]
    succeeded, failed = by_state[TaskState.SUCCEEDED], by_state[TaskState.FAILED]
    unassigned.sort(key=lambda row: row.id)
    return Report(
        total=sum(by_state.values()),
        by_state={state.value: count for state, count in by_state.items()},
        succeeded=succeeded,
        failed=failed,
        cancelled=by_state[TaskState.CANCELLED],
        unfinished=sum(by_state[state] for state in _UNFINISHED),
        success_rate=success_rate(succeeded, failed),
        per_worker=[
            WorkerRow(
                name=name,
                attempts=w.count,
                succeeded=w.succeeded,
                failed=w.failed,
                lost=w.lost,
                mean_run_s=w.run_total / w.run_count if w.run_count else None,
                success_rate=success_rate(w.succeeded, w.failed),
            )
            for name, w in sorted(workers.items())
        ],
        per_difficulty=[
            DifficultyRow(
                difficulty=difficulty,
                tasks=d.count,
                succeeded=d.succeeded,
                failed=d.failed,
                success_rate=success_rate(d.succeeded, d.failed),
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
            replays=replays,
        ),
        latency=LatencyStats(end_to_end=_durations(end_to_end), run=_durations(run)),
        never_assigned=unassigned,
        quarantined=len(quarantine),
        quarantine=quarantine,
    )

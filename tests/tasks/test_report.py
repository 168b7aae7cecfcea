"""The report: pure statistics over task and attempt records, no server and no event loop."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serendib.tasks.models import AttemptOutcome, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.report import (
    QuarantineRow,
    Report,
    UnassignedRow,
    build_report,
    percentile,
    render_report,
)
from serendib.tasks.store import QuarantinedRecord

T0 = 1_000.0


def submitted(task_id: str, difficulty: int, **fields: object) -> TaskRecord:
    task = Task.model_validate({"id": task_id, "difficulty": difficulty, **fields})
    return TaskRecord(task=task, submitted_at=T0, updated_at=T0)


def attempt(
    task_id: str,
    number: int,
    worker: str,
    outcome: AttemptOutcome,
    *,
    started: float | None = None,
    finished: float | None = None,
    escalated: bool = False,
    stale_results: int = 0,
) -> AttemptRecord:
    record = AttemptRecord(
        task_id=task_id,
        attempt=number,
        worker=worker,
        assigned_at=T0,
        escalated=escalated,
        stale_results=stale_results,
    )
    if outcome is AttemptOutcome.RUNNING:
        return record
    assert finished is not None
    return record.ended(outcome, at=finished, started_at=started)


def seed_run() -> tuple[list[TaskRecord], list[AttemptRecord]]:
    """The seed: Junior (3), Intermediate (6), Senior (9) each given the task they can do."""
    records = []
    attempts = []
    for task_id, difficulty, worker in [
        ("1", 3, "Junior"),
        ("2", 6, "Intermediate"),
        ("3", 9, "Senior"),
    ]:
        end = T0 + difficulty
        records.append(
            submitted(task_id, difficulty)
            .assigned(worker, "best fit", at=T0)
            .running(at=T0)
            .succeeded(output=True, at=end)
        )
        attempts.append(
            attempt(task_id, 1, worker, AttemptOutcome.SUCCEEDED, started=T0, finished=end)
        )
    return records, attempts


def mixed_run() -> tuple[list[TaskRecord], list[AttemptRecord]]:
    """Five tasks: a retry that succeeds after escalation, a failure, a loss, a cancel, a wait."""
    escalated = (
        submitted("a", 5)
        .assigned("junior", "best fit", at=T0)
        .running(at=T0 + 1)
        .requeued("retry after failure", at=T0 + 3, error="too hard")
        .assigned("senior", "escalated", at=T0 + 4)
        .running(at=T0 + 4)
        .succeeded(output=1, at=T0 + 10)
    )
    given_up = (
        submitted("b", 8)
        .assigned("senior", "best fit", at=T0)
        .running(at=T0)
        .failed("handler raised", at=T0 + 2)
    )
    recovered = (
        submitted("c", 2)
        .assigned("junior", "best fit", at=T0)
        .requeued("worker lost", at=T0 + 5)
        .assigned("senior", "only one free", at=T0 + 6)
        .running(at=T0 + 6)
        .succeeded(output=2, at=T0 + 7)
    )
    dropped = submitted("d", 2).assigned("junior", "best fit", at=T0).cancelled(at=T0 + 1)
    waiting = submitted("e", 9).waiting("waiting for skill >= 9")
    attempts = [
        attempt("a", 1, "junior", AttemptOutcome.FAILED, started=T0 + 1, finished=T0 + 3),
        attempt(
            "a",
            2,
            "senior",
            AttemptOutcome.SUCCEEDED,
            started=T0 + 4,
            finished=T0 + 10,
            escalated=True,
            stale_results=1,
        ),
        attempt("b", 1, "senior", AttemptOutcome.FAILED, started=T0, finished=T0 + 2),
        attempt("c", 1, "junior", AttemptOutcome.LOST, started=T0, finished=T0 + 5),
        attempt("c", 2, "senior", AttemptOutcome.SUCCEEDED, started=T0 + 6, finished=T0 + 7),
        attempt("d", 1, "junior", AttemptOutcome.CANCELLED, finished=T0 + 1),
    ]
    return [escalated, given_up, recovered, dropped, waiting], attempts


def test_seed_scenario_with_correct_assignment_succeeds_every_task() -> None:
    report = build_report(*seed_run())

    assert report.total == 3
    assert report.succeeded == 3
    assert report.success_rate == 1.0
    assert [row.name for row in report.per_worker] == ["Intermediate", "Junior", "Senior"]
    assert [(row.name, row.mean_run_s) for row in report.per_worker] == [
        ("Intermediate", 6.0),
        ("Junior", 3.0),
        ("Senior", 9.0),
    ]
    assert [(row.difficulty, row.tasks, row.success_rate) for row in report.per_difficulty] == [
        (3, 1, 1.0),
        (6, 1, 1.0),
        (9, 1, 1.0),
    ]
    assert report.attempts.total == 3
    assert report.attempts.retries == 0
    assert report.never_assigned == []


def test_every_state_is_counted_even_when_no_task_is_in_it() -> None:
    report = build_report(*seed_run())

    assert report.by_state == {
        "pending": 0,
        "assigned": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
    }


def test_mixed_run_counts_tasks_by_outcome_and_rate_excludes_cancelled_and_waiting() -> None:
    report = build_report(*mixed_run())

    assert report.total == 5
    assert (report.succeeded, report.failed, report.cancelled, report.unfinished) == (2, 1, 1, 1)
    assert report.success_rate == pytest.approx(2 / 3)
    assert report.by_state["pending"] == 1


def test_per_worker_rows_count_attempts_results_and_losses() -> None:
    report = build_report(*mixed_run())

    junior, senior = report.per_worker
    assert (junior.name, junior.attempts, junior.succeeded, junior.failed, junior.lost) == (
        "junior",
        3,
        0,
        1,
        1,
    )
    assert junior.mean_run_s == 2.0  # the lost attempt's time is not a run
    assert junior.success_rate == 0.0
    assert (senior.name, senior.attempts, senior.succeeded, senior.failed, senior.lost) == (
        "senior",
        3,
        2,
        1,
        0,
    )
    assert senior.mean_run_s == pytest.approx((6 + 2 + 1) / 3)
    assert senior.success_rate == pytest.approx(2 / 3)


def test_per_difficulty_rows_are_sorted_and_count_every_task() -> None:
    report = build_report(*mixed_run())

    rows = [(r.difficulty, r.tasks, r.succeeded, r.failed) for r in report.per_difficulty]
    assert rows == [(2, 2, 1, 0), (5, 1, 1, 0), (8, 1, 0, 1), (9, 1, 0, 0)]
    assert [r.success_rate for r in report.per_difficulty] == [1.0, 1.0, 0.0, None]


def test_attempt_stats_count_retries_escalations_losses_and_stale_results() -> None:
    stats = build_report(*mixed_run()).attempts

    assert stats.total == 6
    assert stats.retries == 2
    assert stats.escalations == 1
    assert stats.lost == 1
    assert stats.timed_out == 0
    assert stats.cancelled == 1
    assert stats.stale_results == 1


def test_timed_out_attempts_count_as_lost_for_their_worker() -> None:
    attempts = [attempt("x", 1, "slow", AttemptOutcome.TIMED_OUT, started=T0, finished=T0 + 60)]

    report = build_report([], attempts)

    assert report.attempts.timed_out == 1
    assert report.per_worker[0].lost == 1
    assert report.per_worker[0].mean_run_s is None
    assert report.per_worker[0].success_rate is None
    assert report.latency.run.count == 0


def test_latency_covers_decided_tasks_end_to_end_and_reported_attempts() -> None:
    latency = build_report(*mixed_run()).latency

    # Tasks a (10 s), b (2 s) and c (7 s); the cancelled and waiting ones have no latency.
    assert latency.end_to_end.count == 3
    assert (latency.end_to_end.p50, latency.end_to_end.max) == (7.0, 10.0)
    assert latency.end_to_end.mean == pytest.approx(19 / 3)
    # Runs of 2, 6, 2 and 1 s; the lost and cancelled attempts are not runs.
    assert latency.run.count == 4
    assert (latency.run.p50, latency.run.p95, latency.run.p99) == (2.0, 6.0, 6.0)
    assert latency.run.mean == pytest.approx(11 / 4)


def test_cancelled_tasks_are_left_out_of_the_success_rate() -> None:
    records = [
        submitted("ok", 1).assigned("w", "", at=T0).succeeded(output=None, at=T0 + 1),
        submitted("gone", 1).cancelled(at=T0 + 1),
        submitted("gone too", 1).assigned("w", "", at=T0).cancelled(at=T0 + 1),
    ]

    report = build_report(records, [])

    assert report.cancelled == 2
    assert report.success_rate == 1.0
    assert render_report(report).startswith("Success rate: 100.00% (1 of 1 task)\n")


def test_empty_input_gives_no_rate_and_no_statistics() -> None:
    report = build_report([], [])

    assert report.total == 0
    assert report.success_rate is None
    assert report.per_worker == []
    assert report.per_difficulty == []
    assert report.attempts.total == 0
    assert report.latency.end_to_end.count == 0
    assert report.latency.end_to_end.p99 is None
    assert report.latency.run.mean is None
    assert render_report(report).startswith("Success rate: n/a")


def test_build_report_reads_its_inputs_once_so_generators_work() -> None:
    records, attempts = seed_run()

    report = build_report(iter(records), (a for a in attempts))

    assert report == build_report(records, attempts)


def test_tasks_that_never_found_a_worker_are_listed_with_their_reason() -> None:
    records = [
        submitted("late", 9, required_skill="rust").failed("no worker with rust >= 9", at=T0 + 5),
        submitted("waits", 7).waiting("waiting for skill >= 7"),
        submitted("unexplained", 4),
        submitted("cancelled", 4).cancelled(at=T0 + 1),
        submitted("tried", 3).assigned("w", "", at=T0).failed("handler raised", at=T0 + 1),
    ]

    report = build_report(records, [])

    assert report.never_assigned == [
        UnassignedRow(
            id="late",
            difficulty=9,
            required_skill="rust",
            state=TaskState.FAILED,
            reason="no worker with rust >= 9",
        ),
        UnassignedRow(
            id="unexplained",
            difficulty=4,
            required_skill="general",
            state=TaskState.PENDING,
            reason="",
        ),
        UnassignedRow(
            id="waits",
            difficulty=7,
            required_skill="general",
            state=TaskState.PENDING,
            reason="waiting for skill >= 7",
        ),
    ]
    # A task failed for want of a worker has no end-to-end latency: it never ran.
    assert report.latency.end_to_end.count == 1


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 15.0), (5, 15.0), (30, 20.0), (40, 20.0), (50, 35.0), (95, 50.0), (100, 50.0)],
)
def test_percentile_is_nearest_rank(q: float, expected: float) -> None:
    assert percentile([50.0, 15.0, 40.0, 20.0, 35.0], q) == expected


def test_percentiles_of_one_to_a_hundred_are_the_ranks_themselves() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)

    assert [percentile(values, q) for q in (1, 50, 95, 99, 99.5)] == [1, 50, 95, 99, 100]


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_outside_zero_to_a_hundred_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], q)


def test_percentile_does_not_reorder_its_input() -> None:
    values = [3.0, 1.0, 2.0]

    percentile(values, 50)

    assert values == [3.0, 1.0, 2.0]


def _reference_percentile(values: list[float], q: int) -> float:
    # The definition, read literally: the least value with at least q% of the data at or below it.
    return min(v for v in values if sum(x <= v for x in values) / len(values) >= q / 100)


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50),
    st.integers(min_value=0, max_value=100),
)
def test_percentile_matches_the_definition(values: list[float], q: int) -> None:
    assert percentile(values, q) == _reference_percentile(values, q)


def test_report_survives_a_json_round_trip() -> None:
    report = build_report(*mixed_run())

    assert Report.model_validate_json(report.model_dump_json()) == report


def test_report_is_frozen() -> None:
    report = build_report([], [])

    with pytest.raises(ValueError, match="frozen"):
        report.total = 1  # type: ignore[misc]


def test_rendered_report_leads_with_the_headline_and_names_every_worker() -> None:
    text = render_report(build_report(*mixed_run()))

    assert text.splitlines()[0] == "Success rate: 66.67% (2 of 3 tasks)"
    assert "junior" in text
    assert "senior" in text
    assert "Attempts: 6 (2 retries, 1 escalation; 1 lost, 0 timed out, 1 cancelled" in text
    assert "Latency, end to end (3 tasks): p50 7.00 s" in text
    assert "waiting for skill >= 9" in text
    assert "\x1b" not in text


def test_rendered_report_shows_user_text_literally() -> None:
    records = [submitted("[bold]x[/bold]", 2).waiting("needs :smile: [red]help[/red]")]

    text = render_report(build_report(records, []), width=200)

    assert "[bold]x[/bold]" in text
    assert "needs :smile: [red]help[/red]" in text


def test_rendered_report_omits_never_assigned_section_when_there_is_none() -> None:
    text = render_report(build_report(*seed_run()))

    assert "Success rate: 100.00% (3 of 3 tasks)" in text
    assert "Never assigned" not in text
    for name in ("Junior", "Intermediate", "Senior"):
        assert name in text


def test_rendered_report_lists_at_most_max_unassigned_tasks() -> None:
    records = [submitted(f"t{i:02}", 1).waiting("no workers") for i in range(25)]

    text = render_report(build_report(records, []), max_unassigned=10)

    assert "t09" in text
    assert "t10" not in text
    assert "... and 15 more" in text


# --- records the store refused --------------------------------------------------------------


def refused(
    seq: int, kind: str, task_id: str, attempt: str | None, error: str
) -> QuarantinedRecord:
    return QuarantinedRecord(seq, T0 + seq, kind, task_id, attempt, error, '{"id": "x"}')


def test_quarantined_records_are_counted_and_listed_oldest_first() -> None:
    quarantine = [
        refused(2, "attempt", "t2", str(10**30), "OverflowError: Python int too large"),
        refused(1, "task", "t1", None, "DataError: PostgreSQL text fields cannot contain NUL"),
    ]

    report = build_report(*mixed_run(), quarantined=iter(quarantine))

    assert report.quarantined == 2
    assert report.quarantine == [
        QuarantineRow(
            task_id="t1",
            kind="task",
            attempt=None,
            error="DataError: PostgreSQL text fields cannot contain NUL",
            quarantined_at=T0 + 1,
        ),
        QuarantineRow(
            task_id="t2",
            kind="attempt",
            attempt=str(10**30),
            error="OverflowError: Python int too large",
            quarantined_at=T0 + 2,
        ),
    ]
    assert Report.model_validate_json(report.model_dump_json()) == report
    assert build_report(*mixed_run()).quarantined == 0


def test_rendered_report_lists_quarantined_records_and_only_when_there_are_some() -> None:
    quarantine = [
        refused(n, "attempt", f"q{n:02}\x1b[31m", str(10**30), f"OverflowError {n}")
        for n in range(25)
    ]

    text = render_report(build_report([], [], quarantined=quarantine), width=200)

    assert "Quarantined: 25 records the store refused to save" in text
    assert f"attempt {10**30}" in text
    assert "q00\\x1b[31m" in text  # a hostile id is shown, not obeyed
    assert "\x1b" not in text
    assert "OverflowError 19" in text
    assert "q20" not in text
    assert "... and 5 more" in text
    assert "Quarantined" not in render_report(build_report(*seed_run()))

"""What the dashboard derives without the store: throughput, tallies, views, the broadcast."""

from __future__ import annotations

import asyncio

import pytest

from serendib.dashboard.live import (
    Broadcast,
    DepthSeries,
    LatencyWindow,
    LiveFeed,
    ThroughputSeries,
)
from serendib.dashboard.views import attempt_views, task_detail, task_row
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.models import AttemptOutcome, AttemptRecord, Task, TaskRecord, WorkerInfo
from serendib.tasks.report import success_rate

T0 = 1_700_000_000.0


def event(kind: EventKind, task_id: str | None = None, worker: str | None = None) -> TaskEvent:
    return TaskEvent(kind, T0, task_id=task_id, worker=worker)


# --- throughput -------------------------------------------------------------------------------


def test_throughput_counts_tasks_ended_per_second_over_the_window() -> None:
    series = ThroughputSeries(window_s=5)
    for at, ok in [(T0, True), (T0 + 0.9, True), (T0 + 1.2, False), (T0 + 4.5, True)]:
        series.add(at, ok)

    shot = series.snapshot(T0 + 4.7)

    assert shot.start == int(T0)
    assert shot.succeeded == [2, 0, 0, 0, 1]
    assert shot.failed == [0, 1, 0, 0, 0]
    assert shot.per_s == pytest.approx(4 / 5)


# --- queue depth and latency ------------------------------------------------------------------


def test_queue_depth_keeps_each_seconds_last_sample_and_carries_it_over_gaps() -> None:
    depth = DepthSeries(window_s=5)
    for at, pending in [(T0 + 0.1, 7), (T0 + 0.8, 9), (T0 + 3.2, 4)]:
        depth.sample(at, pending)

    shot = depth.snapshot(T0 + 4.5)

    assert shot.start == int(T0)
    assert shot.pending == [9, 9, 9, 4, 4]
    assert DepthSeries(window_s=2).snapshot(T0).pending == [None, None]


def test_latency_is_p50_and_p95_over_the_seconds_of_its_window() -> None:
    latency = LatencyWindow(window_s=30)
    for n in range(1, 101):  # 1..100 s, ended within one second
        latency.add(T0 + 0.5, float(n))
    latency.add(T0 + 20.5, 1_000.0)  # alone in its window: the earlier ones are 20 s older

    shot = latency.snapshot(T0 + 25)

    at = {
        second: (p50, p95)
        for second, p50, p95 in zip(
            range(shot.start, shot.start + 30), shot.p50, shot.p95, strict=True
        )
    }
    assert at[int(T0)] == (50.0, 95.0)
    assert at[int(T0) + 9] == (50.0, 95.0)  # still in the 10 s window
    assert at[int(T0) + 10] == (None, None)
    assert at[int(T0) + 20] == (1_000.0, 1_000.0)
    assert at[int(T0) - 1] == (None, None)


def test_a_busy_seconds_latency_is_a_sample_of_bounded_size() -> None:
    latency = LatencyWindow(window_s=5)
    for n in range(10_000):
        latency.add(T0 + 0.5, float(n % 100))

    shot = latency.snapshot(T0 + 1)

    p50, p95 = shot.p50[-2], shot.p95[-2]
    assert p50 is not None
    assert 40 <= p50 <= 60
    assert p95 is not None
    assert 90 <= p95 <= 99


def test_the_feed_measures_latency_and_success_by_difficulty_of_assigned_tasks() -> None:
    feed = LiveFeed(window_s=10)
    feed.observe(event(EventKind.WORKER_JOINED, worker="w"))
    feed.remember(WorkerInfo(name="w", skills={"general": 5}))
    assigned = TaskEvent(EventKind.ASSIGNED, T0, task_id="a", worker="w")
    feed.observe(assigned, difficulty=4, submitted_at=T0 - 3)
    feed.observe(TaskEvent(EventKind.REQUEUED, T0 + 1, task_id="a", worker="w"))
    feed.observe(TaskEvent(EventKind.ASSIGNED, T0 + 1, task_id="a", worker="w"), 4, T0 - 3)
    feed.observe(TaskEvent(EventKind.SUCCEEDED, T0 + 2, task_id="a", worker="w"))

    tally = feed.tallies["w"]
    assert (tally.succeeded, tally.failed) == (1, 1)
    assert tally.by_difficulty == {4: [1, 1]}
    assert feed.latency.snapshot(T0 + 2).p50[-1] == 5.0  # submitted 3 s before T0, ended at +2


def test_throughput_forgets_seconds_that_left_the_window() -> None:
    series = ThroughputSeries(window_s=3)
    series.add(T0, True)

    shot = series.snapshot(T0 + 10)

    assert shot.succeeded == [0, 0, 0]
    assert shot.per_s == 0


def test_a_result_stamped_in_the_past_counts_in_the_newest_second() -> None:
    series = ThroughputSeries(window_s=3)
    series.add(T0 + 2, True)
    series.add(T0 + 1, True)

    assert series.snapshot(T0 + 2).succeeded == [0, 0, 2]


def test_a_window_must_be_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="window_s"):
        ThroughputSeries(window_s=0)


# --- the feed ---------------------------------------------------------------------------------


def joined(feed: LiveFeed, name: str, level: int) -> None:
    feed.remember(WorkerInfo(name=name, skills={"general": level}, capacity=2))
    feed.observe(event(EventKind.WORKER_JOINED, worker=name))


def test_requeues_count_as_failures_only_while_the_worker_is_connected() -> None:
    feed = LiveFeed()
    joined(feed, "a", 3)
    joined(feed, "b", 5)
    feed.observe(event(EventKind.ASSIGNED, "t1", "a"))
    feed.observe(event(EventKind.REQUEUED, "t1"))  # failed on a, retried
    feed.observe(event(EventKind.ASSIGNED, "t1", "b"))
    feed.observe(event(EventKind.SUCCEEDED, "t1", "b"))
    feed.observe(event(EventKind.ASSIGNED, "t2", "a"))
    feed.observe(event(EventKind.WORKER_LEFT, worker="a"))
    feed.observe(event(EventKind.REQUEUED, "t2"))  # lost with a: not a's failure

    assert (feed.tallies["a"].succeeded, feed.tallies["a"].failed) == (0, 1)
    assert (feed.tallies["b"].succeeded, feed.tallies["b"].failed) == (1, 0)
    assert list(feed.lost) == ["a"]
    assert feed.lost["a"].skills == {"general": 3}


def test_a_returning_worker_is_no_longer_lost() -> None:
    feed = LiveFeed()
    joined(feed, "a", 3)
    feed.observe(event(EventKind.WORKER_LEFT, worker="a"))
    joined(feed, "a", 3)

    assert not feed.lost


def test_only_the_most_recently_lost_workers_are_remembered() -> None:
    feed = LiveFeed(max_lost=2)
    for name in ("a", "b", "c"):
        joined(feed, name, 1)
        feed.observe(event(EventKind.WORKER_LEFT, worker=name))

    assert list(feed.lost) == ["b", "c"]


def test_changes_are_reported_once() -> None:
    feed = LiveFeed()
    feed.observe(event(EventKind.SUBMITTED, "t1"))

    assert feed.take_changes() is True
    assert feed.take_changes() is False


# --- views ------------------------------------------------------------------------------------


def test_success_rate_is_none_before_anything_ended() -> None:
    assert success_rate(0, 0) is None
    assert success_rate(3, 1) == 0.75


def test_a_pending_row_shows_the_live_reason_and_others_the_stored_one() -> None:
    pending = TaskRecord(task=Task(id="a", difficulty=9), reason="stored reason")
    done = pending.assigned("w", "chosen", T0).succeeded(None, T0 + 1)

    assert task_row(pending, "waiting for a worker").reason == "waiting for a worker"
    assert task_row(pending).reason == "stored reason"
    assert task_row(done, "ignored").reason == "chosen"


def test_attempt_timings_run_from_submission_and_from_the_previous_attempt() -> None:
    record = TaskRecord(task=Task(id="a", difficulty=2), submitted_at=T0, updated_at=T0)
    attempts = [
        AttemptRecord(
            task_id="a",
            attempt=2,
            worker="b",
            assigned_at=T0 + 7,
            started_at=T0 + 7.5,
        ),
        AttemptRecord(
            task_id="a",
            attempt=1,
            worker="a",
            assigned_at=T0 + 1,
            outcome=AttemptOutcome.FAILED,
            finished_at=T0 + 4,
            error="boom",
        ),
    ]

    first, second = attempt_views(record, attempts, now=T0 + 10)

    assert (first.attempt, first.queued_s, first.run_s, first.error) == (1, 1, 3, "boom")
    assert (second.attempt, second.queued_s, second.run_s) == (2, 3, 2.5)


def test_only_a_pending_task_has_a_waiting_reason() -> None:
    pending = TaskRecord(task=Task(id="a", difficulty=9), submitted_at=T0, updated_at=T0)
    running = pending.assigned("w", "chosen", T0 + 1)

    waiting = task_detail(pending, [], "waiting for skill >= 9", now=T0 + 5)
    busy = task_detail(running, [], None, now=T0 + 5)

    assert waiting.waiting_reason == "waiting for skill >= 9"
    assert waiting.total_s == 5
    assert busy.waiting_reason is None


# --- the broadcast ----------------------------------------------------------------------------


async def test_a_waiting_stream_gets_only_the_latest_update() -> None:
    broadcast = Broadcast()
    broadcast.publish(b"1")
    assert await broadcast.next(0, timeout=1) == (1, b"1")

    waiting = asyncio.create_task(broadcast.next(1, timeout=5))
    await asyncio.sleep(0)  # let it start waiting
    broadcast.publish(b"2")
    broadcast.publish(b"3")

    assert await waiting == (3, b"3")


async def test_closing_ends_every_waiting_stream() -> None:
    broadcast = Broadcast()
    waiting = asyncio.create_task(broadcast.next(0, timeout=5))
    await asyncio.sleep(0)

    broadcast.close()

    assert await waiting is None
    assert await broadcast.next(0, timeout=5) is None


async def test_a_quiet_stream_times_out_for_a_keep_alive() -> None:
    assert await Broadcast().next(0, timeout=0.01) is None

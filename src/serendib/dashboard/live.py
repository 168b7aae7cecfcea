"""What the dashboard learns from the manager's events, and how it hands updates to browsers.

:class:`LiveFeed` turns :class:`~serendib.tasks.events.TaskEvent` s into per-second
throughput, queue depth and latency (submission to final result, p50 and p95), per-worker
tallies (by difficulty too) and a "something happened" flag; it is plain bookkeeping that
takes its clock from the events, so it is tested without a loop. :class:`Broadcast` holds the
latest update for every server-sent-event stream: a slow browser skips to the newest update
instead of queueing every one, so a flood of events costs each browser at most one update per
tick.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import OrderedDict, deque
from typing import NamedTuple

from serendib.dashboard.schemas import LatencySeries, QueueSeries, Throughput
from serendib.dashboard.views import WorkerTally
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.models import WorkerInfo

__all__ = ["Broadcast", "DepthSeries", "InFlight", "LatencyWindow", "LiveFeed", "ThroughputSeries"]

_RATE_WINDOW_S = 10
LATENCY_WINDOW_S = 10
"""Seconds of results each latency point summarises (the point's second and those before)."""
_SAMPLES_PER_SECOND = 512
"""Latencies kept per second (a uniform sample beyond: the percentiles of a busy second)."""


class ThroughputSeries:
    """Tasks ended per whole second, over a sliding window.

    Args:
        window_s: Seconds of history kept (and charted).
    """

    def __init__(self, window_s: int = 120) -> None:
        if window_s < 1:
            raise ValueError(f"window_s must be >= 1, got {window_s}")
        self.window_s = window_s
        # (second, succeeded, failed), oldest first; only seconds in which something ended.
        self._buckets: deque[list[int]] = deque()

    def add(self, at: float, success: bool) -> None:
        """Count one task that ended at time ``at``."""
        second = math.floor(at)
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
        elif self._buckets and second < self._buckets[-1][0]:
            # Clocks are not monotonic; count a late event in the newest second.
            bucket = self._buckets[-1]
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
            self._trim(second)
        bucket[1 if success else 2] += 1

    def snapshot(self, now: float) -> Throughput:
        """The series ending at second ``now`` (inclusive), zeros where nothing ended."""
        end = math.floor(now)
        self._trim(end)
        start = end - self.window_s + 1
        succeeded = [0] * self.window_s
        failed = [0] * self.window_s
        for second, ok, bad in self._buckets:
            index = second - start
            if 0 <= index < self.window_s:
                succeeded[index] += ok
                failed[index] += bad
        recent = min(_RATE_WINDOW_S, self.window_s)
        ended = sum(succeeded[-recent:]) + sum(failed[-recent:])
        return Throughput(start=start, succeeded=succeeded, failed=failed, per_s=ended / recent)

    def _trim(self, now_second: int) -> None:
        oldest = now_second - self.window_s + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()


class DepthSeries:
    """The queue's depth (tasks pending) sampled over time, the last sample of each second.

    Args:
        window_s: Seconds of history kept.
    """

    def __init__(self, window_s: int = 120) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[int, int]] = deque()  # (second, pending), oldest first

    def sample(self, at: float, pending: int) -> None:
        """Note that ``pending`` tasks wait at time ``at``."""
        second = math.floor(at)
        if self._samples and self._samples[-1][0] >= second:
            self._samples[-1] = (self._samples[-1][0], pending)
        else:
            self._samples.append((second, pending))
        while self._samples and self._samples[0][0] < second - self.window_s:
            self._samples.popleft()

    def snapshot(self, now: float) -> QueueSeries:
        """The series ending at second ``now``: each second's depth, the one before carried
        over a second without a sample, None before the first."""
        end = math.floor(now)
        start = end - self.window_s + 1
        pending: list[int | None] = [None] * self.window_s
        last: int | None = None
        samples = iter(self._samples)
        upcoming = next(samples, None)
        for index in range(self.window_s):
            second = start + index
            while upcoming is not None and upcoming[0] <= second:
                last = upcoming[1]
                upcoming = next(samples, None)
            pending[index] = last
        return QueueSeries(start=start, pending=pending)


class LatencyWindow:
    """Seconds from submission to final result of tasks that ended, as p50 and p95 over a
    sliding window of :data:`LATENCY_WINDOW_S` seconds, for each second of the chart.

    Args:
        window_s: Seconds of history kept (and charted).
    """

    def __init__(self, window_s: int = 120) -> None:
        self.window_s = window_s
        self._seconds: deque[tuple[int, list[float], list[int]]] = deque()  # second, sample, seen
        self._points: dict[int, tuple[float | None, float | None]] = {}  # closed seconds
        self._random = random.Random(0)

    def add(self, at: float, seconds: float) -> None:
        """Count one task that ended at ``at``, ``seconds`` after it was submitted."""
        second = math.floor(at)
        if self._seconds and self._seconds[-1][0] >= second:
            second, sample, seen = self._seconds[-1]  # a clock gone back: the newest second
        else:
            sample, seen = [], [0]
            self._seconds.append((second, sample, seen))
            oldest = second - self.window_s - LATENCY_WINDOW_S
            while self._seconds and self._seconds[0][0] < oldest:
                self._seconds.popleft()
            for old in [s for s in self._points if s < oldest]:
                del self._points[old]
        seen[0] += 1
        if len(sample) < _SAMPLES_PER_SECOND:
            sample.append(seconds)
        else:  # reservoir sampling: every result of the second equally likely kept
            slot = self._random.randrange(seen[0])
            if slot < _SAMPLES_PER_SECOND:
                sample[slot] = seconds
        # The point of this second and the next few change: forget them.
        for later in range(second, second + LATENCY_WINDOW_S):
            self._points.pop(later, None)

    def snapshot(self, now: float) -> LatencySeries:
        """The series ending at second ``now``; None where nothing ended in the window."""
        end = math.floor(now)
        start = end - self.window_s + 1
        p50: list[float | None] = []
        p95: list[float | None] = []
        for second in range(start, end + 1):
            point = self._points.get(second)
            if point is None:
                point = self._point(second)
                if second < end:  # closed: nothing more can end in it
                    self._points[second] = point
            p50.append(point[0])
            p95.append(point[1])
        return LatencySeries(start=start, window_s=LATENCY_WINDOW_S, p50=p50, p95=p95)

    def _point(self, second: int) -> tuple[float | None, float | None]:
        values = sorted(
            value
            for at, sample, _ in self._seconds
            if second - LATENCY_WINDOW_S < at <= second
            for value in sample
        )
        if not values:
            return None, None
        return _percentile(values, 0.5), _percentile(values, 0.95)


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


class InFlight(NamedTuple):
    """An attempt the dashboard saw assigned, and what it knows of its task."""

    worker: str
    difficulty: int | None
    submitted_at: float | None


class LiveFeed:
    """Keeps what the manager's events tell that the store does not: tallies and activity.

    Args:
        window_s: Seconds of throughput history.
        max_lost: Lost workers remembered (the oldest are forgotten first).
    """

    def __init__(self, window_s: int = 120, max_lost: int = 1_000) -> None:
        self.throughput = ThroughputSeries(window_s)
        self.depth = DepthSeries(window_s)
        self.latency = LatencyWindow(window_s)
        self.tallies: dict[str, WorkerTally] = {}
        self.lost: OrderedDict[str, WorkerInfo] = OrderedDict()
        self._max_lost = max_lost
        self._connected: set[str] = set()
        self._known: dict[str, WorkerInfo] = {}
        self._in_flight: dict[str, InFlight] = {}
        self.changed = False
        self.events = 0

    def observe(
        self,
        event: TaskEvent,
        difficulty: int | None = None,
        submitted_at: float | None = None,
    ) -> None:
        """Take one event into account (called by the manager, synchronously).

        Args:
            event: What happened.
            difficulty: For an assignment, the task's difficulty (None when unknown).
            submitted_at: For an assignment, when the task was submitted (None: unknown).
        """
        self.events += 1
        self.changed = True
        kind = event.kind
        task_id = event.task_id or ""
        if kind is EventKind.ASSIGNED and event.worker:
            self._in_flight[task_id] = InFlight(event.worker, difficulty, submitted_at)
        elif kind is EventKind.SUCCEEDED or kind is EventKind.FAILED:
            flight = self._in_flight.pop(task_id, None)
            success = kind is EventKind.SUCCEEDED
            self.throughput.add(event.at, success)
            if flight is not None and flight.submitted_at is not None:
                self.latency.add(event.at, max(event.at - flight.submitted_at, 0.0))
            if event.worker:
                self._tally(event.worker, success, flight.difficulty if flight else None)
        elif kind is EventKind.REQUEUED:
            flight = self._in_flight.pop(task_id, None)
            # A requeue from a connected worker is a failed or timed-out attempt; one from a
            # worker that has left is its loss (the manager says so before requeueing).
            if flight is not None and flight.worker in self._connected:
                self._tally(flight.worker, False, flight.difficulty)
        elif kind is EventKind.CANCELLED:
            self._in_flight.pop(task_id, None)
        elif kind is EventKind.WORKER_JOINED and event.worker:
            self._connected.add(event.worker)
            self.lost.pop(event.worker, None)
        elif kind is EventKind.WORKER_LEFT and event.worker:
            self._worker_left(event.worker)

    def take_changes(self) -> bool:
        """Whether anything happened since the last call."""
        changed, self.changed = self.changed, False
        return changed

    def remember(self, info: WorkerInfo) -> None:
        """Note a connected worker's skills and capacity, to show them once it is lost."""
        self._connected.add(info.name)
        self._known[info.name] = info

    def _worker_left(self, name: str) -> None:
        self._connected.discard(name)
        info = self._known.pop(name, None)
        if info is None:
            return  # never seen with its skills: nothing to show
        self.lost[name] = info
        self.lost.move_to_end(name)
        while len(self.lost) > self._max_lost:
            forgotten, _ = self.lost.popitem(last=False)
            self.tallies.pop(forgotten, None)

    def _tally(self, worker: str, success: bool, difficulty: int | None) -> None:
        tally = self.tallies.get(worker)
        if tally is None:
            tally = self.tallies[worker] = WorkerTally()
        tally.count(success, difficulty)


class Broadcast:
    """The latest update, for any number of streams waiting for the next one."""

    def __init__(self) -> None:
        self.version = 0
        self.latest: bytes | None = None
        self.closed = False
        self._changed = asyncio.Event()

    def publish(self, payload: bytes) -> None:
        """Make ``payload`` the latest update and wake every waiting stream."""
        self.version += 1
        self.latest = payload
        self._wake()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        self._wake()

    async def next(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The latest update if it is newer than version ``seen``, waiting up to ``timeout``.

        Returns:
            ``(version, payload)``, or None on timeout or once closed.
        """
        while not self.closed:
            if self.version > seen and self.latest is not None:
                return self.version, self.latest
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return None
        return None

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

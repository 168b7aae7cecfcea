"""What the dashboard learns from the manager's events, and how it hands updates to browsers.

:class:`LiveFeed` turns :class:`~serendib.tasks.events.TaskEvent` s into per-second
throughput, per-worker tallies and a "something happened" flag; it is plain bookkeeping that
takes its clock from the events, so it is tested without a loop. :class:`Broadcast` holds the
latest update for every server-sent-event stream: a slow browser skips to the newest update
instead of queueing every one, so a flood of events costs each browser at most one update per
tick.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, deque

from serendib.dashboard.schemas import Throughput
from serendib.dashboard.views import WorkerTally
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.models import WorkerInfo

__all__ = ["Broadcast", "LiveFeed", "ThroughputSeries"]

_RATE_WINDOW_S = 10


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


class LiveFeed:
    """Keeps what the manager's events tell that the store does not: tallies and activity.

    Args:
        window_s: Seconds of throughput history.
        max_lost: Lost workers remembered (the oldest are forgotten first).
    """

    def __init__(self, window_s: int = 120, max_lost: int = 1_000) -> None:
        self.throughput = ThroughputSeries(window_s)
        self.tallies: dict[str, WorkerTally] = {}
        self.lost: OrderedDict[str, WorkerInfo] = OrderedDict()
        self._max_lost = max_lost
        self._connected: set[str] = set()
        self._known: dict[str, WorkerInfo] = {}
        self._in_flight: dict[str, str] = {}
        self.changed = False
        self.events = 0

    def observe(self, event: TaskEvent) -> None:
        """Take one event into account (called by the manager, synchronously)."""
        self.events += 1
        self.changed = True
        kind = event.kind
        task_id = event.task_id or ""
        if kind is EventKind.ASSIGNED and event.worker:
            self._in_flight[task_id] = event.worker
        elif kind is EventKind.SUCCEEDED or kind is EventKind.FAILED:
            self._in_flight.pop(task_id, None)
            self.throughput.add(event.at, kind is EventKind.SUCCEEDED)
            if event.worker:
                self._tally(event.worker, kind is EventKind.SUCCEEDED)
        elif kind is EventKind.REQUEUED:
            worker = self._in_flight.pop(task_id, None)
            # A requeue from a connected worker is a failed or timed-out attempt; one from a
            # worker that has left is its loss (the manager says so before requeueing).
            if worker is not None and worker in self._connected:
                self._tally(worker, False)
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

    def _tally(self, worker: str, success: bool) -> None:
        tally = self.tallies.get(worker)
        if tally is None:
            tally = self.tallies[worker] = WorkerTally()
        if success:
            tally.succeeded += 1
        else:
            tally.failed += 1


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

"""The book's workers: who may take work, who fell silent, and what each holds.

See :mod:`serendib.tasks._book_core` for how the book is layered.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger

from serendib.tasks._book_core import BookCore
from serendib.tasks.events import EventKind
from serendib.tasks.models import AttemptOutcome, TaskCancel, WorkerInfo

__all__ = ["WorkerRoster"]


class WorkerRoster(BookCore):
    """Workers joining, falling silent (suspect), leaving, and reconciling what they hold."""

    def load(self, worker: str) -> int:
        """Attempts ``worker`` holds now (connected or suspect)."""
        return len(self._by_worker.get(worker, ()))

    @property
    def suspects(self) -> list[str]:
        """Workers that fell silent and whose attempts are kept for them a while."""
        return list(self._suspects)

    def worker_joined(self, info: WorkerInfo) -> None:
        """A worker can take work (again, if it was suspect: its attempts are still its own)."""
        suspect = self._suspects.pop(info.name, None)
        if suspect is not None:
            suspect.cancel()
            logger.info(
                "{}: worker {} is back; it keeps its {} attempts",
                self.name,
                info.name,
                len(self._by_worker.get(info.name, ())),
            )
        self.workers[info.name] = info
        running = self._by_worker.setdefault(info.name, set())
        self.scheduler.add_worker(info.name, info.skills, info.capacity, load=len(running))
        self.events.emit(EventKind.WORKER_JOINED, worker=info.name)
        self.pump()

    def worker_lost(self, name: str, grace_s: float) -> None:
        """A worker fell silent: it gets no new work, and its attempts go back to the queue
        only if it is still silent ``grace_s`` seconds from now (it may only be overloaded)."""
        if name not in self.workers or name in self._suspects:
            return
        if grace_s <= 0:
            self.worker_left(name)
            return
        self.scheduler.remove_worker(name)
        logger.warning(
            "{}: worker {} fell silent: no new work for it; its {} attempts go back to the queue "
            "if it is still silent in {:g}s",
            self.name,
            name,
            len(self._by_worker.get(name, ())),
            grace_s,
        )

        async def give_up() -> None:
            if self._suspects.pop(name, None) is not None:
                self.worker_left(name, cancel=True)

        loop = asyncio.get_running_loop()
        self._suspects[name] = loop.call_later(grace_s, lambda: self._call_soon(give_up))

    def worker_left(self, name: str, cancel: bool = False) -> None:
        """A worker left or was lost for good: its attempts go back to the queue.

        ``cancel``: it may still be running them (silent, not known dead): tell it to stop.
        """
        suspect = self._suspects.pop(name, None)
        if suspect is not None:
            suspect.cancel()
        if self.workers.pop(name, None) is None:
            return
        self.scheduler.remove_worker(name)
        self.stats.workers_lost += 1
        self.events.emit(EventKind.WORKER_LEFT, worker=name)
        now = time.time()
        for task_id in sorted(self._by_worker.pop(name, set())):
            attempt = self._attempts.get(task_id)
            entry = self._records.get(task_id)
            if attempt is None or entry is None:
                continue
            self._end_attempt(attempt, AttemptOutcome.LOST, now, f"worker {name} lost")
            if cancel:
                self._ledger.post(name, TaskCancel(task_id=task_id, attempt=attempt.attempt))
            self.stats.requeued_lost += 1
            entry.requeue(f"worker {name} left; requeued", now)
            self._requeue(entry)
        self.pump()

    def reconcile(
        self, worker: str, holding: set[tuple[str, int]], seen: int, grace_s: float
    ) -> None:
        """Compare what ``worker`` holds with what it was given.

        An attempt it does not hold although it has handled the message that carried it
        (``seen``: the last assignment message it handled, -1 if unknown) was lost: it goes
        back to the queue. One whose message it has not handled yet may be waiting in a busy
        worker's inbox, or lost on the way with nothing after it: after ``grace_s`` it is
        sent again (a worker ignores an assignment it already has).
        """
        now = time.time()
        attempts = self._attempts
        missing = []
        unclaimed = False
        for task_id in self._by_worker.get(worker, ()):
            lease = attempts.get(task_id)
            if lease is not None and (task_id, lease.attempt) in holding:
                lease.resumed = False  # claimed: held since before a manager restart
            elif lease is not None and lease.resumed:
                unclaimed = True
            else:
                missing.append(task_id)
        if unclaimed:
            self._abandon_unclaimed(f"{worker} does not hold it", worker)
        for task_id in sorted(missing):  # usually none: a worker holds what it was given
            attempt = self._attempts.get(task_id)
            entry = self._records.get(task_id)
            if attempt is None or entry is None:
                continue
            if not attempt.seq or now - attempt.sent_at < grace_s:
                continue  # not sent yet, or sent too recently to judge
            if attempt.seq <= seen:
                reason = f"assignment to {worker} lost in transit"
                self._end_attempt(attempt, AttemptOutcome.LOST, now, reason)
                self.stats.requeued_lost += 1
                entry.requeue(f"{reason}; requeued", now)
                self._requeue(entry)
                continue
            attempt.seq = 0  # judged again once the new message is out
            self.stats.assignments_resent += 1
            self._ledger.post(
                worker,
                attempt.assignment(entry.task),
                attempt,
            )
        self.pump()

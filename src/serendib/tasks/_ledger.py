"""The manager's ledger: state changes are saved before the messages that act on them leave.

Changes are *staged* with the messages to send once they are durable: the book's working
copies of tasks and attempts are staged by reference, and their rows are taken when a batch
starts (so the last change before it wins, and nothing is taken that is not yet true).
One writer task saves everything staged in one store transaction, then sends the messages
grouped per worker, and repeats while more is staged: the more that happens at once, the
bigger (and cheaper per task) the batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from serendib.tasks._entries import Entry, Lease
from serendib.tasks.models import (
    AttemptKey,
    ResultsAck,
    TaskAssignment,
    TaskAssignments,
    TaskCancel,
)
from serendib.tasks.store import AttemptRow, TaskStore, TaskUpdate

__all__ = ["Ledger"]

Send = Callable[[str, object], Awaitable[None]]
_Messages = tuple[
    list[tuple[str, TaskAssignment | TaskCancel, Lease | None]], dict[str, list[AttemptKey]]
]


class Ledger:
    """Stages records and messages; saves, then sends.

    Args:
        store: Where records are saved.
        send: Sends a message to a worker by name.
        on_flushed: Called after each batch is saved and sent.
        owner: Name for log lines.
    """

    def __init__(
        self, store: TaskStore, send: Send, on_flushed: Callable[[], None], owner: str
    ) -> None:
        self.store = store
        self._send = send
        self._on_flushed = on_flushed
        self._owner = owner
        self._records: dict[str, Entry] = {}
        self._attempts: dict[tuple[str, int], Lease] = {}
        self._outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]] = []
        self._seq: dict[str, int] = {}
        self.epoch = ""
        self._acks: dict[str, list[AttemptKey]] = {}
        self._stale: list[AttemptKey] = []
        self._saving: dict[str, Entry] = {}
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    @property
    def idle(self) -> bool:
        """Nothing staged and nothing being written."""
        return self._writer is None and not self._pending()

    def _pending(self) -> bool:
        return bool(self._records or self._attempts or self._outbox or self._acks or self._stale)

    def record(self, entry: Entry) -> None:
        """Stage a task: its row is taken when the next batch starts."""
        self._records[entry.id] = entry
        self._kick()

    def attempt(self, lease: Lease) -> None:
        """Stage an attempt: its row is taken when the next batch starts."""
        self._attempts[(lease.task_id, lease.attempt)] = lease
        self._kick()

    def unsaved(self, task_id: str) -> Entry | None:
        """The task if a change of it is staged or being saved (the store still has less)."""
        return self._records.get(task_id) or self._saving.get(task_id)

    def stale(self, key: AttemptKey) -> None:
        """Count one more stale result on a stored attempt (not the one running)."""
        self._stale.append(key)
        self._kick()

    def post(
        self, worker: str, message: TaskAssignment | TaskCancel, lease: Lease | None = None
    ) -> None:
        """Send ``message`` to ``worker`` once everything staged so far is saved.

        An assignment goes with its ``lease``, on which the number of the message carrying
        it and the time it left are noted.
        """
        self._outbox.append((worker, message, lease))
        self._kick()

    def ack(self, worker: str, key: AttemptKey) -> None:
        """Acknowledge a result to ``worker`` once everything staged so far is saved."""
        self._acks.setdefault(worker, []).append(key)
        self._kick()

    async def drain(self) -> None:
        """Return once everything staged is saved and sent."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _kick(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"{self._owner}-ledger")

    async def _write_loop(self) -> None:
        # One save at a time, in order; the messages of a saved batch go out while the next
        # batch is being saved (the store's thread commits while this loop sends).
        saved: _Messages | None = None
        saving: asyncio.Task[None] | None = None
        try:
            while self._pending() or saved is not None:
                staged: _Messages | None = None
                if self._pending():
                    records = [entry.update() for entry in self._records.values()]
                    attempts = [lease.row() for lease in self._attempts.values()]
                    self._saving, self._records, self._attempts = self._records, {}, {}
                    stale, self._stale = self._stale, []
                    staged = (self._outbox, self._acks)
                    self._outbox, self._acks = [], {}
                    if records or attempts or stale:
                        saving = asyncio.create_task(self._save(records, attempts, stale))
                if saved is not None:
                    await self._send_batch(*saved)
                if saving is not None:
                    await saving
                    saving = None
                self._saving = {}
                if staged is not None:
                    self.batches += 1
                saved = staged
        finally:
            self._writer = None
        self._on_flushed()

    async def _send_batch(
        self,
        outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]],
        acks: dict[str, list[AttemptKey]],
    ) -> None:
        await self._deliver(outbox)
        for worker, keys in acks.items():
            await self._try_send(worker, ResultsAck(acks=keys))

    async def _save(
        self, records: list[TaskUpdate], attempts: list[AttemptRow], stale: list[AttemptKey]
    ) -> None:
        delay = 0.1
        while True:
            try:
                await self.store.update(records, attempts, stale)
                return
            except Exception as e:  # the store may come back; what is staged must not be lost
                logger.error(
                    "{}: saving {} records failed, retrying in {:.1f}s: {}",
                    self._owner,
                    len(records),
                    delay,
                    e,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _deliver(
        self, outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]]
    ) -> None:
        by_worker: dict[str, list[tuple[TaskAssignment | TaskCancel, Lease | None]]] = {}
        for worker, message, lease in outbox:
            by_worker.setdefault(worker, []).append((message, lease))
        now = time.time()
        for worker, messages in by_worker.items():
            assignments = [m for m, _ in messages if isinstance(m, TaskAssignment)]
            batch: list[object] = []
            if assignments:
                seq = self._seq[worker] = self._seq.get(worker, 0) + 1
                for _, lease in messages:
                    if lease is not None:
                        lease.seq, lease.sent_at = seq, now
                batch.append(TaskAssignments(assignments=assignments, epoch=self.epoch, seq=seq))
            # Cancels after the assignments: one may be for an attempt assigned in this batch.
            batch += [m for m, _ in messages if isinstance(m, TaskCancel)]
            for outgoing in batch:
                await self._try_send(worker, outgoing)

    async def _try_send(self, worker: str, message: object) -> None:
        try:
            await self._send(worker, message)
        except Exception as e:  # the lease times out, or the worker is declared lost
            logger.error("{}: could not send to {}: {}", self._owner, worker, e)

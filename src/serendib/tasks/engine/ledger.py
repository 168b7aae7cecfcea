"""The manager's ledger: state changes are saved before the messages that act on them leave.

Changes are *staged* with the messages to send once they are durable: the book's working
copies of tasks and attempts are staged by reference, and their rows are taken when a batch
starts (so the last change before it wins, and nothing is taken that is not yet true).
One writer task saves everything staged in one store transaction, then sends the messages
grouped per worker, and repeats while more is staged: the more that happens at once, the
bigger (and cheaper per task) the batches.

When the store fails:

- *It refuses a record* for its content (an integer beyond 64 bits, NUL in PostgreSQL
  text): the store saves the rest of the batch and quarantines that record (see
  :meth:`~serendib.tasks.store.TaskStore.update`); the ledger logs it and goes on. The
  batch's messages still go out: the manager's state in memory has moved on (the record is
  what it acts on), and holding the messages back would leave workers waiting on a change
  that the store can never hold. The quarantine says which change the store missed; after a
  restart the store's older state of that task is what resumes.
- *It is unavailable* (locked, disk or connection lost): the batch is retried with backoff
  until it is saved, and nothing staged after it is sent before.
- *Stopping*: :meth:`Ledger.drain` waits a bounded time (the store may never come back);
  what it could not save is logged at ERROR as one line of counts, its messages are dropped
  (they would act on state the store does not hold), and the stop goes on.
- *The lead is lost* (a standby manager's store refuses writes with
  :class:`~serendib.tasks.store.LeadLost`: another manager leads now): never retried. The
  ledger :meth:`halts <Ledger.halt>`: what is staged and its messages are dropped, nothing
  more is saved or sent (the manager that leads now has the store's state, and acts on it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from serendib.errors import MessageTooLarge
from serendib.tasks.engine.entries import Entry, Lease
from serendib.tasks.messages import (
    ResultsAck,
    TaskAssignment,
    TaskAssignments,
    TaskCancel,
    TaskOutcome,
    TaskOutcomes,
)
from serendib.tasks.models import AttemptKey
from serendib.tasks.store import AttemptRow, LeadLost, Rejected, TaskStore, TaskUpdate

__all__ = ["DRAIN_TIMEOUT_S", "Ledger"]

DRAIN_TIMEOUT_S = 10.0
"""How long :meth:`Ledger.drain` waits for the store by default."""
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
_REJECTS_LOGGED = 3

Send = Callable[[str, object], Awaitable[None]]
_Messages = tuple[
    list[tuple[str, TaskAssignment | TaskCancel, Lease | None]],
    dict[str, list[AttemptKey]],
    dict[str, list[TaskOutcome]],
]
_OUTCOMES_PER_MESSAGE = 500


def _shown(value: object, limit: int = 80) -> str:
    # For a log line: short, and never failing (an int of over 4300 digits has no repr).
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}..."


class Ledger:
    """Stages records and messages; saves, then sends.

    Args:
        store: Where records are saved.
        send: Sends a message to a worker by name.
        on_flushed: Called after each batch is saved and sent.
        owner: Name for log lines.
        epoch: The manager's identity, sent with each batch of assignments (see
            ``TaskAssignments.epoch``).
    """

    def __init__(
        self,
        store: TaskStore,
        send: Send,
        on_flushed: Callable[[], None],
        owner: str,
        epoch: str = "",
    ) -> None:
        self.store = store
        self._send = send
        self._on_flushed = on_flushed
        self._owner = owner
        self._records: dict[str, Entry] = {}
        self._attempts: dict[tuple[str, int], Lease] = {}
        self._outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]] = []
        self._seq: dict[str, int] = {}
        self.epoch = epoch
        self._acks: dict[str, list[AttemptKey]] = {}
        self._outcomes: dict[str, list[TaskOutcome]] = {}
        self._stale: list[AttemptKey] = []
        self._saving: dict[str, Entry] = {}
        self._writer: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None
        self._unsent: _Messages | None = None
        self._in_flight = (0, 0, 0)
        self.batches = 0
        self.quarantined = 0
        """Records the store refused (and quarantined) since this ledger began."""
        self.halted = False
        """Set once the lead is lost: nothing more is saved or sent."""

    @property
    def idle(self) -> bool:
        """Nothing staged and nothing being written."""
        return self._writer is None and not self._pending()

    def _pending(self) -> bool:
        return bool(
            self._records
            or self._attempts
            or self._outbox
            or self._acks
            or self._stale
            or self._outcomes
        )

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

    def notify(self, client: str, outcome: TaskOutcome) -> None:
        """Push ``outcome`` to ``client`` once everything staged so far is saved."""
        self._outcomes.setdefault(client, []).append(outcome)
        self._kick()

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Return once everything staged is saved and sent, or after ``timeout`` seconds.

        A store that stays unavailable must not hold up stopping: after ``timeout``, the
        writer stops, what it had not saved (and the messages waiting on it) is dropped and
        logged at ERROR as one line of counts.

        Args:
            timeout: Seconds to wait for the store.

        Returns:
            True if everything was saved and sent; False if some was dropped.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._writer is not None:
            writer = self._writer
            # wait, not wait_for: a caller cancelled or timing out must not cancel the writer.
            await asyncio.wait({writer}, timeout=max(deadline - loop.time(), 0))
            if not writer.done():
                await self._abandon(timeout)
                return False
            if not writer.cancelled():
                writer.result()  # a failing writer is a bug: let the caller see it
        return True

    async def _abandon(self, timeout: float) -> None:
        records, attempts, stale = self._in_flight
        records += len(self._records)
        attempts += len(self._attempts)
        stale += len(self._stale)
        messages = len(self._outbox) + sum(len(keys) for keys in self._acks.values())
        messages += sum(len(outcomes) for outcomes in self._outcomes.values())
        if self._unsent is not None:
            outbox, acks, outcomes = self._unsent
            messages += len(outbox) + sum(len(keys) for keys in acks.values())
            messages += sum(len(told) for told in outcomes.values())
        tasks = [task for task in (self._writer, self._saver) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._records, self._attempts, self._stale, self._saving = {}, {}, [], {}
        self._outbox, self._acks, self._outcomes, self._unsent = [], {}, {}, None
        self._in_flight = (0, 0, 0)
        logger.error(
            "{}: the task store at {} did not save within {:.1f}s; dropped unsaved: {} tasks, "
            "{} attempts, {} stale results, and {} messages waiting on them",
            self._owner,
            self.store.url,
            timeout,
            records,
            attempts,
            stale,
            messages,
        )

    def halt(self) -> None:
        """Save and send nothing more (another manager leads): drop what is staged and the
        messages waiting on it, quietly. Idempotent."""
        self.halted = True
        for task in (self._writer, self._saver):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._writer = self._saver = None
        self._records, self._attempts, self._stale, self._saving = {}, {}, [], {}
        self._outbox, self._acks, self._outcomes, self._unsent = [], {}, {}, None
        self._in_flight = (0, 0, 0)

    def _kick(self) -> None:
        if self._writer is None and not self.halted:
            self._writer = asyncio.create_task(self._write_loop(), name=f"{self._owner}-ledger")

    async def _write_loop(self) -> None:
        # One save at a time, in order; the messages of a saved batch go out while the next
        # batch is being saved (the store's thread commits while this loop sends).
        saved: _Messages | None = None
        try:
            while self._pending() or saved is not None:
                staged: _Messages | None = None
                if self._pending():
                    records = [entry.update() for entry in self._records.values()]
                    attempts = [lease.row() for lease in self._attempts.values()]
                    self._saving, self._records, self._attempts = self._records, {}, {}
                    stale, self._stale = self._stale, []
                    staged = (self._outbox, self._acks, self._outcomes)
                    self._outbox, self._acks, self._outcomes = [], {}, {}
                    if records or attempts or stale:
                        self._in_flight = (len(records), len(attempts), len(stale))
                        self._saver = asyncio.create_task(self._save(records, attempts, stale))
                self._unsent = staged
                if saved is not None:
                    await self._send_batch(*saved)
                if self._saver is not None:
                    try:
                        await self._saver
                    except LeadLost:
                        self.halt()
                        return
                    self._saver = None
                    self._in_flight = (0, 0, 0)
                self._saving = {}
                if staged is not None:
                    self.batches += 1
                saved = staged
        finally:
            self._writer = None
            self._unsent = None
        self._on_flushed()

    async def _send_batch(
        self,
        outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]],
        acks: dict[str, list[AttemptKey]],
        outcomes: dict[str, list[TaskOutcome]],
    ) -> None:
        await self._deliver(outbox)
        for worker, keys in acks.items():
            await self._try_send(worker, ResultsAck(acks=keys))
        for client, told in outcomes.items():
            for start in range(0, len(told), _OUTCOMES_PER_MESSAGE):
                await self._tell(client, told[start : start + _OUTCOMES_PER_MESSAGE])

    async def _tell(self, client: str, outcomes: list[TaskOutcome]) -> None:
        """Push outcomes; those whose outputs make the message too large go one by one, and
        one too large alone goes without its output (the client asks for the task)."""
        try:
            await self._send(client, TaskOutcomes(outcomes=outcomes))
        except MessageTooLarge:
            if len(outcomes) > 1:
                half = len(outcomes) // 2
                await self._tell(client, outcomes[:half])
                await self._tell(client, outcomes[half:])
                return
            bare = outcomes[0].model_copy(update={"output": None, "output_omitted": True})
            await self._try_send(client, TaskOutcomes(outcomes=[bare]))
        except Exception as e:  # the client is gone: its watches end with it
            logger.debug(
                "{}: could not tell {} of {} outcomes: {}", self._owner, client, len(outcomes), e
            )

    async def _save(
        self, records: list[TaskUpdate], attempts: list[AttemptRow], stale: list[AttemptKey]
    ) -> None:
        delay = _RETRY_FIRST_S
        while True:
            try:
                rejected = await self.store.update(records, attempts, stale)
            except LeadLost:
                raise  # another manager leads: saving again would never succeed
            except Exception as e:  # unavailable (the store refuses records by returning them)
                logger.error(
                    "{}: saving {} records failed, retrying in {:.1f}s: {}",
                    self._owner,
                    len(records) + len(attempts) + len(stale),
                    delay,
                    e,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if rejected:
                self._refused(rejected, records, attempts, stale)
            return

    def _refused(
        self,
        rejected: list[Rejected],
        records: list[TaskUpdate],
        attempts: list[AttemptRow],
        stale: list[AttemptKey],
    ) -> None:
        self.quarantined += len(rejected)
        keys: list[str] = []
        for reject in rejected[:_REJECTS_LOGGED]:
            if reject.kind == "task":
                what = f"task {_shown(records[reject.position].id)}"
            else:
                task_id, attempt = (attempts if reject.kind == "attempt" else stale)[
                    reject.position
                ][:2]
                what = f"{reject.kind} {_shown(task_id)} #{_shown(attempt)}"
            keys.append(f"{what}: {reject.error[:200]}")
        more = len(rejected) - len(keys)
        logger.error(
            "{}: the task store refused {} of {} records, quarantined in the store (the rest is "
            "saved): {}{}",
            self._owner,
            len(rejected),
            len(records) + len(attempts) + len(stale),
            "; ".join(keys),
            f"; and {more} more" if more else "",
        )

    async def _deliver(
        self, outbox: list[tuple[str, TaskAssignment | TaskCancel, Lease | None]]
    ) -> None:
        by_worker: dict[str, list[tuple[TaskAssignment | TaskCancel, Lease | None]]] = {}
        for worker, message, lease in outbox:
            by_worker.setdefault(worker, []).append((message, lease))
        now = time.time()
        for worker, messages in by_worker.items():
            assignments = [m for m, _ in messages if isinstance(m, TaskAssignment)]
            if assignments:
                seq = self._seq[worker] = self._seq.get(worker, 0) + 1
                for _, lease in messages:
                    if lease is not None:
                        lease.seq, lease.sent_at = seq, now
                await self._assign(worker, assignments, seq)
            # Cancels after the assignments: one may be for an attempt assigned in this batch.
            for message, _ in messages:
                if isinstance(message, TaskCancel):
                    await self._try_send(worker, message)

    async def _assign(self, worker: str, assignments: list[TaskAssignment], seq: int) -> None:
        """Send assignments in one message, or in halves of the same number when their
        inputs make it too large (one alone too large is lost in transit, as any lost
        message is: the book keeps assignments within the limit)."""
        message = TaskAssignments(assignments=assignments, epoch=self.epoch, seq=seq)
        try:
            await self._send(worker, message)
        except MessageTooLarge as e:
            if len(assignments) == 1:
                logger.error("{}: could not send to {}: {}", self._owner, worker, e)
                return
            half = len(assignments) // 2
            await self._assign(worker, assignments[:half], seq)
            await self._assign(worker, assignments[half:], seq)
        except Exception as e:  # the lease times out, or the worker is declared lost
            logger.error("{}: could not send to {}: {}", self._owner, worker, e)

    async def _try_send(self, worker: str, message: object) -> None:
        try:
            await self._send(worker, message)
        except Exception as e:  # the lease times out, or the worker is declared lost
            logger.error("{}: could not send to {}: {}", self._owner, worker, e)

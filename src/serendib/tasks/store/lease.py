"""Leadership of a workspace, held in its task store: one active manager, its writes fenced.

Standby managers (``TaskManager(standby=True)``, ``serendib admin --standby``) share one
PostgreSQL store; the one holding the workspace's *lease* leads, the others wait. The lease is
a row of ``serendib_leases`` (migration 6): the ``holder``, an ``epoch`` that grows by one at
every change of holder (the fencing token), and when it expires, in seconds by the
*database's* clock, so the managers' own clocks never matter.

- **Acquiring**: a single statement takes the row when it is missing or expired, with the next
  epoch; a standby tries again as the lease is due to lapse (polled every ``ttl_s / 6``).
- **Renewing**: the holder pushes the expiry ``ttl_s`` ahead every ``ttl_s / 3``, from a thread
  of its own, so a busy event loop does not lose the lead. A renewal that finds another epoch
  has lost the lead; one that fails (the store unreachable) is retried until the lease would
  have lapsed by the holder's own reckoning (``ttl_s`` after the last renewal was *sent*,
  which is never later than the database's expiry): then it has lost the lead too.
- **Fencing**: once acquired, every write transaction of the holder's store first reads the
  lease row and aborts with :class:`LeadLost` unless it still carries the holder's epoch. On
  PostgreSQL it locks the row (``FOR KEY SHARE``, which renewals do not conflict with) and a
  takeover locks it ``FOR UPDATE``: a transaction that passed the check commits before any
  takeover, and none can pass it after one. So a manager paused for a while (SIGSTOP, a long
  GC, a VM migrated) that resumes after a standby took over cannot get one write in. Its
  writer connection also has ``idle_in_transaction_session_timeout``, so a leader paused in
  the middle of a transaction cannot hold the row (and the store) for long.
- **Acting**: a leader whose lease may have lapsed by its own reckoning (paused past it, or
  renewals failing) handles nothing until a renewal confirms it still leads
  (:meth:`StoreLease.confirm`): a paused leader that resumes learns it lost the lead before
  it acts on anything it finds waiting, and what it would send without writing (a message
  sent again) is never sent.
- **Releasing**: a manager that stops cleanly sets its lease's expiry to now: a standby takes
  over at its next try, without waiting out the lease.

SQLite has the same table and statements (tested), but a standby manager refuses it: a
leader paused inside a transaction would hold the file's lock for as long as it is paused,
and a SQLite file does not outlive its machine anyway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from serendib.errors import StoreError

if TYPE_CHECKING:
    from serendib.tasks.store.backend import Backend
    from serendib.tasks.store.rows import Dialect

__all__ = [
    "LEASE_S",
    "Fence",
    "LeadLost",
    "LeaseState",
    "LeaseStatements",
    "StoreLease",
    "check_fence",
]

LEASE_S = 3.0
"""How long a lease lasts unless renewed (renewed every third of it): a standby takes over
within about this long of the leader's last renewal."""

T = TypeVar("T")


class LeadLost(StoreError):
    """This manager no longer leads its workspace: another took its lease over (``holder``,
    ``epoch``), or it could not renew it in time (both None). Nothing it writes is stored.
    """

    def __init__(
        self, message: str, *, url: str | None = None, holder: str | None, epoch: int | None
    ) -> None:
        super().__init__(message, url=url)
        self.holder = holder
        self.epoch = epoch

    def copy(self) -> LeadLost:
        """The same error, as a new object (each failed caller gets its own)."""
        copy = LeadLost(str(self), url=self.url, holder=self.holder, epoch=self.epoch)
        copy.__cause__ = self.__cause__
        return copy


@dataclass(frozen=True)
class Fence:
    """What a leader's writes are fenced by: its workspace, its holder id and its epoch.

    Attributes:
        ttl_s: The lease's length; a write transaction idle longer than two thirds of it is
            ended by PostgreSQL (a leader paused in the middle of one).
    """

    workspace: str
    holder: str
    epoch: int
    ttl_s: float = LEASE_S

    @property
    def label(self) -> str:
        """How the leader's writer connection names itself to PostgreSQL (at most 63 bytes,
        shown by ``pg_stat_activity``)."""
        return f"serendib {self.workspace} epoch {self.epoch}"[:63]


@dataclass(frozen=True)
class LeaseState:
    """A workspace's lease as the store has it: who holds it, its epoch, and the seconds left
    before it expires by the database's clock (negative: expired)."""

    holder: str
    epoch: int
    remaining_s: float


class LeaseStatements:
    """The lease's SQL for one :class:`~serendib.tasks.store.rows.Dialect`."""

    def __init__(self, d: Dialect) -> None:
        p, now, table = d.param, d.clock, d.leases
        self.claim = (
            f"INSERT INTO {table} (workspace, holder, epoch, acquired_at, expires_at) "
            f"VALUES ({p}, {p}, 1, {now}, {now} + {p}) ON CONFLICT (workspace) DO NOTHING"
        )
        """Take a workspace's first lease: ``(workspace, holder, ttl_s)``."""
        lock = " FOR UPDATE" if d.row_locks else ""
        self.take_over = (
            f"WITH due AS (SELECT workspace FROM {table} "
            f"WHERE workspace = {p} AND expires_at <= {now}{lock}) "
            f"UPDATE {table} SET holder = {p}, epoch = epoch + 1, acquired_at = {now}, "
            f"expires_at = {now} + {p} WHERE workspace IN (SELECT workspace FROM due)"
        )
        """Take an expired lease over, with the next epoch: ``(workspace, holder, ttl_s)``.
        On PostgreSQL the row is locked ``FOR UPDATE`` first, which waits for the leader's
        write transaction in progress (its fence check holds ``FOR KEY SHARE``)."""
        self.renew = (
            f"UPDATE {table} SET expires_at = {now} + {p} "
            f"WHERE workspace = {p} AND holder = {p} AND epoch = {p}"
        )
        """Push the expiry ahead: ``(ttl_s, workspace, holder, epoch)``; no row if lost."""
        self.release = (
            f"UPDATE {table} SET expires_at = {now} "
            f"WHERE workspace = {p} AND holder = {p} AND epoch = {p}"
        )
        """Let the lease lapse now: ``(workspace, holder, epoch)``."""
        self.read = f"SELECT holder, epoch, expires_at - {now} FROM {table} WHERE workspace = {p}"
        """Who holds a workspace's lease: ``(workspace,)``."""
        self.check = f"SELECT holder, epoch FROM {table} WHERE workspace = {p}" + (
            " FOR KEY SHARE" if d.row_locks else ""
        )
        """The fence check, inside a write transaction: ``(workspace,)``."""


def check_fence(fence: Fence, rows: Sequence[tuple[Any, ...]], url: str) -> None:
    """Raise :class:`LeadLost` unless the lease row read (``rows``) still carries ``fence``."""
    if rows and (rows[0][0], rows[0][1]) == (fence.holder, fence.epoch):
        return
    if not rows:
        raise LeadLost(
            f"lost the lead of workspace {fence.workspace!r}: its lease is gone from the store",
            url=url,
            holder=None,
            epoch=None,
        )
    raise taken_by(fence, str(rows[0][0]), int(rows[0][1]), url)


def taken_by(fence: Fence, holder: str, epoch: int, url: str) -> LeadLost:
    """The error of a lead another manager took over."""
    return LeadLost(
        f"lost the lead of workspace {fence.workspace!r} to {holder} (epoch {epoch})",
        url=url,
        holder=holder,
        epoch=epoch,
    )


class _Thread:
    """One daemon thread running blocking calls in order, on the lease's own connection,
    and between them a *tick* (the renewal) when it is due.

    A daemon, so that a call stuck on a store that does not answer never keeps the process
    from exiting.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._tick: Callable[[], float | None] | None = None
        self._tick_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def tick(self, tick: Callable[[], float | None], at: float) -> None:
        """From ``at`` (monotonic), run ``tick`` when due between calls; it returns when it
        is due next, or None to stop."""

        def start() -> None:
            self._tick, self._tick_at = tick, at

        self.submit(start)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` after the calls before it; its result."""
        return await asyncio.wrap_future(self.submit(fn))

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` after the calls before it, without waiting."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            due = self._tick_at
            wait = None if due is None else max(due - time.monotonic(), 0)
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:
                assert self._tick is not None
                self._tick_at = self._tick()
                continue
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:
                future.set_exception(e)


class StoreLease:
    """One manager's hold on its workspace's lease in a store (see the module's docstring).

    Made by the store (``SqlTaskStore.lease``); :meth:`acquire` waits until it is held and
    fences the store's writes with it, :meth:`release` gives it up.

    Args:
        backend: The store's backend (the lease has a connection of its own to it).
        workspace: The workspace led.
        holder: This manager's id, unique to its run (host, process and a random part).
        ttl_s: How long the lease lasts unless renewed.
        owner: Name for log lines.
        fence: Fences (or, given None, unfences) the store's writes.
    """

    def __init__(
        self,
        backend: Backend,
        workspace: str,
        holder: str,
        *,
        ttl_s: float = LEASE_S,
        owner: str = "manager",
        fence: Callable[[Fence | None], Awaitable[None]],
    ) -> None:
        if not 0.3 <= ttl_s <= 600:
            raise ValueError(f"a lease lasts between 0.3 and 600 seconds, not {ttl_s}")
        self._backend = backend
        self._sql = backend.lease_sql
        self.workspace = workspace
        self.holder = holder
        self.ttl_s = ttl_s
        self.owner = owner
        self._set_fence = fence
        self.fence: Fence | None = None
        """The fence while the lease is held."""
        self.lost: LeadLost | None = None
        """Why the lead was lost, once it was."""
        self._listeners: list[Callable[[LeadLost], None]] = []
        self._thread: _Thread | None = None
        self._conn: Any = None
        self._stop = threading.Event()
        self._valid_until = 0.0
        self._failing_since: float | None = None
        self._confirming: list[asyncio.Future[bool]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return self._backend.url

    def on_lost(self, listener: Callable[[LeadLost], None]) -> None:
        """Call ``listener`` (in the event loop) once, when the lead is lost."""
        self._listeners.append(listener)

    # --- the asynchronous side ------------------------------------------------------------

    async def state(self) -> LeaseState | None:
        """Who holds the lease now (None: nobody ever did)."""
        return await self._call(self._read)

    async def acquire(self, poll_s: float | None = None) -> Fence:
        """Wait until this manager holds the lease, fence the store's writes with it, and keep
        it renewed. Logs who leads while it waits (a standby).

        Args:
            poll_s: Longest wait between two tries (default: a sixth of the lease); a try is
                made as the holder's lease is due to lapse.

        Raises:
            StoreError: The store's schema cannot hold leases (not opened by this Serendib).
        """
        self._loop = asyncio.get_running_loop()
        poll = poll_s if poll_s is not None else self.ttl_s / 6
        began = time.monotonic()
        seen: tuple[str, int] | None = None
        failing = False
        while True:
            sent = time.monotonic()
            try:
                state, mine = await self._call(self._try_acquire)
            except StoreError as e:
                if not failing:
                    logger.warning(
                        "{}: standby: cannot reach the lease in {}, trying again: {}",
                        self.owner,
                        self.url,
                        e,
                    )
                failing = True
                await asyncio.sleep(poll)
                continue
            if failing:
                logger.info("{}: standby: the store answers again", self.owner)
                failing = False
            if mine and state is not None:
                break
            if state is not None and (state.holder, state.epoch) != seen:
                seen = (state.holder, state.epoch)
                logger.info(
                    "{}: standby for workspace {!r}: led by {} (epoch {}); taking over "
                    "when its lease lapses",
                    self.owner,
                    self.workspace,
                    state.holder,
                    state.epoch,
                )
            wait = poll if state is None else min(poll, max(state.remaining_s, 0.0) + 0.01)
            await asyncio.sleep(wait)
        fence = Fence(self.workspace, self.holder, state.epoch, self.ttl_s)
        self._valid_until = sent + self.ttl_s
        try:
            await self._set_fence(fence)
        except BaseException:
            await self._call(lambda conn: self._release(conn, fence))
            raise
        self.fence = fence
        self._stop.clear()
        self._failing_since = None
        assert self._thread is not None
        self._thread.tick(lambda: self._renew_tick(fence), sent + self.ttl_s / 3)
        logger.info(
            "{}: took the lead of workspace {!r} (epoch {}){}",
            self.owner,
            self.workspace,
            fence.epoch,
            f" after {time.monotonic() - began:.1f}s as standby" if seen else "",
        )
        return fence

    @property
    def valid(self) -> bool:
        """Held, and renewed less than a lease ago (by this process's clock)."""
        return self.lost is None and self.fence is not None and time.monotonic() < self._valid_until

    async def confirm(self) -> bool:
        """True at once while :attr:`valid`; else wait for the next renewal: True if it
        succeeds, False if the lead is lost (or released)."""
        if self.valid:
            return True
        if self.lost is not None or self.fence is None or self._loop is None:
            return False
        future: asyncio.Future[bool] = self._loop.create_future()
        self._confirming.append(future)
        if self.valid:  # renewed meanwhile (the renewal tells only those waiting already)
            self._confirmed(True)
        return await future

    def _confirmed(self, held: bool) -> None:
        waiting, self._confirming = self._confirming, []
        for future in waiting:
            if not future.done():
                future.set_result(held)

    def lose(self, error: LeadLost) -> None:
        """The lead is lost (a write or a renewal found another epoch, or renewing failed for
        too long): stop renewing and tell the listeners, once. Call in the event loop."""
        if self.lost is not None or self.fence is None:
            return
        self.lost = error
        self._stop.set()
        self._confirmed(False)
        for listener in self._listeners:
            try:
                listener(error)
            except Exception as e:
                logger.opt(exception=e).error("{}: a lost-lead listener failed", self.owner)

    async def release(self) -> None:
        """Stop renewing; if still held, let the lease lapse now (a standby takes over at its
        next try). Closes the lease's connection. Never raises for the store."""
        self._stop.set()
        fence, self.fence = self.fence, None
        self._confirmed(False)
        if self._thread is None:
            return
        try:
            if fence is not None and self.lost is None:
                await self._call(lambda conn: self._release(conn, fence))
                logger.info(
                    "{}: gave up the lead of workspace {!r} (epoch {})",
                    self.owner,
                    self.workspace,
                    fence.epoch,
                )
        except StoreError as e:
            logger.warning("{}: could not give up the lead's lease: {}", self.owner, e)
        finally:
            thread, self._thread = self._thread, None
            with contextlib.suppress(Exception):
                await thread.call(self._drop)
            thread.close()

    async def _call(self, fn: Callable[[Any], T]) -> T:
        if self._thread is None:
            self._thread = _Thread(f"serendib-lease-{self.workspace}")
        return await self._thread.call(lambda: self._on_connection(fn))

    # --- in the lease's thread ------------------------------------------------------------

    def _on_connection(self, fn: Callable[[Any], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._backend.connect_lease()
            return fn(self._conn)
        except self._backend.driver_errors as e:
            self._drop()
            raise StoreError(
                f"the lease of workspace {self.workspace!r} in the task store at {self.url} "
                f"failed: {e}",
                url=self.url,
            ) from e

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _read(self, conn: Any) -> LeaseState | None:
        rows = conn.execute(self._sql.read, (self.workspace,)).fetchall()
        if not rows:
            return None
        holder, epoch, remaining = rows[0]
        return LeaseState(str(holder), int(epoch), float(remaining))

    def _try_acquire(self, conn: Any) -> tuple[LeaseState | None, bool]:
        # Whether it was taken is read back, not counted (Python's sqlite3 counts no rows of
        # a statement that starts with WITH): a holder id is this run's alone.
        params = (self.workspace, self.holder, self.ttl_s)
        conn.execute(self._sql.claim, params)
        state = self._read(conn)
        if state is None or state.holder != self.holder:
            conn.execute(self._sql.take_over, params)
            state = self._read(conn)
        mine = state is not None and state.holder == self.holder and state.remaining_s > 0
        return state, mine

    def _renew(self, conn: Any, fence: Fence) -> LeaseState | None:
        """None if renewed; else who holds the lease now."""
        params = (self.ttl_s, fence.workspace, fence.holder, fence.epoch)
        if conn.execute(self._sql.renew, params).rowcount == 1:
            return None
        return self._read(conn) or LeaseState("nobody", 0, 0.0)

    def _release(self, conn: Any, fence: Fence) -> None:
        conn.execute(self._sql.release, (fence.workspace, fence.holder, fence.epoch))

    def _renew_tick(self, fence: Fence) -> float | None:
        """Renew the lease (a tick of the lease's thread, every third of it); when to renew
        next, or None once stopped or lost."""
        if self._stop.is_set():
            return None
        every = self.ttl_s / 3
        sent = time.monotonic()
        try:
            holder = self._on_connection(lambda conn: self._renew(conn, fence))
        except StoreError as e:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                logger.warning("{}: renewing the lead's lease failed: {}", self.owner, e)
            # Lost once the lease would have lapsed, with one more try after a pause.
            if now < max(self._valid_until, self._failing_since + every):
                return now + every / 4
            self._report(
                LeadLost(
                    f"lost the lead of workspace {self.workspace!r}: its lease could not be "
                    f"renewed within {self.ttl_s:g}s: {e}",
                    url=self.url,
                    holder=None,
                    epoch=None,
                )
            )
            return None
        if holder is not None:
            self._report(taken_by(fence, holder.holder, holder.epoch, self.url))
            return None
        if self._failing_since is not None:
            logger.info("{}: the lead's lease is renewed again", self.owner)
            self._failing_since = None
        self._valid_until = sent + self.ttl_s
        if self._confirming:  # read across threads: one waiting just now hears next time
            self._call_in_loop(self._confirmed, True)
        return sent + every

    def _report(self, error: LeadLost) -> None:
        self._call_in_loop(self.lose, error)

    def _call_in_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(fn, arg)

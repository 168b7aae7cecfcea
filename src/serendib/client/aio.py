"""The asynchronous client: submit tasks to a running manager and be told their outcomes.

The client joins the workspace as an agent of role ``client`` (over the same connection
options as the CLI) and talks to the manager with requests; outcomes are *pushed*: a task
submitted or watched by this client is reported in a :class:`~serendib.tasks.messages.TaskOutcomes`
message once its final state is stored, so waiting for a result never polls. If the manager
restarts, the client watches again what it still waits for.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from loguru import logger
from pydantic import ValidationError

from serendib.agent import Agent, current_message
from serendib.errors import (
    MessageTooLarge,
    RemoteError,
    ResultError,
    SerendibError,
    TaskNotFound,
    TasksRefused,
    WorkerNotFound,
)
from serendib.handlers import on_message
from serendib.messages import summarise
from serendib.presence import AdminStarted
from serendib.tasks.messages import (
    CancelReply,
    CancelRequest,
    ConfigureReply,
    ConfigureRequest,
    EventMessage,
    Reconfigure,
    RetryReply,
    RetryRequest,
    ScheduleInfo,
    ScheduleRequest,
    SchedulesReply,
    StatusReply,
    StatusRequest,
    SubmitReply,
    SubmitTasks,
    Subscribe,
    TaskEvents,
    TaskOutcome,
    TaskOutcomes,
    TaskPage,
    TaskQuery,
    Watch,
    WatchReply,
)
from serendib.tasks.models import Schedule, Task, TaskRecord, TaskState, WorkerInfo
from serendib.transports.nats import NatsOptions

__all__ = ["AsyncClient", "AsyncTaskHandle", "EventStream", "SubmitSummary", "TaskInput"]

TaskInput = Task | Mapping[str, Any]
"""A task, or a mapping of its fields (as in a task file)."""

CHUNK = 1_000
"""Tasks per submission message (halved again and again for a message over the limit)."""
WINDOW = 4
"""Submission messages in flight at once: the backpressure on a large submission."""
_WATCH_CHUNK = 5_000  # ids per Watch message (its bound)


@dataclass(frozen=True, slots=True)
class SubmitSummary:
    """What a streamed submission did.

    Attributes:
        accepted: New tasks stored.
        duplicates: Ids already known (left as they were).
        refused: How many the manager refused (an unknown parent, a dependency cycle).
        refusals: Why, by id (the first ``TasksRefused.SHOWN`` of them).
    """

    accepted: int
    duplicates: int
    refused: int = 0
    refusals: dict[str, str] = field(default_factory=dict)


class AsyncTaskHandle:
    """A submitted task, to await: ``await handle.result()``.

    Attributes:
        id: The task's id.
        client: The client it was submitted with.
    """

    __slots__ = ("client", "id")

    def __init__(self, client: AsyncClient, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def __repr__(self) -> str:
        return f"AsyncTaskHandle({self.id!r})"

    async def result(self, timeout: float | None = None) -> Any:
        """The task's output once it succeeded (see :meth:`AsyncClient.result`)."""
        return await self.client.result(self.id, timeout)

    async def outcome(self, timeout: float | None = None) -> TaskOutcome:
        """How the task ended, once it has (see :meth:`AsyncClient.outcome`)."""
        return await self.client.outcome(self.id, timeout)

    async def get(self) -> TaskRecord:
        """The task as the manager knows it now."""
        return await self.client.get(self.id)

    async def cancel(self) -> bool:
        """Cancel the task; False if it had ended already."""
        return await self.client.cancel(self.id)


class EventStream:
    """Task events pushed by the manager: an async context manager (subscribed on entry,
    unsubscribed on exit) and an async iterator (which subscribes on first use)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._queue: asyncio.Queue[EventMessage | None] = asyncio.Queue()
        self._subscribed = False

    async def subscribe(self) -> None:
        """Start receiving events (done by ``async with`` and on first iteration)."""
        if not self._subscribed:
            self._subscribed = True
            await self._client._subscribe(self._queue)

    async def close(self) -> None:
        """Stop receiving events."""
        await self._client._unsubscribe(self._queue)

    async def __aenter__(self) -> Self:
        await self.subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> EventMessage:
        await self.subscribe()
        event = await self._queue.get()
        if event is None:  # the client closed
            raise StopAsyncIteration
        return event


class _ClientAgent(Agent):
    """The client's membership in the workspace; what is pushed to it goes to the client."""

    role = "client"

    def __init__(self, client: AsyncClient, name: str, workspace: str, **options: Any) -> None:
        super().__init__(name, workspace, **options)
        self._client = client

    @on_message
    async def _on_outcomes(self, pushed: TaskOutcomes) -> None:
        if self._from_manager():
            self._client._told(pushed.outcomes)

    @on_message
    async def _on_events(self, pushed: TaskEvents) -> None:
        if self._from_manager():
            self._client._events_came(pushed.events)

    @on_message
    async def _on_manager_started(self, notice: AdminStarted) -> None:
        if self.admin_name in (None, notice.admin):
            self._spawn(self._client._rewatch(), "rewatch")

    def _from_manager(self) -> bool:
        envelope = current_message()
        return envelope is None or self.admin_name is None or envelope.sender == self.admin_name


class AsyncClient:
    """A connection to a running task manager, for any program that can reach its admin.

    Use it as an async context manager (or call :meth:`connect` and :meth:`close`)::

        async with AsyncClient("127.0.0.1:4222") as client:
            handle = await client.submit({"id": "t1", "difficulty": 2})
            print(await handle.result())

    Args:
        admin: ``HOST:PORT`` of the admin's embedded NATS server (as ``--admin``).
        nats: A NATS URL (or several, comma-separated) instead of ``admin``; also
            ``memory://NAME`` for a manager in this process.
        workspace: The workspace of the manager.
        token: NATS auth token (default: ``$SERENDIB_TOKEN``).
        nats_options: Other NATS credentials and TLS.
        name: This client's agent name (default: ``client-`` and a random suffix).
        timeout: Seconds to wait for each reply of the manager.
        chunk: Tasks per submission message.
        window: Submission messages in flight at once.
    """

    def __init__(
        self,
        admin: str | tuple[str, int] = "127.0.0.1:4222",
        *,
        nats: str | None = None,
        workspace: str = "serendib",
        token: str | None = None,
        nats_options: NatsOptions | None = None,
        name: str | None = None,
        timeout: float = 30.0,
        chunk: int = CHUNK,
        window: int = WINDOW,
    ) -> None:
        host, port = _address(admin)
        if chunk < 1 or window < 1:
            raise ValueError(f"chunk and window must be at least 1, got {chunk} and {window}")
        self.timeout = timeout
        self.chunk = chunk
        self.window = window
        self._agent = _ClientAgent(
            self,
            name or f"client-{uuid.uuid4().hex[:12]}",
            workspace,
            transport=nats,
            admin_ip=host,
            admin_port=port,
            token=token,
            nats_options=nats_options,
            join_timeout=min(timeout, 15.0),
        )
        self._outcomes: dict[str, TaskOutcome] = {}
        self._waiters: dict[str, list[asyncio.Future[TaskOutcome]]] = {}
        self._watched: set[str] = set()  # asked to be told, not told yet
        # Of each task retried: its attempt base and when its old run ended (see _stale).
        self._replayed: dict[str, tuple[int, float | None]] = {}
        self._listeners: list[asyncio.Queue[EventMessage | None]] = []

    @property
    def name(self) -> str:
        """This client's agent name in the workspace."""
        return self._agent.name

    # --- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Join the workspace.

        Raises:
            AdminUnreachable: No manager answered.
            ConnectionFailed: The broker cannot be reached.
        """
        await self._agent.start()

    async def close(self) -> None:
        """Leave the workspace; waits on nothing more."""
        for queue in self._listeners:
            queue.put_nowait(None)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()
        await self._agent.stop()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ask(self, message: object) -> Any:
        agent = self._agent
        if agent.admin_name is None:
            raise SerendibError("the client is not connected: use 'async with' or connect()")
        try:
            return await agent.request(agent.admin_name, message, timeout=self.timeout)
        except RemoteError as e:
            raise _known_error(e) from None

    # --- submitting ---------------------------------------------------------------------------

    async def submit(self, tasks: TaskInput | Iterable[TaskInput], *, watch: bool = True) -> Any:
        """Submit one task or several; ids already known are left as they were.

        Args:
            tasks: A task (or mapping of its fields), or an iterable of them.
            watch: Be told each one's outcome (so :meth:`result` never asks again).

        Returns:
            An :class:`AsyncTaskHandle` for one task, a list of them for several.

        Raises:
            ValueError: A task is invalid (its position and the reason).
            TasksRefused: The manager refused some (an unknown parent, a dependency cycle;
                also a ValueError); the others were stored and run.
        """
        if isinstance(tasks, Task | Mapping):
            task = _task(tasks, 0)
            _raise_refused(await self._submit_chunks([[task]], watch))
            return AsyncTaskHandle(self, task.id)
        ids: list[str] = []

        def collect() -> Iterable[list[Task]]:
            for chunk in _chunks(tasks, self.chunk):
                ids.extend(task.id for task in chunk)
                yield chunk

        _raise_refused(await self._submit_chunks(collect(), watch))
        return [AsyncTaskHandle(self, task_id) for task_id in ids]

    async def submit_many(
        self,
        tasks: Iterable[TaskInput] | AsyncIterable[TaskInput],
        *,
        watch: bool = False,
    ) -> SubmitSummary:
        """Stream any number of tasks in bounded memory: ``chunk`` tasks per message, at
        most ``window`` messages in flight (the manager's pace holds the reading back).

        Returns:
            How many were accepted, how many were already known, and which the manager
            refused, with why (an unknown parent, a dependency cycle).

        Raises:
            ValueError: A task is invalid (its position and the reason); the tasks before
                it are submitted.
        """
        if isinstance(tasks, AsyncIterable):
            return await self._submit_chunks(_achunks(tasks, self.chunk), watch)
        return await self._submit_chunks(_chunks(tasks, self.chunk), watch)

    async def _submit_chunks(
        self, chunks: Iterable[list[Task]] | AsyncIterable[list[Task]], watch: bool
    ) -> SubmitSummary:
        slots = asyncio.Semaphore(self.window)
        in_flight: set[asyncio.Task[tuple[int, int]]] = set()
        totals = [0, 0]
        failure: list[BaseException] = []
        refusals: dict[str, str] = {}
        refused = [0]

        def done(task: asyncio.Task[tuple[int, int]]) -> None:
            in_flight.discard(task)
            slots.release()
            if task.cancelled():
                return
            error = task.exception()
            if error is not None:
                failure.append(error)
                return
            accepted, duplicates = task.result()
            totals[0] += accepted
            totals[1] += duplicates

        async def send(chunk: list[Task]) -> None:
            await slots.acquire()
            if failure:
                slots.release()
                raise failure[0]
            sent = asyncio.create_task(self._send_chunk(chunk, watch, refusals, refused))
            in_flight.add(sent)
            sent.add_done_callback(done)

        try:
            try:
                if isinstance(chunks, AsyncIterable):
                    async for chunk in chunks:
                        await send(chunk)
                else:
                    for chunk in chunks:
                        await send(chunk)
            except Exception:
                # A bad task further on: the chunks sent before it are seen through.
                while in_flight:
                    await asyncio.wait(set(in_flight))
                raise
            while in_flight:
                await asyncio.wait(set(in_flight))
        finally:
            for task in list(in_flight):
                task.cancel()
        if failure:
            raise failure[0]
        return SubmitSummary(totals[0], totals[1], refused[0], refusals)

    async def _send_chunk(
        self, chunk: list[Task], watch: bool, refusals: dict[str, str], refused: list[int]
    ) -> tuple[int, int]:
        if watch:
            self._watched.update(task.id for task in chunk)
        try:
            reply: SubmitReply = await self._ask(SubmitTasks(tasks=chunk, watch=watch))
        except BaseException as e:
            if watch:  # not watched after all: a later wait asks again
                self._watched.difference_update(task.id for task in chunk)
            if not isinstance(e, MessageTooLarge):
                raise
            if len(chunk) == 1:
                raise
            half = len(chunk) // 2
            first = await self._send_chunk(chunk[:half], watch, refusals, refused)
            second = await self._send_chunk(chunk[half:], watch, refusals, refused)
            return first[0] + second[0], first[1] + second[1]
        if reply.rejected:
            refused[0] += len(reply.rejected)
            if watch:
                self._watched.difference_update(reply.rejected)
            room = TasksRefused.SHOWN - len(refusals)
            refusals.update(list(reply.rejected.items())[: max(room, 0)])
        return len(reply.accepted), len(reply.duplicates)

    # --- outcomes -----------------------------------------------------------------------------

    async def outcome(self, task_id: str, timeout: float | None = None) -> TaskOutcome:
        """How task ``task_id`` ended, once it has (pushed by the manager, never polled).

        Raises:
            TaskNotFound: No task has this id.
            TimeoutError: It did not end within ``timeout`` seconds.
        """
        found = self._outcomes.get(task_id)
        if found is not None:
            return found
        future = self._future(task_id)
        try:
            if task_id not in self._watched:
                await self._watch([task_id])
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            if not future.done():
                future.cancel()
                self._drop(task_id, future)

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The output of task ``task_id`` once it succeeded.

        Raises:
            ResultError: It failed or was cancelled (its outcome says why).
            TaskNotFound: No task has this id.
            TimeoutError: It did not end within ``timeout`` seconds.
        """
        found = await self.outcome(task_id, timeout)
        if found.state is not TaskState.SUCCEEDED:
            raise ResultError(found.task_id, found.state.value, found.error)
        if found.output_omitted:
            record = await self.get(task_id)
            return record.output
        return found.output

    async def wait(
        self, task_ids: Iterable[str], timeout: float | None = None
    ) -> dict[str, TaskOutcome]:
        """The outcomes of every one of ``task_ids``, once all have ended.

        Raises:
            TaskNotFound: An id no task has.
            TimeoutError: They did not all end within ``timeout`` seconds.
        """
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, TaskOutcome] = {}

        async def every() -> None:
            async for outcome in self.as_completed(ids):
                found[outcome.task_id] = outcome

        await asyncio.wait_for(every(), timeout)
        return {task_id: found[task_id] for task_id in ids}

    async def as_completed(
        self, task_ids: Iterable[str], timeout: float | None = None
    ) -> AsyncIterator[TaskOutcome]:
        """Each outcome of ``task_ids`` as it comes (those ended already first).

        Raises:
            TaskNotFound: An id no task has.
            TimeoutError: Not all ended within ``timeout`` seconds (from the call).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ids = list(dict.fromkeys(task_ids))
        waiting: dict[asyncio.Future[TaskOutcome], str] = {}
        ready: list[TaskOutcome] = []
        unasked = []
        for task_id in ids:
            found = self._outcomes.get(task_id)
            if found is not None:
                ready.append(found)
                continue
            waiting[self._future(task_id)] = task_id
            if task_id not in self._watched:
                unasked.append(task_id)
        # Each future, once done, puts itself in one queue: an outcome costs the same
        # however many are still awaited (no wait() over every pending future).
        done: asyncio.Queue[asyncio.Future[TaskOutcome]] = asyncio.Queue()
        for future in waiting:
            future.add_done_callback(done.put_nowait)
        try:
            if unasked:
                await self._watch(unasked)
            for outcome in ready:
                yield outcome
            while waiting:
                if not done.empty():
                    future = done.get_nowait()
                elif deadline is None:
                    future = await done.get()
                else:
                    try:
                        future = await asyncio.wait_for(done.get(), deadline - loop.time())
                    except TimeoutError:
                        raise TimeoutError(
                            f"{len(waiting)} tasks did not end within {timeout:g}s"
                        ) from None
                if waiting.pop(future, None) is not None and not future.cancelled():
                    yield future.result()
        finally:
            for future, task_id in waiting.items():
                future.cancel()
                self._drop(task_id, future)

    def _drop(self, task_id: str, future: asyncio.Future[TaskOutcome]) -> None:
        """A waiter gave up (timed out, cancelled)."""
        futures = self._waiters.get(task_id)
        if futures is not None and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[task_id]

    def _future(self, task_id: str) -> asyncio.Future[TaskOutcome]:
        future: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        return future

    async def _watch(self, task_ids: list[str]) -> None:
        for start in range(0, len(task_ids), _WATCH_CHUNK):
            chunk = task_ids[start : start + _WATCH_CHUNK]
            self._watched.update(chunk)
            try:
                reply: WatchReply = await self._ask(Watch(task_ids=chunk))
            except BaseException:
                self._watched.difference_update(chunk)  # a later wait asks again
                raise
            for task_id in reply.unknown:
                self._watched.discard(task_id)
                for future in self._waiters.pop(task_id, []):
                    if not future.done():
                        future.set_exception(TaskNotFound(task_id))

    async def _rewatch(self) -> None:
        """The manager restarted: what it was to tell this client, and the live events, it
        must be asked for again."""
        try:
            if self._listeners:
                await self._ask(Subscribe(active=True))
            if self._watched:
                await self._watch(sorted(self._watched))
        except SerendibError as e:
            logger.warning("{}: could not watch tasks again: {}", self.name, e)

    def _told(self, outcomes: list[TaskOutcome]) -> None:
        for outcome in outcomes:
            task_id = outcome.task_id
            if self._stale(outcome):
                continue
            self._outcomes[task_id] = outcome
            self._watched.discard(task_id)
            for future in self._waiters.pop(task_id, ()):
                if not future.done():
                    future.set_result(outcome)

    def _stale(self, outcome: TaskOutcome) -> bool:
        """Whether ``outcome`` is of a run before the task's last retry by this client: of
        an attempt below its base, or of its base (a new run may end without an attempt)
        and ended by the time the old run had. Pushed for a watch made before the retry,
        it may come after the retry's reply: it must not end a wait for the new run."""
        replayed = self._replayed.get(outcome.task_id)
        if replayed is None:
            return False
        base, ended_at = replayed
        if outcome.attempt != base:
            return outcome.attempt < base
        finished_at = outcome.finished_at
        return ended_at is None or finished_at is None or finished_at <= ended_at

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop outcomes kept for ``task_ids`` (a long-lived client keeps what it was told)."""
        for task_id in task_ids:
            self._outcomes.pop(task_id, None)
            self._replayed.pop(task_id, None)

    # --- reading and acting on tasks ----------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord:
        """Task ``task_id`` as the manager knows it now.

        Raises:
            TaskNotFound: No task has this id.
        """
        page: TaskPage = await self._ask(TaskQuery(task_id=task_id))
        return page.records[0]

    async def list(
        self,
        *,
        state: TaskState | str | None = None,
        worker: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> TaskPage:
        """A page of tasks in submission order; ``page.next_cursor`` is ``after`` of the next."""
        query = TaskQuery(
            state=None if state is None else TaskState(state),
            worker=worker,
            after=after,
            limit=limit,
        )
        page: TaskPage = await self._ask(query)
        return page

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not ended; False if it had ended already.

        Raises:
            TaskNotFound: No task has this id.
        """
        reply: CancelReply = await self._ask(CancelRequest(task_id=task_id))
        return reply.cancelled

    async def retry(self, task_ids: Iterable[str]) -> RetryReply:
        """Run failed or cancelled tasks again as new attempts (their history kept);
        ``reply.refused`` says why a task was not (it succeeded, or has not ended)."""
        ids = list(dict.fromkeys(task_ids))
        total = RetryReply()
        for start in range(0, len(ids), _WATCH_CHUNK):
            chunk = ids[start : start + _WATCH_CHUNK]
            reply: RetryReply = await self._ask(RetryRequest(task_ids=chunk))
            total.retried.extend(reply.retried)
            total.refused.update(reply.refused)
            total.unknown.extend(reply.unknown)
            total.attempt_bases.update(reply.attempt_bases)
            total.ended_at.update(reply.ended_at)
        for task_id in total.retried:  # ended before; it will end again
            self._outcomes.pop(task_id, None)
            # A watch made before told of the old run at most: a wait for the new one asks
            # again (and an old outcome that comes after this reply is not taken for it).
            self._watched.discard(task_id)
            base = total.attempt_bases.get(task_id)
            if base is not None:  # None: a manager that does not say
                self._replayed[task_id] = (base, total.ended_at.get(task_id))
        waited = [task_id for task_id in total.retried if task_id in self._waiters]
        if waited:
            try:
                await self._watch(waited)
            except SerendibError as e:  # they run again all the same; a later wait asks
                logger.warning("{}: could not watch retried tasks: {}", self.name, e)
        return total

    async def schedules(self) -> builtins.list[ScheduleInfo]:
        """The manager's schedules, by name, with when each last fired and fires next."""
        reply: SchedulesReply = await self._ask(ScheduleRequest())
        return reply.schedules

    async def add_schedule(
        self, schedule: Schedule | Mapping[str, Any]
    ) -> builtins.list[ScheduleInfo]:
        """Add recurring work to the manager (or replace the schedule of its name).

        Raises:
            ValueError: The schedule is not valid (pydantic's ValidationError).
        """
        found = schedule if isinstance(schedule, Schedule) else Schedule.model_validate(schedule)
        reply: SchedulesReply = await self._ask(ScheduleRequest(add=found))
        return reply.schedules

    async def remove_schedule(self, name: str) -> bool:
        """Remove a schedule; False if the manager has none of that name."""
        reply: SchedulesReply = await self._ask(ScheduleRequest(remove=name))
        return reply.removed

    async def status(self) -> StatusReply:
        """Task counts and the connected workers."""
        reply: StatusReply = await self._ask(StatusRequest())
        return reply

    async def configure(
        self,
        worker: str,
        *,
        skills: Mapping[str, int] | None = None,
        labels: Iterable[str] | None = None,
        capacity: int | None = None,
    ) -> WorkerInfo:
        """Change a running worker's skills, labels or capacity (``None`` leaves one be).

        Raises:
            WorkerNotFound: No worker of that name is connected.
            ValueError: The change is invalid.
        """
        try:
            change = Reconfigure(
                skills=None if skills is None else dict(skills),
                labels=None if labels is None else tuple(labels),
                capacity=capacity,
            )
        except ValidationError as e:
            raise ValueError(summarise(e)) from None
        reply: ConfigureReply = await self._ask(ConfigureRequest(worker=worker, change=change))
        return reply.info

    def events(self) -> EventStream:
        """Every task event from the subscription on, as it happens (live: an event missed
        while disconnected is not replayed)::

            async with client.events() as events:
                async for event in events:
                    ...
        """
        return EventStream(self)

    async def _subscribe(self, queue: asyncio.Queue[EventMessage | None]) -> None:
        self._listeners.append(queue)
        if len(self._listeners) == 1:
            await self._ask(Subscribe(active=True))

    async def _unsubscribe(self, queue: asyncio.Queue[EventMessage | None]) -> None:
        if queue not in self._listeners:
            return
        self._listeners.remove(queue)
        if not self._listeners and self._agent.admin_name is not None:
            try:
                await self._ask(Subscribe(active=False))
            except SerendibError as e:  # closing: the manager forgets it anyway
                logger.debug("{}: unsubscribe failed: {}", self.name, e)

    def _events_came(self, events: builtins.list[EventMessage]) -> None:
        for queue in self._listeners:
            for event in events:
                queue.put_nowait(event)


def _address(admin: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(admin, tuple):
        return admin
    host, _, port = admin.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"admin: expected HOST:PORT, got {admin!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"admin: port out of range in {admin!r}")
    return host or "127.0.0.1", number


def _task(item: TaskInput, index: int) -> Task:
    if isinstance(item, Task):
        return item
    try:
        return Task.model_validate(item)
    except ValidationError as e:
        raise ValueError(f"task {index}: {summarise(e)}") from None


def _chunks(tasks: Iterable[TaskInput], size: int) -> Iterable[list[Task]]:
    chunk: list[Task] = []
    for index, item in enumerate(tasks):
        chunk.append(_task(item, index))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _achunks(tasks: AsyncIterable[TaskInput], size: int) -> AsyncIterator[list[Task]]:
    chunk: list[Task] = []
    index = 0
    async for item in tasks:
        chunk.append(_task(item, index))
        index += 1
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_KNOWN: dict[str, type[TaskNotFound] | type[WorkerNotFound]] = {
    "TaskNotFound": TaskNotFound,
    "WorkerNotFound": WorkerNotFound,
}


def _raise_refused(summary: SubmitSummary) -> None:
    if summary.refused:
        raise TasksRefused(summary.refusals, summary.refused, summary.accepted)


def _known_error(error: RemoteError) -> SerendibError:
    """The manager's answer as the error it was there (an unknown id), or as it came."""
    name, _, text = error.error.partition(": ")
    kind = _KNOWN.get(name)
    return error if kind is None else kind.from_message(text)

"""The synchronous client: :class:`~serendib.client.AsyncClient` for code without an event loop.

It runs an event loop in a daemon thread of its own; each call runs there and waits for its
answer, so it may be used from any thread (one call at a time per client is simplest).
"""

from __future__ import annotations

import asyncio
import builtins
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from serendib.client.aio import AsyncClient, EventStream, SubmitSummary, TaskInput
from serendib.tasks.messages import (
    EventMessage,
    RetryReply,
    ScheduleInfo,
    StatusReply,
    TaskOutcome,
    TaskPage,
)
from serendib.tasks.models import Schedule, TaskRecord, TaskState, WorkerInfo

__all__ = ["Client", "SyncEventStream", "TaskHandle"]

T = TypeVar("T")


class TaskHandle:
    """A submitted task: ``handle.result()`` waits for its output.

    Attributes:
        id: The task's id.
        client: The client it was submitted with.
    """

    __slots__ = ("client", "id")

    def __init__(self, client: Client, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    def result(self, timeout: float | None = None) -> Any:
        """The task's output once it succeeded (see :meth:`Client.result`)."""
        return self.client.result(self.id, timeout)

    def outcome(self, timeout: float | None = None) -> TaskOutcome:
        """How the task ended, once it has."""
        return self.client.outcome(self.id, timeout)

    def get(self) -> TaskRecord:
        """The task as the manager knows it now."""
        return self.client.get(self.id)

    def cancel(self) -> bool:
        """Cancel the task; False if it had ended already."""
        return self.client.cancel(self.id)


class Client:
    """A connection to a running task manager, without asyncio (see :class:`AsyncClient`
    for the arguments); connects at once, and is best used as a context manager::

        with Client("127.0.0.1:4222") as client:
            handles = client.submit([{"id": f"t{i}", "difficulty": 2} for i in range(100)])
            for outcome in client.as_completed(h.id for h in handles):
                print(outcome.task_id, outcome.state)

    Raises:
        AdminUnreachable: No manager answered.
        ConnectionFailed: The broker cannot be reached.
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="serendib-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> AsyncClient:
            return AsyncClient(*args, **options)

        try:
            self.aio = self._run(make())
            """The asynchronous client underneath (its calls run in this client's thread)."""
            self._run(self.aio.connect())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def name(self) -> str:
        """This client's agent name in the workspace."""
        return self.aio.name

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Leave the workspace and stop the client's thread."""
        if self._closed:
            return
        try:
            self._run(self.aio.close())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the calls, each the asynchronous client's ------------------------------------------

    def submit(self, tasks: TaskInput | Iterable[TaskInput], *, watch: bool = True) -> Any:
        """Submit one task or several (see :meth:`AsyncClient.submit`).

        Returns:
            A :class:`TaskHandle` for one task, a list of them for several.
        """
        found = self._run(self.aio.submit(tasks, watch=watch))
        if isinstance(found, list):
            return [TaskHandle(self, handle.id) for handle in found]
        return TaskHandle(self, found.id)

    def submit_many(self, tasks: Iterable[TaskInput], *, watch: bool = False) -> SubmitSummary:
        """Stream any number of tasks in bounded memory (see :meth:`AsyncClient.submit_many`).

        The iterable is read in the client's thread, one chunk at a time.
        """
        return self._run(self.aio.submit_many(tasks, watch=watch))

    def outcome(self, task_id: str, timeout: float | None = None) -> TaskOutcome:
        """How task ``task_id`` ended, once it has (see :meth:`AsyncClient.outcome`)."""
        return self._run(self.aio.outcome(task_id, timeout))

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The output of task ``task_id`` once it succeeded (see :meth:`AsyncClient.result`)."""
        return self._run(self.aio.result(task_id, timeout))

    def wait(self, task_ids: Iterable[str], timeout: float | None = None) -> dict[str, TaskOutcome]:
        """The outcomes of every one of ``task_ids``, once all have ended."""
        return self._run(self.aio.wait(list(task_ids), timeout))

    def as_completed(
        self, task_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[TaskOutcome]:
        """Each outcome of ``task_ids`` as it comes (see :meth:`AsyncClient.as_completed`)."""
        ids = list(task_ids)
        return self._iterate(lambda: self.aio.as_completed(ids, timeout))

    def get(self, task_id: str) -> TaskRecord:
        """Task ``task_id`` as the manager knows it now."""
        return self._run(self.aio.get(task_id))

    def list(
        self,
        *,
        state: TaskState | str | None = None,
        worker: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> TaskPage:
        """A page of tasks (see :meth:`AsyncClient.list`)."""
        return self._run(self.aio.list(state=state, worker=worker, after=after, limit=limit))

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not ended; False if it had ended already."""
        return self._run(self.aio.cancel(task_id))

    def retry(self, task_ids: Iterable[str]) -> RetryReply:
        """Run failed or cancelled tasks again (see :meth:`AsyncClient.retry`)."""
        return self._run(self.aio.retry(list(task_ids)))

    def schedules(self) -> builtins.list[ScheduleInfo]:
        """The manager's schedules (see :meth:`AsyncClient.schedules`)."""
        return self._run(self.aio.schedules())

    def add_schedule(self, schedule: Schedule | Mapping[str, Any]) -> builtins.list[ScheduleInfo]:
        """Add or replace a schedule (see :meth:`AsyncClient.add_schedule`)."""
        return self._run(self.aio.add_schedule(schedule))

    def remove_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there is none of that name."""
        return self._run(self.aio.remove_schedule(name))

    def status(self) -> StatusReply:
        """Task counts and the connected workers."""
        return self._run(self.aio.status())

    def configure(
        self,
        worker: str,
        *,
        skills: Mapping[str, int] | None = None,
        labels: Iterable[str] | None = None,
        capacity: int | None = None,
    ) -> WorkerInfo:
        """Change a running worker's skills, labels or capacity."""
        labels = None if labels is None else list(labels)
        return self._run(
            self.aio.configure(worker, skills=skills, labels=labels, capacity=capacity)
        )

    def events(self) -> SyncEventStream:
        """Every task event from the subscription on (see :meth:`AsyncClient.events`)::

        with client.events() as events:
            for event in events:
                ...
        """
        return SyncEventStream(self)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop outcomes kept for ``task_ids``."""
        ids = list(task_ids)

        async def drop() -> None:
            self.aio.forget(ids)

        self._run(drop())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._run(coro)

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """An async iterator of the client's loop, read from this thread."""
        items: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in make():
                    items.put(("item", item))
            except BaseException as e:
                items.put(("error", e))
                if not isinstance(e, Exception):
                    raise
            else:
                items.put(("end", None))

        running = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                kind, value = items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    if isinstance(value, asyncio.CancelledError):
                        return
                    raise value
                else:
                    return
        finally:
            running.cancel()


class SyncEventStream:
    """Task events for the synchronous client: a context manager (subscribed on entry) and
    an iterator."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stream: EventStream | None = None
        self._items: Iterator[EventMessage] | None = None

    def __enter__(self) -> Self:
        self.subscribe()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self) -> None:
        """Start receiving events."""
        if self._stream is None:

            async def make() -> EventStream:
                stream = self._client.aio.events()
                await stream.subscribe()
                return stream

            self._stream = self._client._call(make())

    def close(self) -> None:
        """Stop receiving events."""
        if self._items is not None:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
        if self._stream is not None:
            self._client._call(self._stream.close())

    def __iter__(self) -> Iterator[EventMessage]:
        self.subscribe()
        assert self._stream is not None
        stream = self._stream
        self._items = self._client._iterate(lambda: stream)
        return self._items

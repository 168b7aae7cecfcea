"""A running task system with its dashboard: a manager, workers and tasks the test controls.

Tasks of kind ``gate`` run until the test opens their gate (and fail when their payload says
``fail_attempts`` includes the attempt), so a test decides exactly when each task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serendib.dashboard import AccessPolicy, DashboardServer, create_app
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task
from serendib.tasks.worker import TaskContext, TaskFailed, WorkerAgent
from serendib.transports import MemoryHub, MemoryTransport
from tests.helpers import until as wait_until

DEADLINE = 15.0
WORKSPACE = "dash"
SEED_CREW = (("Junior", 3), ("Intermediate", 6), ("Senior", 9))


class Gates:
    """One gate per task id; a ``gate`` task runs until its gate opens."""

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Event] = {}
        self._all_open = False
        self.started: dict[str, int] = {}

    def _gate(self, task_id: str) -> asyncio.Event:
        return self._gates.setdefault(task_id, asyncio.Event())

    def open(self, *task_ids: str) -> None:
        """Let these tasks finish."""
        for task_id in task_ids:
            self._gate(task_id).set()

    def open_all(self) -> None:
        """Let every task finish (teardown)."""
        self._all_open = True
        for gate in self._gates.values():
            gate.set()

    async def handler(self, task: Task, context: TaskContext) -> dict[str, Any]:
        """The ``gate`` task kind."""
        self.started[task.id] = context.attempt
        if not self._all_open:
            await self._gate(task.id).wait()
        if context.attempt in task.payload.get("fail_attempts", []):
            raise TaskFailed(f"attempt {context.attempt} told to fail")
        return {"worker": context.worker.name, "attempt": context.attempt}


def gate_task(task_id: str, difficulty: int = 2, **fields: Any) -> Task:
    """A task of kind ``gate``."""
    return Task(
        id=task_id, kind="gate", difficulty=difficulty, description=f"gated {task_id}", **fields
    )


async def until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = DEADLINE,
) -> None:
    """:func:`tests.helpers.until` with the reason first, as these tests write it."""
    await wait_until(check, timeout=timeout, what=what)


@dataclass
class System:
    """A running manager, its workers and its dashboard."""

    manager: TaskManager
    server: DashboardServer
    workers: list[WorkerAgent]
    gates: Gates
    hub: MemoryHub

    @property
    def url(self) -> str:
        """The dashboard's address, ending in a slash."""
        return self.server.url

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client for the dashboard (close it: ``async with``)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url.rstrip("/"), headers=headers, timeout=DEADLINE)

    async def submit(self, *tasks: Task) -> None:
        """Submit tasks straight to the manager and wait until they are stored."""
        await self.manager.submit(tasks)
        ids = [t.id for t in tasks]

        async def stored() -> bool:
            return all([await self.manager.store.get(i) is not None for i in ids])

        await until(stored, f"tasks {ids} to be stored")

    async def state_of(self, task_id: str) -> str | None:
        """The stored state of a task."""
        record = await self.manager.store.get(task_id)
        return None if record is None else record.state.value


@contextlib.asynccontextmanager
async def running_system(
    store: Path,
    crew: Sequence[tuple[str, int]] = SEED_CREW,
    *,
    tasks: Sequence[Task] = (),
    host: str = "127.0.0.1",
    token: str | None = None,
    capacity: int = 2,
    interval_s: float = 0.05,
    time_scale: float = 0.001,
    labels: Sequence[str] = (),
    policy_host: str | None = None,
) -> AsyncIterator[System]:
    """Start a manager with ``crew`` and a dashboard on a free port; stop it all after.

    ``policy_host`` applies the access policy of a dashboard listening there (a non-loopback
    address: read-only without a token) to this one, which listens on loopback all the same.
    """
    hub = MemoryHub.private()
    gates = Gates()
    manager = TaskManager(
        "manager",
        workspace_id=WORKSPACE,
        store=str(store),
        tasks=tasks,
        transport=MemoryTransport(hub),
    )
    workers = [
        WorkerAgent(
            name,
            level,
            workspace_id=WORKSPACE,
            capacity=capacity,
            time_scale=time_scale,
            handlers={"gate": gates.handler},
            labels=labels,
            transport=MemoryTransport(hub),
        )
        for name, level in crew
    ]
    server = DashboardServer(manager, host, 0, token, interval_s=interval_s)
    if policy_host is not None:
        server.policy = AccessPolicy(policy_host, token)
        server.app = create_app(server.dashboard, server.policy)
    await server.start()
    run = asyncio.create_task(manager.arun(workers))
    system = System(manager, server, workers, gates, hub)
    try:
        await until(lambda: len(manager.workers) == len(workers) or run.done(), "workers")
        if run.done():
            await run
        yield system
    finally:
        gates.open_all()
        await server.stop()
        await manager.stop()
        await run

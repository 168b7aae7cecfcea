"""Fixtures for task-manager tests: a manager and workers on every transport, a fresh store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from serendib.tasks.manager import TaskManager
from serendib.tasks.worker import WorkerAgent

HEARTBEAT = 0.1

StartWorker = Callable[..., Awaitable[WorkerAgent]]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A fresh SQLite store."""
    return str(tmp_path / "tasks.db")


@pytest.fixture
async def manager_factory(
    hub_url: str, workspace: str, store_url: str
) -> AsyncIterator[Callable[..., Awaitable[TaskManager]]]:
    """Start managers on the test's transport and workspace; all are stopped afterwards."""
    started: list[TaskManager] = []

    async def make(**options: Any) -> TaskManager:
        options.setdefault("store", store_url)
        options.setdefault("heartbeat_interval", HEARTBEAT)
        manager = TaskManager("manager", workspace_id=workspace, transport=hub_url, **options)
        await manager.start()
        started.append(manager)
        return manager

    yield make
    for manager in started:
        await manager.stop()


@pytest.fixture
async def start_worker(hub_url: str, workspace: str) -> AsyncIterator[StartWorker]:
    """Start workers on the test's transport and workspace; all are stopped afterwards."""
    started: list[WorkerAgent] = []

    async def start(name: str, level: int | None = None, **options: Any) -> WorkerAgent:
        options.setdefault("time_scale", 0.0)
        options.setdefault("heartbeat_interval", HEARTBEAT)
        worker = WorkerAgent(name, level, workspace_id=workspace, transport=hub_url, **options)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop(drain_timeout=1)

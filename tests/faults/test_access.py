"""Access: no token, no entry; another workspace's worker can neither take nor report tasks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from serendib import Admin
from serendib.errors import ConnectionFailed
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskResult
from serendib.tasks.models import Task
from serendib.tasks.worker import WorkerAgent
from serendib.transports.embedded import EmbeddedBroker
from tests.helpers import DEADLINE
from tests.processes import free_port


async def test_a_worker_without_the_token_is_refused_by_the_embedded_broker(
    tmp_path: Path,
) -> None:
    port = free_port()
    manager = TaskManager(port=port, token="s3cret", store=str(tmp_path / "t.db"))
    await manager.start()
    try:
        for token in (None, "wrong"):
            intruder = WorkerAgent("intruder", 10, admin_port=port, token=token, join_timeout=2)
            with pytest.raises(ConnectionFailed) as refused:
                await intruder.start()
            assert f"127.0.0.1:{port}" in str(refused.value)
        assert manager.agents == []
        welcome = WorkerAgent("member", 10, admin_port=port, token="s3cret", time_scale=0)
        await manager.submit([Task(id="t", difficulty=3)])
        async with welcome:
            await asyncio.wait_for(manager.wait_done(), DEADLINE)
        record = await manager.store.get("t")
        assert record is not None
        assert record.worker == "member"
    finally:
        await manager.stop()


async def test_another_workspaces_worker_cannot_take_or_report_tasks(
    nats_server: EmbeddedBroker, tmp_path: Path
) -> None:
    url = nats_server.url
    ours, theirs = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    manager = TaskManager(workspace_id=ours, transport=url, store=str(tmp_path / "t.db"))
    their_admin = Admin("manager", workspace_id=theirs, transport=url)
    await manager.start()
    await their_admin.start()
    outsider = WorkerAgent("expert", 10, workspace_id=theirs, transport=url, time_scale=0)
    insider = WorkerAgent("expert", 9, workspace_id=ours, transport=url, time_scale=0)
    try:
        await outsider.start()
        await manager.submit([Task(id=f"t{i}", difficulty=9) for i in range(5)])
        for i in range(5):
            await outsider.send(
                "manager", TaskResult(task_id=f"t{i}", attempt=1, worker="expert", success=True)
            )
        await outsider.broadcast(TaskResult(task_id="t0", attempt=1, worker="expert", success=True))
        assert [a.name for a in manager.agents] == []
        await insider.start()
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
        assert outsider.completed == 0
        assert insider.completed == 5
        assert manager.stale_results == 0
        assert {a.worker for a in await manager.store.all_attempts()} == {"expert"}
        assert len(await manager.store.all_attempts()) == 5
    finally:
        await insider.stop()
        await outsider.stop()
        await their_admin.stop()
        await manager.stop()

"""A straggler: an attempt that outlives its timeout is abandoned, retried elsewhere, and its
late result is recorded as stale and never counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskCancel, TaskResult
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import WorkerAgent
from serendib.transports import MemoryHub, MemoryTransport
from tests.helpers import DEADLINE, until


class Straggler(WorkerAgent):
    """A misbehaving worker: ignores timeouts and cancels, and reports success much later."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.late_result_sent = asyncio.Event()
        self.release = asyncio.Event()

    async def _on_cancel(self, cancel: TaskCancel) -> None:
        return None

    async def _attempt(
        self, task: Task, attempt: int, started: float, inputs: dict[str, Any]
    ) -> TaskResult:
        await self.release.wait()
        self.late_result_sent.set()
        return TaskResult(
            task_id=task.id,
            attempt=attempt,
            worker=self.name,
            success=True,
            output="late",
            started_at=started,
            finished_at=time.time(),
        )


async def test_a_straggler_is_abandoned_and_its_late_result_ignored(tmp_path: Path) -> None:
    hub = MemoryHub.private()
    manager = TaskManager(
        workspace_id="s", transport=MemoryTransport(hub), store=str(tmp_path / "t.db")
    )
    await manager.start()
    slow = Straggler("slow", 5, workspace_id="s", transport=MemoryTransport(hub))
    quick = WorkerAgent("quick", 8, workspace_id="s", transport=MemoryTransport(hub), time_scale=0)
    await slow.start()
    await manager.submit([Task(id="t", difficulty=4, timeout_s=0.05)])
    await quick.start()
    try:
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
        record = await manager.store.get("t")
        assert record is not None
        assert record.state is TaskState.SUCCEEDED
        assert record.worker == "quick"
        slow.release.set()
        await asyncio.wait_for(slow.late_result_sent.wait(), DEADLINE)
        await until(lambda: manager.stale_results >= 1, what="the late result seen as stale")
        await slow.stop()
        await manager._ledger.drain()
        attempts = await manager.store.attempts("t")
        assert [a.stale_results for a in attempts] == [1, 0]
        assert [(a.worker, a.outcome) for a in attempts] == [
            ("slow", AttemptOutcome.TIMED_OUT),
            ("quick", AttemptOutcome.SUCCEEDED),
        ]
        assert attempts[1].escalated
        final = await manager.store.get("t")
        assert final is not None
        assert final.output is None or final.output != "late"
    finally:
        await quick.stop()
        await manager.stop()

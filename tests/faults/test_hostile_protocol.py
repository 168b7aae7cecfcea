"""Every message shape of the protocol, hostile, during a run: every task still finishes once.

An insider holding the workspace token registers as "mallory" on the admin's embedded server
(per-agent identities) and sends, while 200 tasks run, each message type of the protocol
with out-of-range, oversized, malformed and forged fields: to the manager, to a worker, as a
broadcast and as presence. It also tries to publish under the workers' and the manager's
names, which the server refuses. Nothing may stop the run or be counted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from serendib.subjects import broadcast_subject, direct_subject, presence_subject
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import WorkerAgent
from serendib.transports.identity import Identity, register

pytestmark = pytest.mark.slow

TASKS = 200
HUGE = 10**30
LONG = "x" * 5_000
DEEP: Any = 1
for _ in range(100):
    DEEP = [DEEP]

agent = {"name": "mallory", "id": "m1", "role": "worker", "attributes": {"skills": {"general": 10}}}
task = {"id": "t1", "difficulty": 1}
result = {"task_id": "t1", "attempt": 1, "worker": "w0", "success": True}

# For each type, variants that break one bound each (out of range, oversized, malformed).
SHAPES: dict[str, list[Any]] = {
    "serendib.Hello": [
        {"agent": agent, "interval": 3600},
        {"agent": {**agent, "name": LONG}},
        {"agent": {**agent, "name": "w0\x00"}},
        {"agent": {**agent, "attributes": {"deep": DEEP}}},
        {"agent": agent, "interval": "Infinity"},
    ],
    "serendib.Heartbeat": [
        {"agent": agent, "interval": 3600},
        {"agent": {**agent, "id": LONG}},
        {"agent": {**agent, "workspace": "a b"}},
    ],
    "serendib.Goodbye": [{"name": "w0", "id": LONG}, {"name": LONG, "id": "x"}, {}],
    "serendib.Welcome": [{"admin": LONG, "accepted": True}, {"admin": "manager"}],
    "serendib.Probe": [{"id": LONG}, {"id": "a b"}],
    "serendib.ProbeReply": [{"id": LONG}],
    "serendib.AdminStarted": [{"admin": LONG}, {"admin": "x\n"}],
    "serendib.AdminStopping": [{"admin": LONG}, {"admin": 5}],
    "serendib.tasks.TaskAssignment": [
        {"task": task, "attempt": HUGE, "worker": "w0"},
        {"task": {**task, "payload": {"deep": DEEP}}, "attempt": 1, "worker": "w0"},
        {"task": {**task, "id": "t\x00"}, "attempt": 1, "worker": "w0"},
    ],
    "serendib.tasks.TaskAssignments": [
        {"assignments": [{"task": task, "attempt": HUGE, "worker": "w0"}]},
        {"assignments": [], "seq": HUGE},
        {"assignments": [], "epoch": LONG},
    ],
    "serendib.tasks.TaskResult": [
        {**result, "attempt": HUGE},
        {**result, "attempt": -1},
        {**result, "worker": "w0\x00"},
        {**result, "error": "e\x00"},
        {**result, "error": LONG * 3},
        {**result, "output": DEEP},
        {**result, "finished_at": "Infinity"},
        {**result, "task_id": LONG},
    ],
    "serendib.tasks.TaskResults": [{"results": [{**result, "attempt": HUGE}]}, {"results": 5}],
    "serendib.tasks.TaskProgress": [
        {"task_id": "t1", "attempt": 1, "worker": "w0", "fraction": "NaN"},
        {"task_id": "t1", "attempt": HUGE, "worker": "w0", "fraction": 0.5},
        {"task_id": "t1", "attempt": 1, "worker": "w0", "fraction": 0.5, "note": LONG},
    ],
    "serendib.tasks.TaskCancel": [{"task_id": "t1", "attempt": HUGE}, {"task_id": "\x00"}],
    "serendib.tasks.ResultsAck": [{"acks": [["t1", HUGE]]}, {"acks": [[LONG, 1]]}],
    "serendib.tasks.WorkerSync": [
        {"holding": [["t1", HUGE]]},
        {"holding": [], "seen": HUGE},
        {"holding": [], "epoch": LONG},
    ],
    "serendib.tasks.SubmitTasks": [
        {"tasks": [{**task, "id": "bad\x00"}]},
        {"tasks": [{**task, "difficulty": HUGE}]},
        {"tasks": [{**task, "payload": {"deep": DEEP}}]},
    ],
    "serendib.tasks.TaskQuery": [
        {"task_id": "t\x00"},
        {"after": HUGE},
        {"worker": LONG},
        {"limit": HUGE},
    ],
    "serendib.tasks.CancelRequest": [{"task_id": "t\x00"}, {"task_id": LONG}],
}


def envelope(type_name: str, data: Any, sender: str = "mallory", to: str | None = None) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": uuid.uuid4().hex,
            "type": type_name,
            "from": sender,
            "to": to,
            "ts": 1,
            "rq": True,
            "data": data,
        }
    ).encode()


async def test_every_message_shape_hostile_during_a_run_and_every_task_finishes_once(
    tmp_path: Path,
) -> None:
    ws = f"hostile-{uuid.uuid4().hex[:8]}"
    manager = TaskManager(
        "manager", port=0, workspace_id=ws, store=str(tmp_path / "t.db"), heartbeat_interval=0.2
    )
    await manager.start()
    assert manager.broker is not None
    port = manager.broker.port
    url = f"nats://127.0.0.1:{port}"
    workers = [
        WorkerAgent(f"w{i}", 10, workspace_id=ws, admin_port=port, time_scale=0.0005, capacity=4)
        for i in range(2)
    ]
    for worker in workers:
        await worker.start()
    mallory = Identity.generate()
    assert (
        await register(url, ws, "mallory", "agent", mallory, user=None, password=None, timeout=10)
        == "manager"
    )
    refused: list[str] = []

    async def on_error(error: Exception) -> None:
        refused.append(str(error))

    insider = await nats.connect(url, nkeys_seed_str=mallory.seed, error_cb=on_error)
    try:
        await manager.submit([Task(id=f"t{i}", difficulty=1 + i % 10) for i in range(TASKS)])
        own = [
            direct_subject(ws, "manager", "mallory"),
            direct_subject(ws, "w0", "mallory"),
            broadcast_subject(ws, "mallory"),
            presence_subject(ws, "mallory"),
        ]
        sent = 0
        for type_name, variants in SHAPES.items():
            for data in variants:
                for subject in own:
                    await insider.publish(subject, envelope(type_name, data))
                    # The same, claiming to be a worker or the manager: dropped on arrival.
                    await insider.publish(subject, envelope(type_name, data, sender="w0"))
                    sent += 2
        # Well-formed, but forged: a worker's result, the manager's cancel, a worker's goodbye.
        for i in range(20):
            forged_result = {**result, "task_id": f"t{i}", "worker": "w0"}
            await insider.publish(
                direct_subject(ws, "manager", "w0"),
                envelope("serendib.tasks.TaskResult", forged_result, sender="w0"),
            )
            await insider.publish(
                direct_subject(ws, "w0", "manager"),
                envelope(
                    "serendib.tasks.TaskCancel",
                    {"task_id": f"t{i}", "attempt": 1},
                    sender="manager",
                ),
            )
        await insider.publish(
            presence_subject(ws, "w1"),
            envelope("serendib.Goodbye", {"name": "w1", "id": workers[1].detail.id}, "w1"),
        )
        await insider.flush()
        await asyncio.wait_for(manager.wait_done(), 60)

        assert any("permissions violation" in r.lower() for r in refused)
        assert manager.drops.total > 0
        assert all(w.status.value == "running" and w.is_connected for w in workers)
        assert sorted(a.name for a in manager.agents if a.role == "worker") == ["w0", "w1"]
        records = await manager.store.all_records()
        attempts = await manager.store.all_attempts()
        assert len(records) == TASKS
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        wins = [a for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED]
        assert sorted(a.task_id for a in wins) == sorted(r.id for r in records)
        assert {a.worker for a in wins} <= {"w0", "w1"}
        assert manager.stale_results == 0  # nothing forged even reached the book
        assert sent > 100
    finally:
        await insider.close()
        for worker in workers:
            await worker.stop()
        await manager.stop()

"""Hostile input: garbage, wrong shapes, unknown types, oversize, forged results and a flood,
from a foreign NATS client, while a run goes on. Nothing is counted that should not be."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import nats
from hypothesis import given, settings
from hypothesis import strategies as st

from serendib.errors import MessageError
from serendib.messages import decode
from serendib.subjects import broadcast_subject, direct_subject, presence_subject
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import WorkerAgent
from serendib.transports.embedded import EmbeddedBroker

FLOOD = 100_000
TASKS = 200

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, 0, "1", None]),
        "id": st.text(max_size=10) | st.integers(),
        "type": st.sampled_from(
            ["serendib.tasks.TaskResult", "serendib.tasks.TaskResults", "serendib.Hello", "evil.X"]
        )
        | st.text(max_size=10),
        "from": st.text(max_size=10) | st.none(),
        "to": st.text(max_size=10) | st.none(),
        "ts": st.floats(allow_nan=False) | st.text(max_size=3),
        "re": st.text(max_size=5) | st.none(),
        "data": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(envelope=envelopes)
def test_any_envelope_decodes_to_a_valid_message_or_a_message_error(
    envelope: dict[str, Any],
) -> None:
    raw = json.dumps(envelope).encode()
    try:
        decoded = decode(raw)
    except MessageError:
        return
    assert decoded.type == envelope["type"]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_message_error(raw: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(raw)


def forged(sender: str, type_name: str, data: object) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": uuid.uuid4().hex,
            "type": type_name,
            "from": sender,
            "to": "manager",
            "ts": 0,
            "data": data,
        }
    ).encode()


async def test_a_run_under_attack_counts_exactly_what_its_workers_did(
    nats_server: EmbeddedBroker, tmp_path: Path
) -> None:
    ws = f"hostile-{uuid.uuid4().hex[:8]}"
    url = nats_server.url
    # Below the server's 1 MB: larger payloads are refused by NATS itself, these by the agent.
    manager = TaskManager(
        workspace_id=ws, transport=url, store=str(tmp_path / "t.db"), max_message_bytes=512_000
    )
    workers = [
        WorkerAgent(f"w{i}", 10, workspace_id=ws, transport=url, time_scale=0.0005, capacity=4)
        for i in range(2)
    ]
    await manager.start()
    for worker in workers:
        await worker.start()
    foreign = await nats.connect(url)
    try:
        subjects = [
            direct_subject(ws, "manager", "w0"),
            broadcast_subject(ws, "w0"),
            presence_subject(ws, "w0"),
            direct_subject(ws, "w0", "mallory"),
        ]
        attacks: list[bytes] = [
            b"\x00\xff not json",
            b"[]",
            b'{"v": 1}',
            json.dumps(
                {
                    "v": 1,
                    "type": "serendib.tasks.TaskResult",
                    "id": "x",
                    "from": "w0",
                    "ts": 0,
                    "data": {"task_id": 5},
                }
            ).encode(),
            forged("w0", "no.such.Type", {}),
            b'{"v":1,"pad":"' + b"x" * 900_000 + b'"}',
        ]
        await manager.submit([Task(id=f"t{i}", difficulty=1 + i % 10) for i in range(TASKS)])
        for raw in attacks:
            for subject in subjects:
                await foreign.publish(subject, raw)
        # Forged results: never-assigned tasks, wrong attempt numbers, another worker's lease.
        for i in range(50):
            for sender in ("w0", "w1", "mallory"):
                result = {"task_id": f"t{i}", "attempt": 7, "worker": sender, "success": True}
                # A plain NATS server lets anyone publish under any name: see
                # tests/transports/test_identity.py for a server that does not.
                await foreign.publish(
                    direct_subject(ws, "manager", sender),
                    forged(sender, "serendib.tasks.TaskResult", result),
                )
            ghost = {"task_id": f"ghost{i}", "attempt": 1, "worker": "mallory", "success": True}
            await foreign.publish(
                direct_subject(ws, "manager", "mallory"),
                forged("mallory", "serendib.tasks.TaskResult", ghost),
            )
        garbage = b'{"v":1,"type":"nope'
        for n in range(FLOOD):
            await foreign.publish(subjects[n % len(subjects)], garbage)
        await foreign.flush()
        await asyncio.wait_for(manager.wait_done(), 60)
        assert manager.stats.succeeded == TASKS
        assert manager.stale_results >= 200
        assert manager.drops.total >= FLOOD // 4
        assert all(w.status.value == "running" for w in workers)
        records = await manager.store.all_records()
        attempts = await manager.store.all_attempts()
        assert len(records) == TASKS
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        assert all(r.output != "forged" for r in records)
        wins = [a for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED]
        assert sorted(a.task_id for a in wins) == sorted(r.id for r in records)
        assert {a.worker for a in wins} <= {"w0", "w1"}
        assert "DecodeError" in manager.drops.counts
        assert "MessageTooLarge" in manager.drops.counts
        assert "UnknownMessageType" in manager.drops.counts
        assert "MessageValidationError" in manager.drops.counts
    finally:
        await foreign.close()
        for worker in workers:
            await worker.stop()
        await manager.stop()

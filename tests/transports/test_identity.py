"""Per-agent identity on an admin's embedded server: a token lets a client register, not speak.

Every agent an admin registers may publish only under its own name, so nobody in the
workspace, token or no token, can forge another agent's results, goodbyes or cancels, or
take a live agent's name. What a plain NATS server cannot stop, this one does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from serendib import Agent, DuplicateAgentName
from serendib.subjects import direct_subject, presence_subject
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import AttemptOutcome, Task, TaskState
from serendib.tasks.worker import TaskContext, WorkerAgent
from serendib.transports.identity import Identity, register
from tests.helpers import DEADLINE, Ping, Recorder, WatchingAdmin, get, until


def envelope(sender: str, to: str | None, type_name: str, data: object) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": uuid.uuid4().hex,
            "type": type_name,
            "from": sender,
            "to": to,
            "ts": 1,
            "data": data,
        }
    ).encode()


async def raw_client(port: int, identity: Identity | None = None) -> Any:
    """A bare NATS connection: as the registrar (no identity) or as ``identity``."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    options: dict[str, Any] = {"error_cb": on_error, "allow_reconnect": False}
    if identity is not None:
        options["nkeys_seed_str"] = identity.seed
    client = await nats.connect(f"nats://127.0.0.1:{port}", **options)
    client.errors = errors  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def admin(workspace: str) -> AsyncIterator[WatchingAdmin]:
    admin = WatchingAdmin("admin", workspace, None, port=0)
    await admin.start()
    yield admin
    await admin.stop()


def port_of(admin: WatchingAdmin) -> int:
    assert admin.broker is not None
    return admin.broker.port


async def test_a_token_alone_can_only_ask_for_an_identity(
    admin: WatchingAdmin, workspace: str
) -> None:
    async with Recorder("bob", workspace, None, admin_port=port_of(admin)) as bob:
        assert (await get(admin.connected)).name == "bob"
        stranger = await raw_client(port_of(admin))
        try:
            forged = envelope("admin", "bob", "tests.helpers.Ping", {"n": 666})
            await stranger.publish(direct_subject(workspace, "bob", "admin"), forged)
            await stranger.flush()
            await until(lambda: bool(stranger.errors), what="the server refusing the publish")
            assert "permissions violation" in stranger.errors[0].lower()
        finally:
            await stranger.close()
        await admin.send("bob", Ping(n=1))
        assert await get(bob.received) == Ping(n=1)  # the forged Ping never arrived
        assert bob.received.empty()


async def test_a_registered_agent_cannot_speak_for_another(
    admin: WatchingAdmin, workspace: str
) -> None:
    async with Recorder("bob", workspace, None, admin_port=port_of(admin)):
        await get(admin.connected)
        mallory = Identity.generate()
        named = await register(
            f"nats://127.0.0.1:{port_of(admin)}",
            workspace,
            "mallory",
            "agent",
            mallory,
            user=None,
            password=None,
            timeout=DEADLINE,
        )
        assert named == "admin"
        client = await raw_client(port_of(admin), mallory)
        try:
            goodbye = envelope("bob", None, "serendib.Goodbye", {"name": "bob", "id": "x"})
            # As bob, on bob's subject: the server refuses it.
            await client.publish(presence_subject(workspace, "bob"), goodbye)
            await client.flush()
            await until(lambda: bool(client.errors), what="the server refusing the publish")
            # As bob, on its own subject: the admin sees who really sent it, and drops it.
            await client.publish(presence_subject(workspace, "mallory"), goodbye)
            await client.flush()
            await until(lambda: admin.drops.total >= 1, what="the admin dropping the forgery")
        finally:
            await client.close()
        assert [a.name for a in admin.agents] == ["bob"]  # not evicted


async def test_a_live_agents_name_cannot_be_taken(admin: WatchingAdmin, workspace: str) -> None:
    async with Recorder("bob", workspace, None, admin_port=port_of(admin)):
        await get(admin.connected)
        impostor = Recorder("bob", workspace, None, admin_port=port_of(admin), join_timeout=2)
        with pytest.raises(DuplicateAgentName):
            await impostor.start()
        assert [a.name for a in admin.agents] == ["bob"]


async def test_the_same_identity_restarted_takes_its_own_place_at_once(
    admin: WatchingAdmin, workspace: str, tmp_path: Path
) -> None:
    keyfile = tmp_path / "bob.nk"
    first = Recorder("bob", workspace, None, admin_port=port_of(admin), identity=keyfile)
    await first.start()
    await get(admin.connected)
    assert keyfile.stat().st_mode & 0o077 == 0
    second = Recorder("bob", workspace, None, admin_port=port_of(admin), identity=keyfile)
    await asyncio.wait_for(second.start(), DEADLINE)  # the first never left: it was "killed"
    try:
        await until(
            lambda: [a.id for a in admin.agents] == [second.detail.id],
            what="the new run in the old one's place",
        )
    finally:
        await second.stop()
        await first.stop(drain_timeout=0)


async def test_only_the_manager_can_cancel_or_assign(workspace: str, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def held(task: Task, context: TaskContext) -> str:
        await release.wait()
        return "done"

    manager = TaskManager(
        "manager",
        port=0,
        workspace_id=workspace,
        store=str(tmp_path / "t.db"),
        tasks=[Task(id="t", difficulty=1, kind="job")],
    )
    await manager.start()
    assert manager.broker is not None
    port = manager.broker.port
    worker = WorkerAgent("w", 5, workspace_id=workspace, admin_port=port, handlers={"job": held})
    await worker.start()
    try:
        await until(lambda: worker.in_flight == 1, what="the task on its worker")
        async with Agent("mallory", workspace, admin_port=port) as mallory:
            from serendib.tasks.messages import TaskCancel

            await mallory.send("w", TaskCancel(task_id="t", attempt=1))
            await until(lambda: worker.drops.total >= 1, what="the worker refusing the cancel")
        assert worker.in_flight == 1
        release.set()
        await asyncio.wait_for(manager.wait_done(), DEADLINE)
        record = await manager.store.get("t")
        assert record is not None
        assert record.state is TaskState.SUCCEEDED
        outcomes = [a.outcome for a in await manager.store.attempts("t")]
        assert outcomes == [AttemptOutcome.SUCCEEDED]
    finally:
        await worker.stop()
        await manager.stop()

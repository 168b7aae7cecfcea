"""Contract tests for agents, run against every transport through the ``hub_url`` fixture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from serendib import (
    Agent,
    AgentNotRunning,
    AgentStatus,
    DuplicateAgentName,
    RemoteError,
    RequestTimeout,
    on_message,
)
from serendib.subjects import broadcast_subject, direct_subject
from serendib.transports import open_transport
from tests.helpers import Note, Ping, Pong, Recorder, WatchingAdmin, drain, get, until


@pytest.fixture
async def admin(hub_url: str, workspace: str) -> AsyncIterator[WatchingAdmin]:
    admin = WatchingAdmin("admin", workspace, hub_url)
    await admin.start()
    yield admin
    await admin.stop()


async def started(*agents: Agent) -> None:
    await asyncio.gather(*(a.start() for a in agents))


async def test_handler_is_chosen_by_message_type(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    bob = Recorder("bob", workspace, hub_url)
    async with bob:
        await admin.send("bob", Note(text="hi"))
        await admin.send("bob", Ping(n=1))
        assert await drain(bob.received, 2) == [Note(text="hi"), Ping(n=1)]


async def test_broadcast_reaches_every_agent_of_the_workspace_and_none_of_another(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    others = WatchingAdmin("admin", workspace + "-other", hub_url)
    await others.start()
    outsider = Recorder("outsider", workspace + "-other", hub_url)
    members = [Recorder(f"m{i}", workspace, hub_url) for i in range(3)]
    await started(outsider, *members)
    try:
        await admin.broadcast(Note(text="all"))
        await outsider.broadcast(Note(text="other workspace"))
        for member in members:
            assert await get(member.received) == Note(text="all")
        assert await get(others.received) == Note(text="other workspace")
        # The marker went out after the broadcast on the same connection: once it arrives,
        # anything of ours that could reach the outsider has.
        await admin.send("m0", Note(text="marker"))
        assert await get(members[0].received) == Note(text="marker")
        assert outsider.received.empty()
        assert others.received.empty()
    finally:
        for agent in (outsider, *members, others):
            await agent.stop()


async def test_broadcast_is_not_delivered_to_its_sender(hub_url: str, workspace: str) -> None:
    admin = WatchingAdmin("admin", workspace, hub_url)
    await admin.start()
    bob = Recorder("bob", workspace, hub_url)
    async with bob:
        await admin.broadcast(Note(text="one"))
        await admin.send("bob", Note(text="two"))
        assert await drain(bob.received, 2) == [Note(text="one"), Note(text="two")]
        await bob.broadcast(Note(text="from bob"))
        assert await get(admin.received) == Note(text="from bob")
        assert bob.received.empty()
    await admin.stop()


async def test_direct_send_reaches_only_its_target(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    bob, carol = Recorder("bob", workspace, hub_url), Recorder("carol", workspace, hub_url)
    await started(bob, carol)
    await admin.send("bob", Note(text="for bob"))
    await admin.send("carol", Note(text="for carol"))
    assert await get(bob.received) == Note(text="for bob")
    assert await get(carol.received) == Note(text="for carol")
    assert bob.received.empty()
    await asyncio.gather(bob.stop(), carol.stop())


async def test_messages_from_one_sender_are_handled_in_order(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    bob = Recorder("bob", workspace, hub_url)
    async with bob:
        for n in range(500):
            if n % 2:
                await admin.broadcast(Ping(n=n))
            else:
                await admin.send("bob", Ping(n=n))
        got = await drain(bob.received, 500)
        assert [p.n for p in got] == list(range(500))


async def test_request_gets_the_handlers_return_value(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    async with Recorder("bob", workspace, hub_url):
        assert await admin.request("bob", Ping(n=7), timeout=5) == Pong(n=7)


async def test_request_to_nobody_times_out(admin: WatchingAdmin) -> None:
    with pytest.raises(RequestTimeout) as info:
        await admin.request("nobody", Ping(n=1), timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert info.value.to == "nobody"


async def test_request_whose_handler_raises_is_a_remote_error(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    class Fails(Agent):
        @on_message
        async def boom(self, ping: Ping) -> Pong:
            raise ValueError(f"cannot ping {ping.n}")

    async with Fails("bob", workspace, transport=hub_url):
        with pytest.raises(RemoteError, match="cannot ping 3"):
            await admin.request("bob", Ping(n=3))


async def test_handler_that_raises_does_not_stop_the_agent(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    class Flaky(Recorder):
        @on_message
        async def on_ping(self, ping: Ping) -> Pong:
            if ping.n == 1:
                raise RuntimeError("first one fails")
            await self.received.put(ping)
            return Pong(n=ping.n)

    async with Flaky("bob", workspace, hub_url) as bob:
        await admin.send("bob", Ping(n=1))
        await admin.send("bob", Ping(n=2))
        assert await get(bob.received) == Ping(n=2)
        assert bob.status is AgentStatus.RUNNING


async def test_message_without_handler_goes_to_the_unhandled_hook(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    class Stranger(BaseModel):
        z: int

    async with Recorder("bob", workspace, hub_url) as bob:
        await admin.send("bob", Stranger(z=1))
        envelope = await get(bob.unhandled)
        assert envelope.data == Stranger(z=1)
        assert envelope.sender == "admin"


async def test_connect_and_disconnect_events(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    bob = Recorder("bob", workspace, hub_url, attributes={"skill": 5})
    await bob.start()
    joined = await get(admin.connected)
    assert (joined.name, joined.attributes) == ("bob", {"skill": 5})
    assert [a.name for a in admin.agents] == ["bob"]
    await bob.stop()
    left = await get(admin.disconnected)
    assert left.id == joined.id
    assert admin.agents == []


async def test_agent_that_stops_heartbeating_is_declared_lost(hub_url: str, workspace: str) -> None:
    admin = WatchingAdmin("admin", workspace, hub_url, heartbeat_interval=0.05)
    await admin.start()
    bob = Recorder("bob", workspace, hub_url, heartbeat_interval=0.05)
    await bob.start()
    await get(admin.connected)
    for task in list(bob._background):  # silence it without a goodbye, as a crash would
        task.cancel()
    lost = await get(admin.disconnected)
    assert lost.name == "bob"
    await bob.stop()
    await admin.stop()


async def test_duplicate_name_is_refused(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    async with Recorder("bob", workspace, hub_url):
        twin = Recorder("bob", workspace, hub_url, join_timeout=0.5)
        with pytest.raises(DuplicateAgentName):
            await twin.start()
        assert twin.status is AgentStatus.STOPPED


async def test_sending_before_start_is_an_error(hub_url: str, workspace: str) -> None:
    with pytest.raises(AgentNotRunning):
        await Recorder("bob", workspace, hub_url).broadcast(Note(text="x"))


def _ping_from(sender: str, to: str = "null", ts: str = "1", msg_id: str = "i") -> bytes:
    """A Ping envelope with hostile header fields, as raw JSON."""
    head = f'{{"v":1,"type":"tests.helpers.Ping","id":"{msg_id}","from":{json.dumps(sender)}'
    recipient = "null" if to == "null" else json.dumps(to)
    return f'{head},"to":{recipient},"ts":{ts},"data":{{"n":1}}}}'.encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json at all",
        b"[1,2,3]",
        json.dumps({"v": 7, "type": "x", "id": "i", "from": "a", "ts": 1, "data": {}}).encode(),
        json.dumps(
            {"v": 1, "type": "nope.Nope", "id": "i", "from": "a", "ts": 1, "data": {}}
        ).encode(),
        json.dumps(
            {
                "v": 1,
                "type": "tests.helpers.Ping",
                "id": "i",
                "from": "a",
                "ts": 1,
                "data": {"n": "x"},
            }
        ).encode(),
        b'{"v":1,"pad":"' + b"x" * 300_000 + b'"}',
        _ping_from("x" * 4_100),
        _ping_from("eve\nINFO forged log line"),
        _ping_from("a b"),
        _ping_from("eve", to="bob bob"),
        _ping_from("eve", ts="Infinity"),
        _ping_from("eve", ts="1" + "0" * 400),
        _ping_from("eve", msg_id="i" * 65),
    ],
    ids=[
        "not-json",
        "not-object",
        "bad-version",
        "unknown-type",
        "invalid-data",
        "oversize",
        "sender-4100-chars",
        "sender-with-newline",
        "sender-with-space",
        "recipient-with-space",
        "infinite-ts",
        "huge-int-ts",
        "long-id",
    ],
)
async def test_bad_input_is_dropped_and_counted_and_the_agent_keeps_working(
    admin: WatchingAdmin, hub_url: str, workspace: str, raw: bytes
) -> None:
    async with Recorder("bob", workspace, hub_url, max_message_bytes=200_000) as bob:
        intruder = open_transport(hub_url)
        await intruder.connect()
        await intruder.publish(direct_subject(workspace, "bob", "a"), raw)
        await intruder.publish(broadcast_subject(workspace, "a"), raw)
        await intruder.close()
        await until(lambda: bob.drops.total == 2, what="both bad messages dropped")
        await admin.send("bob", Ping(n=1))
        assert await get(bob.received) == Ping(n=1)


async def test_stop_lets_the_running_handler_finish(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    release = asyncio.Event()
    finished: list[int] = []

    class Slow(Agent):
        @on_message
        async def work(self, ping: Ping) -> None:
            started_work.set()
            await release.wait()
            finished.append(ping.n)
            await self.broadcast(Pong(n=ping.n))

    started_work = asyncio.Event()
    slow = Slow("slow", workspace, transport=hub_url)
    await slow.start()
    await admin.send("slow", Ping(n=1))
    await asyncio.wait_for(started_work.wait(), 5)
    stopping = asyncio.create_task(slow.stop())
    await until(lambda: slow.status is AgentStatus.STOPPING, what="stopping")
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [1]
    assert await get(admin.received) == Pong(n=1)
    assert slow.status is AgentStatus.STOPPED


async def test_stop_cancels_a_handler_that_outlives_the_drain_timeout(
    admin: WatchingAdmin, hub_url: str, workspace: str
) -> None:
    cancelled = asyncio.Event()
    running = asyncio.Event()

    class Stuck(Agent):
        @on_message
        async def work(self, ping: Ping) -> None:
            running.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    stuck = Stuck("stuck", workspace, transport=hub_url)
    await stuck.start()
    await admin.send("stuck", Ping(n=1))
    await asyncio.wait_for(running.wait(), 5)
    await asyncio.wait_for(stuck.stop(drain_timeout=0.05), 5)
    assert cancelled.is_set()

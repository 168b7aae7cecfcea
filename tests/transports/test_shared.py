"""One NATS connection shared by agents of several workspaces (``ConnectionPool``): they stay
apart, keep per-sender order, and the connection lives as long as its last agent."""

from __future__ import annotations

import uuid

import pytest

from serendib import ConnectionFailed
from serendib.errors import TransportError
from serendib.transports import ConnectionPool, MemoryTransport, SharedTransport
from serendib.transports.embedded import EmbeddedBroker
from serendib.transports.nats import NatsOptions
from tests.helpers import Note, Ping, Pong, Recorder, WatchingAdmin, drain, get

pytestmark = pytest.mark.timeout(60)


def _workspace() -> str:
    return f"ws-{uuid.uuid4().hex[:10]}"


async def test_agents_of_two_workspaces_share_one_connection_and_stay_apart(
    nats_server: EmbeddedBroker,
) -> None:
    url = nats_server.url
    one, two = _workspace(), _workspace()
    pool = ConnectionPool("test-shared")
    async with WatchingAdmin("admin", one, url) as admin_one, WatchingAdmin("admin", two, url):
        bob_one = Recorder("bob", one, url, connections=pool)
        bob_two = Recorder("bob", two, url, connections=pool)
        async with bob_one, bob_two:
            assert isinstance(bob_one._transport, SharedTransport)
            assert isinstance(bob_two._transport, SharedTransport)
            assert bob_one._transport._connection is bob_two._transport._connection
            assert pool.open_connections == 1
            assert bob_one.is_connected
            assert bob_two.is_connected

            # Per-sender order across broadcast and direct subjects, on the shared socket.
            for n in range(300):
                if n % 2:
                    await admin_one.broadcast(Ping(n=n))
                else:
                    await admin_one.send("bob", Ping(n=n))
            got = await drain(bob_one.received, 300)
            assert [p.n for p in got] == list(range(300))
            assert bob_two.received.empty()  # nothing of workspace one reached workspace two

            assert await admin_one.request("bob", Ping(n=7), timeout=5) == Pong(n=7)
            await bob_two.broadcast(Note(text="from two"))
            await bob_one.broadcast(Note(text="from one"))
            assert (await get(admin_one.received)).text == "from one"

            await bob_one.stop()  # the other lease keeps the connection
            assert pool.open_connections == 1
            assert bob_two.is_connected
            assert not bob_one.is_connected
        assert pool.open_connections == 0

        # A lease connecting again after the last one closed opens a new connection.
        async with Recorder("bob", one, url, connections=pool) as again:
            assert pool.open_connections == 1
            assert await admin_one.request("bob", Ping(n=8), timeout=5) == Pong(n=8)
            assert again.is_connected
        assert pool.open_connections == 0


async def test_a_connection_that_cannot_be_opened_fails_its_lease_and_leaves_none_open() -> None:
    pool = ConnectionPool()
    options = NatsOptions(connect_timeout=0.3)
    lease = pool.transport("nats://127.0.0.1:1", options=options)
    with pytest.raises(ConnectionFailed):
        await lease.connect()
    assert pool.open_connections == 0
    with pytest.raises(TransportError):
        await lease.publish("serendib.ws.all.bob", b"{}")
    await lease.close()  # never opened: nothing to do


async def test_leases_of_other_servers_or_credentials_get_their_own_connection(
    nats_server: EmbeddedBroker,
) -> None:
    pool = ConnectionPool()
    first = pool.transport(nats_server.url)
    same = pool.transport(nats_server.url)
    other = pool.transport(nats_server.url, options=NatsOptions(connect_timeout=1.0))
    assert first._connection is same._connection
    assert first._connection is not other._connection
    for lease in (first, same, other):
        await lease.connect()
    assert pool.open_connections == 2
    for lease in (first, same, other):
        await lease.close()
        await lease.close()  # idempotent
    assert pool.open_connections == 0


async def test_an_in_process_agent_given_a_pool_keeps_its_own_memory_transport() -> None:
    hub = f"memory://test-{uuid.uuid4().hex[:8]}"
    workspace = _workspace()
    pool = ConnectionPool()
    async with (
        WatchingAdmin("admin", workspace, hub) as admin,
        Recorder("bob", workspace, hub, connections=pool) as bob,
    ):
        assert isinstance(bob._transport, MemoryTransport)
        assert await admin.request("bob", Ping(n=1), timeout=5) == Pong(n=1)
    assert pool.open_connections == 0

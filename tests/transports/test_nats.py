"""The NATS transport against a real nats-server: errors that say where, credentials,
reconnection, and foreign clients that publish junk on Serendib's subjects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest

from serendib import AdminUnreachable, Agent, ConnectionFailed, Envelope
from serendib.subjects import broadcast_subject, direct_subject, presence_subject
from serendib.transports.embedded import EmbeddedBroker
from serendib.transports.framing import split_frames
from serendib.transports.nats import NatsOptions, NatsTransport, redact
from tests.helpers import Ping, Pong, Recorder, WatchingAdmin, get, until
from tests.processes import free_port

FAST = NatsOptions(connect_timeout=0.5)


@pytest.fixture
async def private_broker() -> AsyncIterator[EmbeddedBroker]:
    """A nats-server of the test's own, for tests that stop or secure it."""
    broker = EmbeddedBroker(port=0)
    await broker.start()
    yield broker
    await broker.stop()


# --- pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://s3cret@host:4222", "nats://***@host:4222"),
        ("nats://user:pw@host:4222", "nats://***@host:4222"),
        ("tls://u:p@a:1,nats://b:2", "tls://***@a:1,nats://b:2"),
    ],
)
def test_redact_hides_tokens_and_passwords_in_urls(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_options_without_tls_files_mean_plain_tcp() -> None:
    assert NatsOptions(token="t").tls_context() is None


# --- connecting ---------------------------------------------------------------------------------


async def test_connecting_to_a_closed_port_fails_naming_the_address() -> None:
    port = free_port()
    transport = NatsTransport(f"nats://127.0.0.1:{port}", FAST)
    with pytest.raises(ConnectionFailed) as info:
        await transport.connect()
    assert info.value.address == f"nats://127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "refused" in info.value.reason


async def test_agent_with_no_server_fails_naming_the_address() -> None:
    port = free_port()
    agent = Recorder("lonely", "ws", f"nats://127.0.0.1:{port}", nats_options=FAST)
    with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        await agent.start()
    assert agent.status.value == "stopped"


async def test_agent_with_no_admin_gives_up_after_its_join_timeout_naming_the_address(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    agent = Recorder("lonely", workspace, nats_server.url, join_timeout=0.3)
    with pytest.raises(AdminUnreachable) as info:
        await asyncio.wait_for(agent.start(), 5)
    assert info.value.address == nats_server.url
    assert nats_server.url in str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert agent.status.value == "stopped"


async def test_admin_port_and_ip_name_the_server_to_join(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    admin = WatchingAdmin("admin", workspace, nats_server.url)
    async with admin:
        bob = Agent("bob", workspace, admin_ip="127.0.0.1", admin_port=nats_server.port)
        async with bob:
            assert bob.address == nats_server.url
            assert (await get(admin.connected)).name == "bob"


# --- moving bytes -------------------------------------------------------------------------------


async def test_a_burst_is_framed_below_the_size_limit_and_arrives_in_order(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    sender = NatsTransport(nats_server.url, max_message_bytes=4096)
    receiver = NatsTransport(nats_server.url)
    got: list[bytes] = []

    def receive(data: Envelope | bytes) -> None:
        assert isinstance(data, bytes)
        got.append(data)

    await sender.connect()
    await receiver.connect()
    try:
        subject = broadcast_subject(workspace)
        await receiver.subscribe(subject, receive)
        await receiver.flush()
        payloads = [json.dumps({"n": n, "pad": "x" * 50}).encode() for n in range(2000)]
        for payload in payloads:
            await sender.publish(subject, payload)
        await sender.flush()
        await until(lambda: len(got) == len(payloads), what="the whole burst")
        assert got == payloads
        assert sender._client.stats["out_msgs"] < len(payloads) / 10  # framed, not one by one
    finally:
        await sender.close()
        await receiver.close()


async def test_transport_reconnects_when_its_server_restarts(
    private_broker: EmbeddedBroker, workspace: str
) -> None:
    sender, receiver = NatsTransport(private_broker.url), NatsTransport(private_broker.url)
    got: asyncio.Queue[Envelope | bytes] = asyncio.Queue()
    await sender.connect()
    await receiver.connect()
    try:
        subject = broadcast_subject(workspace)
        await receiver.subscribe(subject, got.put_nowait)
        await receiver.flush()
        await sender.publish(subject, b"before")
        assert await get(got) == b"before"
        private_broker.kill()
        await until(lambda: not sender.is_connected and not receiver.is_connected, what="cut")
        await private_broker.start()
        await until(lambda: sender.is_connected and receiver.is_connected, what="reconnected")
        await receiver.flush()  # its subscriptions are back on the server
        await sender.publish(subject, b"after")
        assert await get(got) == b"after"
    finally:
        await sender.close()
        await receiver.close()


# --- credentials --------------------------------------------------------------------------------


@pytest.fixture
async def token_broker() -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port=0, token="right-token")
    await broker.start()
    yield broker
    await broker.stop()


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
async def test_a_client_without_the_right_token_cannot_connect(
    token_broker: EmbeddedBroker, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERENDIB_TOKEN", raising=False)
    transport = NatsTransport(token_broker.url, NatsOptions(token=token))
    with pytest.raises(ConnectionFailed) as info:
        await asyncio.wait_for(transport.connect(), 5)
    assert "authorization" in info.value.reason
    assert info.value.address == token_broker.url


async def test_an_agent_with_a_wrong_token_cannot_join(
    token_broker: EmbeddedBroker, workspace: str
) -> None:
    admin = WatchingAdmin("admin", workspace, token_broker.url, token="right-token")
    async with admin:
        intruder = Recorder("intruder", workspace, token_broker.url, token="guess")
        with pytest.raises(ConnectionFailed, match="authorization"):
            await intruder.start()
        async with Recorder("bob", workspace, token_broker.url, token="right-token"):
            assert (await get(admin.connected)).name == "bob"
        assert [a.name for a in admin.agents] == []


async def test_the_token_can_come_from_the_environment(
    token_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERENDIB_TOKEN", "right-token")
    transport = NatsTransport(token_broker.url)
    await transport.connect()
    assert transport.is_connected
    await transport.close()


async def test_user_and_password_pass_through_in_options_and_in_the_url() -> None:
    broker = EmbeddedBroker(port=0, user="alice", password="pw")
    await broker.start()
    try:
        good = NatsTransport(broker.url, NatsOptions(user="alice", password="pw"))
        await good.connect()
        await good.close()
        in_url = NatsTransport(f"nats://alice:pw@127.0.0.1:{broker.port}")
        await in_url.connect()
        assert "pw" not in in_url.address
        await in_url.close()
        bad = NatsTransport(broker.url, NatsOptions(user="alice", password="nope"))
        with pytest.raises(ConnectionFailed, match="authorization"):
            await bad.connect()
    finally:
        await broker.stop()


# --- foreign clients ----------------------------------------------------------------------------


def envelope(type_name: str, data: object, **extra: object) -> bytes:
    head = {"v": 1, "id": "f00", "type": type_name, "from": "mallory", "to": None, "ts": 1.0}
    return json.dumps({**head, **extra, "data": data}).encode()


JUNK = [
    b"",
    b"\x00\xff\xfe binary",
    b"not json",
    b"null",
    b'{"v":1}',
    envelope("serendib.Heartbeat", {"agent": "not a detail"}),
    envelope("serendib.Hello", {"agent": {"name": 5}}),
    envelope("serendib.Goodbye", {"name": "bob"}),
    envelope("serendib.Welcome", {"admin": "x", "accepted": "maybe"}, re="nothing-pending"),
    envelope("tests.helpers.Ping", {"n": {"deep": [1, 2, 3]}}),
    envelope("tests.helpers.Ping", [1, 2]),
    envelope("os.system", {"command": "rm -rf /"}),
    envelope("tests.helpers.Ping", {"n": 1}, v=2),
    envelope("tests.helpers.Ping", {"n": 1}, id=7),
    b"[" * 100_000,
    b'{"v":1,"pad":"' + b"x" * 600_000 + b'"}',
    b"\n".join([b"junk line"] * 5000),
]


async def test_junk_from_a_foreign_client_is_dropped_and_agents_keep_working(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    admin = WatchingAdmin("admin", workspace, nats_server.url)
    async with admin, Recorder("bob", workspace, nats_server.url, max_message_bytes=500_000) as bob:
        await get(admin.connected)
        foreign = await nats.connect(nats_server.url)
        try:
            for subject in (
                broadcast_subject(workspace),
                direct_subject(workspace, "bob"),
                presence_subject(workspace),
                direct_subject(workspace, "admin"),
            ):
                for raw in JUNK:
                    await foreign.publish(subject, raw)
            # A good message in the same frame as junk still gets through.
            await foreign.publish(
                direct_subject(workspace, "bob"),
                b"junk\n" + envelope("tests.helpers.Ping", {"n": 42}) + b"\n{oops",
            )
            await foreign.flush()
        finally:
            await foreign.close()
        assert await get(bob.received) == Ping(n=42)
        per_subject = sum(len(split_frames(raw)) for raw in JUNK)
        await until(lambda: bob.drops.total == 2 * per_subject + 2, what="bob's drops")
        await until(lambda: admin.drops.total == 3 * per_subject, what="the admin's drops")
        assert {"DecodeError", "UnknownMessageType", "MessageValidationError"} <= set(
            bob.drops.counts
        )
        assert "MessageTooLarge" in bob.drops.counts
        # Both still work, and the admin still knows bob.
        assert await admin.request("bob", Ping(n=7)) == Pong(n=7)
        assert [a.name for a in admin.agents] == ["bob"]
        assert bob.status.value == "running"

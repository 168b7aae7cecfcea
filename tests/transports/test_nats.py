"""The NATS transport against a real nats-server: errors that say where, credentials,
reconnection (also of a connection the server closed for good), subjects and sizes the server
would refuse, and foreign clients that publish junk on Serendib's subjects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import nats
import pytest
from loguru import logger

from serendib import AdminUnreachable, Agent, ConnectionFailed, Envelope
from serendib.errors import InvalidSubject, MessageTooLarge, TransportError
from serendib.subjects import broadcast_subject, direct_subject, presence_subject
from serendib.transports.embedded import EmbeddedBroker
from serendib.transports.framing import split_frames
from serendib.transports.nats import (
    MAX_SUBJECT_CHARS,
    ConnectionState,
    NatsOptions,
    NatsTransport,
    check_subject,
    redact,
)
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


LONGEST_NAME = "n" * 128

BAD_SUBJECTS = {
    "over-4096": "x" * 5000,
    "over-the-limit": "x" * (MAX_SUBJECT_CHARS + 1),
    "space": "serendib.ws.to.a b",
    "tab": "serendib.ws.to.a\tb",
    "crlf": "serendib.ws.all\r\nPUB x 1",
    "nul": "serendib.ws.to.a\x00b",
    "control": "serendib.ws.to.a\x1bb",
    "del": "serendib.ws.to.a\x7fb",
    "non-ascii": "serendib.ws.to.\u00e9",
    "empty": "",
    "empty-token": "serendib..all",
    "leading-dot": ".serendib.ws.all",
    "trailing-dot": "serendib.ws.all.",
}


def test_our_own_longest_subjects_are_valid() -> None:
    for subject in (
        direct_subject(LONGEST_NAME, LONGEST_NAME, LONGEST_NAME),
        broadcast_subject(LONGEST_NAME, LONGEST_NAME),
        presence_subject(LONGEST_NAME, LONGEST_NAME),
    ):
        assert check_subject(subject) == subject
    assert check_subject("serendib.ws.to.*", wildcards=True) == "serendib.ws.to.*"
    assert check_subject("serendib.ws.>", wildcards=True) == "serendib.ws.>"


@pytest.mark.parametrize("subject", BAD_SUBJECTS.values(), ids=BAD_SUBJECTS.keys())
def test_subjects_the_server_would_refuse_are_invalid(subject: str) -> None:
    for wildcards in (False, True):
        with pytest.raises(InvalidSubject) as info:
            check_subject(subject, wildcards=wildcards)
        assert info.value.subject == subject
        assert len(str(info.value)) < 200  # an attacker's subject is not echoed whole


@pytest.mark.parametrize("subject", ["serendib.*", "serendib.>", "a.b*", "a.>.b", ">.a", "a.>x"])
def test_wildcards_are_only_for_subscribing_and_only_where_nats_allows_them(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        check_subject(subject)
    if subject not in ("serendib.*", "serendib.>"):
        with pytest.raises(InvalidSubject, match="wildcard"):
            check_subject(subject, wildcards=True)


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

    def receive(subject: str, data: Envelope | bytes) -> None:
        assert isinstance(data, bytes)
        got.append(data)

    await sender.connect()
    await receiver.connect()
    try:
        subject = broadcast_subject(workspace, "t")
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
        subject = broadcast_subject(workspace, "t")
        await receiver.subscribe(subject, lambda _, message: got.put_nowait(message))
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
                broadcast_subject(workspace, "mallory"),
                direct_subject(workspace, "bob", "mallory"),
                presence_subject(workspace, "mallory"),
                direct_subject(workspace, "admin", "mallory"),
            ):
                for raw in JUNK:
                    await foreign.publish(subject, raw)
            # A good message in the same frame as junk still gets through.
            await foreign.publish(
                direct_subject(workspace, "bob", "mallory"),
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


# --- a connection closed for good -------------------------------------------------------------


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """Every WARNING (and above) logged during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


class Killable(NatsTransport):
    """A transport a test can make the server close for good.

    Our own publish refuses such a subject now, so the test goes round it through nats-py's
    client: this is what a 4,100-character sender name did to every agent replying to it.
    """

    async def send_protocol_violation(self) -> None:
        """Make the server answer -ERR and hang up (nats-py then closes the client for good)."""
        await self._client.publish("x" * 5000, b"")


def collector() -> tuple[list[bytes], Callable[[str, Envelope | bytes], None]]:
    got: list[bytes] = []

    def receive(subject: str, data: Envelope | bytes) -> None:
        assert isinstance(data, bytes)
        got.append(data)

    return got, receive


async def test_a_connection_the_server_closes_for_good_is_re_established_loudly(
    nats_server: EmbeddedBroker, workspace: str, warnings_logged: list[str]
) -> None:
    states: list[ConnectionState] = []
    victim = Killable(nats_server.url, on_state=states.append)
    other = NatsTransport(nats_server.url)
    to_victim, to_other = (
        direct_subject(workspace, "victim", "t"),
        direct_subject(workspace, "other", "t"),
    )
    victim_got, victim_receive = collector()
    other_got, other_receive = collector()
    await victim.connect()
    await other.connect()
    try:
        subscription = await victim.subscribe(to_victim, victim_receive)
        await other.subscribe(to_other, other_receive)
        await victim.flush()
        await other.flush()
        assert victim.state is ConnectionState.CONNECTED

        await victim.send_protocol_violation()
        await until(lambda: victim.state is ConnectionState.REESTABLISHING, what="the closure")
        assert not victim.is_connected
        # Published while the connection is down: held, then sent in order once it is up.
        await victim.publish(to_other, b"held-1")
        await victim.publish(to_other, b"held-2")
        await until(lambda: victim.is_connected, what="the connection re-established")

        assert victim.reestablished == 1
        assert victim.state is ConnectionState.CONNECTED
        assert states == [
            ConnectionState.CONNECTED,
            ConnectionState.REESTABLISHING,
            ConnectionState.CONNECTED,
        ]
        assert any(
            "closed for good" in line and "maximum control line" in line.lower()
            for line in warnings_logged
        ), warnings_logged
        # The subscription made before the closure gets messages published after it...
        await other.publish(to_victim, b"after")
        await until(lambda: victim_got == [b"after"], what="the message to the victim")
        # ...and what the victim publishes reaches others, after what it held.
        await victim.publish(to_other, b"from-victim")
        await until(
            lambda: other_got == [b"held-1", b"held-2", b"from-victim"], what="the victim's"
        )
        # The old subscription object still works: unsubscribing stops deliveries.
        await subscription.unsubscribe()
        await victim.flush()
        await other.publish(to_victim, b"too late")
        await other.publish(to_other, b"marker")
        await other.flush()
        await until(lambda: other_got[-1:] == [b"marker"], what="the marker")
        await victim.flush()
        assert victim_got == [b"after"]
    finally:
        await victim.close()
        await other.close()
    assert states[-1] is ConnectionState.CLOSED  # the callback saw the close too


async def test_re_establishing_retries_until_the_server_is_back(
    private_broker: EmbeddedBroker, workspace: str, warnings_logged: list[str]
) -> None:
    def on_state(state: ConnectionState) -> None:
        # The server goes away the moment the connection is closed for good, so the first
        # attempts to re-establish it fail.
        if state is ConnectionState.REESTABLISHING:
            private_broker.kill()

    victim = Killable(private_broker.url, FAST, on_state=on_state)
    got, receive = collector()
    subject = broadcast_subject(workspace, "t")
    await victim.connect()
    try:
        await victim.subscribe(subject, receive)
        await victim.send_protocol_violation()
        await until(
            lambda: any("re-establishing failed" in line for line in warnings_logged),
            what="a failed attempt",
        )
        assert victim.state is ConnectionState.REESTABLISHING
        assert not victim.is_connected
        await private_broker.start()
        await until(lambda: victim.is_connected, what="the connection re-established")
        assert victim.reestablished == 1
        await victim.publish(subject, b"back")  # to itself: it is subscribed
        await until(lambda: got == [b"back"], what="the message")
    finally:
        await victim.close()


async def test_closing_while_re_establishing_stops_trying(
    private_broker: EmbeddedBroker, warnings_logged: list[str]
) -> None:
    def on_state(state: ConnectionState) -> None:
        if state is ConnectionState.REESTABLISHING:
            private_broker.kill()

    victim = Killable(private_broker.url, FAST, on_state=on_state)
    await victim.connect()
    await victim.send_protocol_violation()
    await until(lambda: victim.state is ConnectionState.REESTABLISHING, what="the closure")
    await victim.publish("serendib.ws.all", b"never sent")
    await asyncio.wait_for(victim.close(), 5)
    assert victim.state is ConnectionState.CLOSED
    assert victim.reestablished == 0
    with pytest.raises(TransportError, match="closed"):
        await victim.publish("serendib.ws.all", b"x")


# --- nothing the server would refuse is sent --------------------------------------------------


async def test_a_bad_subject_raises_and_the_connection_stays_up(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    transport = NatsTransport(nats_server.url)
    got, receive = collector()
    subject = broadcast_subject(workspace, "t")
    await transport.connect()
    try:
        await transport.subscribe(subject, receive)
        for name, bad in BAD_SUBJECTS.items():
            with pytest.raises(TransportError) as info:
                await transport.publish(bad, b"x")
            assert isinstance(info.value, InvalidSubject), name
            with pytest.raises(InvalidSubject):
                await transport.subscribe(bad, receive)
        for wildcard in ("serendib.*", f"{subject}.>"):
            with pytest.raises(InvalidSubject, match="wildcard"):
                await transport.publish(wildcard, b"x")
        await transport.flush()
        assert transport.is_connected
        await transport.publish(subject, b"still up")
        await until(lambda: got == [b"still up"], what="the message after the bad subjects")
        assert transport.reestablished == 0
    finally:
        await transport.close()


async def test_a_payload_over_the_servers_limit_raises_and_the_connection_stays_up(
    nats_server: EmbeddedBroker, workspace: str
) -> None:
    # We would take 4 MiB; the server takes 1 MiB, and an oversize PUB is -ERR and hang up.
    transport = NatsTransport(nats_server.url, max_message_bytes=4 * 1024 * 1024)
    got, receive = collector()
    subject = broadcast_subject(workspace, "t")
    await transport.connect()
    try:
        await transport.subscribe(subject, receive)
        limit = transport._client.max_payload
        with pytest.raises(MessageTooLarge) as info:
            await transport.publish(subject, b"x" * (limit + 1))
        assert info.value.limit == limit
        await transport.publish(subject, b"y" * limit)  # exactly the limit is fine
        await transport.publish(subject, b"after")
        await until(lambda: len(got) == 2, what="the messages within the limit")
        assert got == [b"y" * limit, b"after"]
        assert transport.is_connected
        assert transport.reestablished == 0
    finally:
        await transport.close()

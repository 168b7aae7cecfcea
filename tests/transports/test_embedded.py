"""The embedded broker: a nats-server an admin starts on its port and always stops."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from serendib import Admin, Agent, ConnectionFailed
from serendib.errors import BrokerStartError
from serendib.transports.embedded import EmbeddedBroker, is_loopback
from serendib.transports.nats import NatsOptions, NatsTransport
from tests.helpers import DEADLINE, Recorder, WatchingAdmin, get, until
from tests.processes import accepts, free_port

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log message emitted during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


def embedded_watcher(workspace: str, **options: Any) -> WatchingAdmin:
    """A recording admin given no transport: with a port, it runs the embedded broker."""
    return WatchingAdmin("admin", workspace, None, **options)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


# --- the broker alone -------------------------------------------------------------------------


def test_loopback_addresses_are_recognised() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.168.1.2", "example.com"))


async def test_broker_waits_until_it_accepts_connections_and_stops_on_stop() -> None:
    broker = EmbeddedBroker(port=0)
    await broker.start()
    assert broker.running
    assert accepts(broker.port)
    await broker.stop()
    assert not broker.running
    assert not accepts(broker.port)
    await broker.stop()  # idempotent


async def test_a_port_in_use_is_a_clear_error_naming_the_port(listener: int) -> None:
    with pytest.raises(BrokerStartError) as info:
        await EmbeddedBroker(port=listener).start()
    assert info.value.port == listener
    assert f"port {listener} is already in use" in str(info.value)


async def test_a_second_broker_on_the_same_port_is_refused() -> None:
    first = EmbeddedBroker(port=0)
    await first.start()
    try:
        with pytest.raises(BrokerStartError, match=str(first.port)):
            await EmbeddedBroker(port=first.port).start()
    finally:
        await first.stop()


async def test_broker_restarts_on_its_port_after_being_killed() -> None:
    broker = EmbeddedBroker(port=0)
    await broker.start()
    port = broker.port
    client = NatsTransport(broker.url)
    await client.connect()  # leaves connections in TIME_WAIT once the server dies
    try:
        broker.kill()
        await broker.start()
        assert broker.port == port
        assert accepts(port)
    finally:
        await client.close()
        await broker.stop()


def test_mismatched_credentials_are_refused_when_the_broker_is_made() -> None:
    with pytest.raises(ValueError, match="token or a user"):
        EmbeddedBroker(port=0, token="t", user="u", password="p")
    with pytest.raises(ValueError, match="user and a password"):
        EmbeddedBroker(port=0, user="u")
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        EmbeddedBroker(port=0, tls_cert="cert.pem")


async def test_beyond_loopback_a_token_is_generated_printed_once_never_logged_and_required(
    logs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    broker = EmbeddedBroker(port=0, host="0.0.0.0")
    assert broker.token
    await broker.start()
    try:
        assert not [line for line in logs if broker.token in line]
        printed = capsys.readouterr().err
        assert printed.count(f"--token {broker.token}") == 1
        for token in (None, "guess"):
            stranger = NatsTransport(broker.url, NatsOptions(token=token))
            with pytest.raises(ConnectionFailed, match="authorization"):
                await stranger.connect()
        member = NatsTransport(broker.url, NatsOptions(token=broker.token))
        await member.connect()
        await member.close()
    finally:
        await broker.stop()


def _command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _mode(path: Path) -> int | None:
    return path.stat().st_mode if path.exists() else None


async def test_no_secret_is_on_the_servers_command_line() -> None:
    broker = EmbeddedBroker(port=0, host="0.0.0.0", token="s3cret-token")
    await broker.start()
    try:
        assert broker.pid is not None
        command = _command_line(broker.pid)
        assert b"s3cret-token" not in command
        config = Path(command.split(b"\0")[2].decode())
        mode = _mode(config)
        assert mode is not None
        assert mode & 0o077 == 0  # readable by this user only
    finally:
        await broker.stop()
    assert _mode(config) is None  # not left behind


def test_a_generated_token_can_follow_an_option_on_a_command_line() -> None:
    # Printed as "--token TOKEN" for people to copy: one starting with "-" would be read
    # as an option (as urlsafe tokens did, one time in 64).
    tokens = {EmbeddedBroker(port=0, host="0.0.0.0").token for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token is not None
        assert re.fullmatch(r"[0-9a-f]{48}", token), token


def test_a_given_token_or_user_is_used_instead_of_a_generated_one() -> None:
    assert EmbeddedBroker(port=0, host="0.0.0.0", token="mine").token == "mine"
    by_user = EmbeddedBroker(port=0, host="0.0.0.0", user="u", password="p")
    assert by_user.token is None
    assert not by_user.generated_token
    assert EmbeddedBroker(port=0).token is None


# --- an admin with its broker -----------------------------------------------------------------


@pytest.fixture
async def embedded_admin(workspace: str) -> AsyncIterator[WatchingAdmin]:
    """An admin with no NATS URL on a free port: it runs the broker."""
    admin = embedded_watcher(workspace, port=0)
    await admin.start()
    yield admin
    await admin.stop()


async def test_admin_with_a_port_and_no_url_runs_the_broker_agents_join(
    embedded_admin: WatchingAdmin, workspace: str
) -> None:
    broker = embedded_admin.broker
    assert broker is not None
    assert broker.running
    assert embedded_admin.address == f"nats://127.0.0.1:{broker.port}"
    async with Agent("bob", workspace, admin_port=broker.port, attributes={"skill": 3}):
        joined = await get(embedded_admin.connected)
        assert (joined.name, joined.attributes) == ("bob", {"skill": 3})


async def test_admin_stops_its_broker_when_it_stops(workspace: str) -> None:
    admin = Admin("admin", port=0, workspace_id=workspace)
    await admin.start()
    assert admin.broker is not None
    port = admin.broker.port
    assert accepts(port)
    await admin.stop()
    assert admin.broker is None
    assert not accepts(port)


async def test_admin_stops_its_broker_when_its_start_fails(workspace: str) -> None:
    class Broken(Admin):
        async def on_start(self) -> None:
            raise RuntimeError("store unavailable")

    port = free_port()
    with pytest.raises(RuntimeError, match="store unavailable"):
        await Broken("admin", port=port, workspace_id=workspace).start()
    assert not accepts(port)


async def test_admin_on_a_port_in_use_says_which(listener: int, workspace: str) -> None:
    with pytest.raises(BrokerStartError, match=f"port {listener} is already in use"):
        await Admin("admin", port=listener, workspace_id=workspace).start()


async def test_admin_token_secures_its_broker(workspace: str) -> None:
    async with embedded_watcher(workspace, port=0, token="s3cret") as admin:
        assert admin.broker is not None
        assert admin.broker.token == "s3cret"
        port = admin.broker.port
        with pytest.raises(ConnectionFailed, match="authorization"):
            await Agent("mallory", workspace, admin_port=port, token="guess").start()
        async with Agent("bob", workspace, admin_port=port, token="s3cret"):
            assert (await get(admin.connected)).name == "bob"


async def test_admin_bound_beyond_loopback_generates_a_token_it_uses_itself(
    workspace: str,
) -> None:
    admin = embedded_watcher(workspace, port=0, host="0.0.0.0")
    async with admin:
        assert admin.broker is not None
        assert admin.token == admin.broker.token
        port = admin.broker.port
        with pytest.raises(ConnectionFailed):
            await Agent("mallory", workspace, admin_port=port).start()
        async with Agent("bob", workspace, admin_port=port, token=admin.token):
            assert (await get(admin.connected)).name == "bob"


async def test_agents_hear_that_their_admin_stopped(workspace: str) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()

    class Loyal(Agent):
        async def on_admin_stopped(self, admin: str) -> None:
            await heard.put(admin)
            await self.stop()

    broker = EmbeddedBroker(port=0)
    await broker.start()
    try:
        admin = Admin("boss", workspace_id=workspace, nats_url=broker.url)
        await admin.start()
        loyal = Loyal("loyal", workspace, transport=broker.url)
        await loyal.start()
        await admin.stop()
        assert await get(heard) == "boss"
        await asyncio.wait_for(loyal.wait_stopped(), DEADLINE)
    finally:
        await broker.stop()


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_admin_serves_tls_and_agents_verify_it(
    certificate: tuple[str, str], workspace: str
) -> None:
    cert, key = certificate
    trust = NatsOptions(tls_ca=cert)
    admin = embedded_watcher(workspace, port=0, tls_cert=cert, tls_key=key, nats_options=trust)
    async with admin:
        assert admin.broker is not None
        url = admin.broker.url
        assert url.startswith("tls://")
        async with Recorder("bob", workspace, url, nats_options=trust):
            assert (await get(admin.connected)).name == "bob"
        with pytest.raises(ConnectionFailed):
            await Recorder(
                "mallory", workspace, url, nats_options=NatsOptions(connect_timeout=1)
            ).start()


# --- the admin's process ends, so does its broker ---------------------------------------------


ADMIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from serendib import Admin

    class Boss(Admin):
        async def on_start(self) -> None:
            print("listening", self.broker.port, flush=True)

    Boss("boss", port=int(sys.argv[1])).run()
    print("clean exit", flush=True)
    """
)


def start_admin_process(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    script = tmp_path / "admin_script.py"
    script.write_text(ADMIN_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["listening", str(port)]
    assert accepts(port)
    return proc


def test_ctrl_c_stops_the_admin_and_its_broker(tmp_path: Path) -> None:
    port = free_port()
    proc = start_admin_process(tmp_path, port)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hung admin must not outlive the test (nor its broker: it dies with it)
        proc.communicate()
        raise
    assert "clean exit" in out
    assert "Traceback" not in err
    assert proc.returncode == 0
    assert not accepts(port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_killed_admin_takes_its_broker_with_it(tmp_path: Path) -> None:
    port = free_port()
    proc = start_admin_process(tmp_path, port)
    proc.kill()
    proc.communicate(timeout=DEADLINE)
    await until(lambda: not accepts(port), what="the orphaned nats-server to exit")

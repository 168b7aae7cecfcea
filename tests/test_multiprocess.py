"""Agents in real processes: presence across processes, a SIGKILLed worker, a NATS server
restarted under running agents, an admin restarted under them, and wire names of scripts."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from serendib import Admin, on_message
from serendib.transports.embedded import EmbeddedBroker
from tests.helpers import Ping, Pong, WatchingAdmin, drain, get, until
from tests.processes import Process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
HEARTBEAT = 0.2
LOST_AFTER = 3
# A SIGKILLed agent is declared lost once LOST_AFTER heartbeats are missed; the rest is slack
# for a loaded machine, not part of the promise.
LOSS_DEADLINE = LOST_AFTER * HEARTBEAT + 3.0
RIDE_OUT_BEAT = 0.5


class AgentProcess:
    """``python -m tests.agent_process``: an agent answering pings, in its own process."""

    def __init__(
        self, log: Path, name: str, workspace: str, url: str, *extra: str, beat: float = HEARTBEAT
    ) -> None:
        self.name = name
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.agent_process", "--name", name),
                *("--workspace", workspace, "--url", url, "--heartbeat", str(beat), *extra),
            ],
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=ENV,
        )

    def text(self) -> str:
        return self.log.read_text()

    async def exited(self, timeout: float = 20) -> int:
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self._file.close()
        return code

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return await self.exited()


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log message emitted in the test process during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """A nats-server of the test's own, on a free port, to kill and restart."""
    server = EmbeddedBroker(port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def crew(tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Processes started by the test; any still running at its end are killed."""
    started: list[Any] = []
    yield started
    for member in started:
        if member.proc.poll() is None:
            member.proc.kill()
        await asyncio.to_thread(member.proc.wait)
        member._file.close()


def watching_admin(workspace: str, **options: Any) -> WatchingAdmin:
    options.setdefault("heartbeat_interval", HEARTBEAT)
    transport = options.pop("transport", None)
    return WatchingAdmin("admin", workspace, transport, lost_after=LOST_AFTER, **options)


async def test_cli_workers_join_one_killed_is_lost_and_one_stopped_leaves_at_once(
    tmp_path: Path, workspace: str, crew: list[Any], logs: list[str]
) -> None:
    admin = watching_admin(workspace, port=0)
    async with admin:
        assert admin.broker is not None
        where = ["--admin", f"127.0.0.1:{admin.broker.port}", "--workspace", workspace]
        workers = {
            name: Process(
                tmp_path / f"{name}.log",
                "worker",
                *("--name", name, "--skill", str(skill), "--heartbeat", str(HEARTBEAT)),
                *where,
            )
            for name, skill in (("Junior", 3), ("Intermediate", 6), ("Senior", 9))
        }
        crew.extend(workers.values())
        joined = await drain(admin.connected, 3, timeout=30)
        assert sorted(a.name for a in joined) == ["Intermediate", "Junior", "Senior"]
        assert {a.name: a.attributes["skills"] for a in joined}["Senior"] == {"general": 9}
        assert all(a.role == "worker" for a in joined)

        workers["Junior"].proc.kill()
        lost = await get(admin.disconnected, timeout=LOSS_DEADLINE)
        assert lost.name == "Junior"
        assert any("agent Junior lost (no heartbeat" in line for line in logs)

        assert await asyncio.to_thread(workers["Intermediate"].stop, signal.SIGTERM) in (0, 130)
        left = await get(admin.disconnected)
        assert left.name == "Intermediate"
        assert any("agent Intermediate disconnected" in line for line in logs)
        assert [a.name for a in admin.agents] == ["Senior"]
        assert "Traceback" not in workers["Intermediate"].log.read_text()
    senior = workers["Senior"]
    await asyncio.to_thread(senior.wait_for, "admin admin stopped")
    assert await asyncio.to_thread(senior.stop, signal.SIGTERM) in (0, 130)
    assert "Traceback" not in senior.log.read_text()


async def test_agents_ride_out_a_nats_server_restart(
    tmp_path: Path, workspace: str, broker: EmbeddedBroker, crew: list[Any]
) -> None:
    # Slower heartbeats here: survivors must be back before the admin judges them again.
    admin = watching_admin(workspace, transport=broker.url, heartbeat_interval=RIDE_OUT_BEAT)
    async with admin:
        agents = [
            AgentProcess(tmp_path / f"a{i}.log", f"a{i}", workspace, broker.url, beat=RIDE_OUT_BEAT)
            for i in range(3)
        ]
        crew.extend(agents)
        await drain(admin.connected, 3, timeout=30)
        assert await admin.request("a0", Ping(n=1)) == Pong(n=1)

        broker.kill()
        await until(lambda: not admin.is_connected, what="the admin cut off")
        agents[2].proc.kill()  # dies while nobody can hear it
        await broker.start()  # same port

        # Everyone else comes back by themselves: requests are answered again...
        for agent in agents[:2]:
            reply = await retry_request(admin, agent.name, Ping(n=2))
            assert reply == Pong(n=2)
        # ...and the admin judges heartbeats again: the one that died is declared lost.
        lost = await get(admin.disconnected, timeout=LOST_AFTER * RIDE_OUT_BEAT + 5)
        assert lost.name == "a2"
        assert sorted(a.name for a in admin.agents) == ["a0", "a1"]
        assert admin.connected.empty()  # the survivors were never lost
    for agent in agents[:2]:
        assert await agent.stop() == 0
        assert "reconnected" in agent.text()


async def retry_request(admin: Admin, to: str, message: object, deadline: float = 15) -> Any:
    """A request, asked again while the connection is still coming back."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            return await admin.request(to, message, timeout=0.5)
        except TimeoutError:
            if loop.time() > end:
                raise


async def test_a_restarted_admin_sees_the_running_agents_again(
    tmp_path: Path, workspace: str, crew: list[Any]
) -> None:
    first = watching_admin(workspace, port=0)
    await first.start()
    assert first.broker is not None
    port = first.broker.port
    url = f"nats://127.0.0.1:{port}"
    stayer = AgentProcess(tmp_path / "stayer.log", "stayer", workspace, url)
    leaver = AgentProcess(tmp_path / "leaver.log", "leaver", workspace, url, "--leave-with-admin")
    crew.extend([stayer, leaver])
    await drain(first.connected, 2, timeout=30)
    await first.stop()  # and its broker with it

    assert await leaver.exited() == 0  # it chose to leave with its admin
    assert "admin admin stopped" in leaver.text()

    second = watching_admin(workspace, port=port)
    async with second:
        back = await get(second.connected, timeout=15)
        assert back.name == "stayer"
        assert await second.request("stayer", Ping(n=3)) == Pong(n=3)
    assert await stayer.stop() == 0
    assert "Traceback" not in stayer.text() + leaver.text()


SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from pydantic import BaseModel

    from serendib import Agent


    class Shout(BaseModel):
        text: str


    async def main() -> None:
        async with Agent("shouter", sys.argv[1], transport=sys.argv[2]) as agent:
            await agent.send("admin", Shout(text="hello from __main__"))


    if __name__ == "__main__":
        asyncio.run(main())
    """
)


async def test_a_scripts_message_types_are_named_after_the_script_so_importers_agree(
    tmp_path: Path, workspace: str, broker: EmbeddedBroker
) -> None:
    script = tmp_path / "shouting.py"
    script.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("shouting", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    heard: asyncio.Queue[Any] = asyncio.Queue()

    class Listener(Admin):
        @on_message(type=module.Shout)
        async def on_shout(self, shout: Any) -> None:
            await heard.put(shout)

    async with Listener("admin", workspace_id=workspace, nats_url=broker.url):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), workspace, broker.url, env=ENV
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        shout = await get(heard)
        assert shout.text == "hello from __main__"

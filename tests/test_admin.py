"""Admin.run(workers=[...]): one process, the whole system, ended by stop()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from serendib import Admin, Agent, AgentDetail, DuplicateAgentName, on_message
from tests.helpers import DEADLINE, Note, Ping


class Echo(Agent):
    @on_message
    async def on_ping(self, ping: Ping) -> None:
        await self.broadcast(Note(text=f"{self.name}:{ping.n}"))


class Collector(Admin):
    """Pings every worker once all have connected; stops when all have answered."""

    def __init__(self, expected: int) -> None:
        super().__init__("boss")
        self.expected = expected
        self.notes: list[str] = []
        self.seen: list[str] = []

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        self.seen.append(agent.name)
        if len(self.seen) == self.expected:
            await self.broadcast(Ping(n=1))

    @on_message
    async def on_note(self, note: Note) -> None:
        self.notes.append(note.text)
        if len(self.notes) == self.expected:
            await self.stop()


def test_run_starts_workers_and_returns_when_the_admin_stops() -> None:
    workers = [Echo(f"w{i}", "boss") for i in range(20)]
    admin = Collector(expected=20)
    admin.run(workers=workers)
    assert sorted(admin.notes) == sorted(f"w{i}:1" for i in range(20))
    assert all(w.status.value == "stopped" for w in workers)
    assert admin.address.startswith("memory://")


def test_run_admin_is_the_tutorial_spelling_of_run() -> None:
    admin = Collector(expected=2)
    admin.run_admin(inputs=b"", workers=[Echo("a", "boss"), Echo("b", "boss")])
    assert sorted(admin.notes) == ["a:1", "b:1"]


def test_duplicate_worker_names_are_refused_before_anything_starts() -> None:
    with pytest.raises(DuplicateAgentName):
        Collector(expected=2).run(workers=[Echo("a", "boss"), Echo("a", "boss")])


def test_worker_of_another_workspace_is_refused() -> None:
    with pytest.raises(ValueError, match="workspace"):
        Collector(expected=1).run(workers=[Echo("a", "elsewhere")])


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "forever.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from serendib import Admin, Agent, AgentDetail

            class Boss(Admin):
                async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
                    print("connected", agent.name, flush=True)

            Boss("boss").run(workers=[Agent("w1", "boss"), Agent("w2", "boss")])
            print("clean exit", flush=True)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "connected w1"
    assert proc.stdout.readline().strip() == "connected w2"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=DEADLINE)
    assert "clean exit" in out
    assert "Traceback" not in err
    assert proc.returncode == 0

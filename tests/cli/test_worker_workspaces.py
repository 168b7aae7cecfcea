"""``serendib worker --workspace`` repeated: one worker per workspace in one process, sharing a
connection; a config file's or the environment's names are taken too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serendib.cli import cli, main
from serendib.cli.options import EXIT_OK, EXIT_USAGE
from serendib.tasks.worker import WorkerAgent
from serendib.transports import ConnectionPool

WORKER = cli.commands["worker"]


def _workspaces(args: list[str], **context: Any) -> tuple[str, ...]:
    ctx = WORKER.make_context("worker", ["--name", "w1", *args], **context)
    found: tuple[str, ...] = ctx.params["workspace"]
    return found


def test_the_workspace_option_is_repeatable_from_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _workspaces([]) == ("serendib",)
    assert _workspaces(["--workspace", "a", "--workspace", "b"]) == ("a", "b")
    assert _workspaces([], default_map={"workspace": "prod"}) == ("prod",)
    assert _workspaces([], default_map={"workspace": ["a", "b"]}) == ("a", "b")
    monkeypatch.setenv("SERENDIB_WORKSPACE", "a b")
    assert _workspaces([]) == ("a", "b")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What ``serendib worker`` would serve (it is not started)."""
    found: list[Any] = []

    async def serve(agent: Any, started: Any = None, dashboard: Any = None) -> int:
        found.append(agent)
        return EXIT_OK

    monkeypatch.setattr("serendib.cli.run._serve", serve)
    monkeypatch.setattr("serendib.cli.run.tune_gc", lambda: None)  # not in the test process
    return found


def test_one_worker_per_workspace_sharing_one_connection_pool(served: list[Any]) -> None:
    argv = ["worker", "--name", "w1", "--nats", "nats://127.0.0.1:4222", "--skill", "7"]
    assert main([*argv, "--workspace", "a", "--workspace", "b", "--workspace", "a"]) == EXIT_OK
    (crew,) = served
    agents: list[WorkerAgent] = crew.agents
    assert [a.workspace_id for a in agents] == ["a", "b"]  # in order, a repeat dropped
    assert {a.name for a in agents} == {"w1"}
    assert all(a.skills == {"general": 7} for a in agents)
    pools = {id(a._connections) for a in agents}
    assert len(pools) == 1
    assert isinstance(agents[0]._connections, ConnectionPool)
    assert agents[0]._connections.name == "a+b/w1"


def test_one_workspace_is_one_worker_with_its_own_connection(served: list[Any]) -> None:
    assert main(["worker", "--name", "w1", "--workspace", "a"]) == EXIT_OK
    (agent,) = served
    assert isinstance(agent, WorkerAgent)
    assert agent.workspace_id == "a"
    assert agent._connections is None


def test_several_workspaces_keep_an_identity_file_each(
    served: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert main(["worker", "--name", "w1", "--workspace", "a", "--workspace", "b"]) == EXIT_OK
    (crew,) = served
    kept = [a._identity_spec for a in crew.agents]
    assert kept == [tmp_path / "serendib" / "a" / "w1.nk", tmp_path / "serendib" / "b" / "w1.nk"]


def test_one_identity_file_for_several_workspaces_is_refused(
    served: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["worker", "--name", "w1", "--workspace", "a", "--workspace", "b", "--identity", "x"]
    assert main(argv) == EXIT_USAGE
    assert "'--identity'" in capsys.readouterr().err
    assert served == []


def test_a_bad_workspace_name_is_a_usage_error(
    served: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--name", "w1", "--workspace", "a", "--workspace", "b.c"]) == EXIT_USAGE
    assert "workspace" in capsys.readouterr().err

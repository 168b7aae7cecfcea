"""The client from a program of its own, against an admin and a worker in other processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serendib import Client, TaskNotFound
from tests.processes import CONSOLE, ENV, Process, free_port

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[str]:
    """An admin and a worker, as a user starts them; the admin's HOST:PORT."""
    port = free_port()
    admin = Process(
        tmp_path / "admin.log",
        "admin", "--port", str(port), "--store", str(tmp_path / "tasks.db"),
        command=CONSOLE,
    )  # fmt: skip
    worker = Process(
        tmp_path / "worker.log",
        "worker", "--name", "Senior", "--skill", "9", "--capacity", "4",
        "--time-scale", "0", "--admin", f"127.0.0.1:{port}",
        command=CONSOLE,
    )  # fmt: skip
    try:
        admin.wait_for("admin of workspace")
        worker.wait_for("joined workspace")
        yield f"127.0.0.1:{port}"
    finally:
        for proc in (worker, admin):
            proc.stop(signal.SIGTERM)


def test_the_client_example_gets_every_outcome_and_a_result(system: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "client.py"), "--admin", system, "--tasks", "25"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    assert "25 of 25 succeeded" in done.stdout
    assert "example-7: succeeded on Senior" in done.stdout
    assert "result of example-one: {'level': 9}" in done.stdout


def test_the_synchronous_client_from_this_process(system: str) -> None:
    with Client(system, timeout=30) as client:
        handles = client.submit([{"id": f"s{i}", "difficulty": 3} for i in range(100)])
        outcomes = client.wait(h.id for h in handles)
        assert all(o.succeeded for o in outcomes.values())
        assert handles[0].result() == {"level": 9}
        assert client.get("s5").worker == "Senior"
        with pytest.raises(TaskNotFound, match="nosuch"):
            client.result("nosuch", timeout=30)
        status = client.status()
        assert [w.info.name for w in status.workers] == ["Senior"]

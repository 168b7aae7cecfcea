"""The serendib command: the demo in one process; admin, worker and clients across processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serendib.cli import main

SERENDIB = [sys.executable, "-m", "serendib"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERENDIB, *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_demo_runs_the_seed_scenario_correctly() -> None:
    done = run("demo", "--time-scale", "0", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["success_rate"] == 1.0
    assert report["total"] == 3
    assert sorted(row["name"] for row in report["per_worker"]) == [
        "Intermediate",
        "Junior",
        "Senior",
    ]


def test_demo_prints_a_table_report() -> None:
    done = run("demo", "--time-scale", "0", "--tasks", "12", "--workers", "3", "--seed", "2")
    assert done.returncode in (0, 1), done.stderr
    assert "Success rate:" in done.stdout
    assert "Per worker" in done.stdout


def test_submit_rejects_a_bad_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "tasks.yaml"
    bad.write_text("- id: a\n  difficulty: 2\n- id: b\n  difficulty: 0\n")
    code = main(["submit", str(bad), "--admin", f"127.0.0.1:{free_port()}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "entry 1 (line 3)" in err
    assert "difficulty" in err


def test_client_without_an_admin_says_where_it_looked(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["status", "--admin", f"127.0.0.1:{port}"]) == 3
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    store = tmp_path / "tasks.db"
    proc = subprocess.Popen(
        [*SERENDIB, "admin", "--port", str(port), "--store", str(store), "--workspace", "cli"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "admin of workspace" in line:
            break
    yield port, proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_admin_worker_and_client_commands_across_processes(
    admin: tuple[int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, admin_proc = admin
    where = ["--admin", f"127.0.0.1:{port}", "--workspace", "cli"]
    worker = subprocess.Popen(
        [*SERENDIB, "worker", "--name", "w1", "--skill", "5", "--time-scale", "0", *where],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if "joined workspace" in line:
            break
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "- {id: easy, difficulty: 2}\n- {id: fine, difficulty: 5}\n- {id: hard, difficulty: 9}\n"
    )
    submitted = run("submit", str(tasks), *where)
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 3 new tasks" in submitted.stdout
    again = run("submit", str(tasks), *where)
    assert "3 already known" in again.stdout

    def states() -> dict[str, int]:
        status = run("status", "--json", *where)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert [w["info"]["name"] for w in data["workers"]] == ["w1"]
        return {k: v for k, v in data["counts"].items() if v}

    deadline = 20
    while states() != {"succeeded": 2, "pending": 1} and deadline:
        deadline -= 1
    assert states() == {"succeeded": 2, "pending": 1}

    hard = run("task", "hard", "--json", *where)
    record = json.loads(hard.stdout)
    assert record["state"] == "pending"
    assert record["reason"].startswith("waiting for a worker with general >= 9")

    listing = run("tasks", "--state", "succeeded", "--json", *where)
    page = json.loads(listing.stdout)
    assert sorted(r["task"]["id"] for r in page["records"]) == ["easy", "fine"]
    assert all("least skilled eligible" in r["reason"] for r in page["records"])

    cancelled = run("cancel", "hard", *where)
    assert "task hard cancelled" in cancelled.stdout

    report = run("report", "--json", *where)
    assert json.loads(report.stdout)["success_rate"] == 1.0

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) in (0, 130)
    admin_proc.send_signal(signal.SIGTERM)
    assert admin_proc.wait(timeout=20) in (0, 130)

"""The serendib command: the demo in one process; admin, worker and clients across processes."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from serendib.cli import main
from tests.processes import Process, free_port, run


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
def admin(tmp_path: Path) -> Iterator[tuple[int, Process]]:
    port = free_port()
    store = tmp_path / "tasks.db"
    proc = Process(
        tmp_path / "admin.log",
        "admin",
        "--port",
        str(port),
        "--store",
        str(store),
        "--workspace",
        "cli",
    )
    proc.wait_for("admin of workspace")
    yield port, proc
    proc.stop(signal.SIGKILL)


def test_admin_worker_and_client_commands_across_processes(
    admin: tuple[int, Process], tmp_path: Path
) -> None:
    port, admin_proc = admin
    where = ["--admin", f"127.0.0.1:{port}", "--workspace", "cli"]
    worker = Process(
        tmp_path / "worker.log",
        "worker",
        "--name",
        "w1",
        "--skill",
        "5",
        "--time-scale",
        "0",
        *where,
    )
    worker.wait_for("joined workspace")
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

    tries = 20
    while states() != {"succeeded": 2, "pending": 1} and tries:
        tries -= 1
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
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["success_rate"] == 1.0

    assert worker.stop(signal.SIGTERM) in (0, 130)
    assert "disconnected" in admin_proc.log.read_text() or "left" in admin_proc.log.read_text()
    assert admin_proc.stop(signal.SIGTERM) in (0, 130)

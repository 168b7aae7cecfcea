"""``serendib submit --wait``, ``result`` and ``configure``, run as a user runs them."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import CONSOLE, Process, free_port, run

pytestmark = pytest.mark.slow


@pytest.fixture
def system(tmp_path: Path) -> Iterator[list[str]]:
    """An admin and a worker without labels; the connection options to reach them."""
    port = free_port()
    admin = Process(
        tmp_path / "admin.log",
        "admin", "--port", str(port), "--store", str(tmp_path / "t.db"),
        command=CONSOLE,
    )  # fmt: skip
    worker = Process(
        tmp_path / "w.log",
        "worker", "--name", "W", "--skill", "5", "--time-scale", "0",
        "--admin", f"127.0.0.1:{port}",
        command=CONSOLE,
    )  # fmt: skip
    try:
        admin.wait_for("admin of workspace")
        worker.wait_for("joined workspace")
        yield ["--admin", f"127.0.0.1:{port}"]
    finally:
        for proc in (worker, admin):
            proc.stop(signal.SIGTERM)


def serendib(*args: str, cwd: Path) -> tuple[int, str, str]:
    done = run(*args, cwd=cwd, command=CONSOLE)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout, done.stderr


def test_submit_wait_streams_a_json_lines_file_and_exits_by_the_outcome(
    tmp_path: Path, system: list[str]
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(json.dumps({"id": f"g{i}", "difficulty": 1 + i % 5}) + "\n" for i in range(300))
    )
    code, out, _ = serendib("submit", str(good), "--wait", *system, cwd=tmp_path)
    assert code == 0
    assert "submitted 300 new tasks" in out
    assert "succeeded 300" in out

    # One task nobody can do (it fails at once with its wait deadline): exit 1.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "difficulty": 9, "wait_timeout_s": 0.1}) + "\n")
    code, out, _ = serendib("submit", str(bad), "--wait", "--json", *system, cwd=tmp_path)
    assert code == 1
    assert json.loads(out) == {
        "file": str(bad),
        "accepted": 1,
        "duplicates": 0,
        "ended": {"failed": 1},
    }


def test_result_prints_the_output_or_why_there_is_none(tmp_path: Path, system: list[str]) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text("- {id: ok, difficulty: 2}\n- {id: never, difficulty: 9}\n")
    assert serendib("submit", str(tasks), *system, cwd=tmp_path)[0] == 0
    code, out, _ = serendib("result", "ok", "--wait", "--timeout", "30", *system, cwd=tmp_path)
    assert (code, json.loads(out)) == (0, {"level": 5})
    code, out, _ = serendib("result", "never", *system, cwd=tmp_path)
    assert code == 1
    assert "task never has not ended: pending (waiting for a worker with general >= 9" in out
    code, _, err = serendib("result", "never", "--wait", "--timeout", "0.5", *system, cwd=tmp_path)
    assert code == 1
    assert "did not end within 0.5s" in err
    code, _, err = serendib("result", "nosuch", *system, cwd=tmp_path)
    assert code == 2
    assert "no task with id 'nosuch'" in err


def test_configure_changes_a_running_worker_and_pending_work_moves(
    tmp_path: Path, system: list[str]
) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text("- {id: gpu-job, difficulty: 2, labels: [gpu]}\n")
    assert serendib("submit", str(tasks), *system, cwd=tmp_path)[0] == 0
    code, out, _ = serendib("result", "gpu-job", *system, cwd=tmp_path)
    assert "no connected worker has label 'gpu'" in out

    code, out, _ = serendib(
        "configure", "W", "--label", "gpu", "--capacity", "3", "--json", *system, cwd=tmp_path
    )
    assert code == 0
    info = json.loads(out)
    assert (info["labels"], info["capacity"], info["skills"]) == (["gpu"], 3, {"general": 5})
    code, out, _ = serendib("result", "gpu-job", "--wait", "--timeout", "30", *system, cwd=tmp_path)
    assert code == 0
    code, out, _ = serendib("status", "--json", *system, cwd=tmp_path)
    [worker] = json.loads(out)["workers"]
    assert worker["info"]["labels"] == ["gpu"]

    code, _, err = serendib("configure", "nobody", "--capacity", "2", *system, cwd=tmp_path)
    assert code == 2
    assert "no connected worker named 'nobody'" in err
    code, _, err = serendib("configure", "W", *system, cwd=tmp_path)
    assert code == 2
    assert "nothing to change" in err


def test_retry_runs_failed_tasks_again_by_id_or_by_state(tmp_path: Path, system: list[str]) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"f{i}", "difficulty": 9, "wait_timeout_s": 0.1}) + "\n"
            for i in range(3)
        )
    )
    code, _, _ = serendib("submit", str(tasks), "--wait", *system, cwd=tmp_path)
    assert code == 1  # all three failed: nobody skilled enough within 0.1 s
    code, out, _ = serendib("configure", "W", "--skill", "9", *system, cwd=tmp_path)
    assert code == 0

    code, out, _ = serendib("retry", "f0", "--json", *system, cwd=tmp_path)
    assert (code, json.loads(out)["retried"]) == (0, ["f0"])
    code, out, _ = serendib("result", "f0", "--wait", "--timeout", "30", *system, cwd=tmp_path)
    assert code == 0
    code, out, _ = serendib("retry", "--state", "failed", "--since", "1h", *system, cwd=tmp_path)
    assert (code, out.strip()) == (0, "2 tasks run again")
    for task_id in ("f1", "f2"):
        assert serendib("result", task_id, "--wait", *system, cwd=tmp_path)[0] == 0
    code, out, _ = serendib("retry", "f0", "nosuch", *system, cwd=tmp_path)
    assert code == 2
    assert "not f0: task 'f0' succeeded: there is nothing to retry" in out
    assert "unknown: nosuch" in out
    code, out, _ = serendib("report", "--json", *system, cwd=tmp_path)
    assert json.loads(out)["attempts"]["replays"] == 3
    code, _, err = serendib("retry", *system, cwd=tmp_path)
    assert code == 2
    assert "give task IDs" in err

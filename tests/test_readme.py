"""The README's quick start, run as written: every command in its own process.

The commands and the task file are read from README.md itself, so the test fails when the
README stops telling the truth. Only the port changes (4222 may be taken on the machine).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.processes import CONSOLE, Process, free_port, readme_example, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LONG_LIVED = ("admin", "worker")


def quick_start() -> tuple[list[list[str]], str]:
    """The quick start's commands (without comments) and its task file."""
    return readme_example("Across processes")


def state_of(task_id: str, where: list[str], cwd: Path) -> str:
    done = run("task", task_id, "--json", *where, cwd=cwd, command=CONSOLE)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["state"])


def test_the_readme_quick_start_runs_as_written(tmp_path: Path, processes: list[Process]) -> None:
    commands, task_file = quick_start()
    shutil.copy(ROOT / "examples" / "primes.py", tmp_path / "primes.py")
    (tmp_path / "tasks.yaml").write_text(task_file)
    port = str(free_port())
    where = ["--admin", f"127.0.0.1:{port}"]
    outputs: dict[str, str] = {}
    waited = False
    for command in commands:
        assert command[0] == "serendib", command
        args = [port if arg == "4222" else arg for arg in command[1:]]
        if args[0] == "admin":
            admin = Process(tmp_path / "admin.log", *args, cwd=tmp_path, command=CONSOLE)
            processes.append(admin)
            admin.wait_for("admin of workspace")
        elif args[0] == "worker":
            name = args[args.index("--name") + 1]
            log = tmp_path / f"{name}.log"
            worker = Process(log, *args, *where, cwd=tmp_path, command=CONSOLE)
            processes.append(worker)
            worker.wait_for("joined workspace")
        else:
            if args[0] != "submit" and not waited:  # the runnable tasks finish first
                waited = True
                for task_id in ("t1", "t2", "t3"):  # told by the manager, not polled
                    ended = run(
                        "result", task_id, "--wait", "--timeout", "60", *where,
                        cwd=tmp_path, command=CONSOLE,
                    )  # fmt: skip
                    assert ended.returncode == 0, f"{task_id} did not succeed: {ended.stderr}"
            done = run(*args, *where, cwd=tmp_path, command=CONSOLE)
            assert done.returncode == 0, f"{command}: {done.stderr}"
            assert "Traceback" not in done.stderr
            outputs[" ".join(args)] = done.stdout

    assert "submitted 4 new tasks" in outputs["submit tasks.yaml"]
    waiting = "waiting for a worker with general >= 10"
    assert waiting in outputs["tasks --state pending"]
    assert "t1" not in outputs["tasks --state pending"]
    assert waiting in outputs["task t4"]
    report = outputs["report"]
    assert "Success rate: 100.00% (3 of 3 tasks)" in report
    assert waiting in report  # t4, never assigned, and why
    assert "task t4 cancelled" in outputs["cancel t4"]
    assert state_of("t2", where, tmp_path) == "succeeded"
    for proc in processes:
        assert "Traceback" not in proc.log.read_text()


def test_the_readme_shows_what_the_demo_prints(tmp_path: Path) -> None:
    block = README[README.index("`make demo` runs `serendib demo`") :]
    shown = re.search(r"```\n(.*?)```", block, re.S)
    assert shown is not None
    done = run("demo", "--time-scale", "0", cwd=tmp_path, command=CONSOLE)
    assert done.returncode == 0, done.stderr
    lines = [line for line in shown.group(1).splitlines() if line and line != "..."]
    assert lines
    for line in lines:
        assert line in done.stdout.splitlines()

"""Workflows through the CLI, as processes: a pipeline file, refused cycles, limits."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.processes import Process, free_port, readme_example, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BEAT = ["--heartbeat", "0.2"]


REFUSED = """\
- {id: loop-a, difficulty: 1, depends_on: [loop-b]}
- {id: loop-b, difficulty: 1, depends_on: [loop-a]}
- {id: orphan, difficulty: 1, depends_on: [nobody]}
"""


def readme_pipeline() -> tuple[list[list[str]], str]:
    """The README's workflow commands and its pipeline file."""
    return readme_example("## Work that depends on work")


def test_the_readme_pipeline_runs_in_dependency_order_and_cycles_are_refused(
    tmp_path: Path, processes: list[Process]
) -> None:
    (admin_cmd, worker_cmd, submit_cmd, result_cmd), pipeline = readme_pipeline()
    assert admin_cmd[:2] == ["serendib", "admin"]
    port = str(free_port())
    where = ["--admin", f"127.0.0.1:{port}"]
    admin_args = [port if arg == "4222" else arg for arg in admin_cmd[2:]]
    admin = Process(tmp_path / "admin.log", "admin", *admin_args, *BEAT, cwd=tmp_path)
    processes.append(admin)
    admin.wait_for("admin of workspace")
    worker = Process(tmp_path / "worker.log", *worker_cmd[1:], *where, *BEAT, cwd=ROOT)
    processes.append(worker)
    (tmp_path / "pipeline.yaml").write_text(pipeline + REFUSED)

    submitted = run(*submit_cmd[1:], *where, cwd=tmp_path)
    assert submitted.returncode == 2, submitted.stderr
    assert "submitted 6 new tasks" in submitted.stdout
    refused = submitted.stderr
    assert "refused loop-a: in a dependency cycle: loop-a -> loop-b -> loop-a" in refused
    assert "refused orphan: unknown parent nobody" in refused

    done = run(*result_cmd[1:], "--timeout", "60", "--json", *where, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["output"]
    assert output["words"] > 1_000
    assert len(output["top"]) == 3

    shown = run("task", "merge", "--json", *where)
    assert shown.returncode == 0, shown.stderr
    merge = json.loads(shown.stdout)
    assert merge["task"]["depends_on"] == ["count:0", "count:1", "count:2"]
    assert merge["children"] == ["report"]
    text = run("task", "split", *where)
    assert "children: count:0, count:1, count:2" in text.stdout
    assert admin.stop(signal.SIGINT) in (0, 130)


def test_schedules_are_added_listed_and_removed_through_the_cli(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    link = ["--admin", f"127.0.0.1:{port}", "--workspace", "cal"]
    nightly = tmp_path / "nightly.yaml"
    nightly.write_text(
        "- {name: nightly, cron: '0 2 * * *', task: {difficulty: 3, kind: backup}}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: broken, cron: 'whenever', task: {difficulty: 1}}\n")
    refused = run("admin", "--port", str(port), "--schedules", str(bad), "--store", ":memory:")
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "schedule 0: cron: Value error, 'whenever' is not a cron expression "
            "(such as '*/5 * * * *')"
        )
    )

    admin = Process(
        tmp_path / "admin.log",
        "admin",
        *("--port", str(port), "--store", str(tmp_path / "tasks.db"), "--workspace", "cal"),
        *("--schedules", str(nightly), *BEAT),
    )
    processes.append(admin)
    admin.wait_for("admin of workspace")
    hourly = tmp_path / "hourly.json"
    hourly.write_text('[{"name": "hourly", "cron": "0 * * * *", "task": {"difficulty": 1}}]')

    added = run("schedules", "--add", str(hourly), "--json", *link)
    assert added.returncode == 0, added.stderr
    listed = json.loads(added.stdout)["schedules"]
    assert [s["schedule"]["name"] for s in listed] == ["hourly", "nightly"]
    assert all(s["next_at"] > s["last_fired"] for s in listed)
    removed = run("schedules", "--remove", "hourly", "--remove", "nosuch", *link)
    assert removed.returncode == 1
    assert "no schedule named 'nosuch'" in removed.stdout
    assert "hourly" not in removed.stdout.split("schedules")[-1]
    assert admin.stop(signal.SIGINT) in (0, 130)

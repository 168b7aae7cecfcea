"""Workflows through the CLI, as processes: a pipeline file, refused cycles, limits."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Process, free_port, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BEAT = ["--heartbeat", "0.2"]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL)


PIPELINE = """\
- {id: split, difficulty: 1, kind: split, payload: {chunks: 3}}
- {id: "count:0", difficulty: 1, kind: count, depends_on: [split], payload: {chunk: 0}}
- {id: "count:1", difficulty: 1, kind: count, depends_on: [split], payload: {chunk: 1}}
- {id: "count:2", difficulty: 1, kind: count, depends_on: [split], payload: {chunk: 2},
   concurrency_key: counting, group: docs}
- {id: merge, difficulty: 1, kind: merge, depends_on: ["count:0", "count:1", "count:2"]}
- {id: report, difficulty: 1, kind: report, depends_on: [merge], payload: {top: 3}}
- {id: loop-a, difficulty: 1, depends_on: [loop-b]}
- {id: loop-b, difficulty: 1, depends_on: [loop-a]}
- {id: orphan, difficulty: 1, depends_on: [nobody]}
"""


def test_a_pipeline_file_runs_in_dependency_order_and_its_cycles_are_refused(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    link = ["--admin", f"127.0.0.1:{port}", "--workspace", "flow"]
    admin = Process(
        tmp_path / "admin.log",
        "admin",
        *("--port", str(port), "--store", str(tmp_path / "tasks.db"), "--workspace", "flow"),
        *("--limit", "counting=1", "--retry-backoff", "0.5,2,0.1"),
        *BEAT,
    )
    processes.append(admin)
    admin.wait_for("admin of workspace")
    handlers = [f"--handler=examples.pipeline:{kind}" for kind in ("split", "count", "merge")]
    worker = Process(
        tmp_path / "worker.log",
        "worker",
        *("--name", "w", "--skill", "3", "--capacity", "3", *link, *BEAT),
        *handlers,
        "--handler=examples.pipeline:report",
        cwd=ROOT,
    )
    processes.append(worker)
    file = tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE)

    submitted = run("submit", str(file), *link)
    assert submitted.returncode == 2, submitted.stderr
    assert "submitted 6 new tasks" in submitted.stdout
    refused = submitted.stderr
    assert "refused loop-a: in a dependency cycle: loop-a -> loop-b -> loop-a" in refused
    assert "refused orphan: unknown parent nobody" in refused

    done = run("result", "report", "--wait", "--timeout", "60", "--json", *link)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["output"]
    assert output["words"] > 1_000
    assert len(output["top"]) == 3

    shown = run("task", "merge", "--json", *link)
    assert shown.returncode == 0, shown.stderr
    merge = json.loads(shown.stdout)
    assert merge["task"]["depends_on"] == ["count:0", "count:1", "count:2"]
    assert merge["children"] == ["report"]
    text = run("task", "split", *link)
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

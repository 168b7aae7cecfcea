"""A manager killed with SIGKILL and restarted on the same store finishes the run exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from serendib.tasks.models import AttemptOutcome, AttemptRecord, TaskRecord, TaskState
from serendib.tasks.report import build_report
from serendib.tasks.store import open_store
from serendib.tasks.taskfile import parse_tasks
from tests.helpers import until
from tests.processes import Process, free_port, run

TASKS = 40


def start_admin(port: int, store: Path, log: Path) -> Process:
    admin = Process(
        log, "admin", "--port", str(port), "--store", str(store), "--workspace", "resume"
    )
    admin.wait_for("admin of workspace")
    return admin


async def counts(store: Path) -> Counter[TaskState]:
    opened = open_store(str(store))
    await opened.open()
    try:
        return Counter({k: v for k, v in (await opened.counts()).items() if v})
    finally:
        await opened.close()


async def everything(store: Path) -> tuple[list[TaskRecord], list[AttemptRecord]]:
    opened = open_store(str(store))
    await opened.open()
    try:
        return await opened.all_records(), await opened.all_attempts()
    finally:
        await opened.close()


async def wait_until(store: Path, done: int, deadline_s: float = 60) -> None:
    async def enough() -> bool:
        return (await counts(store))[TaskState.SUCCEEDED] >= done

    await until(enough, deadline_s, f"{done} tasks succeeded", every=0.05)


def test_manager_killed_mid_run_resumes_and_counts_each_task_once(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "tasks.db"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("".join(f"- {{id: t{i}, difficulty: 5}}\n" for i in range(TASKS)))
    where = ["--admin", f"127.0.0.1:{port}", "--workspace", "resume"]
    admin = start_admin(port, store, tmp_path / "admin-1.log")
    workers = [
        Process(
            tmp_path / f"w{i}.log",
            "worker",
            "--name",
            f"w{i}",
            "--skill",
            "6",
            "--capacity",
            "2",
            "--time-scale",
            "0.02",
            *where,
        )
        for i in range(2)
    ]
    try:
        submitted = run("submit", str(tasks), *where)
        assert submitted.returncode == 0, submitted.stderr
        asyncio.run(wait_until(store, 8))
        admin.stop(signal.SIGKILL)
        admin = start_admin(port, store, tmp_path / "admin-2.log")
        asyncio.run(wait_until(store, TASKS))
        assert "resumed" in admin.log.read_text()
    finally:
        for proc in [*workers, admin]:
            proc.stop(signal.SIGTERM)

    records, attempts = asyncio.run(everything(store))
    assert sorted(r.id for r in records) == sorted(t.id for t in parse_tasks(tasks.read_text()))
    assert all(r.state is TaskState.SUCCEEDED for r in records)
    wins = Counter(a.task_id for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED)
    assert set(wins.values()) == {1}, "a task counted twice"
    assert len(wins) == TASKS
    report = build_report(records, attempts)
    assert report.succeeded == TASKS
    assert report.success_rate == 1.0

"""The tutorial across processes: its manager with the embedded broker, three worker processes."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from tests.processes import Process, free_port

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tutorial_distributed.py"
CREW = [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]


def start(log: Path, *args: str) -> Process:
    return Process(log, *args, command=[sys.executable, str(EXAMPLE)])


def test_tutorial_manager_and_three_worker_processes_run_to_completion(tmp_path: Path) -> None:
    port = str(free_port())
    admin_log = tmp_path / "admin.log"
    admin = start(admin_log, "admin", "--port", port)
    workers: dict[str, tuple[Path, Process]] = {}
    try:
        admin.wait_for("admin of workspace 'task_management'")
        for name, skill in CREW:
            path = tmp_path / f"{name}.log"
            workers[name] = path, start(path, "worker", name, str(skill), "--port", port)
        assert admin.proc.wait(timeout=60) == 0, admin_log.read_text()
        codes = {name: proc.proc.wait(timeout=30) for name, (_, proc) in workers.items()}
    finally:
        for proc in [admin, *(proc for _, proc in workers.values())]:
            proc.stop(signal.SIGKILL)

    log = admin_log.read_text()
    assert "starting an embedded NATS server on 127.0.0.1:" + port in log.splitlines()[0]
    assert len(re.findall(r"Worker name='(\w+)'.* connected", log)) == 3
    results = re.findall(r"Received result for task (\d) from (\w+): (\w+)", log)
    assert sorted(results) == [("1", name, "Success") for name in sorted(n for n, _ in CREW)]
    assert "All tasks completed. Success rate: 100.00%" in log
    assert "Traceback" not in log
    for name, (worker_log, _) in workers.items():
        text = worker_log.read_text()
        assert codes[name] == 0, text
        assert f"{name} received task: Simple calculation" in text
        assert f"{name}: the task manager stopped; leaving" in text
        assert "Traceback" not in text

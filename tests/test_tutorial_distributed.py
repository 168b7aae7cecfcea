"""The tutorial across processes: its manager with the embedded broker, three worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import free_port

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tutorial_distributed.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
CREW = [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]


def start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(EXAMPLE), *args], stdout=out, stderr=subprocess.STDOUT, env=ENV
        )


def wait_for(log: Path, proc: subprocess.Popen[bytes], text: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while text not in log.read_text():
        assert proc.poll() is None, f"exited before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < end, f"no {text!r} within {deadline_s}s:\n{log.read_text()}"
        time.sleep(0.02)


def test_tutorial_manager_and_three_worker_processes_run_to_completion(tmp_path: Path) -> None:
    port = str(free_port())
    admin_log = tmp_path / "admin.log"
    admin = start(admin_log, "admin", "--port", port)
    workers: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    try:
        wait_for(admin_log, admin, "admin of workspace 'task_management'")
        for name, skill in CREW:
            path = tmp_path / f"{name}.log"
            workers[name] = path, start(path, "worker", name, str(skill), "--port", port)
        assert admin.wait(timeout=60) == 0, admin_log.read_text()
        codes = {name: proc.wait(timeout=30) for name, (_, proc) in workers.items()}
    finally:
        for proc in [admin, *(proc for _, proc in workers.values())]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

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

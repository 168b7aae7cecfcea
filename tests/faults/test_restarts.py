"""Restarts as operators and supervisors do them, on real processes.

A worker SIGKILLed and restarted at once under its name takes its place at once; a worker
interrupted while joining exits 130; an admin restarted cleanly logs no error and counts the
results of attempts its workers held meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from serendib import Client
from serendib.messages import Envelope
from serendib.presence import Hello
from serendib.subjects import presence_pattern
from serendib.tasks.events import EventKind
from serendib.tasks.models import AttemptOutcome
from serendib.transports import open_transport
from serendib.transports.embedded import EmbeddedBroker
from tests.processes import Process, free_port, run

pytestmark = pytest.mark.slow

WORKSPACE = "restarts"


def where(port: int) -> list[str]:
    return ["--admin", f"127.0.0.1:{port}", "--workspace", WORKSPACE]


def admin(tmp_path: Path, port: int, log: str = "admin.log") -> Process:
    proc = Process(
        tmp_path / log,
        *("admin", "--port", str(port), "--store", str(tmp_path / "tasks.db")),
        *("--workspace", WORKSPACE),
    )
    proc.wait_for("admin of workspace")
    return proc


def worker(tmp_path: Path, name: str, port: int, log: str, *extra: str) -> Process:
    proc = Process(tmp_path / log, "worker", "--name", name, "--skill", "5", *where(port), *extra)
    proc.wait_for("joined workspace")
    return proc


def submit_until_assigned(file: Path, task_id: str, port: int) -> None:
    """Submit a task file with ``serendib submit`` and return once ``task_id`` is given to a
    worker, as the manager tells a client's event stream (subscribed before submitting)."""
    with Client(f"127.0.0.1:{port}", workspace=WORKSPACE) as client, client.events() as events:
        assert run("submit", str(file), *where(port)).returncode == 0
        for event in events:
            if event.kind is EventKind.ASSIGNED and event.task_id == task_id:
                return


def wait_ended(task_id: str, port: int, deadline_s: float = 30) -> str:
    """Wait for a task to end, told by the manager (``serendib result --wait``: pushed, not
    polled); its final state."""
    done = run(
        "result",
        task_id,
        "--wait",
        "--timeout",
        str(deadline_s),
        "--json",
        *where(port),
        timeout=deadline_s + 30,
    )
    assert done.returncode in (0, 1), done.stderr
    return str(json.loads(done.stdout)["state"])


def attempts(tmp_path: Path, task_id: str) -> list[AttemptOutcome]:
    from serendib.tasks.store import open_store

    async def read() -> list[AttemptOutcome]:
        store = open_store(str(tmp_path / "tasks.db"))
        await store.open()
        try:
            return [a.outcome for a in await store.attempts(task_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_worker_killed_and_restarted_at_once_replaces_its_dead_run_at_once(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    processes.append(admin(tmp_path, port))
    first = worker(tmp_path, "c", port, "c-1.log", "--time-scale", "60")
    processes.append(first)
    (tmp_path / "t.yaml").write_text("- {id: long, difficulty: 1}\n")
    submit_until_assigned(tmp_path / "t.yaml", "long", port)

    first.stop(signal.SIGKILL)
    started = time.monotonic()
    second = worker(tmp_path, "c", port, "c-2.log", "--time-scale", "0")
    processes.append(second)
    joined_s = time.monotonic() - started
    assert wait_ended("long", port) == "succeeded"

    assert joined_s < 8, f"the restarted worker took {joined_s:.1f}s to join"
    assert "already connected" not in second.log.read_text()
    assert attempts(tmp_path, "long") == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]


def test_a_worker_interrupted_while_joining_exits_130(
    tmp_path: Path, nats_server: EmbeddedBroker
) -> None:
    async def joining() -> int:
        hellos: asyncio.Queue[bytes] = asyncio.Queue()

        def heard(subject: str, message: Envelope | bytes) -> None:
            if isinstance(message, bytes):
                hellos.put_nowait(message)

        spy = open_transport(nats_server.url)
        await spy.connect()
        await spy.subscribe(presence_pattern(WORKSPACE), heard)
        await spy.flush()
        proc = Process(
            tmp_path / "w.log",
            *("worker", "--name", "w", "--nats", nats_server.url, "--workspace", WORKSPACE),
        )
        try:
            while Hello.__name__ not in (await asyncio.wait_for(hellos.get(), 30)).decode():
                pass  # no admin answers: the worker keeps asking to join
        finally:
            await spy.close()
        return proc.stop(signal.SIGINT)

    code = asyncio.run(joining())
    log = (tmp_path / "w.log").read_text()
    assert code == 130, log
    assert "Traceback" not in log
    assert "closed transport" not in log


def test_an_admin_restarted_cleanly_logs_no_error_and_counts_what_workers_held(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    first = admin(tmp_path, port, "admin-1.log")
    processes.append(first)
    workers = [
        worker(tmp_path, f"w{i}", port, f"w{i}.log", "--capacity", "3", "--time-scale", "1.5")
        for i in range(2)
    ]
    processes.extend(workers)
    (tmp_path / "t.yaml").write_text("".join(f"- {{id: t{i}, difficulty: 2}}\n" for i in range(6)))
    submit_until_assigned(tmp_path / "t.yaml", "t0", port)

    assert first.stop(signal.SIGTERM) in (0, 130)
    second = admin(tmp_path, port, "admin-2.log")
    processes.append(second)
    for i in range(6):
        assert wait_ended(f"t{i}", port) == "succeeded"

    for proc in (first, second):
        log = proc.log.read_text()
        assert "ERROR" not in log, log
        assert "Traceback" not in log
    for i in range(6):
        assert attempts(tmp_path, f"t{i}") == [AttemptOutcome.SUCCEEDED], f"t{i} ran again"

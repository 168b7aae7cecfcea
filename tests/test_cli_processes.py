"""``serendib admin`` and ``serendib worker`` as processes: tokens, presence, clean exits,
and errors that say which address or port is at fault."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from tests.cli import one_line
from tests.processes import Process, accepts, free_port, run

pytestmark = pytest.mark.slow

BEAT = ["--heartbeat", "0.2"]


def admin_process(tmp_path: Path, port: int, *extra: str) -> Process:
    return Process(
        tmp_path / "admin.log",
        "admin",
        *("--port", str(port), "--store", str(tmp_path / "tasks.db"), "--workspace", "w"),
        *BEAT,
        *extra,
    )


def worker_process(tmp_path: Path, name: str, port: int, *extra: str) -> Process:
    return Process(
        tmp_path / f"{name}.log",
        "worker",
        *("--name", name, "--skill", "3", "--admin", f"127.0.0.1:{port}", "--workspace", "w"),
        *BEAT,
        *extra,
    )


def test_token_admin_takes_workers_with_the_token_only_and_everyone_exits_cleanly(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    admin = admin_process(tmp_path, port, "--token", "s3cret")
    processes.append(admin)
    admin.wait_for("admin of workspace")

    intruder = run("worker", "--name", "x", "--admin", f"127.0.0.1:{port}", "--token", "guess")
    assert intruder.returncode == 3
    assert f"127.0.0.1:{port}" in intruder.stderr
    assert "authorization" in intruder.stderr

    junior = worker_process(tmp_path, "Junior", port, "--token", "s3cret")
    processes.append(junior)
    junior.wait_for("joined workspace 'w'")
    admin.wait_for("Junior")

    assert junior.stop(signal.SIGTERM) in (0, 130)
    admin.wait_for("agent Junior disconnected")
    assert admin.stop(signal.SIGINT) in (0, 130)
    assert not accepts(port)
    for proc in (admin, junior):
        assert "Traceback" not in proc.log.read_text()


def test_admin_bound_beyond_loopback_prints_a_token_once_that_workers_need(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    admin = admin_process(tmp_path, port, "--host", "0.0.0.0")
    processes.append(admin)
    admin.wait_for("admin of workspace")
    tokens = re.findall(r"--token (\S+)", admin.log.read_text())
    assert len(tokens) == 1

    without = run("worker", "--name", "x", "--admin", f"127.0.0.1:{port}")
    assert without.returncode == 3
    assert "authorization" in without.stderr

    worker = worker_process(tmp_path, "Senior", port, "--token", tokens[0])
    processes.append(worker)
    worker.wait_for("joined workspace")
    assert worker.stop(signal.SIGTERM) in (0, 130)


def test_worker_with_no_admin_fails_soon_naming_the_address() -> None:
    port = free_port()
    done = run("worker", "--name", "lonely", "--admin", f"127.0.0.1:{port}", timeout=30)
    assert done.returncode == 3
    assert f"nats://127.0.0.1:{port}" in done.stderr
    assert "refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_admin_on_a_port_in_use_exits_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        done = run("admin", "--port", str(port), "--store", str(tmp_path / "t.db"), timeout=30)
    assert done.returncode == 3
    assert f"port {port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr


# --- bad input: exit 2, one line saying what to do, no traceback -----------------------------

LAUGHS = (
    'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9))
    + "tasks:\n  - id: a\n    difficulty: 1\n    payload: *l8\n"
)


def test_submitting_a_yaml_alias_bomb_exits_2_before_connecting(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS)
    nobody = free_port()  # no admin listens there: the file is refused before connecting

    done = run("submit", str(bomb), "--admin", f"127.0.0.1:{nobody}", timeout=30)

    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "bomb.yaml: line 2: YAML aliases (*name) are not allowed in task files" in line


def test_a_file_too_large_for_one_message_is_submitted_in_pieces(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    admin = admin_process(tmp_path, port)
    processes.append(admin)
    admin.wait_for("admin of workspace")
    big = tmp_path / "big.yaml"
    # 150 valid tasks of 9,000-character descriptions: about 1.4 MB, over the 1 MiB message.
    big.write_text(
        "".join(f"- id: t{i}\n  difficulty: 1\n  description: {'x' * 9000}\n" for i in range(150))
    )

    done = run("submit", str(big), "--admin", f"127.0.0.1:{port}", "--workspace", "w")

    assert done.returncode == 0, done.stderr
    assert f"submitted 150 new tasks from {big}" in done.stdout
    again = run("submit", str(big), "--admin", f"127.0.0.1:{port}", "--workspace", "w")
    assert "150 already known (same id), left as they were" in again.stdout
    assert admin.stop(signal.SIGINT) in (0, 130)

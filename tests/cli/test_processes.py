"""The ``serendib`` console script as a user runs it, in real processes: the version, shell
completion, exit codes and their one-line messages, options from the environment and the
config file (and which wins), reader commands that never create a store, unknown task ids
(no traceback in the client or the admin), ``--json``, ``--label`` and the demo's progress
bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.cli import one_line
from tests.processes import CONSOLE, ENV, Process, free_port

pytestmark = pytest.mark.slow

POSTGRES_ENV = "SERENDIB_TEST_POSTGRES_URL"


def serendib(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion in ``cwd`` (with ``env`` added to the
    environment, and no SERENDIB_ variable of the test run's own)."""
    base = {k: v for k, v in ENV.items() if not k.startswith("SERENDIB_")}
    return subprocess.run(
        [*CONSOLE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def test_version_is_the_package_version(tmp_path: Path) -> None:
    done = serendib("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"serendib {version('serendib')}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_command_prints_clicks_script(shell: str, tmp_path: Path) -> None:
    printed = serendib("completion", shell, cwd=tmp_path)
    built_in = serendib(cwd=tmp_path, env={"_SERENDIB_COMPLETE": f"{shell}_source"})

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == built_in.stdout.strip()
    assert "_SERENDIB_COMPLETE" in printed.stdout
    assert f"{shell}_complete" in printed.stdout


def test_bash_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        words = line.split(" ")
        done = serendib(
            cwd=tmp_path,
            env={
                "_SERENDIB_COMPLETE": "bash_complete",
                "COMP_WORDS": line,
                "COMP_CWORD": str(len(words) - 1),
            },
        )
        assert done.returncode == 0, done.stderr
        return [item.partition(",")[2] for item in done.stdout.split()]

    assert complete("serendib ad") == ["admin"]
    assert complete("serendib tasks --state f") == ["failed"]
    assert "--log-level" in complete("serendib worker --log")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["status", "--log-level", "verbose"], "'verbose' is not one of"),
        (["tasks", "--state", "lost"], "'lost' is not one of"),
        (["worker"], "Missing option '--name'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["--config", "nosuch.toml", "status"], "'nosuch.toml' does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    done = serendib(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert says in one_line(done.stderr)


def test_a_client_that_reaches_no_admin_exits_3(tmp_path: Path) -> None:
    port = free_port()
    done = serendib("status", cwd=tmp_path, env={"SERENDIB_ADMIN": f"127.0.0.1:{port}"})
    assert done.returncode == 3
    assert f"127.0.0.1:{port}" in one_line(done.stderr)


# --- a reader never creates a store -----------------------------------------------------------


def test_report_of_a_store_that_is_not_there_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    done = serendib("report", "--store", "nosuch.db", cwd=tmp_path)

    assert done.returncode == 2
    assert one_line(done.stderr).endswith("no task store at nosuch.db")
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_postgres_schema_that_is_not_there_exits_2_and_creates_nothing(
    tmp_path: Path,
) -> None:
    base = os.environ.get(POSTGRES_ENV, "")
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: CI must test the PostgreSQL task store")
        pytest.skip(f"PostgreSQL not tested: set {POSTGRES_ENV}=postgresql://... to test it")
    import psycopg

    schema = f"serendib_test_{uuid.uuid4().hex[:12]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"

    done = serendib("report", "--store", url, cwd=tmp_path)

    assert done.returncode == 2
    assert "no task store at postgresql://" in one_line(done.stderr)
    with psycopg.connect(base, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,)


# --- options from the environment and the config file -----------------------------------------


def store_named(done: subprocess.CompletedProcess[str]) -> str:
    """The store a ``report --store`` of no store looked for (exit 2, one line)."""
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    return line.rpartition("no task store at ")[2]


def test_the_command_line_wins_over_the_environment_over_the_config_over_the_default(
    tmp_path: Path,
) -> None:
    (tmp_path / "serendib.toml").write_text('store = "top.db"\n[report]\nstore = "report.db"\n')
    env = {"SERENDIB_STORE": "env.db"}

    assert store_named(serendib("report", "--store", "cli.db", cwd=tmp_path, env=env)) == "cli.db"
    assert store_named(serendib("report", cwd=tmp_path, env=env)) == "env.db"
    assert store_named(serendib("report", cwd=tmp_path)) == "report.db"  # the [report] table
    (tmp_path / "serendib.toml").write_text('store = "top.db"\n')
    assert store_named(serendib("report", cwd=tmp_path)) == "top.db"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serendib.toml"]


def test_a_config_file_named_by_option_or_environment(tmp_path: Path) -> None:
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    (elsewhere / "prod.toml").write_text('[report]\nstore = "prod.db"\n')
    (tmp_path / "serendib.toml").write_text('[report]\nstore = "local.db"\n')
    named = str(elsewhere / "prod.toml")

    assert store_named(serendib("--config", named, "report", cwd=tmp_path)) == "prod.db"
    env = {"SERENDIB_CONFIG": named}
    assert store_named(serendib("report", cwd=tmp_path, env=env)) == "prod.db"
    assert store_named(serendib("report", cwd=tmp_path)) == "local.db"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour = 'red'\n", "serendib.toml: unknown key 'colour': no command has --colour"),
        ("[worker]\nport = 4222\n", "unknown key 'port' in [worker]"),
        ("store = \n", "serendib.toml: not valid TOML"),
        ("[tasks]\nlimit = 0\n", "'--limit' (from the config file): 0 is not in the range"),
    ],
)
def test_a_bad_config_file_exits_2_naming_what_is_wrong(
    text: str, says: str, tmp_path: Path
) -> None:
    (tmp_path / "serendib.toml").write_text(text)
    command = ["tasks"] if "limit" in text else ["report"]
    done = serendib(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert says in one_line(done.stderr)


def test_a_flag_from_the_environment(tmp_path: Path) -> None:
    done = serendib("demo", "--time-scale", "0", cwd=tmp_path, env={"SERENDIB_JSON": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["success_rate"] == 1.0


# --- against an admin: unknown ids, --json, --label --------------------------------------------


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[list[str], Process]]:
    """An admin logging at DEBUG, and the options that reach it."""
    port = free_port()
    proc = Process(
        tmp_path / "admin.log",
        *("admin", "--port", str(port), "--store", str(tmp_path / "tasks.db")),
        *("--workspace", "cli", "--log-level", "DEBUG"),
        command=CONSOLE,
    )
    proc.wait_for("admin of workspace")
    yield ["--admin", f"127.0.0.1:{port}", "--workspace", "cli"], proc
    proc.stop(signal.SIGKILL)


def test_an_unknown_task_id_exits_2_with_one_line_and_no_traceback_anywhere(
    admin: tuple[list[str], Process], tmp_path: Path
) -> None:
    where, admin_proc = admin

    shown = serendib("task", "nosuch", *where, cwd=tmp_path)
    cancelled = serendib("cancel", "zzz", "--json", *where, cwd=tmp_path)

    assert shown.returncode == 2
    assert one_line(shown.stderr).endswith("no task with id 'nosuch'")
    assert shown.stdout == ""
    assert cancelled.returncode == 2
    assert one_line(cancelled.stderr).endswith("no task with id 'zzz'")
    admin_proc.wait_for("with TaskNotFound: no task with id 'zzz'")  # logged at DEBUG
    log = admin_proc.log.read_text()
    assert "TaskNotFound: no task with id 'nosuch'" in log
    assert "Traceback" not in log
    assert "ERROR" not in log


def test_submit_and_cancel_speak_json_and_a_worker_takes_labels(
    admin: tuple[list[str], Process], tmp_path: Path
) -> None:
    where, _ = admin
    worker = Process(
        tmp_path / "worker.log",
        *("worker", "--name", "w1", "--skill", "3", "--label", "gpu", "--label", "region=eu"),
        *where,
        command=CONSOLE,
    )
    try:
        worker.wait_for("joined workspace")
        (tmp_path / "tasks.yaml").write_text("- {id: big, difficulty: 9}\n")

        submitted = serendib("submit", "tasks.yaml", "--json", *where, cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        reply = json.loads(submitted.stdout)
        assert (reply["accepted"], reply["duplicates"]) == (1, 0)  # counts, not ids

        status = serendib("status", "--json", *where, cwd=tmp_path)
        [info] = [w["info"] for w in json.loads(status.stdout)["workers"]]
        assert info["name"] == "w1"
        assert sorted(info["labels"]) == ["gpu", "region=eu"]

        cancelled = serendib("cancel", "big", "--json", *where, cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        reply = json.loads(cancelled.stdout)
        assert reply["cancelled"] is True
        assert reply["record"]["state"] == "cancelled"
    finally:
        assert worker.stop(signal.SIGTERM) in (0, 130)
    assert "Traceback" not in worker.log.read_text()


# --- the demo's progress bar on a terminal ------------------------------------------------------

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3}")


def on_a_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the console script with its stderr on a pseudo-terminal: exit code, stdout and
    everything written to the terminal."""
    master, slave = pty.openpty()
    env = {**ENV, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*CONSOLE, *args], stdout=subprocess.PIPE, stderr=slave, cwd=cwd, env=env
    )
    os.close(slave)
    screen = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not data:
            break
        screen += data
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), screen.decode(errors="replace")


def test_the_demo_bar_ends_at_n_of_n_with_log_lines_printed_above_it(tmp_path: Path) -> None:
    code, out, screen = on_a_terminal(
        *("demo", "--time-scale", "0", "--tasks", "30", "--workers", "3", "--seed", "2"),
        *("--log-level", "DEBUG"),
        cwd=tmp_path,
    )

    assert code in (0, 1), screen
    assert "Success rate:" in out
    bars = [m.start() for m in re.finditer(r"\d+/30", screen)]
    assert bars, screen
    last = re.findall(r"(\d+)/30", screen)[-1]
    assert last == "30"
    logs = list(_LOG_LINE.finditer(screen))
    assert any(bars[0] < m.start() < bars[-1] for m in logs), "no log line while the bar ran"
    for match in logs:
        line_start = screen.rfind("\n", 0, match.start()) + 1
        before = _CONTROL.sub("", screen[line_start : match.start()]).rpartition("\r")[2]
        assert before == "", f"a log line shares the bar's line: {before!r}"

"""The command line in-process: help texts, the config file's default map, usage errors,
errors from the manager, and logs sharing the terminal with a progress bar."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from rich.console import Console

from serendib import Agent, on_message
from serendib._logging import configure_logging, logs_through
from serendib.cli import cli, main
from serendib.cli.config import ConfigError, default_map
from serendib.cli.options import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    remote_failure,
)
from serendib.errors import RemoteError
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import StatusRequest, TaskQuery

COMMANDS = sorted(cli.commands)


def test_every_command_is_there() -> None:
    assert COMMANDS == [
        "admin",
        "cancel",
        "completion",
        "configure",
        "demo",
        "report",
        "result",
        "retry",
        "schedules",
        "status",
        "submit",
        "task",
        "tasks",
        "worker",
    ]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_shows_an_example_of_its_command(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    examples = out[out.index("Examples:") :]
    assert f"serendib {name}" in examples


def test_help_shows_defaults_and_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "[env var: SERENDIB_PORT; default: 4222]" in out
    assert "[env var: SERENDIB_STORE; default: serendib.db]" in out
    assert "[env var: SERENDIB_LOG_LEVEL; default: INFO]" in out
    assert "--log-level [TRACE|DEBUG|INFO|WARNING|ERROR]" in out
    assert "SERENDIB_DASHBOARD_TOKEN" in out


def test_help_shows_defaults_from_the_config_file_but_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "prod.toml"
    config.write_text('token = "hunter2"\n[worker]\nskill = "python=7"\npassword = "pw"\n')
    assert main(["--config", str(config), "worker", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default: python=7" in out
    assert "hunter2" not in out
    assert "pw]" not in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status", "--log-level", "verbose"], "'verbose' is not one of"),
        (["tasks", "--state", "lost"], "'lost' is not one of"),
        (["tasks", "--limit", "0"], "0 is not in the range 1<=x<=10000"),
        (["worker", "--skill", "5"], "Missing option '--name'"),
        (["worker", "--name", "w", "--skill", "lots"], "expected a level (7)"),
        (["status", "--admin", "here"], "expected HOST:PORT, got 'here'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["completion", "tcsh"], "'tcsh' is not one of 'bash', 'zsh', 'fish'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert says in err
    assert err.startswith("serendib")
    assert "--help" in err


def test_log_levels_are_taken_in_any_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Past the options (the level accepted), the store is not there: exit 2 for that.
    assert main(["report", "--store", str(tmp_path / "none.db"), "--log-level", "debug"]) == 2
    assert "ERROR   no task store at" in capsys.readouterr().err


def test_a_value_from_the_environment_is_named_in_its_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERENDIB_LOG_LEVEL", "loud")
    assert main(["status"]) == EXIT_USAGE
    assert "'--log-level' (from $SERENDIB_LOG_LEVEL): 'loud'" in capsys.readouterr().err


# --- the config file's default map ------------------------------------------------------------


def test_top_level_keys_apply_to_every_command_that_has_the_option() -> None:
    config = {"workspace": "prod", "log-level": "DEBUG", "json": True, "skill": {"python": 7}}

    defaults = default_map(config, cli.commands, "serendib.toml")

    assert defaults["status"] == {"workspace": "prod", "log_level": "DEBUG", "as_json": True}
    assert defaults["worker"] == {
        "workspace": ["prod"],  # repeatable for a worker: a list of one
        "log_level": "DEBUG",
        "skill": {"python": 7},
    }
    assert defaults["demo"] == {"log_level": "DEBUG", "as_json": True}  # no --workspace
    assert "completion" not in defaults  # no options at all


def test_a_command_table_wins_over_the_top_level() -> None:
    config: dict[str, Any] = {
        "store": "shared.db",
        "admin": {"store": "admin.db", "lost_grace": 0, "dashboard": "0.0.0.0:8080"},
        "worker": {"handler": ["primes:primes"], "tls-ca": "ca.pem"},
    }

    defaults = default_map(config, cli.commands, "serendib.toml")

    assert defaults["admin"] == {"store": "admin.db", "lost_grace": 0, "dashboard": "0.0.0.0:8080"}
    assert defaults["report"] == {"store": "shared.db"}
    assert defaults["demo"] == {"store": "shared.db"}
    assert defaults["worker"] == {"handler": ["primes:primes"], "tls_ca": "ca.pem"}


def test_a_repeatable_option_given_once_in_the_config_file_is_a_list_of_one() -> None:
    config = {"worker": {"label": "gpu", "handler": "primes:primes"}, "limit": "db=4"}

    defaults = default_map(config, cli.commands, "serendib.toml")

    assert defaults["worker"] == {"labels": ["gpu"], "handler": ["primes:primes"]}
    assert defaults["admin"]["limit"] == ["db=4"]


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"colour": "red"}, "prod.toml: unknown key 'colour': no command has --colour"),
        ({"worker": {"port": 4222}}, "unknown key 'port' in [worker]: 'serendib worker' has no"),
        ({"nosuch": {"store": "x.db"}}, "unknown key 'nosuch'"),
        ({"as_json": True}, "unknown key 'as_json'"),  # the flag's name, not Python's
    ],
)
def test_an_unknown_key_is_an_error_naming_it(config: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        default_map(config, cli.commands, "prod.toml")
    assert says in raised.value.format_message()
    assert raised.value.exit_code == EXIT_USAGE


# --- errors from the manager ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ("TaskNotFound: no task with id 'nosuch'", EXIT_USAGE, "no task with id 'nosuch'"),
        ("ValueError: limit must be at least 1", EXIT_USAGE, "limit must be at least 1"),
        ("StoreError: the store failed", EXIT_UNREACHABLE, "the store failed"),
        ("RuntimeError: boom", EXIT_FAILED, "agent 'manager' failed to handle the request"),
        ("no handler for x.Y", EXIT_FAILED, "no handler for x.Y"),
        ("Nonsense: what", EXIT_FAILED, "Nonsense: what"),
    ],
)
def test_an_error_from_the_manager_gets_the_exit_code_of_its_type(
    error: str, code: int, message: str
) -> None:
    failure = remote_failure(RemoteError("manager", error))
    assert failure.code == code
    assert message in str(failure)


class _Fails(Agent):
    @on_message
    async def on_status(self, request: StatusRequest) -> None:
        raise RuntimeError("a bug")


async def test_a_handler_answering_with_an_expected_error_logs_no_traceback(
    tmp_path: Path,
) -> None:
    hub, workspace = f"memory://cli-{uuid.uuid4().hex[:8]}", "cli"
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{level} {message}")
    manager = TaskManager(
        "manager", workspace_id=workspace, transport=hub, store=str(tmp_path / "t.db")
    )
    try:
        async with (
            manager,
            _Fails("buggy", workspace, transport=hub),
            Agent("cli", workspace, transport=hub, role="client") as client,
        ):
            with pytest.raises(RemoteError, match="TaskNotFound: no task with id 'nosuch'"):
                await client.request("manager", TaskQuery(task_id="nosuch"))
            with pytest.raises(RemoteError, match="RuntimeError: a bug"):
                await client.request("buggy", StatusRequest())
    finally:
        logger.remove(sink)

    text = "\n".join(lines)
    expected = [line for line in lines if "TaskNotFound" in line]
    assert len(expected) == 1
    assert expected[0].startswith("DEBUG manager: handler _on_query answered")
    assert "Traceback" not in expected[0]
    unexpected = next(line for line in lines if "a bug" in line)
    assert unexpected.startswith("ERROR buggy: handler on_status failed")
    assert "Traceback" in unexpected
    assert text.count("Traceback") == 1


# --- logs and the progress bar ------------------------------------------------------------------


def test_logs_go_through_the_console_while_a_bar_is_live(
    capsys: pytest.CaptureFixture[str],
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    configure_logging("INFO")
    logger.info("before")
    with logs_through(console):
        logger.info("during [b]the bar[/b]")
        logger.debug("not at INFO")
    logger.info("after")

    err = capsys.readouterr().err
    assert "before" in err
    assert "after" in err
    assert "during" not in err
    shown = screen.getvalue()
    assert "during [b]the bar[/b]" in shown  # printed as it is, not as markup
    assert "INFO" in shown
    assert "not at INFO" not in shown


def test_logs_through_nothing_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    with logs_through(None):
        logger.info("plain")
    assert '"plain"' in capsys.readouterr().err

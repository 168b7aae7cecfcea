"""docs/cli.md lists every command, every option with its environment variable, and the exit
codes: it is checked against the command line itself."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest

from serendib.cli import cli
from serendib.cli.config import default_map
from serendib.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
SHARED = DOC[DOC.index("## Shared options") : DOC.index("## `serendib admin`")]


def section(name: str) -> str:
    """The part of docs/cli.md about ``serendib NAME``."""
    start = DOC.index(f"## `serendib {name}`")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_option_of_every_command_is_documented_with_its_variable(name: str) -> None:
    own = section(name)
    for param in cli.commands[name].params:
        if not isinstance(param, click.Option):
            continue
        flag = param.opts[0]
        row = re.search(rf"^\| `{re.escape(flag)}[ `].*$", own + SHARED, re.M)
        assert row is not None, f"{flag} of serendib {name} is not in docs/cli.md"
        assert f"`{param.envvar}`" in row.group(0), f"{flag}: {param.envvar} not in {row.group(0)}"


def test_the_exit_codes_are_documented() -> None:
    codes = DOC[DOC.index("## Exit codes") :]
    for code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED):
        assert re.search(rf"^\| {code} \|", codes, re.M), code


def test_the_config_file_example_is_one_the_commands_take() -> None:
    example = re.search(r"```toml\n(.*?)```", DOC, re.S)
    assert example is not None
    defaults = default_map(tomllib.loads(example.group(1)), cli.commands, "docs/cli.md")
    assert defaults["worker"]["labels"] == ["gpu", "region=eu"]
    assert defaults["status"]["admin"] == "10.0.0.5:4222"

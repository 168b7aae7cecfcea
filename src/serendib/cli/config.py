"""The config file: ``serendib.toml`` in the working directory, or ``--config FILE``.

Read with :mod:`tomllib` into Click's ``default_map``: a top-level key applies to every
command that has the option, a ``[command]`` table to that command only (and wins over the
top level). Keys are the flags without their dashes (``log-level`` or ``log_level``); a key
no command has is an error naming it. The command line wins over the environment
(``SERENDIB_<FLAG>``), which wins over the file, which wins over the defaults::

    workspace = "prod"            # every command with --workspace
    admin = "10.0.0.5:4222"       # every client and worker

    [admin]
    store = "postgresql://serendib@db/serendib"
    dashboard = "0.0.0.0:8080"

    [worker]
    skill = "general=9,python=9"  # or a table: skill = {general = 9, python = 9}
    handler = ["primes:primes"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

__all__ = ["CONFIG_FILE", "ConfigError", "default_map", "load_defaults"]

CONFIG_FILE = "serendib.toml"


class ConfigError(click.UsageError):
    """A config file that cannot be read, or with a key no command takes (exit 2)."""


def _keys(command: click.Command) -> dict[str, str]:
    """The config keys of a command's options (flags without dashes, ``_`` for ``-``) and
    the parameter each sets."""
    found: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name is not None:
            for flag in param.opts:
                if flag.startswith("--"):
                    found[flag[2:].replace("-", "_")] = param.name
    return found


def default_map(
    config: Mapping[str, Any], commands: Mapping[str, click.Command], source: str
) -> dict[str, dict[str, Any]]:
    """Click's ``default_map`` for a group of ``commands`` from a parsed config file.

    Raises:
        ConfigError: A key that is no option of any command (top level) or of its command
            (in its table), naming the key and the file.
    """
    keys = {name: _keys(command) for name, command in commands.items()}
    shared: dict[str, Any] = {}
    sections: dict[str, Mapping[str, Any]] = {}
    for key, value in config.items():
        name = key.replace("-", "_")
        if key in commands and isinstance(value, Mapping):
            sections[key] = value
        elif any(name in known for known in keys.values()):
            shared[name] = value
        else:
            raise ConfigError(f"{source}: unknown key {key!r}: no command has --{key}")
    defaults: dict[str, dict[str, Any]] = {}
    for command, known in keys.items():
        found = {known[name]: value for name, value in shared.items() if name in known}
        for key, value in sections.get(command, {}).items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in [{command}]: "
                    f"'serendib {command}' has no --{key}"
                )
            found[known[name]] = value
        if found:
            defaults[command] = _as_given(commands[command], found)
    return defaults


def _as_given(command: click.Command, found: dict[str, Any]) -> dict[str, Any]:
    """A repeatable option given one value (``label = "gpu"``) as a list of one, as its
    flag would be given once on the command line."""
    repeatable = {
        param.name for param in command.params if isinstance(param, click.Option) and param.multiple
    }
    return {
        name: [value] if name in repeatable and isinstance(value, str | int | float) else value
        for name, value in found.items()
    }


def load_defaults(
    path: Path | None, commands: Mapping[str, click.Command]
) -> dict[str, dict[str, Any]] | None:
    """The ``default_map`` of the config file at ``path``, or of ``serendib.toml`` in the
    working directory if there is one (None when there is no file).

    Raises:
        ConfigError: The file cannot be read or parsed, or has a key no command takes.
    """
    if path is None:
        path = Path(CONFIG_FILE)
        if not path.is_file():
            return None
    try:
        with path.open("rb") as file:
            config = tomllib.load(file)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return default_map(config, commands, str(path))

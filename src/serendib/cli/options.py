"""What the ``serendib`` commands share: exit codes, defaults, parameter types, the options
declared once (connection, logging, ``--json``), how a command is declared, and the signal
handling of long-running commands. Imported by every module of :mod:`serendib.cli`; it
imports none of them.

Every option can also come from the environment variable ``SERENDIB_<FLAG>`` (``--log-level``
→ ``SERENDIB_LOG_LEVEL``) and from the config file (:mod:`serendib.cli.config`); the command
line wins over the environment, which wins over the file, which wins over the default.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import signal
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from loguru import logger
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from serendib import errors
from serendib._logging import configure_logging, logs_through
from serendib.errors import RemoteError, SerendibError, StoreError, TaskError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_WORKSPACE",
    "ENV_PREFIX",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LOST_LEAD",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "Address",
    "CommandFailed",
    "Link",
    "Skills",
    "command",
    "envvar",
    "json_option",
    "link_options",
    "option",
    "progress_bar",
    "remote_failure",
    "run_until_signalled",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_LOST_LEAD = 4
"""``serendib admin --standby`` stopped because another admin took the lead over."""
DEFAULT_WORKSPACE = "serendib"
DEFAULT_PORT = 4222
ENV_PREFIX = "SERENDIB_"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")

Callback = Callable[..., int]


class CommandFailed(Exception):
    """A command ends with ``code`` and one line for the user (logged by ``main``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- parameter types --------------------------------------------------------------------------


if TYPE_CHECKING:  # generic in the Click that types are checked with, not in every 8.x
    _AddressType = click.ParamType[tuple[str, int], Any]
    _SkillsType = click.ParamType[dict[str, int], Any]
    _KeyValueType = click.ParamType[tuple[str, float], Any]
    _BackoffType = click.ParamType[Any, Any]
else:
    _AddressType = _SkillsType = _KeyValueType = _BackoffType = click.ParamType


class Address(_AddressType):
    """``HOST:PORT`` (or ``PORT``, on 127.0.0.1) → ``(host, port)``."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value)
        host, _, port = text.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            self.fail(f"expected HOST:PORT, got {text!r}", param, ctx)
        if not 0 < number < 65536:
            self.fail(f"port out of range in {text!r}", param, ctx)
        return host or "127.0.0.1", number


class Skills(_SkillsType):
    """``7`` → ``{"general": 7}``; ``python=7,sql=3`` → both named skills (a config file may
    also give a table, ``skill = {python = 7}``)."""

    name = "SKILLS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if isinstance(value, Mapping):
                return {str(name): int(level) for name, level in value.items()}
            text = str(value)
            if "=" not in text:
                return {"general": int(text)}
            skills = {}
            for part in text.split(","):
                name, _, level = part.partition("=")
                skills[name.strip()] = int(level)
            return skills
        except (TypeError, ValueError):
            self.fail(
                f"expected a level (7) or name=level pairs (python=7,sql=3), got {value!r}",
                param,
                ctx,
            )


class KeyValue(_KeyValueType):
    """``KEY=N`` → ``(key, n)``: a limit or a rate per concurrency key.

    Args:
        integer: N must be a whole number (at least 1); else any number above 0.
    """

    name = "KEY=N"

    def __init__(self, integer: bool) -> None:
        self.integer = integer

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, _, number = str(value).partition("=")
        try:
            amount: float = int(number) if self.integer else float(number)
        except ValueError:
            amount = 0
        if not key or amount <= 0 or amount == float("inf") or amount != amount:
            what = "a whole number of at least 1" if self.integer else "a number above 0"
            self.fail(f"expected KEY=N with N {what}, got {value!r}", param, ctx)
        return key, amount


class BackoffSpec(_BackoffType):
    """``BASE[,FACTOR[,JITTER[,MAX]]]`` → a :class:`~serendib.tasks.models.Backoff`
    (seconds, multiplier, fraction, seconds)."""

    name = "BASE[,FACTOR[,JITTER[,MAX]]]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pydantic import ValidationError

        from serendib.tasks.models import Backoff

        if isinstance(value, Backoff):
            return value
        fields = ("base_s", "factor", "jitter", "max_s")
        parts = [p.strip() for p in str(value).split(",")]
        try:
            if len(parts) > len(fields):
                raise ValueError("too many parts")
            return Backoff(**{f: float(p) for f, p in zip(fields, parts, strict=False)})
        except (ValueError, ValidationError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            self.fail(
                f"expected BASE[,FACTOR[,JITTER[,MAX]]] such as 1,2,0.1 ({reason}), got {value!r}",
                param,
                ctx,
            )


# --- options ----------------------------------------------------------------------------------


def envvar(flag: str) -> str:
    """The environment variable of an option: ``--log-level`` → ``SERENDIB_LOG_LEVEL``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


class _Option(click.Option):
    """An option whose errors say where the bad value came from: the command line, the
    environment variable or the config file."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = " / ".join(f"'{flag}'" for flag in self.opts)
        source = ctx.get_parameter_source(self.name) if ctx and self.name else None
        if source is ParameterSource.ENVIRONMENT:
            hint += f" (from ${self.envvar})"
        elif source is ParameterSource.DEFAULT_MAP:
            hint += " (from the config file)"
        return hint


def option(flag: str, *names: str, **attrs: Any) -> Callable[[Callback], Callback]:
    """``click.option`` with the environment variable ``SERENDIB_<FLAG>``, shown in ``--help``
    with the default (pass ``show_default=False`` for secrets)."""
    attrs.setdefault("cls", _Option)
    attrs.setdefault("envvar", envvar(flag))
    attrs.setdefault("show_envvar", True)
    attrs.setdefault("show_default", True)
    return click.option(flag, *names, **attrs)


def json_option(callback: Callback) -> Callback:
    """``--json``: machine-readable output (the command's ``as_json`` argument)."""
    return option("--json", "as_json", is_flag=True, help="machine-readable output (JSON)")(
        callback
    )


@dataclass(frozen=True)
class Link:
    """Where the workspace is and how to join it: the connection options of a command."""

    workspace: str = DEFAULT_WORKSPACE
    admin: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT)
    nats: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    heartbeat: float = 1.0

    def nats_options(self) -> Any:
        """The ``NatsOptions`` the credential options describe, or None when none is given."""
        if not (self.user or self.password or self.creds or self.tls_ca):
            return None
        from serendib.transports.nats import NatsOptions

        return NatsOptions(
            user=self.user, password=self.password, creds_file=self.creds, tls_ca=self.tls_ca
        )


_LINK_FIELDS = ("workspace", "admin", "nats", "token", "user", "password", "creds", "tls_ca")


class _Workspaces(_Option):
    """A repeatable ``--workspace``: a config file's single name (``workspace = "prod"``, the
    key every command shares) or several separated by spaces is taken as a list."""

    def type_cast_value(self, ctx: click.Context, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split()
        return super().type_cast_value(ctx, value)


def _link_options(
    address: bool, heartbeat: bool, workspaces: bool = False
) -> list[Callable[[Callback], Callback]]:
    found: list[Callable[[Callback], Callback]] = []
    if address:
        found += [
            option(
                "--admin",
                type=Address(),
                default=f"127.0.0.1:{DEFAULT_PORT}",
                help="where the admin's NATS server listens",
            ),
            option("--nats", metavar="URL", help="NATS URL (instead of --admin)"),
        ]
    found += [
        option(
            "--workspace",
            cls=_Workspaces,
            multiple=True,
            default=(DEFAULT_WORKSPACE,),
            help="workspace to join; repeatable: one process serving several",
        )
        if workspaces
        else option("--workspace", default=DEFAULT_WORKSPACE, help="workspace to join"),
        option("--token", show_default=False, help="NATS auth token"),
        option("--user", help="NATS user name"),
        option("--password", show_default=False, help="NATS password"),
        option("--creds", metavar="FILE", help="NATS .creds file"),
        option("--tls-ca", metavar="FILE", help="CA to verify the NATS server with"),
    ]
    if heartbeat:
        found.append(
            option(
                "--heartbeat",
                type=float,
                default=1.0,
                metavar="SECONDS",
                help="heartbeat interval; an agent silent for 3 of them is lost "
                "(a worker: suspect)",
            )
        )
    return found


def link_options(
    *, address: bool = True, heartbeat: bool = True, workspaces: bool = False
) -> Callable[[Callback], Callback]:
    """The connection options, given to the command as one ``link`` (a :class:`Link`).

    Args:
        address: Add ``--admin HOST:PORT`` and ``--nats URL`` (the admin declares its own
            ``--nats``, which goes in the link too).
        heartbeat: Add ``--heartbeat`` (agents that stay; clients ask once and leave).
        workspaces: ``--workspace`` is repeatable: the command gets them all as
            ``workspaces`` (a tuple, in order, without repeats), and the link the first.
    """

    def decorate(callback: Callback) -> Callback:
        @functools.wraps(callback)
        def with_link(**kwargs: Any) -> int:
            fields = {name: kwargs.pop(name) for name in _LINK_FIELDS if name in kwargs}
            if "heartbeat" in kwargs:
                fields["heartbeat"] = kwargs.pop("heartbeat")
            if workspaces:
                names = tuple(dict.fromkeys(fields["workspace"])) or (DEFAULT_WORKSPACE,)
                fields["workspace"] = names[0]
                kwargs["workspaces"] = names
            return callback(link=Link(**fields), **kwargs)

        decorated: Callback = with_link
        for add in reversed(_link_options(address, heartbeat, workspaces)):
            decorated = add(decorated)
        return decorated

    return decorate


def _example_text(examples: Sequence[str]) -> str:
    # \b keeps Click from rewrapping the lines.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)


def _help_order(param: click.Parameter) -> int:
    """The command's own parameters first, then the connection, ``--json``, the logging."""
    if param.name in (*_LINK_FIELDS, "heartbeat"):
        return 1
    return {"as_json": 2, "log_level": 3, "log_json": 3}.get(param.name or "", 0)


def command(
    name: str, *, examples: Sequence[str], logs: bool = True
) -> Callable[[Callback], click.Command]:
    """A ``serendib`` command: its docstring is its help, ``examples`` its help's epilog.

    Args:
        name: The command's name.
        examples: Command lines shown under "Examples:" in ``--help``.
        logs: Add ``--log-level`` and ``--log-json`` and set logging up before running.
    """

    def decorate(callback: Callback) -> click.Command:
        body = callback
        if logs:

            @functools.wraps(callback)
            def logged(*, log_level: str, log_json: bool, **kwargs: Any) -> int:
                configure_logging(log_level, log_json)
                return callback(**kwargs)

            body = option(
                "--log-json", is_flag=True, help="structured logs: one JSON object per line"
            )(logged)
            body = option(
                "--log-level",
                type=click.Choice(LOG_LEVELS, case_sensitive=False),
                metavar=f"[{'|'.join(LOG_LEVELS)}]",
                default="INFO",
                help="lowest level logged (any case)",
            )(body)
        made = click.command(name, epilog=_example_text(examples))(body)
        made.params.sort(key=_help_order)
        return made

    return decorate


# --- errors from the manager ------------------------------------------------------------------


def remote_failure(error: RemoteError) -> CommandFailed:
    """What a command reports when the manager's handler raised: its message, and exit 2 for
    the user's mistakes (an unknown task id, bad input), 3 for the manager's store failing, 1
    otherwise.

    The reply carries the error as ``"TypeName: message"`` (``RequestFailed``, sent by
    :meth:`serendib.agent.Agent._dispatch`); the type is looked up among Serendib's errors and
    the built-in exceptions.
    """
    kind, sep, message = error.error.partition(": ")
    known = getattr(errors, kind, None) or getattr(builtins, kind, None)
    if not sep or not (isinstance(known, type) and issubclass(known, BaseException)):
        return CommandFailed(str(error), EXIT_FAILED)
    if issubclass(known, StoreError):
        return CommandFailed(message, EXIT_UNREACHABLE)
    if issubclass(known, TaskError | ValueError | KeyError):
        return CommandFailed(message, EXIT_USAGE)
    return CommandFailed(str(error), EXIT_FAILED)


# --- progress ---------------------------------------------------------------------------------


@contextmanager
def progress_bar(total: int, visible: bool = True) -> Iterator[tuple[Progress, TaskID]]:
    """A bar of ``total`` tasks on stderr (on a terminal and if ``visible``); while it is
    live, log lines are printed above it by its console, not into it."""
    console = Console(stderr=True)
    live = visible and console.is_terminal
    progress = Progress(
        TextColumn("[bold]tasks"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
    )
    with progress, logs_through(console if live else None):
        yield progress, progress.add_task("tasks", total=total)


# --- long-running commands --------------------------------------------------------------------


async def run_until_signalled(main: Coroutine[Any, Any, int], stop: Callable[[], None]) -> int:
    """Run ``main``; SIGINT/SIGTERM call ``stop`` (a second signal cancels ``main``).

    Returns:
        ``main``'s exit code, or 130 after a signal.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    signalled = 0

    def on_signal() -> None:
        nonlocal signalled
        signalled += 1
        if signalled == 1:
            logger.info("stopping (signal again to force)")
            stop()
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        code = await task
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    except SerendibError as e:
        if not signalled:
            raise
        # Stopped while starting (joining, connecting): the failure is the stop's doing.
        logger.debug("interrupted while starting: {}", e)
        return EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_INTERRUPTED if signalled and code == EXIT_OK else code

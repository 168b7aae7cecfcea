"""The ``serendib`` command: run an admin, join workers, submit and inspect tasks.

Built on Click. The modules: :mod:`~serendib.cli.options` (exit codes, parameter types, the
shared options, how a command is declared), :mod:`~serendib.cli.config` (the config file),
:mod:`~serendib.cli.client` (``submit``, ``status``, ``tasks``, ``task``, ``cancel``,
``report``) and :mod:`~serendib.cli.run` (``admin``, ``worker``, ``demo``); this one puts
them together with ``completion``, ``--version`` and ``--config``, and maps errors to exit
codes. Every option also comes from ``SERENDIB_<FLAG>`` and from the config file; the
command line wins, then the environment, then the file, then the default (docs/cli.md).

Exit codes: 0 done (every task succeeded, for runs that report), 1 a run ended with failed
tasks, 2 bad usage or input (an unknown task id, a bad task or config file, an option's
value), 3 cannot reach the admin / broker / store or serve the dashboard, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import click
from click.shell_completion import get_completion_class
from loguru import logger

from serendib.cli import client, run
from serendib.cli.config import CONFIG_FILE, load_defaults
from serendib.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandFailed,
    command,
)
from serendib.errors import (
    AdminUnreachable,
    BrokerStartError,
    ConnectionFailed,
    DashboardError,
    DuplicateAgentName,
    MessageTooLarge,
    RequestTimeout,
    SerendibError,
    StoreError,
    StoreNotFound,
    TaskError,
)

__all__ = ["COMPLETE_VAR", "cli", "main"]

COMPLETE_VAR = "_SERENDIB_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.group(
    context_settings={
        "show_default": True,
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
    },
    epilog="\b\nExamples:\n  serendib demo\n  serendib admin --help\n"
    "  serendib --config prod.toml status\n\n"
    "Every option also comes from SERENDIB_<OPTION> (SERENDIB_LOG_LEVEL) and from "
    f"{CONFIG_FILE}; see docs/cli.md.",
)
@click.version_option(package_name="serendib", prog_name="serendib", message="%(prog)s %(version)s")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SERENDIB_CONFIG",
    show_envvar=True,
    help=f"config file (TOML) of option defaults [default: ./{CONFIG_FILE} if there is one]",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Distributed multi-agent task management."""
    ctx.default_map = load_defaults(config, cast(click.Group, ctx.command).commands)


@command(
    "completion",
    logs=False,
    examples=[
        'eval "$(serendib completion bash)"     # in ~/.bashrc',
        'eval "$(serendib completion zsh)"      # in ~/.zshrc',
        "serendib completion fish > ~/.config/fish/completions/serendib.fish",
    ],
)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the shell completion script for SHELL (Click's; the same as
    _SERENDIB_COMPLETE=SHELL_source serendib)."""
    root = click.get_current_context().find_root().command
    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(root, {}, "serendib", COMPLETE_VAR).source())
    return EXIT_OK


for _command in [*run.COMMANDS, *client.COMMANDS, completion]:
    cli.add_command(_command)


def _usage_error(error: click.ClickException) -> None:
    """One line: where, what is wrong, where to read more."""
    where = "serendib"
    if isinstance(error, click.UsageError) and error.ctx is not None:
        where = error.ctx.command_path
    message = " ".join(error.format_message().split())
    click.echo(f"{where}: error: {message} (see '{where} --help')", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``serendib`` command.

    Returns:
        The process exit code.
    """
    try:
        code = cli.main(
            args=argv,
            prog_name="serendib",
            complete_var=COMPLETE_VAR,
            standalone_mode=False,
        )
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()
        return EXIT_USAGE
    except click.ClickException as e:  # a bad option, argument or config file
        _usage_error(e)
        return EXIT_USAGE
    except click.Abort:
        return EXIT_INTERRUPTED
    except CommandFailed as e:  # the manager's answer: an unknown task id, ...
        logger.error("{}", e)
        return e.code
    except StoreNotFound as e:  # a reader pointed at no store: the user's to fix
        logger.error("{}", e)
        return EXIT_USAGE
    except (
        AdminUnreachable,
        BrokerStartError,
        ConnectionFailed,
        DashboardError,
        RequestTimeout,
        StoreError,
    ) as e:  # nothing answers, or not in time
        logger.error("{}", e)
        return EXIT_UNREACHABLE
    except (DuplicateAgentName, TaskError, ValueError) as e:
        logger.error("{}", e)  # InvalidTaskFile among them: the file, the entry, the reason
        return EXIT_USAGE
    except MessageTooLarge as e:
        # Too much input for one message (a large task file): the user's to fix, not a fault.
        logger.error("{}: split the input (the task file) into smaller files", e)
        return EXIT_USAGE
    except SerendibError as e:
        logger.error("{}", e)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``serendib`` command: run an admin, join workers, submit and inspect tasks.

Exit codes: 0 done (every task succeeded, for runs that report), 1 a run ended with failed
tasks, 2 bad usage or input, 3 cannot reach the admin / broker / store, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from loguru import logger

from serendib._gc import tune_gc
from serendib._logging import configure_logging
from serendib.errors import (
    AdminUnreachable,
    BrokerStartError,
    ConnectionFailed,
    DashboardError,
    DuplicateAgentName,
    MessageTooLarge,
    SerendibError,
    StoreError,
    TaskError,
)

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_WORKSPACE = "serendib"
DEFAULT_PORT = 4222


def parse_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``PORT``) into its parts.

    Raises:
        argparse.ArgumentTypeError: Not an address.
    """
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"port out of range in {value!r}")
    return host or "127.0.0.1", number


def parse_skills(value: str) -> dict[str, int]:
    """``7`` → ``{"general": 7}``; ``python=7,sql=3`` → both named skills.

    Raises:
        argparse.ArgumentTypeError: Not a level or a list of name=level.
    """
    try:
        if "=" not in value:
            return {"general": int(value)}
        skills = {}
        for part in value.split(","):
            name, _, level = part.partition("=")
            skills[name.strip()] = int(level)
        return skills
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a level (7) or name=level pairs (python=7,sql=3), got {value!r}"
        ) from None


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="workspace to join")
    parser.add_argument("--token", default=None, help="NATS auth token (default: $SERENDIB_TOKEN)")
    parser.add_argument("--user", default=None, help="NATS user name")
    parser.add_argument("--password", default=None, help="NATS password")
    parser.add_argument("--creds", default=None, metavar="FILE", help="NATS .creds file")
    parser.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="CA to verify the NATS server with"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="heartbeat interval; an agent silent for 3 of them is lost (a worker: suspect)",
    )


def nats_options(args: argparse.Namespace) -> Any:
    """The ``NatsOptions`` the credential flags describe, or ``None`` when none is given."""
    user, password = getattr(args, "user", None), getattr(args, "password", None)
    creds, tls_ca = getattr(args, "creds", None), getattr(args, "tls_ca", None)
    if not (user or password or creds or tls_ca):
        return None
    from serendib.transports.nats import NatsOptions

    return NatsOptions(user=user, password=password, creds_file=creds, tls_ca=tls_ca)


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", help="TRACE, DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="structured (JSON) logs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="serendib", description="Distributed multi-agent task management."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from serendib import _cli_tasks

    admin = commands.add_parser("admin", help="run a task manager that workers join")
    admin.add_argument("--port", type=int, default=DEFAULT_PORT, help="embedded NATS port")
    admin.add_argument(
        "--host", default="127.0.0.1", help="interface the embedded NATS server binds to"
    )
    admin.add_argument("--nats", default=None, help="use this NATS URL instead of embedding one")
    admin.add_argument(
        "--tls-cert", default=None, metavar="FILE", help="embedded NATS: serve TLS with this"
    )
    admin.add_argument("--tls-key", default=None, metavar="FILE", help="embedded NATS: its key")
    _connection_args(admin)
    _common_args(admin)
    _cli_tasks.admin_args(admin)
    admin.set_defaults(run=_cli_tasks.run_admin)

    worker = commands.add_parser("worker", help="run a worker that joins an admin")
    worker.add_argument("--name", required=True, help="unique name in the workspace")
    worker.add_argument(
        "--skill", type=parse_skills, default={"general": 5}, help="level (7) or python=7,sql=3"
    )
    worker.add_argument("--capacity", type=int, default=1, help="tasks run at once")
    worker.add_argument(
        "--admin",
        type=parse_address,
        default=("127.0.0.1", DEFAULT_PORT),
        metavar="HOST:PORT",
        help="where the admin's NATS server listens",
    )
    worker.add_argument("--nats", default=None, help="NATS URL (instead of --admin)")
    worker.add_argument(
        "--handler",
        action="append",
        default=[],
        metavar="[KIND=]MODULE:FUNCTION",
        help="task handler to load (repeatable)",
    )
    worker.add_argument("--time-scale", type=float, default=1.0, help="simulate: seconds/level")
    worker.add_argument(
        "--identity",
        default=None,
        metavar="FILE",
        help="file keeping this worker's identity on the admin's server (created if missing; "
        "default: $XDG_STATE_HOME/serendib/WORKSPACE/NAME.nk); restarted with it, the worker "
        "takes its own place at once",
    )
    _connection_args(worker)
    _common_args(worker)
    worker.set_defaults(run=_cli_tasks.run_worker)

    _cli_tasks.add_task_commands(commands, _common_args)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``serendib`` command.

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    if args.command in ("admin", "worker", "demo"):
        tune_gc()
    try:
        code: int = args.run(args)
    except (AdminUnreachable, BrokerStartError, ConnectionFailed, DashboardError, StoreError) as e:
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
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

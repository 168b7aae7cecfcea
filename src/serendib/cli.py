"""The ``serendib`` command: run an admin, join workers, submit and inspect tasks.

Exit codes: 0 done (every task succeeded, for runs that report), 1 a run ended with failed
tasks, 2 bad usage or input, 3 cannot reach the admin / broker / store, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from loguru import logger

from serendib import _cli_tasks
from serendib._cli_common import (
    DEFAULT_PORT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    address_args,
    common_args,
    connection_args,
    parse_skills,
)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="serendib", description="Distributed multi-agent task management."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    connection_args(admin)
    common_args(admin)
    _cli_tasks.admin_args(admin)
    admin.set_defaults(run=_cli_tasks.run_admin)

    worker = commands.add_parser("worker", help="run a worker that joins an admin")
    worker.add_argument("--name", required=True, help="unique name in the workspace")
    worker.add_argument(
        "--skill", type=parse_skills, default={"general": 5}, help="level (7) or python=7,sql=3"
    )
    worker.add_argument("--capacity", type=int, default=1, help="tasks run at once")
    address_args(worker)
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
    connection_args(worker)
    common_args(worker)
    worker.set_defaults(run=_cli_tasks.run_worker)

    _cli_tasks.add_task_commands(commands, common_args)
    return parser


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

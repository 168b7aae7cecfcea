"""What the ``serendib`` commands share: exit codes, defaults, argument types, connection
flags and the signal handling of long-running commands. Imported by :mod:`serendib.cli` and
the modules of its commands; it imports none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

from serendib.errors import SerendibError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_WORKSPACE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "address_args",
    "common_args",
    "connection_args",
    "nats_options",
    "parse_address",
    "parse_skills",
    "run_until_signalled",
]

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


def address_args(parser: argparse.ArgumentParser) -> None:
    """``--admin HOST:PORT`` and ``--nats URL``: where to reach the admin."""
    parser.add_argument(
        "--admin",
        type=parse_address,
        default=("127.0.0.1", DEFAULT_PORT),
        metavar="HOST:PORT",
        help="where the admin's NATS server listens",
    )
    parser.add_argument("--nats", default=None, help="NATS URL (instead of --admin)")


def connection_args(parser: argparse.ArgumentParser, *, heartbeat: bool = True) -> None:
    """The workspace and the NATS credentials (and, for agents that stay, the heartbeat)."""
    parser.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="workspace to join")
    parser.add_argument("--token", default=None, help="NATS auth token (default: $SERENDIB_TOKEN)")
    parser.add_argument("--user", default=None, help="NATS user name")
    parser.add_argument("--password", default=None, help="NATS password")
    parser.add_argument("--creds", default=None, metavar="FILE", help="NATS .creds file")
    parser.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="CA to verify the NATS server with"
    )
    if not heartbeat:
        return
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


def common_args(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-json``."""
    parser.add_argument("--log-level", default="INFO", help="TRACE, DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="structured (JSON) logs")


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

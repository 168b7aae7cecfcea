"""Log set-up for the command line (library code never configures sinks)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["configure_logging", "logs_through"]

_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"

_configured: tuple[int, str, bool] | None = None
"""The sink :func:`configure_logging` added: its id, level and whether it writes JSON."""


def _add(sink: Any, level: str, json: bool, **colour: Any) -> int:
    if json:
        return logger.add(sink, level=level, serialize=True)
    return logger.add(sink, level=level, format=_FORMAT, backtrace=False, diagnose=False, **colour)


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Send logs to stderr: readable lines, or one JSON object per line with ``json``.

    Args:
        level: Lowest level shown (TRACE, DEBUG, INFO, WARNING, ERROR).
        json: Structured logs for machines.
    """
    global _configured
    logger.remove()
    level = level.upper()
    _configured = (_add(sys.stderr, level, json), level, json)


@contextmanager
def logs_through(console: Console | None) -> Iterator[None]:
    """While in the block, print the log lines :func:`configure_logging` set up through
    ``console`` (a live progress bar's: each line is printed above the bar, not into it);
    afterwards, to stderr again. Nothing changes for ``None`` or before logging is set up.
    """
    global _configured
    if console is None or _configured is None:
        yield
        return
    from rich.text import Text

    def show(message: Any) -> None:
        console.print(Text.from_ansi(str(message).rstrip("\n")), soft_wrap=True)

    handler, level, json = _configured
    logger.remove(handler)
    through = _add(show, level, json, colorize=True)
    try:
        yield
    finally:
        logger.remove(through)
        _configured = (_add(sys.stderr, level, json), level, json)

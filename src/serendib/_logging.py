"""Log set-up for the command line (library code never configures sinks)."""

from __future__ import annotations

import sys

from loguru import logger

__all__ = ["configure_logging"]

_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Send logs to stderr: readable lines, or one JSON object per line with ``json``.

    Args:
        level: Lowest level shown (TRACE, DEBUG, INFO, WARNING, ERROR).
        json: Structured logs for machines.
    """
    logger.remove()
    if json:
        logger.add(sys.stderr, level=level.upper(), serialize=True)
    else:
        logger.add(sys.stderr, level=level.upper(), format=_FORMAT, backtrace=False, diagnose=False)

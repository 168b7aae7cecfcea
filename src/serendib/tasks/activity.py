"""Log lines about tasks that people can follow, at any rate of tasks.

A worker logs each task it receives and finishes, the manager each submission and each final
outcome. At a few tasks a second that is one line each; at thousands it would bury everything
else and cost more than the tasks, so past a budget of lines per second the rest are counted
and logged as one summary line per second instead ("... and 9,812 more in the last 1.0s:
succeeded 9,800, failed 12"). Every line carries its facts as structured fields
(``logger.bind``), which ``--log-json`` prints.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loguru import logger

__all__ = ["ActivityLog"]

WINDOW_S = 1.0


class ActivityLog:
    """Task events for one agent's log: one line each up to ``per_second``, then a summary.

    Args:
        owner: The agent's name, at the head of each line.
        per_second: Lines logged one by one in each second before summarising.
    """

    def __init__(self, owner: str, per_second: int = 20) -> None:
        self.owner = owner
        self.per_second = per_second
        self._window_end = 0.0
        self._lines = 0
        self._held: dict[str, int] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._warn = False  # a held event was above INFO: the summary is a warning

    def held(self, outcome: str, level: str = "INFO") -> bool:
        """Count an event under ``outcome`` for the summary if this second's budget is
        spent (True: the caller logs nothing, and builds nothing to log). Busy, this is all
        an event costs."""
        now = time.monotonic()
        if now >= self._window_end:
            self._roll(now)
        if self._lines < self.per_second:
            return False
        self._held[outcome] = self._held.get(outcome, 0) + 1
        if level != "INFO":
            self._warn = True
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return True
            self._flush = loop.call_later(max(self._window_end - now, 0.0), self._summarise)
        return True

    def event(
        self, outcome: str, message: str, *args: Any, level: str = "INFO", **fields: Any
    ) -> None:
        """Log ``message`` (formatted with ``args``) with ``fields``, or count it under
        ``outcome`` for the summary when this second's budget is spent."""
        if self.held(outcome, level):
            return
        self._lines += 1
        logger.bind(owner=self.owner, outcome=outcome, **fields).log(
            level, "{}: " + message, self.owner, *args
        )

    def _roll(self, now: float) -> None:
        self._summarise()
        self._window_end = now + WINDOW_S
        self._lines = 0

    def _summarise(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._held:
            return
        held, self._held = self._held, {}
        level, self._warn = ("WARNING" if self._warn else "INFO"), False
        total = sum(held.values())
        counts = ", ".join(f"{outcome} {n:,}" for outcome, n in sorted(held.items()))
        logger.bind(owner=self.owner, summary=held).log(
            level,
            "{}: ... and {:,} more task events in the last {:g}s: {}",
            self.owner,
            total,
            WINDOW_S,
            counts,
        )

    def close(self) -> None:
        """Log what is held now."""
        self._summarise()

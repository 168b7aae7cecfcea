"""Counting and rate-limited logging of dropped (bad) input.

Every dropped message is counted by reason; the first few of each reason in a window are
logged at WARNING as one line naming the sender (when the envelope named a valid one) and the
reason, the rest at TRACE, so a flood cannot flood the log. The message itself is never
logged, and the reason is made safe for a log line (:func:`serendib.limits.safe_text`).
"""

from __future__ import annotations

import time
from collections import Counter

from loguru import logger

from serendib.errors import MessageError
from serendib.limits import safe_text

__all__ = ["DropLog"]


class DropLog:
    """Counts dropped messages by reason and logs them without flooding.

    Args:
        owner: Name of the agent that dropped them, for the log.
        burst: Drops of one reason logged at WARNING per window.
        window_s: Length of the rate-limit window.
    """

    def __init__(self, owner: str, burst: int = 5, window_s: float = 60.0) -> None:
        self.owner = owner
        self.counts: Counter[str] = Counter()
        self._burst = burst
        self._window_s = window_s
        self._window_start = time.monotonic()
        self._in_window: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Messages dropped so far."""
        return sum(self.counts.values())

    def record(self, error: Exception, raw: bytes | None = None) -> None:
        """Count and (rate-limited) log one dropped message.

        Args:
            error: Why it was dropped; its class name is the counted reason (a
                :class:`~serendib.errors.MessageError` names its sender).
            raw: The bytes dropped; only their size is logged.
        """
        reason = type(error).__name__
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self._window_start > self._window_s:
            self._window_start = now
            self._in_window.clear()
        self._in_window[reason] += 1
        seen = self._in_window[reason]
        level = "WARNING" if seen <= self._burst else "TRACE"
        sender = error.sender if isinstance(error, MessageError) else None
        size = "" if raw is None else f" ({len(raw)} bytes)"
        logger.log(
            level,
            "{}: dropped a message from {}{}: {}",
            self.owner,
            sender or "an unknown sender",
            size,
            safe_text(str(error), 300),
        )
        if seen == self._burst:
            logger.warning(
                "{}: further {} drops in the next {:.0f}s are logged at TRACE level only",
                self.owner,
                reason,
                self._window_s,
            )

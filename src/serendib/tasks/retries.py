"""Retry and escalation policy: what becomes of a task after an attempt ends without success.

Pure functions, the one place a reader finds the rules (the manager's book applies them):

- A **failed** or **timed-out** attempt is retried while the task has attempts left
  (``max_attempts``, counting every attempt made); the retry must go to a worker more skilled
  in the task's skill than the one that failed, when one is connected (*escalation*), else
  to any eligible worker. With no attempts left the task fails with the last error.
- An attempt **lost** (its worker left, restarted or was silent past its grace; its message
  was lost; the manager restarted and nobody claimed it) says nothing about the task: it goes
  back to the queue as it was, without using up an attempt's verdict or escalating.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Retry", "after_failure", "after_timeout", "retry_level"]


class Retry(NamedTuple):
    """The verdict on a task whose attempt failed or timed out.

    Attributes:
        again: Whether it is tried again (else it fails with ``error``).
        error: The task's error if it fails now; the attempt's error otherwise.
        reason: Why it waits again, for people (when ``again``).
    """

    again: bool
    error: str
    reason: str


def after_failure(attempt: int, max_attempts: int, worker: str, error: str) -> Retry:
    """The verdict after attempt number ``attempt`` failed on ``worker`` with ``error``."""
    if attempt >= max_attempts:
        return Retry(False, f"{error} (after {attempt} attempts)", "")
    return Retry(True, error, f"retrying after failure on {worker}: {error}")


def after_timeout(attempt: int, max_attempts: int, worker: str, timeout_s: float) -> Retry:
    """The verdict after attempt number ``attempt`` ran past ``timeout_s`` on ``worker``."""
    error = f"no result within {timeout_s:g}s on {worker}"
    if attempt >= max_attempts:
        return Retry(False, error, "")
    return Retry(True, error, f"timed out on {worker}; retrying")


def retry_level(difficulty: int, failed_level: int | None, best_level: int) -> tuple[int, bool]:
    """The level a retry needs, and whether that is an escalation.

    Args:
        difficulty: The task's difficulty (the least level it ever needs).
        failed_level: The level of the worker whose attempt failed or timed out; None for a
            lost attempt (no escalation).
        best_level: The highest level connected in the task's skill.

    Returns:
        ``(level, escalated)``: above ``failed_level`` when a more skilled worker is
        connected, else the task's own difficulty.
    """
    if failed_level is not None and best_level > failed_level:
        return max(difficulty, failed_level + 1), True
    return difficulty, False

"""The retry and escalation policy, pure."""

from __future__ import annotations

from serendib.tasks.retries import after_failure, after_timeout, retry_level


def test_a_failure_is_retried_while_attempts_are_left_then_fails_with_the_count() -> None:
    again = after_failure(1, 3, "Junior", "too hard")
    assert (again.again, again.error) == (True, "too hard")
    assert again.reason == "retrying after failure on Junior: too hard"
    final = after_failure(3, 3, "Senior", "too hard")
    assert (final.again, final.error) == (False, "too hard (after 3 attempts)")


def test_a_timeout_is_retried_while_attempts_are_left() -> None:
    assert after_timeout(1, 2, "w", 1.5).again
    final = after_timeout(2, 2, "w", 1.5)
    assert (final.again, final.error) == (False, "no result within 1.5s on w")


def test_a_retry_escalates_above_the_failed_worker_when_someone_more_skilled_is_here() -> None:
    assert retry_level(3, failed_level=5, best_level=9) == (6, True)
    assert retry_level(7, failed_level=5, best_level=9) == (7, True)
    assert retry_level(3, failed_level=9, best_level=9) == (3, False)  # nobody better
    assert retry_level(3, failed_level=None, best_level=9) == (3, False)  # lost: no verdict

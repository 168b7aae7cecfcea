"""What happens to tasks, as a stream of events a manager's listeners receive.

The dashboard turns them into live updates and Prometheus metrics; anything else may
subscribe with :meth:`TaskManager.add_listener`. Listeners are called synchronously in the
manager's loop and must be quick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["EventKind", "Listener", "ManagerStats", "TaskEvent"]


class EventKind(StrEnum):
    """Kinds of :class:`TaskEvent`."""

    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    REQUEUED = "requeued"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STALE_RESULT = "stale_result"
    WORKER_JOINED = "worker_joined"
    WORKER_LEFT = "worker_left"


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One thing that happened.

    Attributes:
        kind: What happened.
        at: When (seconds since the epoch).
        task_id: The task concerned, if any.
        worker: The worker concerned, if any.
        attempt: The attempt number, if any.
        reason: Why (assignment reason, requeue cause, failure).
        escalated: For ASSIGNED: a retry given to a more skilled worker.
        wait_s: For ASSIGNED: seconds the task waited in the queue.
        run_s: For SUCCEEDED/FAILED: seconds from assignment to result.
    """

    kind: EventKind
    at: float
    task_id: str | None = None
    worker: str | None = None
    attempt: int = 0
    reason: str = ""
    escalated: bool = False
    wait_s: float | None = None
    run_s: float | None = None


Listener = Callable[[TaskEvent], None]


@dataclass(slots=True)
class ManagerStats:
    """Running counters of a manager since it started."""

    submitted: int = 0
    assignments: int = 0
    retries: int = 0
    escalations: int = 0
    requeued_lost: int = 0
    timeouts: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    stale_results: int = 0
    workers_lost: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)

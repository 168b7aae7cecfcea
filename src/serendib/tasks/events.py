"""What happens to tasks, as a stream of events a manager's listeners receive.

The dashboard turns them into live updates and Prometheus metrics; anything else may
subscribe with :meth:`TaskManager.add_listener`. Listeners are called synchronously in the
manager's loop and must be quick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loguru import logger

__all__ = ["EventBus", "EventKind", "Listener", "ManagerStats", "TaskEvent"]


class EventKind(StrEnum):
    """Kinds of :class:`TaskEvent`."""

    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    STARTED = "started"
    REQUEUED = "requeued"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ATTEMPT_ENDED = "attempt_ended"
    STALE_RESULT = "stale_result"
    WORKER_JOINED = "worker_joined"
    WORKER_LEFT = "worker_left"
    WORKER_CHANGED = "worker_changed"


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
        run_s: For SUCCEEDED/FAILED/ATTEMPT_ENDED: seconds from assignment to the end.
        outcome: For ATTEMPT_ENDED: how the attempt ended (an ``AttemptOutcome`` value).
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
    outcome: str | None = None


Listener = Callable[[TaskEvent], None]


class EventBus:
    """Listeners and the events sent to them; costs nothing while nobody listens."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Listener) -> None:
        """Call ``listener`` with every event from now on."""
        self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Send an event of ``kind`` to every listener; a failing listener is logged."""
        if not self._listeners:
            return
        event = TaskEvent(kind, time.time(), **fields)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as e:
                logger.opt(exception=e).error("{}: event listener failed", self._owner)


@dataclass(slots=True)
class ManagerStats:
    """Running counters of a manager since it started."""

    submitted: int = 0
    assignments: int = 0
    retries: int = 0
    replays: int = 0
    escalations: int = 0
    requeued_lost: int = 0
    assignments_resent: int = 0
    timeouts: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    stale_results: int = 0
    workers_lost: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)

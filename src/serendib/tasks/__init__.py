"""The task manager: skill-based assignment, retries, durable state and the report."""

from __future__ import annotations

from serendib.tasks.models import (
    DEFAULT_SKILL,
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskAssignment,
    TaskCancel,
    TaskProgress,
    TaskRecord,
    TaskResult,
    TaskState,
    WorkerInfo,
)

__all__ = [
    "DEFAULT_SKILL",
    "AttemptOutcome",
    "AttemptRecord",
    "Task",
    "TaskAssignment",
    "TaskCancel",
    "TaskProgress",
    "TaskRecord",
    "TaskResult",
    "TaskState",
    "WorkerInfo",
]

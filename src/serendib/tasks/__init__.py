"""The task manager: skill-based assignment, retries, durable state and the report."""

from __future__ import annotations

from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskAssignment, TaskCancel, TaskProgress, TaskResult
from serendib.tasks.models import (
    DEFAULT_SKILL,
    AttemptOutcome,
    AttemptRecord,
    Task,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.report import Report, build_report, render_report
from serendib.tasks.store import TaskStore, open_store
from serendib.tasks.taskfile import load_task_file, parse_tasks
from serendib.tasks.worker import TaskContext, TaskFailed, TaskHandler, WorkerAgent, simulate

__all__ = [
    # running tasks
    "TaskManager",
    "WorkerAgent",
    "TaskContext",
    "TaskFailed",
    "TaskHandler",
    "simulate",
    # reporting and events
    "EventKind",
    "Report",
    "TaskEvent",
    "build_report",
    "render_report",
    # storing
    "TaskStore",
    "open_store",
    "load_task_file",
    "parse_tasks",
    # models
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

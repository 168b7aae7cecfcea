"""Requests a client (the CLI, a program) makes of a running task manager, and its replies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serendib.limits import Int64, Name, TaskId
from serendib.messages import default_registry, message_type
from serendib.tasks.models import Task, TaskRecord, TaskState, WorkerInfo
from serendib.tasks.report import Report

__all__ = [
    "CancelReply",
    "CancelRequest",
    "ReportRequest",
    "StatusReply",
    "StatusRequest",
    "SubmitReply",
    "SubmitTasks",
    "TaskPage",
    "TaskQuery",
    "WorkerStatus",
]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@message_type("serendib.tasks.SubmitTasks")
class SubmitTasks(_Message):
    """Submit tasks; ids already known are ignored (same id twice is one task)."""

    tasks: list[Task] = Field(max_length=100_000)


@message_type("serendib.tasks.SubmitReply")
class SubmitReply(_Message):
    """Which submitted ids were new, and which were already known."""

    accepted: list[str]
    duplicates: list[str]


@message_type("serendib.tasks.StatusRequest")
class StatusRequest(_Message):
    """Ask for the manager's status."""


class WorkerStatus(_Message):
    """A connected worker and its load; ``suspect``: silent lately, given no new work."""

    info: WorkerInfo
    load: int
    completed: int = 0
    suspect: bool = False


@message_type("serendib.tasks.StatusReply")
class StatusReply(_Message):
    """Task counts by state, connected workers, and throughput."""

    workspace: str
    counts: dict[TaskState, int]
    workers: list[WorkerStatus]
    pending_in_memory: int
    stale_results: int
    tasks_per_s: float


@message_type("serendib.tasks.TaskQuery")
class TaskQuery(_Message):
    """Ask for a page of tasks, or one task by id."""

    task_id: TaskId | None = None
    state: TaskState | None = None
    worker: Name | None = None
    after: Int64 | None = Field(default=None, ge=0)
    limit: int = Field(default=100, ge=1, le=10_000)


@message_type("serendib.tasks.TaskPage")
class TaskPage(_Message):
    """A page of task records and the cursor of the next page."""

    records: list[TaskRecord]
    next_cursor: int | None = None


@message_type("serendib.tasks.CancelRequest")
class CancelRequest(_Message):
    """Cancel a task that is not final yet."""

    task_id: TaskId


@message_type("serendib.tasks.CancelReply")
class CancelReply(_Message):
    """The task after the cancel request (unchanged if it was already final)."""

    record: TaskRecord
    cancelled: bool


@message_type("serendib.tasks.ReportRequest")
class ReportRequest(_Message):
    """Ask for the report of every task in the store."""


# The report is the reply to ReportRequest: a client must know its type before it arrives.
default_registry.register(Report, "serendib.tasks.Report")

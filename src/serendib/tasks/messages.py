"""Every message about tasks, in one place: what the manager and its workers say to each
other, and what a client (the CLI, a program) asks of a running manager and its replies.

Each is a frozen, validated pydantic model whose fields are bounded (:mod:`serendib.limits`):
a message from the network that breaks a bound is dropped before any handler sees it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serendib.limits import (
    MODEL_CONFIG,
    FiniteFloat,
    Int64,
    JsonValue,
    Name,
    Note,
    TaskId,
    Text,
    Timestamp,
    Token,
)
from serendib.messages import default_registry, message_type
from serendib.tasks.events import EventKind
from serendib.tasks.models import (
    MAX_LABELS,
    MAX_PARENTS,
    MAX_PREFETCH,
    Attempt,
    AttemptKey,
    Label,
    Level,
    Schedule,
    ScheduleName,
    SkillName,
    Task,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from serendib.tasks.report import Report

__all__ = [
    # between the manager and its workers
    "ResultsAck",
    "TaskAssignment",
    "TaskAssignments",
    "TaskCancel",
    "TaskProgress",
    "TaskResult",
    "TaskResults",
    "Reconfigure",
    "WorkerSync",
    "WorkerUpdate",
    # from clients
    "ConfigureRequest",
    "ConfigureReply",
    "RetryReply",
    "RetryRequest",
    "ScheduleInfo",
    "ScheduleRequest",
    "SchedulesReply",
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
    "EventMessage",
    "Subscribe",
    "Subscribed",
    "TaskEvents",
    "TaskOutcome",
    "TaskOutcomes",
    "Watch",
    "WatchReply",
]

_MANY = 100_000
_WATCHED = 5_000
"""Ids per Watch: the reply (the unknown ones) stays well within a message."""


class _Frozen(BaseModel):
    model_config = MODEL_CONFIG


# --- between the manager and its workers ------------------------------------------------------


@message_type("serendib.tasks.TaskAssignment")
class TaskAssignment(_Frozen):
    """The manager gives one attempt of a task to one worker.

    Attributes:
        task: The task.
        attempt: Attempt number (1-based): the lease's fencing token.
        worker: The worker it is for.
        reason: Why this worker was chosen.
        inputs: The outputs of the task's parents that succeeded, by id (``depends_on``).
    """

    task: Task
    attempt: Attempt
    worker: Name
    reason: Note = ""
    inputs: dict[TaskId, JsonValue] = Field(default_factory=dict, max_length=MAX_PARENTS)


@message_type("serendib.tasks.TaskResult")
class TaskResult(_Frozen):
    """A worker reports how an attempt ended.

    Attributes:
        task_id: The task.
        attempt: The attempt number it was assigned with.
        worker: The reporting worker.
        success: Whether the attempt succeeded.
        output: The handler's return value (JSON-compatible), on success.
        error: Why it failed, on failure.
        started_at: Wall-clock start (seconds since the epoch).
        finished_at: Wall-clock end.
    """

    task_id: TaskId
    attempt: Attempt
    worker: Name
    success: bool
    output: JsonValue = None
    error: Text | None = None
    started_at: Timestamp = 0.0
    finished_at: Timestamp = 0.0


@message_type("serendib.tasks.TaskResults", compact=True)
class TaskResults(_Frozen):
    """Several results sent at once (workers batch what is ready), and the attempts that
    started since the last batch and are still running.

    Attributes:
        results: Finished attempts.
        started: Attempts that started running (a result in the same batch says more).
        started_at: When the first of ``started`` started.
    """

    results: list[TaskResult] = Field(max_length=_MANY)
    started: list[AttemptKey] = Field(default_factory=list, max_length=_MANY)
    started_at: Timestamp = 0.0


@message_type("serendib.tasks.TaskAssignments", compact=True)
class TaskAssignments(_Frozen):
    """Assignments for one worker sent at once.

    Attributes:
        assignments: The assignments.
        epoch: The sending manager's identity (its agent id).
        seq: This message's number among those the manager sent the worker (from 1), which
            the worker echoes in its :class:`WorkerSync` as ``seen``.
    """

    assignments: list[TaskAssignment] = Field(max_length=_MANY)
    epoch: Token | Literal[""] = ""
    seq: Int64 = Field(default=0, ge=0)


@message_type("serendib.tasks.TaskProgress")
class TaskProgress(_Frozen):
    """A worker reports progress of a long attempt (and so that it is still at it)."""

    task_id: TaskId
    attempt: Attempt
    worker: Name
    fraction: FiniteFloat = Field(ge=0.0, le=1.0)
    note: Note = ""


@message_type("serendib.tasks.TaskCancel")
class TaskCancel(_Frozen):
    """The manager asks a worker to abandon an attempt."""

    task_id: TaskId
    attempt: Attempt


@message_type("serendib.tasks.ResultsAck")
class ResultsAck(_Frozen):
    """The manager has stored these results (or found them stale): stop resending them."""

    acks: list[AttemptKey] = Field(max_length=_MANY)


@message_type("serendib.tasks.WorkerSync")
class WorkerSync(_Frozen):
    """A worker's periodic account of the attempts it holds (running, or reported but not
    yet acknowledged) and of the last assignment message it has handled.

    An attempt missing from ``holding`` although its message was handled (its number is at
    most ``seen``) was lost: the manager requeues it. One whose message is not handled yet
    may only be waiting in a busy worker's inbox: the manager sends it again after a while
    (a worker ignores an assignment it already has).

    Attributes:
        holding: The attempts it holds.
        epoch: The manager identity ``seen`` counts messages of ("" if none yet).
        seen: The highest ``TaskAssignments.seq`` handled from that manager.
    """

    holding: list[AttemptKey] = Field(max_length=_MANY)
    epoch: Token | Literal[""] = ""
    seen: Int64 = Field(default=0, ge=0)


@message_type("serendib.tasks.WorkerUpdate")
class WorkerUpdate(_Frozen):
    """A worker's skills, kinds, labels or capacity changed (its own name in ``info``)."""

    info: WorkerInfo


@message_type("serendib.tasks.Reconfigure")
class Reconfigure(_Frozen):
    """The manager passes on a change asked of a worker (fields left ``None`` stay; a
    ``prefetch`` given fixes it, ending the worker's own adjustment)."""

    skills: dict[SkillName, Level] | None = Field(default=None, min_length=1, max_length=64)
    labels: tuple[Label, ...] | None = Field(default=None, max_length=MAX_LABELS)
    capacity: int | None = Field(default=None, ge=1, le=100_000)
    prefetch: int | None = Field(default=None, ge=0, le=MAX_PREFETCH)


# --- from clients ----------------------------------------------------------------------


class _Message(BaseModel):
    model_config = MODEL_CONFIG


class TaskOutcome(_Frozen):
    """How a task ended, as a client is told.

    Attributes:
        task_id: The task.
        state: Its final state (succeeded, failed, cancelled).
        attempt: Attempts it took.
        worker: The worker of its last attempt.
        output: What the handler returned (on success).
        error: Why it failed or was cancelled.
        finished_at: When it ended.
        output_omitted: The output was too large for a message: ask for the task (``get``).
    """

    task_id: TaskId
    state: TaskState
    attempt: Attempt | Literal[0] = 0
    worker: Name | None = None
    output: JsonValue = None
    error: Text | None = None
    finished_at: Timestamp | None = None
    output_omitted: bool = False

    @classmethod
    def of(cls, record: TaskRecord) -> TaskOutcome:
        """The outcome of a final record."""
        return cls(
            task_id=record.id,
            state=record.state,
            attempt=record.attempt,
            worker=record.worker,
            output=record.output,
            error=record.error,
            finished_at=record.finished_at,
        )

    @property
    def succeeded(self) -> bool:
        """Whether the task succeeded."""
        return self.state is TaskState.SUCCEEDED


@message_type("serendib.tasks.TaskOutcomes", compact=True)
class TaskOutcomes(_Frozen):
    """The manager pushes the outcomes of tasks a client watches, once they are stored."""

    outcomes: list[TaskOutcome] = Field(max_length=_MANY)


class EventMessage(_Frozen):
    """A :class:`~serendib.tasks.events.TaskEvent` on the wire."""

    kind: EventKind
    at: Timestamp
    task_id: TaskId | None = None
    worker: Name | None = None
    attempt: Int64 = 0
    reason: Note = ""
    escalated: bool = False
    wait_s: FiniteFloat | None = None
    run_s: FiniteFloat | None = None
    outcome: Token | None = None


@message_type("serendib.tasks.TaskEvents")
class TaskEvents(_Frozen):
    """Task state changes, pushed to a client that subscribed (live, not durable)."""

    events: list[EventMessage] = Field(max_length=_MANY)


@message_type("serendib.tasks.SubmitTasks", compact=True)
class SubmitTasks(_Message):
    """Submit tasks; ids already known are ignored (same id twice is one task).

    Attributes:
        tasks: The tasks.
        watch: Push each one's outcome to the sender once it is final (duplicates included:
            those final already at once).
    """

    tasks: list[Task] = Field(max_length=100_000)
    watch: bool = False


@message_type("serendib.tasks.Watch")
class Watch(_Message):
    """Push the outcome of each of these tasks to the sender once it is final (at once for
    those final already); the reply names the unknown ids."""

    task_ids: list[TaskId] = Field(max_length=_WATCHED)


@message_type("serendib.tasks.WatchReply")
class WatchReply(_Message):
    """The watched ids no task has."""

    unknown: list[TaskId] = Field(default_factory=list)


@message_type("serendib.tasks.Subscribe")
class Subscribe(_Message):
    """Push every task event to the sender from now on (``active=False``: stop)."""

    active: bool = True


@message_type("serendib.tasks.Subscribed")
class Subscribed(_Message):
    """The subscription is in place (or ended)."""

    active: bool


@message_type("serendib.tasks.SubmitReply")
class SubmitReply(_Message):
    """Which submitted ids were new, which were already known, and which were refused.

    Attributes:
        accepted: Stored and queued.
        duplicates: Already known (the same id twice is one task).
        rejected: Refused, with why: an unknown parent, a dependency cycle, or a parent
            refused for either (none of them is stored).
    """

    accepted: list[str]
    duplicates: list[str]
    rejected: dict[str, Note] = Field(default_factory=dict)


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
    """A page of task records and the cursor of the next page.

    Attributes:
        records: The tasks.
        next_cursor: Where the next page starts (None: this is the last).
        children: For a query of one task: the tasks that depend on it (the first 1,000).
    """

    records: list[TaskRecord]
    next_cursor: int | None = None
    children: list[TaskId] | None = Field(default=None, max_length=1_000)


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


@message_type("serendib.tasks.RetryRequest")
class RetryRequest(_Message):
    """Run failed or cancelled tasks again, as new attempts (their history kept)."""

    task_ids: list[TaskId] = Field(min_length=1, max_length=_WATCHED)


@message_type("serendib.tasks.RetryReply")
class RetryReply(_Message):
    """Which tasks run again, which were refused (and why), and the unknown ids.

    Attributes:
        attempt_bases: Each retried task's attempts before this run (its old outcome's).
        ended_at: When each retried task had ended (its old outcome's ``finished_at``).
            With ``attempt_bases``: an outcome of a lower attempt, or of its base and ended
            by then, is the old run's (pushed for a watch made before the retry, it may come
            after this reply). Both are empty from a manager that predates them.
    """

    retried: list[TaskId] = Field(default_factory=list)
    refused: dict[TaskId, Note] = Field(default_factory=dict)
    unknown: list[TaskId] = Field(default_factory=list)
    attempt_bases: dict[TaskId, Attempt | Literal[0]] = Field(default_factory=dict)
    ended_at: dict[TaskId, Timestamp] = Field(default_factory=dict)


@message_type("serendib.tasks.ConfigureRequest")
class ConfigureRequest(_Message):
    """Change a running worker's skills, labels or capacity (fields left ``None`` stay)."""

    worker: Name
    change: Reconfigure


@message_type("serendib.tasks.ConfigureReply")
class ConfigureReply(_Message):
    """The worker as the manager now places work on it."""

    info: WorkerInfo


# The report is the reply to ReportRequest: a client must know its type before it arrives.
default_registry.register(Report, "serendib.tasks.Report")


@message_type("serendib.tasks.ScheduleRequest")
class ScheduleRequest(_Message):
    """Add (or replace) a schedule, remove one, or neither: list them.

    Attributes:
        add: The schedule to add or replace (it fires from now on).
        remove: The name of the schedule to remove.
    """

    add: Schedule | None = None
    remove: ScheduleName | None = None


class ScheduleInfo(_Message):
    """A schedule, when it last fired (or was defined) and when it fires next."""

    schedule: Schedule
    last_fired: Timestamp
    next_at: Timestamp


@message_type("serendib.tasks.SchedulesReply")
class SchedulesReply(_Message):
    """The manager's schedules, by name; ``removed``: the one asked to go was there."""

    schedules: list[ScheduleInfo] = Field(default_factory=list, max_length=10_000)
    removed: bool = False

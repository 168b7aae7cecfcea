"""The dashboard's HTTP API data: what requests may carry and what responses hold.

Every model is a frozen pydantic model, so request validation errors name the field and the
reason, and the OpenAPI description is generated from the same classes the API returns.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from serendib.limits import MAX_ID_CHARS, MAX_NAME_CHARS
from serendib.tasks.models import AttemptOutcome, Task, TaskState

__all__ = [
    "MAX_PAGE",
    "MAX_SUBMIT",
    "AccessView",
    "AttemptView",
    "CancelResult",
    "RetryResult",
    "DifficultyTally",
    "ErrorBody",
    "LatencySeries",
    "ManagerCounters",
    "StatsView",
    "SubmitBody",
    "SubmitResult",
    "TaskDetail",
    "TaskFilter",
    "TaskPageView",
    "PathTaskId",
    "PathWorkerName",
    "QueueSeries",
    "TaskRow",
    "TaskSortParam",
    "Throughput",
    "WorkerDetail",
    "WorkerView",
]

MAX_PAGE = 1_000
MAX_SUBMIT = 10_000


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _no_control(value: str) -> str:
    # Nothing stored holds one, and PostgreSQL refuses a NUL outright (an error, not a miss):
    # refused here, the reason is the client's to read, not the store's.
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (such as NUL)")
    return value


# --- requests ---------------------------------------------------------------------------------

FilterText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control)]
"""Text a query filters on: bounded, printable."""


PathTaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="A task id (URL-encoded; it may hold '/'): no control characters",
    ),
    AfterValidator(_no_control),
]
"""The ``{task_id}`` of ``/api/tasks/{task_id}`` and ``/api/tasks/{task_id}/cancel``: one
that no task can have is 422 (with the reason), not a store query."""


PathWorkerName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_CHARS, description="A worker's name"),
    AfterValidator(_no_control),
]
"""The ``{name}`` of ``/api/workers/{name}``."""

TaskSortParam = Literal["submitted", "-submitted", "finished", "-finished", "id", "-id"]
"""A task table order: submission, finish time (finished tasks only) or id; ``-`` for
latest (or greatest) first."""

_CURSOR = r"^(\d{1,19}|[0-9.eE+-]{1,32}:\d{1,19})$"


class TaskFilter(_Model):
    """Query parameters of ``GET /api/tasks``: filters (all must match), an order and paging.

    Each page walks one index of the store and examines at most 10,000 stored tasks: a
    filter that matches rarely may give short pages (``truncated``) with a cursor to go on.

    Attributes:
        state: Only tasks in this state.
        worker: Only tasks whose latest attempt went to this worker.
        kind: Only tasks of this kind.
        id: Only tasks whose id starts with this.
        text: Only tasks whose description contains this (ignoring case).
        sort: The order.
        after: The ``next_cursor`` of the previous page (same filters and order).
        limit: Tasks per page.
    """

    state: TaskState | None = Field(default=None, description="Only tasks in this state")
    worker: FilterText | None = Field(
        default=None, description="Only tasks whose latest attempt went to this worker"
    )
    kind: FilterText | None = Field(default=None, description="Only tasks of this kind")
    id: FilterText | None = Field(default=None, description="Only tasks whose id starts with this")
    text: FilterText | None = Field(
        default=None, description="Only tasks whose description contains this, ignoring case"
    )
    sort: TaskSortParam = Field(
        default="submitted",
        description="submitted, finished (finished tasks only) or id; '-' for latest first",
    )
    after: str | None = Field(
        default=None,
        max_length=64,
        pattern=_CURSOR,
        description="The next_cursor of the previous page (same filters and sort)",
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="Tasks per page")


class SubmitBody(_Model):
    """Body of ``POST /api/tasks``: tasks to submit (an id already known is ignored)."""

    tasks: list[Task] = Field(min_length=1, max_length=MAX_SUBMIT)


# --- responses --------------------------------------------------------------------------------


class ErrorBody(_Model):
    """Every error response: what went wrong and, for invalid input, each problem found.

    Attributes:
        error: The reason, for people.
        detail: For validation errors, one entry per problem (``loc``, ``msg``, ``type``).
    """

    error: str
    detail: list[dict[str, Any]] = Field(default_factory=list)


class WorkerView(_Model):
    """A worker as the dashboard shows it.

    Attributes:
        name: The worker's agent name.
        skills: Its level per named skill.
        labels: Its labels (a task requiring labels runs only where they all are).
        kinds: The task kinds it has handlers for; None: every kind.
        capacity: Attempts it runs at once.
        load: Attempts it has now (0 when lost).
        status: ``connected``, ``suspect`` (silent lately: no new work, its attempts kept
            for a grace) or ``lost``.
        succeeded: Attempts it finished successfully since the dashboard started.
        failed: Attempts that failed or timed out on it since the dashboard started.
        success_rate: ``succeeded / (succeeded + failed)``, or None before any ended.
    """

    name: str
    skills: dict[str, int]
    labels: list[str] = Field(default_factory=list)
    kinds: list[str] | None = None
    capacity: int
    load: int
    status: Literal["connected", "suspect", "lost"]
    succeeded: int
    failed: int
    success_rate: float | None


class TaskRow(_Model):
    """One line of the task table.

    Attributes:
        id: The task's id.
        description: What it is.
        kind: Which handler runs it.
        difficulty: 1 to 10.
        required_skill: The skill it needs.
        priority: Higher goes first.
        state: Where it is.
        attempt: Number of its latest attempt (0 before the first).
        worker: Worker of its latest attempt.
        reason: Why it was assigned or why it waits (live for pending tasks).
        error: Its last failure.
        submitted_at: When it was submitted (seconds since the epoch).
        updated_at: When its state last changed.
        finished_at: When it reached a final state.
    """

    id: str
    description: str
    kind: str
    difficulty: int
    required_skill: str
    priority: int
    state: TaskState
    attempt: int
    worker: str | None
    reason: str
    error: str | None
    submitted_at: float
    updated_at: float
    finished_at: float | None


class TaskPageView(_Model):
    """A page of the task table.

    Attributes:
        tasks: The tasks, in the order asked for.
        next_cursor: Pass as ``after`` for the next page; None on the last page.
        truncated: The page stopped at the 10,000 stored tasks one request examines before
            it was full: more may match after ``next_cursor``.
    """

    tasks: list[TaskRow]
    next_cursor: str | None
    truncated: bool = False


class DifficultyTally(_Model):
    """Attempts of one difficulty that ended on a worker.

    Attributes:
        difficulty: 1 to 10.
        succeeded: Attempts that succeeded.
        failed: Attempts that failed or timed out.
        success_rate: ``succeeded / (succeeded + failed)``.
    """

    difficulty: int
    succeeded: int
    failed: int
    success_rate: float | None


class WorkerDetail(_Model):
    """One worker: what it is, what it runs now, what it ran lately, how well.

    Attributes:
        worker: Its line of the worker table.
        current: Its tasks assigned or running now.
        recent: The latest tasks whose last attempt went to it, newest first.
        by_difficulty: Attempts ended on it since the dashboard started, by difficulty.
    """

    worker: WorkerView
    current: list[TaskRow]
    recent: list[TaskRow]
    by_difficulty: list[DifficultyTally]


class AttemptView(_Model):
    """One attempt of a task, with its timings.

    Attributes:
        attempt: Its number (1-based).
        worker: Who had it.
        reason: Why that worker was chosen.
        outcome: How it ended, or ``running``.
        escalated: Given to a more skilled worker after a failure.
        assigned_at: When it was handed out.
        started_at: When the worker started it, if reported.
        finished_at: When it ended.
        queued_s: Seconds the task waited before this attempt was assigned.
        run_s: Seconds from start (or assignment) to the end, or until now while it runs.
        error: Why it failed.
    """

    attempt: int
    worker: str
    reason: str
    outcome: AttemptOutcome
    escalated: bool
    assigned_at: float
    started_at: float | None
    finished_at: float | None
    queued_s: float | None
    run_s: float | None
    error: str | None


class TaskDetail(_Model):
    """One task and its history.

    Attributes:
        task: The task as submitted.
        row: Its current line of the task table.
        waiting_reason: For a pending task, why it waits now; None otherwise.
        attempts: Its attempts, first to last.
        output: The successful attempt's output.
        total_s: Seconds from submission to its end (or to now).
        parents: The tasks it depends on.
        children: The tasks that depend on it (the first 1,000).
    """

    task: Task
    row: TaskRow
    waiting_reason: str | None
    attempts: list[AttemptView]
    output: Any = None
    total_s: float
    parents: list[str] = []
    children: list[str] = []


class Throughput(_Model):
    """Tasks that ended per second, for the chart.

    Attributes:
        start: The first second of the series (whole seconds since the epoch).
        succeeded: Tasks that succeeded in each second from ``start``.
        failed: Tasks that failed in each second from ``start``.
        per_s: Average tasks ended per second over the last 10 seconds.
    """

    start: int
    succeeded: list[int]
    failed: list[int]
    per_s: float


class QueueSeries(_Model):
    """Tasks waiting for a worker, sampled each second, for the chart.

    Attributes:
        start: The first second of the series (whole seconds since the epoch).
        pending: Tasks pending in each second from ``start`` (None before the first sample).
    """

    start: int
    pending: list[int | None]


class LatencySeries(_Model):
    """Seconds from submission to the final result of tasks that ended, for the chart.

    Attributes:
        start: The first second of the series (whole seconds since the epoch).
        window_s: Each point summarises the tasks that ended in this many seconds up to it.
        p50: The median in each second from ``start`` (None when none ended in the window).
        p95: The 95th percentile in each second from ``start``.
    """

    start: int
    window_s: int
    p50: list[float | None]
    p95: list[float | None]


class ScheduleView(_Model):
    """A schedule of recurring work (``GET /api/schedules``).

    Attributes:
        name: Its name: its runs' ids are ``NAME@TIME``.
        cron: When it fires (cron syntax, UTC).
        task: The fields of each run's task.
        catch_up: After the manager was down when runs were due, it fires the latest once.
        last_fired: When it last fired (or was defined), seconds since the epoch.
        next_at: When it fires next.
    """

    name: str
    cron: str
    task: dict[str, Any]
    catch_up: bool
    last_fired: float
    next_at: float


class AccessView(_Model):
    """What the caller may do here (``GET /api/access``).

    Attributes:
        token: The dashboard needs a token (this call carried it, or it would be refused).
        writable: Submitting and cancelling are allowed.
        reason: Why they are not, when they are not.
    """

    token: bool
    writable: bool
    reason: str | None = None


class ManagerCounters(_Model):
    """The manager's running counters since it started."""

    submitted: int
    assignments: int
    retries: int
    escalations: int
    requeued_lost: int
    timeouts: int
    succeeded: int
    failed: int
    cancelled: int
    stale_results: int
    workers_lost: int


class StatsView(_Model):
    """The system at a glance.

    Attributes:
        workspace: The manager's workspace.
        manager: The manager's agent name.
        running: Whether the manager is running (submit and cancel need it).
        store: Where the task store is (passwords redacted).
        counts: Stored tasks per state (every state is a key).
        total: Stored tasks.
        success_rate: ``succeeded / (succeeded + failed)`` over the store, or None.
        counters: The manager's counters since it started.
        dropped: Bad messages dropped by the manager, by reason.
        throughput: Tasks ended per second, recently.
        queue: Tasks pending, each second, recently.
        latency: Submission to final result, p50 and p95, each second, recently.
        uptime_s: Seconds since the dashboard started.
        quarantined: Records the store refused to save (quarantined in it; see the report).
    """

    workspace: str
    manager: str
    running: bool
    store: str
    counts: dict[TaskState, int]
    total: int
    success_rate: float | None
    counters: ManagerCounters
    dropped: dict[str, int]
    throughput: Throughput
    queue: QueueSeries
    latency: LatencySeries
    uptime_s: float
    quarantined: int = 0


class SubmitResult(_Model):
    """Which submitted ids were new, which were already known, and which were refused
    (an unknown parent, a dependency cycle), with why."""

    accepted: list[str]
    duplicates: list[str]
    rejected: dict[str, str] = {}


class RetryResult(_Model):
    """The task after a retry request.

    Attributes:
        retried: True when it runs again; False when it was refused (``reason`` says why:
            it succeeded, or has not ended).
        reason: Why it was refused, if it was.
        task: Its table line now.
    """

    retried: bool
    reason: str | None = None
    task: TaskRow


class CancelResult(_Model):
    """The task after a cancel request.

    Attributes:
        cancelled: False when it was already final (then it is unchanged).
        task: Its table line now.
    """

    cancelled: bool
    task: TaskRow

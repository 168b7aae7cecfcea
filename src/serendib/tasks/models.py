"""The task manager's data: tasks, their states, workers, and stored records.

The messages the manager and its workers exchange about tasks are in
:mod:`serendib.tasks.messages`.

Everything here is a frozen, validated pydantic model: bad input is rejected with the field
and the reason, and a change of state produces a new record through a named transition.
"""

from __future__ import annotations

import math
import time
import zlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from serendib.limits import (
    MAX_ATTEMPT,
    MODEL_CONFIG,
    JsonObject,
    Name,
    TaskId,
    Text,
    Timestamp,
    Token,
)
from serendib.messages import message_type

__all__ = [
    "DEFAULT_SKILL",
    "MAX_LABELS",
    "Label",
    "TRANSITIONS",
    "check_move",
    "AttemptKey",
    "AttemptOutcome",
    "AttemptRecord",
    "Backoff",
    "MAX_PARENTS",
    "Schedule",
    "ScheduleName",
    "Task",
    "TaskRecord",
    "TaskState",
    "WorkerInfo",
]

DEFAULT_SKILL = "general"


SkillName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Level = Annotated[int, Field(ge=0, le=1_000)]
Label = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+(=[A-Za-z0-9_.:/\-]+)?$"),
]
"""A constraint that is not a level: ``gpu``, ``region=eu``."""
MAX_LABELS = 32
MAX_PREFETCH = 10_000
MAX_PARENTS = 1_000
"""The most tasks one task may depend on."""
Attempt = Annotated[int, Field(ge=1, le=MAX_ATTEMPT)]
Seconds = Annotated[float, Field(gt=0, le=10_000_000, allow_inf_nan=False)]
AttemptKey = tuple[TaskId, Attempt]
"""``(task_id, attempt)``: one lease."""


class _Frozen(BaseModel):
    model_config = MODEL_CONFIG


class TaskState(StrEnum):
    """Where a task is. PENDING → ASSIGNED → RUNNING → SUCCEEDED | FAILED; any → CANCELLED."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED."""
        return self in _FINAL


_FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
_P, _A, _R = TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _P: frozenset({_P, _A, TaskState.FAILED, TaskState.CANCELLED}),
    _A: frozenset({_R, _P, *_FINAL}),
    _R: frozenset({_P, *_FINAL}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset({_P}),
    TaskState.CANCELLED: frozenset({_P}),
}
"""A task's state machine, the one definition: the states each state may move to.

PENDING → ASSIGNED (an attempt is given out) → RUNNING (its worker started it) →
SUCCEEDED | FAILED; ASSIGNED/RUNNING → PENDING (lost, timed out, or failed with attempts
left); PENDING → FAILED (no worker before its deadline); any unfinished → CANCELLED;
FAILED/CANCELLED → PENDING only by a replay (run again, keeping its history). The
manager's working copies (:class:`~serendib.tasks.engine.entries.Entry`) and the frozen
records here both move through :func:`check_move`."""


def check_move(task_id: str, state: TaskState, to: TaskState) -> None:
    """Check that a task in ``state`` may move to ``to``.

    Raises:
        ValueError: It may not (a final task never moves).
    """
    if to not in TRANSITIONS[state]:
        if state.is_final:
            raise ValueError(f"task {task_id!r} is already {state.value}")
        raise ValueError(f"task {task_id!r} cannot go from {state.value} to {to.value}")


class Backoff(_Frozen):
    """How long a failed attempt's retry waits: ``base_s * factor ** (n - 1)`` after the
    n-th failure, at most ``max_s``, spread by ``jitter`` (a fraction either way).

    The jitter is drawn from the task id and the attempt, so the same failure always waits
    the same time (a manager restarted mid-wait resumes the same wait) while tasks that fail
    together do not retry together.

    Attributes:
        base_s: The wait after the first failure.
        factor: How much each further failure multiplies it.
        jitter: At most this fraction of the wait is added or taken away.
        max_s: The longest wait.
    """

    base_s: float = Field(default=1.0, ge=0, le=86_400, allow_inf_nan=False)
    factor: float = Field(default=2.0, ge=1, le=100, allow_inf_nan=False)
    jitter: float = Field(default=0.1, ge=0, le=1, allow_inf_nan=False)
    max_s: float = Field(default=300.0, ge=0, le=7 * 86_400, allow_inf_nan=False)

    def delay(self, task_id: str, failures: int) -> float:
        """Seconds the retry after failure number ``failures`` (from 1) of ``task_id`` waits."""
        if failures < 1 or not self.base_s:
            return 0.0
        wait = min(self.base_s * self.factor ** min(failures - 1, 64), self.max_s)
        if self.jitter:
            spread = zlib.crc32(f"{task_id}\x00{failures}".encode()) / 0xFFFFFFFF  # 0..1
            wait *= 1 + self.jitter * (2 * spread - 1)
        return wait


@message_type("serendib.tasks.Task")
class Task(_Frozen):
    """A unit of work.

    Attributes:
        id: Unique id; submitting the same id twice is one task.
        description: What it is, for people.
        difficulty: 1 (trivial) to 10 (hardest): the skill level it needs.
        kind: Which handler runs it (``simulate``: the seed's sleep-and-compare).
        payload: Arguments for the handler.
        priority: Higher goes first.
        required_skill: The named skill it needs (``general`` by default).
        max_attempts: Attempts before it is declared failed.
        timeout_s: An attempt running longer is abandoned and retried.
        wait_timeout_s: Fail the task if, this many seconds after submission, no connected
            worker is skilled enough for it (busy skilled workers do not count as none).
        labels: Labels a worker must all have to be given it (``gpu``, ``region=eu``).
        depends_on: Tasks that must succeed before it runs (submitted before it or with
            it); their outputs reach its handler as ``context.inputs``, by id.
        run_anyway: Run once every parent has ended, even if some failed or were
            cancelled (by default it is then cancelled, saying which parent).
        delay_s: Not assigned before this many seconds after its submission.
        not_before: Not assigned before this time (seconds since the epoch, or an ISO 8601
            date-time; one without a zone is UTC).
        retry: How long a retry waits after a failed or timed-out attempt (default: the
            manager's, which is to retry at once).
        concurrency_key: At most the manager's limit for this key run at once, and at most
            its rate start per second (``--limit KEY=N``, ``--rate KEY=R``).
        group: Who it is for (a tenant, a user): among tasks of equal priority the manager
            serves groups in turn.
    """

    id: TaskId
    description: Text = ""
    difficulty: int = Field(ge=1, le=10)
    kind: Token = "simulate"
    payload: JsonObject = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    required_skill: SkillName = DEFAULT_SKILL
    max_attempts: int = Field(default=3, ge=1, le=100)
    timeout_s: Seconds | None = None
    wait_timeout_s: Seconds | None = None
    labels: tuple[Label, ...] = Field(default=(), max_length=MAX_LABELS)
    depends_on: tuple[TaskId, ...] = Field(default=(), max_length=MAX_PARENTS)
    run_anyway: bool = False
    delay_s: float | None = Field(default=None, ge=0, le=10_000_000, allow_inf_nan=False)
    not_before: Timestamp | None = None
    retry: Backoff | None = None
    concurrency_key: Token | None = None
    group: Token | None = None

    @field_validator("not_before", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    "must be seconds since the epoch or an ISO 8601 date-time"
                ) from None
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        return value

    @model_validator(mode="after")
    def _parents(self) -> Task:
        if self.depends_on:
            if self.id in self.depends_on:
                raise ValueError(f"task {self.id!r} depends on itself")
            if len(set(self.depends_on)) != len(self.depends_on):
                raise ValueError(f"task {self.id!r} names a parent twice in depends_on")
        return self

    def eligible_at(self, submitted_at: float) -> float:
        """The earliest time it may be assigned (0: at once), by ``delay_s`` and
        ``not_before``."""
        at = self.not_before or 0.0
        if self.delay_s:
            at = max(at, submitted_at + self.delay_s)
        return at


class WorkerInfo(_Frozen):
    """What the manager knows of a worker: what it can run and how much it takes at once.

    Attributes:
        name: The worker agent's name.
        skills: Level per named skill; a single level means ``{"general": level}``.
        capacity: Attempts it runs at once.
        kinds: The task kinds it has handlers for; ``None`` (a worker that does not say):
            every kind.
        labels: Its labels (``gpu``, ``region=eu``); a task requiring labels needs them all.
        prefetch: Attempts it keeps ready beyond those it runs, so that it never waits a
            round trip for the next: the manager gives it up to ``capacity + prefetch``.
    """

    name: Name
    skills: dict[SkillName, Level] = Field(min_length=1, max_length=64)
    capacity: int = Field(default=1, ge=1, le=100_000)
    prefetch: int = Field(default=0, ge=0, le=MAX_PREFETCH)
    kinds: tuple[Token, ...] | None = Field(default=None, max_length=256)
    labels: tuple[Label, ...] = Field(default=(), max_length=MAX_LABELS)

    def level(self, skill: str) -> int:
        """The worker's level in ``skill`` (0 when it does not have it)."""
        return self.skills.get(skill, 0)

    @property
    def slots(self) -> int:
        """Attempts the manager may give it at once: those it runs and those kept ready."""
        return self.capacity + self.prefetch

    def runs(self, kind: str) -> bool:
        """Whether it has a handler for ``kind``."""
        return self.kinds is None or kind in self.kinds

    def attributes(self) -> dict[str, Any]:
        """What a worker publishes with its presence (read by :meth:`from_attributes`)."""
        found: dict[str, Any] = {"skills": dict(self.skills), "capacity": self.capacity}
        if self.kinds is not None:
            found["kinds"] = list(self.kinds)
        if self.labels:
            found["labels"] = list(self.labels)
        if self.prefetch:
            found["prefetch"] = self.prefetch
        return found

    @classmethod
    def from_attributes(cls, name: str, attributes: dict[str, Any]) -> WorkerInfo:
        """Read a worker's published presence attributes (``skills``, ``capacity``,
        ``kinds``, ``labels``).

        Raises:
            ValueError: They are not a worker's (pydantic's ValidationError).
        """
        return cls(
            name=name,
            skills=attributes.get("skills", {}),
            capacity=attributes.get("capacity", 1),
            kinds=attributes.get("kinds"),
            labels=attributes.get("labels", ()),
            prefetch=attributes.get("prefetch", 0),
        )


class AttemptOutcome(StrEnum):
    """How one attempt ended (or that it has not yet)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class AttemptRecord(_Frozen):
    """One attempt of one task, as stored.

    Attributes:
        task_id: The task.
        attempt: Its number.
        worker: Who had it.
        reason: Why that worker was chosen.
        outcome: How it ended, or RUNNING.
        assigned_at: When it was handed out.
        started_at: When the worker started it (its clock), if reported.
        finished_at: When it ended.
        error: Why it failed.
        escalated: Whether it went to a more skilled worker after a failure.
        stale_results: Results received for it after it had ended (never counted).
    """

    task_id: str
    attempt: int
    worker: str
    reason: str = ""
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    assigned_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    escalated: bool = False
    stale_results: int = 0

    def ended(
        self,
        outcome: AttemptOutcome,
        at: float,
        error: str | None = None,
        started_at: float | None = None,
    ) -> AttemptRecord:
        """The attempt, ended with ``outcome`` at time ``at``."""
        return self.model_copy(
            update={
                "outcome": outcome,
                "finished_at": at,
                "error": error,
                "started_at": started_at if started_at is not None else self.started_at,
            }
        )


class TaskRecord(_Frozen):
    """A task and where it is, as stored: the source of truth.

    Attributes:
        task: The task as submitted.
        state: Where it is.
        attempt: Number of the latest attempt (0 before the first).
        worker: Worker of the latest attempt.
        reason: Why it was assigned, or why it waits.
        submitted_at: When it was first submitted.
        updated_at: When its state last changed.
        finished_at: When it reached a final state.
        output: The successful attempt's output.
        error: The last failure's reason.
        replays: Times it was run again after it had failed or was cancelled.
        attempt_base: Its attempts before the last replay (``max_attempts`` counts from
            there).
        not_before: A pending task is not assigned before this time (its ``delay_s`` or
            ``not_before``, or its retry's backoff); 0: at once.
    """

    task: Task
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    worker: str | None = None
    reason: str = ""
    submitted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    replays: int = Field(default=0, ge=0)
    attempt_base: int = Field(default=0, ge=0)
    not_before: float = Field(default=0.0, ge=0)

    @property
    def id(self) -> str:
        """The task's id."""
        return self.task.id

    @property
    def attempts_left(self) -> int:
        """Attempts it may still make in this run (``max_attempts`` from the last replay)."""
        return max(self.task.max_attempts - (self.attempt - self.attempt_base), 0)

    @model_validator(mode="after")
    def _final_has_time(self) -> TaskRecord:
        if self.state.is_final and self.finished_at is None:
            raise ValueError(f"a {self.state.value} task needs finished_at")
        return self

    def _to(self, state: TaskState, at: float, **changes: Any) -> TaskRecord:
        check_move(self.id, self.state, state)
        final = {"finished_at": at} if state.is_final else {}
        return self.model_copy(update={"state": state, "updated_at": at, **final, **changes})

    def replayed(self, reason: str, at: float) -> TaskRecord:
        """FAILED/CANCELLED → PENDING: run again, ``max_attempts`` counted from here."""
        return self._to(
            TaskState.PENDING,
            at,
            replays=self.replays + 1,
            attempt_base=self.attempt,
            finished_at=None,
            output=None,
            reason=reason,
        )

    def assigned(self, worker: str, reason: str, at: float) -> TaskRecord:
        """PENDING → ASSIGNED: a new attempt for ``worker``."""
        return self._to(
            TaskState.ASSIGNED, at, attempt=self.attempt + 1, worker=worker, reason=reason
        )

    def running(self, at: float) -> TaskRecord:
        """ASSIGNED → RUNNING."""
        return self._to(TaskState.RUNNING, at)

    def requeued(self, reason: str, at: float, error: str | None = None) -> TaskRecord:
        """ASSIGNED/RUNNING → PENDING: lost worker, timeout, or a failure to retry."""
        return self._to(TaskState.PENDING, at, reason=reason, error=error or self.error)

    def waiting(self, reason: str) -> TaskRecord:
        """A PENDING task's reason for waiting changed (not a state change)."""
        return self.model_copy(update={"reason": reason})

    def succeeded(self, output: Any, at: float) -> TaskRecord:
        """→ SUCCEEDED."""
        return self._to(TaskState.SUCCEEDED, at, output=output, error=None)

    def failed(self, error: str, at: float) -> TaskRecord:
        """→ FAILED (no attempts left, or no worker before its deadline)."""
        return self._to(TaskState.FAILED, at, error=error)

    def cancelled(self, at: float) -> TaskRecord:
        """→ CANCELLED."""
        return self._to(TaskState.CANCELLED, at, reason="cancelled")


ScheduleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
"""A schedule's name."""


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Schedule(_Frozen):
    """Recurring work.

    Attributes:
        name: Its name: the runs' ids are ``NAME@TIME``.
        cron: When, in cron syntax (five fields, UTC; ``*/5 * * * *``; six with seconds).
        task: The fields of each run's task but its id (``difficulty``, ``kind``, ...).
        catch_up: After a manager was down when runs were due, fire the latest of them once
            (else: wait for the next time).
    """

    name: ScheduleName
    cron: str = Field(min_length=1, max_length=200)
    task: JsonObject
    catch_up: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (such as '*/5 * * * *')")
        try:
            croniter(value, datetime.now(UTC)).get_next(float)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires again (a date that does not come)") from None
        return value

    @model_validator(mode="after")
    def _a_task(self) -> Schedule:
        if "id" in self.task:
            raise ValueError("a schedule's task has no id: each run's is NAME@TIME")
        try:
            self.task_at(0.0)
        except ValidationError as e:
            problem = e.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise ValueError(f"its task is not valid: {where}: {problem['msg']}") from None
        return self

    def next_after(self, at: float) -> float:
        """The first time it fires after ``at`` (seconds since the epoch); infinity if it
        never fires again (a cron bounded by a year that has passed)."""
        try:
            found: float = croniter(self.cron, datetime.fromtimestamp(at, UTC)).get_next(float)
        except CroniterBadDateError:
            return math.inf
        return found

    def latest_by(self, at: float, after: float) -> float | None:
        """The last time it fires at or before ``at`` and after ``after``; None if none."""
        try:
            found: float = croniter(self.cron, datetime.fromtimestamp(at, UTC)).get_prev(float)
        except CroniterBadDateError:
            return None
        if self.next_after(found) <= at:  # ``at`` is itself a time it fires
            found = self.next_after(found)
        return found if found > after else None

    def task_at(self, at: float) -> Task:
        """The run it fires at ``at``."""
        fields: dict[str, Any] = {"description": f"{self.name}, run of {_stamp(at)}"}
        return Task.model_validate({**fields, **self.task, "id": f"{self.name}@{_stamp(at)}"})

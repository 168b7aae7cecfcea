"""A task's state machine is defined once; the frozen records and the working copies obey it."""

from __future__ import annotations

import pytest

from serendib.tasks.engine.entries import Entry
from serendib.tasks.models import TRANSITIONS, Task, TaskRecord, TaskState, check_move


def test_final_states_move_only_back_to_pending_by_a_replay_and_every_state_is_defined() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    assert TRANSITIONS[TaskState.SUCCEEDED] == frozenset()
    with pytest.raises(ValueError, match="already succeeded"):
        check_move("t", TaskState.SUCCEEDED, TaskState.PENDING)
    for state in (TaskState.FAILED, TaskState.CANCELLED):
        assert TRANSITIONS[state] == {TaskState.PENDING}
        for other in TaskState:
            if other is not TaskState.PENDING:
                with pytest.raises(ValueError, match="already"):
                    check_move("t", state, other)


def test_a_replay_counts_attempts_afresh_and_keeps_the_count() -> None:
    task = Task(id="t", difficulty=1, max_attempts=2)
    record = TaskRecord(task=task, submitted_at=1.0, updated_at=1.0)
    failed = record.assigned("w", "why", 2.0).failed("boom", 3.0)
    assert failed.attempts_left == 1
    again = failed.replayed("run again", 4.0)
    assert (again.state, again.replays, again.attempt_base, again.finished_at) == (
        TaskState.PENDING,
        1,
        1,
        None,
    )
    assert again.attempts_left == 2
    entry = Entry.of(failed)
    entry.replay("run again", 4.0)
    assert entry.record() == again


def test_a_pending_task_cannot_succeed_without_an_attempt() -> None:
    with pytest.raises(ValueError, match="cannot go from pending to succeeded"):
        check_move("t", TaskState.PENDING, TaskState.SUCCEEDED)


def test_records_and_working_copies_refuse_the_same_moves() -> None:
    record = TaskRecord(task=Task(id="t", difficulty=1), submitted_at=1.0, updated_at=1.0)
    entry = Entry.of(record)
    with pytest.raises(ValueError, match="pending to succeeded"):
        record.succeeded("x", 2.0)
    with pytest.raises(ValueError, match="pending to succeeded"):
        entry.succeed("x", 2.0)
    entry.assign("w", "fit", 2.0)
    entry.succeed("x", 3.0)
    assert entry.record() == record.assigned("w", "fit", 2.0).succeeded("x", 3.0)

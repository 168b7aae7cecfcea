"""A task's state machine is defined once; the frozen records and the working copies obey it."""

from __future__ import annotations

import pytest

from serendib.tasks.engine.entries import Entry
from serendib.tasks.models import TRANSITIONS, Task, TaskRecord, TaskState, check_move


def test_final_states_never_move_and_every_state_is_defined() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    for state in TaskState:
        if state.is_final:
            assert TRANSITIONS[state] == frozenset()
            with pytest.raises(ValueError, match="already"):
                check_move("t", state, TaskState.PENDING)


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

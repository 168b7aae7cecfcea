"""The manager learns from outcomes: each worker's record per kind and difficulty steers
escalations (opt-in), and the reasons say so."""

from __future__ import annotations

from serendib.tasks.engine.learning import TrackRecord
from serendib.tasks.events import EventKind
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import TaskContext, TaskFailed
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager, finished


async def only_senior(task: Task, context: TaskContext) -> str:
    """A kind only 'senior' can run (the others lack what it needs, whatever their level)."""
    if context.worker.name != "senior":
        raise TaskFailed(f"{context.worker.name} cannot do this kind")
    return "done"


async def run_one(manager_events: Events, manager: object, task_id: str) -> list[str]:
    from serendib.tasks.manager import TaskManager

    assert isinstance(manager, TaskManager)
    await manager.submit([Task(id=task_id, difficulty=1, kind="fragile", max_attempts=3)])
    await manager_events.wait_for(EventKind.SUCCEEDED, task_id)
    return [
        e.worker or ""
        for e in manager_events.seen
        if e.kind is EventKind.ASSIGNED and e.task_id == task_id
    ]


async def test_with_learning_a_retry_skips_a_worker_that_keeps_failing_the_kind(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory(learn=True)
    events = Events(manager)
    for name, level in (("junior", 3), ("middle", 5), ("senior", 9)):
        await start_worker(name, level, handlers={"fragile": only_senior})
    # The plain escalation, while nothing is known: each more skilled worker in turn.
    assert await run_one(events, manager, "first") == ["junior", "middle", "senior"]
    assert await run_one(events, manager, "second") == ["junior", "senior"]
    [learned] = [e for e in events.seen if e.kind is EventKind.ASSIGNED and e.task_id == "second"][
        1:
    ]
    assert learned.escalated
    assert learned.reason.endswith("learned: senior succeeded 1 of 1 fragile tasks of difficulty 1")
    assert ("middle", "fragile", 1, 0, 1) in manager.track_record()
    await finished(manager)


async def test_without_learning_escalation_goes_one_step_at_a_time(
    manager_factory: MakeManager, start_worker: StartWorker
) -> None:
    manager = await manager_factory()
    events = Events(manager)
    for name, level in (("junior", 3), ("middle", 5), ("senior", 9)):
        await start_worker(name, level, handlers={"fragile": only_senior})
    assert await run_one(events, manager, "first") == ["junior", "middle", "senior"]
    assert await run_one(events, manager, "second") == ["junior", "middle", "senior"]
    await finished(manager)
    record = await manager.store.get("second")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED


def test_a_record_needs_more_than_one_lucky_attempt_and_prefers_the_less_skilled() -> None:
    track = TrackRecord()
    levels = {"a": 4, "b": 6, "c": 8}
    track.note("a", "k", 2, False)
    track.note("b", "k", 2, True)
    track.note("b", "k", 2, True)
    track.note("c", "k", 2, True)
    track.note("c", "k", 2, True)
    choice = track.best(levels.get, "k", 2, above=3)
    assert choice is not None
    assert (choice.worker, choice.level) == ("b", 6)  # as good as c, and less skilled
    assert track.best(levels.get, "k", 2, above=8) is None
    assert track.best(levels.get, "other", 2, above=0) is None
    track.note("a", "k", 3, True)  # one success: (1+1)/(1+2) > 0.5, a weak record still
    assert track.best(levels.get, "k", 3, above=0) is not None

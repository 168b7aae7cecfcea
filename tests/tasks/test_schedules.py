"""Recurring work: cron schedules fire runs with derived ids, survive restarts, never twice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from serendib.tasks.events import EventKind
from serendib.tasks.models import Schedule, Task
from serendib.tasks.recurring import Calendar
from serendib.tasks.store import open_store
from tests.tasks.conftest import StartWorker
from tests.tasks.test_manager import Events, MakeManager

T0 = datetime(2026, 12, 3, 15, 0, 30, tzinfo=UTC).timestamp()
MINUTE = 60.0


class Submitted:
    def __init__(self) -> None:
        self.tasks: list[Task] = []

    async def __call__(self, tasks: list[Task]) -> None:
        self.tasks += tasks


def every_five_minutes(**options: object) -> Schedule:
    return Schedule.model_validate(
        {"name": "sweep", "cron": "*/5 * * * *", "task": {"difficulty": 2}, **options}
    )


def test_a_schedule_checks_its_cron_and_its_task() -> None:
    with pytest.raises(ValidationError, match="not a cron expression"):
        Schedule(name="x", cron="every day", task={"difficulty": 1})
    with pytest.raises(ValidationError, match="its task is not valid: difficulty"):
        Schedule(name="x", cron="* * * * *", task={"difficulty": 11})
    with pytest.raises(ValidationError, match="has no id"):
        Schedule(name="x", cron="* * * * *", task={"id": "mine", "difficulty": 1})
    run = every_five_minutes().task_at(T0)
    assert run.id == "sweep@2026-12-03T15:00:30Z"
    assert run.difficulty == 2


async def test_a_calendar_fires_once_per_due_time_and_catches_up_once_after_a_restart(
    store_url: str,
) -> None:
    async with open_store(store_url) as store:
        submitted = Submitted()
        calendar = Calendar(store, submitted, "test")
        await calendar.load([every_five_minutes()], now=T0)
        assert await calendar.fire(now=T0 + 4 * MINUTE) == []
        [run] = await calendar.fire(now=T0 + 6 * MINUTE)
        assert run.id == "sweep@2026-12-03T15:05:00Z"
        assert await calendar.fire(now=T0 + 6 * MINUTE) == []  # that time has fired

        # A new manager on the same store, down for three due times: it fires the latest.
        again = Calendar(store, submitted, "test")
        await again.load([every_five_minutes()], now=T0 + 21 * MINUTE)
        [late] = await again.fire(now=T0 + 21 * MINUTE)
        assert late.id == "sweep@2026-12-03T15:20:00Z"

        # Without catch_up, missed times are skipped: the next is in the future.
        skipping = Calendar(store, submitted, "test")
        await skipping.load([every_five_minutes(catch_up=False)], now=T0 + 21 * MINUTE)
        third = Calendar(store, submitted, "test")
        await third.load([], now=T0 + 40 * MINUTE)
        [(schedule, _, next_at)] = third.listing()
        assert schedule.catch_up is False
        assert await third.fire(now=T0 + 40 * MINUTE) == []
        assert next_at > T0 + 40 * MINUTE
        assert [t.id for t in submitted.tasks] == [run.id, late.id]
        assert await third.remove("sweep")
        assert await store.schedules() == []


async def test_a_managers_schedule_fires_runs_that_workers_run_and_never_twice_after_a_restart(
    manager_factory: MakeManager, start_worker: StartWorker, store_url: str
) -> None:
    every_second = Schedule(name="tick", cron="* * * * * *", task={"difficulty": 1})
    manager = await manager_factory(schedules=[every_second])
    events = Events(manager)
    await start_worker("w", 3)
    await events.wait_for(EventKind.SUCCEEDED, count=2)
    await manager.stop()

    again = await manager_factory(schedules=[every_second])
    after = Events(again)
    await after.wait_for(EventKind.SUBMITTED, count=1)
    [info] = again.schedules()
    await again.stop()
    async with open_store(store_url) as store:
        runs = [r.id for r in await store.all_records()]
    assert all(run.startswith("tick@") for run in runs)
    assert len(runs) >= 3
    assert Counter(runs).most_common(1)[0][1] == 1  # each time once
    assert info.schedule == every_second
    assert info.next_at > info.last_fired

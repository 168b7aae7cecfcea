"""Recurring work: schedules in cron syntax, each run a new task with a derived id.

A :class:`~serendib.tasks.models.Schedule` says when (a cron expression, read by croniter,
in UTC) and what (the fields of a task, without its id). Each time it fires, the manager
submits one task whose id is ``NAME@TIME`` (``nightly@2026-12-03T02:00:00Z``): the same
time always makes the same id, so a run submitted twice (a manager restarted between
submitting and saving that it had fired) is one task. A :class:`Calendar`, owned by the
manager, keeps the schedules in the store with the time each last fired; a manager that was
down when a run was due fires it once on starting (the latest one missed, with
``catch_up``), never once per missed run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from loguru import logger
from pydantic import ValidationError

from serendib.tasks.models import Schedule, Task
from serendib.tasks.store import TaskStore

__all__ = ["Calendar"]

_RETRY_S = 5.0  # after a failed submission or save, fire again this much later


class _Entry:
    __slots__ = ("last_fired", "next_at", "schedule")

    def __init__(self, schedule: Schedule, last_fired: float) -> None:
        self.schedule = schedule
        self.last_fired = last_fired
        self.next_at = schedule.next_after(last_fired)


Submit = Callable[[list[Task]], Awaitable[object]]


class Calendar:
    """The manager's schedules: fires each when due, and keeps them in the store.

    Args:
        store: Where schedules and their last firing are kept.
        submit: Submits the runs (the manager's ``submit``).
        owner: Name for log lines.
    """

    def __init__(self, store: TaskStore, submit: Submit, owner: str) -> None:
        self._store = store
        self._submit = submit
        self._owner = owner
        self._entries: dict[str, _Entry] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._firing: asyncio.Task[list[Task]] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def listing(self) -> list[tuple[Schedule, float, float]]:
        """Each schedule with when it last fired and when it fires next, by name."""
        return [(e.schedule, e.last_fired, e.next_at) for _, e in sorted(self._entries.items())]

    async def load(self, defined: Iterable[Schedule], now: float | None = None) -> None:
        """Take the stored schedules, and ``defined`` ones over those of the same name (a
        schedule defined anew keeps when it last fired if its cron is unchanged)."""
        now = time.time() if now is None else now
        for name, spec, last_fired in await self._store.schedules():
            try:
                schedule = Schedule.model_validate_json(spec)
            except ValidationError as e:
                logger.error("{}: stored schedule {} ignored: {}", self._owner, name, e)
                continue
            self._entries[name] = self._resumed(schedule, last_fired, now)
        changed = []
        for schedule in defined:
            known = self._entries.get(schedule.name)
            if known is not None and known.schedule == schedule:
                continue
            keep = known is not None and known.schedule.cron == schedule.cron
            entry = _Entry(schedule, known.last_fired if keep and known else now)
            self._entries[schedule.name] = entry
            changed.append(entry)
        await self._save(changed)

    @staticmethod
    def _resumed(schedule: Schedule, last_fired: float, now: float) -> _Entry:
        entry = _Entry(schedule, last_fired)
        if entry.next_at <= now and not schedule.catch_up:
            # Down when it was due, and not to catch up: from the next time on.
            entry.last_fired = now
            entry.next_at = schedule.next_after(now)
        return entry

    async def add(self, schedule: Schedule) -> None:
        """Add a schedule, or replace the one of its name (it fires from now on)."""
        entry = _Entry(schedule, time.time())
        await self._save([entry])
        self._entries[schedule.name] = entry
        self.arm()

    async def remove(self, name: str) -> bool:
        """Remove a schedule; False if there is none of that name."""
        if name not in self._entries:
            return False
        await self._store.save_schedules([(name, None, 0.0)])
        del self._entries[name]
        self.arm()
        return True

    def arm(self) -> None:
        """(Re)arm the timer for the earliest run due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entries:
            return
        at = min(e.next_at for e in self._entries.values())
        if at == math.inf:
            return  # none fires again
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(at - time.time(), 0.0), self._wake)

    def close(self) -> None:
        """Stop firing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._firing is not None:
            self._firing.cancel()

    def _wake(self) -> None:
        self._timer = None
        if self._firing is None or self._firing.done():
            self._firing = asyncio.ensure_future(self._fire_and_arm())

    async def _fire_and_arm(self) -> list[Task]:
        runs = await self.fire()
        if self._timer is None:  # not already set to try again
            self.arm()
        return runs

    async def fire(self, now: float | None = None) -> list[Task]:
        """Submit the run of each schedule that is due (one per schedule: the latest time
        due) and save when each fired. Returns the runs submitted."""
        now = time.time() if now is None else now
        due: list[tuple[_Entry, float]] = []
        for entry in self._entries.values():
            if entry.next_at > now:
                continue
            # Several missed: the latest only, found in one step (not one per missed time).
            at = entry.schedule.latest_by(now, entry.last_fired) or entry.next_at
            due.append((entry, at))
        runs = [entry.schedule.task_at(at) for entry, at in due]
        if runs:
            try:
                await self._submit(runs)
                current = [(e, at) for e, at in due if self._entries.get(e.schedule.name) is e]
                for entry, at in current:
                    entry.last_fired = at
                    entry.next_at = entry.schedule.next_after(at)
                # Only those still here: one removed or replaced meanwhile stays so.
                await self._save([entry for entry, _ in current])
            except Exception as e:  # the store is down: the same runs again later
                logger.error(
                    "{}: schedules could not fire ({}); trying again in {:g}s",
                    self._owner,
                    e,
                    _RETRY_S,
                )
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(_RETRY_S, self._wake)
                return []
            logger.info("{}: fired {}", self._owner, ", ".join(task.id for task in runs))
        return runs

    async def _save(self, entries: list[_Entry]) -> None:
        await self._store.save_schedules(
            [(e.schedule.name, e.schedule.model_dump_json(), e.last_fired) for e in entries]
        )

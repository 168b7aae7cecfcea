"""The workers the book may give work to, and those that fell silent (suspects).

Presence bookkeeping only: who is connected with which skills and capacity, and a timer per
suspect after which its attempts are given up. What happens to the attempts is the book's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from serendib.tasks.models import Task, WorkerInfo

__all__ = ["CallSoon", "Roster"]

CallSoon = Callable[[Callable[[], Awaitable[None]]], None]
"""Runs a coroutine function in the owner's dispatch loop (timers fire through it)."""


class Roster:
    """Connected workers by name, suspects among them, and their suspect timers.

    Args:
        call_soon: Runs a coroutine function in the owner's dispatch loop.
    """

    def __init__(self, call_soon: CallSoon) -> None:
        self.workers: dict[str, WorkerInfo] = {}
        self._call_soon = call_soon
        self._suspects: dict[str, asyncio.TimerHandle] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.workers

    @property
    def suspects(self) -> list[str]:
        """Workers that fell silent and whose attempts are kept for them a while."""
        return list(self._suspects)

    def is_suspect(self, name: str) -> bool:
        """Whether ``name`` fell silent and is waited for."""
        return name in self._suspects

    def join(self, info: WorkerInfo) -> bool:
        """Note a worker that can take work; True if it was a suspect coming back."""
        timer = self._suspects.pop(info.name, None)
        if timer is not None:
            timer.cancel()
        self.workers[info.name] = info
        return timer is not None

    def suspect(self, name: str, grace_s: float, give_up: Callable[[], Awaitable[None]]) -> None:
        """Wait ``grace_s`` for silent ``name``, then run ``give_up`` (unless it is back)."""

        async def expired() -> None:
            if self._suspects.pop(name, None) is not None:
                await give_up()

        loop = asyncio.get_running_loop()
        self._suspects[name] = loop.call_later(grace_s, lambda: self._call_soon(expired))

    def leave(self, name: str) -> WorkerInfo | None:
        """Forget ``name`` (its suspect timer too); what it was, or None if unknown."""
        timer = self._suspects.pop(name, None)
        if timer is not None:
            timer.cancel()
        return self.workers.pop(name, None)

    def level(self, name: str, task: Task) -> int:
        """Worker ``name``'s level in ``task``'s skill (0 if it is not connected)."""
        info = self.workers.get(name)
        return info.level(task.required_skill) if info is not None else 0

    def eligible_level(self, name: str, task: Task) -> int | None:
        """Worker ``name``'s level in ``task``'s skill if it could be given ``task`` now
        (connected, not suspect, runs its kind, has its labels); else None."""
        info = self.workers.get(name)
        if (
            info is None
            or name in self._suspects
            or not info.runs(task.kind)
            or not set(task.labels) <= set(info.labels)
        ):
            return None
        level = info.level(task.required_skill)
        return level or None

    def close(self) -> None:
        """Cancel every suspect timer."""
        for timer in self._suspects.values():
            timer.cancel()
        self._suspects.clear()

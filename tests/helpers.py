"""Test helpers: agents that record what they receive, and waiting with a deadline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from serendib import Admin, Agent, AgentDetail, Envelope, on_message

DEADLINE = 10.0
POSTGRES_ENV = "SERENDIB_TEST_POSTGRES_URL"


def postgres_test_url(
    must: str = "the PostgreSQL task store", skipped: str = "PostgreSQL store"
) -> str:
    """The PostgreSQL server tests use (:data:`POSTGRES_ENV`): without one the test is
    skipped, but fails under CI, which must test ``must``."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: CI must test {must}")
        pytest.skip(f"{skipped} not tested: set {POSTGRES_ENV}=postgresql://... to test it")
    return url


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int


class Note(BaseModel):
    text: str


class Recorder(Agent):
    """Records every Ping and Note it handles; answers Ping requests with Pong."""

    def __init__(self, name: str, workspace_id: str, transport: str | None, **kw: Any) -> None:
        super().__init__(name, workspace_id, transport=transport, **kw)
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.unhandled: asyncio.Queue[Envelope] = asyncio.Queue()

    @on_message
    async def on_ping(self, ping: Ping) -> Pong:
        await self.received.put(ping)
        return Pong(n=ping.n)

    @on_message(type=Note)
    async def on_note(self, note: Note) -> None:
        await self.received.put(note)

    async def on_unhandled(self, envelope: Envelope) -> None:
        await self.unhandled.put(envelope)


class WatchingAdmin(Admin):
    """Records connect and disconnect events."""

    def __init__(self, name: str, workspace_id: str, transport: str | None, **kw: Any) -> None:
        super().__init__(name, workspace_id=workspace_id, transport=transport, **kw)
        self.connected: asyncio.Queue[AgentDetail] = asyncio.Queue()
        self.disconnected: asyncio.Queue[AgentDetail] = asyncio.Queue()
        self.received: asyncio.Queue[Any] = asyncio.Queue()

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        await self.connected.put(agent)

    async def on_agent_disconnected(self, agent: AgentDetail) -> None:
        await self.disconnected.put(agent)

    @on_message
    async def on_pong(self, pong: Pong) -> None:
        await self.received.put(pong)

    @on_message
    async def on_note(self, note: Note) -> None:
        await self.received.put(note)


async def get(queue: asyncio.Queue[Any], timeout: float = DEADLINE) -> Any:
    """The next item of ``queue``, or fail the test after ``timeout`` seconds."""
    return await asyncio.wait_for(queue.get(), timeout)


async def drain(queue: asyncio.Queue[Any], count: int, timeout: float = DEADLINE) -> list[Any]:
    """The next ``count`` items of ``queue``."""
    return [await get(queue, timeout) for _ in range(count)]


async def until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = DEADLINE,
    what: str = "condition",
    every: float = 0.005,
) -> None:
    """Wait until ``predicate()`` holds, checking every ``every`` seconds, up to a deadline.

    For conditions nothing signals (a row in a store another process writes, a count): the one
    place tests poll. ``predicate`` may be a coroutine function.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        held = predicate()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    """Gather, failing the test after the deadline."""
    return await asyncio.wait_for(asyncio.gather(*aws), DEADLINE)

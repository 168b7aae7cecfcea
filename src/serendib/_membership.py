"""Workspace membership, the admin's half of presence: who is here, who fell silent, who left.

:class:`Membership` welcomes agents (``Hello``), tracks their heartbeats and any message as a
sign of life, and turns presence into ``on_agent_connected`` / ``on_agent_lost`` /
``on_agent_disconnected`` calls, made in order with the messages the admin handles.
:class:`~serendib.admin.Admin` is the agent built on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger

from serendib.agent import Agent, current_message
from serendib.errors import AgentError
from serendib.handlers import on_message
from serendib.messages import Envelope
from serendib.presence import AgentDetail, Goodbye, Heartbeat, Hello, Probe, Welcome
from serendib.subjects import presence_pattern

__all__ = ["Membership"]

_LOST_REMEMBERED = 10_000
"""Agents declared lost whose goodbye is still recognised (the oldest are forgotten)."""
_PROBE_MAX_S = 5.0
"""Longest wait for the holder of a name to answer a probe (it gets two heartbeats, up to
this): one that does not answer is taken for dead and replaced by the run asking for its
name."""


@dataclass(slots=True)
class _Member:
    detail: AgentDetail
    last_seen: float
    interval: float


@dataclass(frozen=True, slots=True)
class _Call:
    """An internal event: run ``fn`` in the dispatch loop. Never registered, so never forged."""

    fn: Callable[[], Awaitable[None]]


class Membership(Agent):
    """An agent that keeps its workspace's membership (the base of :class:`~serendib.Admin`).

    Call :meth:`_init_membership` from ``__init__``.
    """

    lost_after: int
    _members: dict[str, _Member]
    _lost_members: dict[str, _Member]
    _probing: set[str]

    def _init_membership(self, lost_after: int) -> None:
        if lost_after < 1:
            raise ValueError(f"lost_after must be >= 1, got {lost_after}")
        self.lost_after = lost_after
        self._members = {}
        self._probing: set[str] = set()
        # Agents declared lost, until heard from again: a goodbye from one still counts.
        self._lost_members = {}

    @property
    def agents(self) -> list[AgentDetail]:
        """The agents connected now, in the order they joined."""
        return [member.detail for member in self._members.values()]

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        """Hook: an agent joined the workspace (or came back after being lost).

        Args:
            topic: The presence subject the agent announced itself on.
            agent: Who joined.
        """

    async def on_agent_disconnected(self, agent: AgentDetail) -> None:
        """Hook: an agent said goodbye, or (unless :meth:`on_agent_lost` is overridden)
        missed ``lost_after`` heartbeats in a row.

        Args:
            agent: Who left.
        """

    async def on_agent_lost(self, agent: AgentDetail) -> None:
        """Hook: an agent missed ``lost_after`` heartbeats in a row (no goodbye).

        It may be gone, or only slow (its process overloaded, its network cut for a while):
        if it is heard from again it joins afresh (:meth:`on_agent_connected`). By default
        this calls :meth:`on_agent_disconnected`; when overridden, a goodbye that comes
        from the lost agent later calls :meth:`on_agent_disconnected` then.

        Args:
            agent: Who fell silent.
        """
        await self.on_agent_disconnected(agent)

    def _subjects(self) -> list[str]:
        return [*super()._subjects(), presence_pattern(self.workspace_id)]

    def silence_limit(self, name: str) -> float | None:
        """Seconds of silence after which agent ``name`` is (or was) declared lost."""
        member = self._members.get(name) or self._lost_members.get(name)
        return None if member is None else self.lost_after * member.interval

    async def _admit(self, detail: AgentDetail, interval: float) -> bool:
        self._lost_members.pop(detail.name, None)
        member = self._members.get(detail.name)
        if member is not None:
            if member.detail.id != detail.id:
                return False
            member.last_seen = time.monotonic()
            member.interval = interval
            return True
        self._members[detail.name] = _Member(detail, time.monotonic(), interval)
        logger.debug("{}: agent {} ({}) connected", self.name, detail.name, detail.role)
        await self.on_agent_connected(presence_pattern(self.workspace_id), detail)
        return True

    async def _remove(self, name: str, agent_id: str, why: str, lost: bool = False) -> None:
        member = self._members.get(name)
        if member is None and not lost:
            # A goodbye from an agent declared lost: it did not die, it left; say so.
            member = self._lost_members.get(name)
            if member is not None and member.detail.id == agent_id:
                del self._lost_members[name]
                if type(self).on_agent_lost is not Membership.on_agent_lost:
                    logger.info("{}: agent {} (lost earlier) {}", self.name, name, why)
                    await self.on_agent_disconnected(member.detail)
            return
        if member is None or member.detail.id != agent_id:
            return
        del self._members[name]
        logger.info("{}: agent {} {}", self.name, name, why)
        if lost:
            self._lost_members[name] = member
            while len(self._lost_members) > _LOST_REMEMBERED:
                del self._lost_members[next(iter(self._lost_members))]
            await self.on_agent_lost(member.detail)
        else:
            await self.on_agent_disconnected(member.detail)
            self._left(member.detail)

    @on_message
    async def _on_hello(self, hello: Hello) -> None:
        request = current_message()
        assert request is not None
        known = self._members.get(hello.agent.name)
        if known is not None and known.detail.id != hello.agent.id:
            # Another run asks for a member's name: a restart (the member died a moment ago,
            # as a supervisor restarting a killed process does) or a duplicate. Ask the member;
            # if it does not answer, the new run takes its place at once.
            self._check_holder(known)
            reason = "name in use; checking whether the agent holding it is alive"
            await self._reply(request, Welcome(admin=self.name, accepted=False, reason=reason))
            return
        await self._reply(request, Welcome(admin=self.name, accepted=True))
        await self._admit(hello.agent, hello.interval)

    @on_message
    async def _on_heartbeat(self, beat: Heartbeat) -> None:
        await self._admit(beat.agent, beat.interval)

    @on_message
    async def _on_goodbye(self, goodbye: Goodbye) -> None:
        await self._remove(goodbye.name, goodbye.id, "disconnected")

    async def _dispatch(self, envelope: Envelope) -> None:
        if type(envelope.data) is _Call:
            try:
                await envelope.data.fn()
            except Exception as e:
                logger.opt(exception=e).error("{}: internal event failed", self.name)
            return
        await super()._dispatch(envelope)

    def _call_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the dispatch loop, in order with the messages being handled."""
        self._inbox.put_nowait(Envelope("", "", self.name, self.name, time.time(), _Call(fn)))

    def _heard_from(self, envelope: Envelope) -> None:
        # Any message is a sign of life, counted when it arrives, not when its turn in the
        # inbox comes: a busy admin must not declare its busiest workers lost. Presence from
        # another run under the same name (a restart asking for it) is not the member's.
        member = self._members.get(envelope.sender)
        if member is None:
            return
        data = envelope.data
        if isinstance(data, (Hello, Heartbeat)) and data.agent.id != member.detail.id:
            return
        if isinstance(data, Goodbye) and data.id != member.detail.id:
            return
        member.last_seen = time.monotonic()

    def _check_holder(self, member: _Member) -> None:
        """Probe ``member`` (once at a time); replace it at once if it does not answer."""
        name, agent_id = member.detail.name, member.detail.id
        if name in self._probing:
            return
        self._probing.add(name)

        async def probe() -> None:
            try:
                if not await self._holder_alive(member):
                    self._call_soon(lambda: self._replace(name, agent_id))
            finally:
                self._probing.discard(name)

        self._spawn(probe(), f"probe-{name}")

    async def _holder_alive(self, member: _Member) -> bool:
        """Whether ``member`` answers a probe (within two heartbeats, at most 5 s)."""
        timeout = min(max(2 * member.interval, 1.0), _PROBE_MAX_S)
        try:
            await self.request(member.detail.name, Probe(id=member.detail.id), timeout=timeout)
        except (AgentError, TimeoutError):
            return False
        return True

    def _left(self, agent: AgentDetail) -> None:
        """Hook: ``agent`` said goodbye (after ``on_agent_disconnected``)."""

    async def _replace(
        self,
        name: str,
        agent_id: str,
        why: str = "did not answer while another run asked for its name",
    ) -> None:
        await self._remove(name, agent_id, why)

    async def _monitor_loop(self) -> None:
        was_connected = True
        last_tick = time.monotonic()
        while True:
            shortest = min((m.interval for m in self._members.values()), default=1.0)
            tick = min(self.heartbeat_interval, shortest) / 2
            await asyncio.sleep(tick)
            now = time.monotonic()
            stalled = now - last_tick > 2 * tick + shortest
            last_tick = now
            if not self.is_connected:
                # Cut off ourselves, we cannot tell who is alive: judge no one until back.
                was_connected = False
                continue
            if not was_connected or stalled:
                # Back, or our own loop fell behind (heartbeats wait unread in the socket):
                # start everyone's clock afresh rather than blame them for our delay.
                was_connected = True
                for member in self._members.values():
                    member.last_seen = now
                continue
            for name, member in list(self._members.items()):
                if now - member.last_seen > self.lost_after * member.interval:
                    missed = (name, member.detail.id)
                    self._call_soon(lambda m=missed: self._lost(*m))  # type: ignore[misc]

    async def _lost(self, name: str, agent_id: str) -> None:
        member = self._members.get(name)
        if member is None:
            return
        limit = self.lost_after * member.interval
        if time.monotonic() - member.last_seen > limit:
            await self._remove(name, agent_id, f"lost (no heartbeat for {limit:g}s)", lost=True)

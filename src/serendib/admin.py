"""The Admin: an agent that keeps the workspace's membership and can run a whole system.

It keeps the workspace's membership: it welcomes agents (``Hello``), tracks their heartbeats
and any message as a sign of life, and turns presence into ``on_agent_connected`` /
``on_agent_lost`` / ``on_agent_disconnected`` calls, made in order with the messages it
handles. ``run(workers=[...])`` runs the admin and in-process workers until it stops.
Given a port and no NATS URL, it runs an embedded ``nats-server`` on that port for agents
in other processes, and stops it when it stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from loguru import logger

from serendib.agent import Agent, AgentStatus, current_message
from serendib.errors import AgentError, DuplicateAgentName
from serendib.handlers import on_message
from serendib.messages import Envelope
from serendib.presence import (
    AdminStarted,
    AdminStopping,
    AgentDetail,
    Goodbye,
    Heartbeat,
    Hello,
    Probe,
    Welcome,
)
from serendib.subjects import presence_pattern
from serendib.transports import MemoryHub, MemoryTransport, Transport
from serendib.transports.embedded import TOKEN_ENV, EmbeddedBroker

if TYPE_CHECKING:
    from serendib.transports.identity import Registrar, RegistrationRequest

__all__ = ["Admin"]


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


class Admin(Agent):
    """Keeps a workspace's membership; subclass it to react to agents and messages.

    Args:
        name: The admin's name; also the workspace's, unless ``workspace_id`` is given.
        port: Port of the NATS server agents in other processes connect to. With no
            ``nats_url`` and no in-process workers, the admin starts an embedded
            ``nats-server`` on it (and stops it when the admin stops).
        workspace_id: The workspace administered (default: ``name``).
        host: Interface the embedded NATS server binds to.
        nats_url: An existing NATS server or cluster to use instead of the embedded one.
        transport: A transport or URL; overrides ``nats_url`` and ``port``.
        token: Token the embedded server requires (and this admin presents); generated
            when the server binds beyond loopback and none is given. ``SERENDIB_TOKEN``
            is read when not given.
        tls_cert: Certificate the embedded server presents (turns TLS on); this admin
            and its agents verify it with ``nats_options=NatsOptions(tls_ca=...)``.
        tls_key: The certificate's private key.
        lost_after: Missed heartbeats after which an agent is declared lost.
        identities_file: Where the embedded server's agent identities are kept across
            restarts, so agents reconnect to a restarted admin as themselves (default:
            ``$XDG_STATE_HOME/serendib/<workspace>/identities-<port>.json``; None keeps
            them in memory, and agents must then be restarted with the admin).
        **options: Passed on to :class:`~serendib.Agent` (``nats_options`` also
            configures the embedded server's user and password).
    """

    role: ClassVar[str] = "admin"

    def __init__(
        self,
        name: str = "admin",
        port: int | None = None,
        *,
        workspace_id: str | None = None,
        host: str = "127.0.0.1",
        nats_url: str | None = None,
        transport: Transport | str | None = None,
        token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        lost_after: int = 3,
        identities_file: str | Path | Literal["default"] | None = "default",
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            workspace_id or name,
            transport=transport or nats_url,
            admin_port=port,
            admin_ip=host,
            token=token,
            **options,
        )
        self.port = port
        self.host = host
        if lost_after < 1:
            raise ValueError(f"lost_after must be >= 1, got {lost_after}")
        self.lost_after = lost_after
        self._members: dict[str, _Member] = {}
        self._probing: set[str] = set()
        # Agents declared lost, until heard from again: a goodbye from one still counts.
        self._lost_members: dict[str, _Member] = {}
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.identities_file: str | None = (
            _default_identities(self.workspace_id)
            if identities_file == "default"
            else str(identities_file)
            if identities_file
            else None
        )
        self._stop_requested: asyncio.Event | None = None
        self._workers: list[Agent] | None = None
        self._broker: EmbeddedBroker | None = None
        self._registrar: Registrar | None = None

    @property
    def broker(self) -> EmbeddedBroker | None:
        """The embedded NATS server this admin runs, if it runs one."""
        return self._broker

    # --- membership ----------------------------------------------------------------------

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
                if type(self).on_agent_lost is not Admin.on_agent_lost:
                    logger.info("{}: agent {} (lost earlier) {}", self.name, name, why)
                    await self.on_agent_disconnected(member.detail)
            return
        if member is None or member.detail.id != agent_id:
            return
        del self._members[name]
        # A client (each run of the CLI) coming and going is routine: DEBUG; agents that stay
        # (workers...) matter to whoever reads the log.
        level = "DEBUG" if member.detail.role == "client" and not lost else "INFO"
        logger.log(level, "{}: agent {} {}", self.name, name, why)
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

    # --- lifecycle ----------------------------------------------------------------------------

    def _default_transport_url(self) -> str:
        if self._broker is not None:
            return self._broker.url
        if self.port is not None:
            scheme = "tls" if self.tls_cert else "nats"
            return f"{scheme}://{self.host}:{self.port}"
        return "memory://default"

    def _registers(self) -> bool:
        return False  # it runs the server (or trusts an external one) rather than joining

    async def join(self) -> None:
        """Start watching the members' heartbeats and announce this admin (it joins no one)."""
        self._joined = True
        self._spawn(self._monitor_loop(), "monitor")
        await self._publish(self._subject_all, AdminStarted(admin=self.name))

    async def start(self) -> None:
        """Start the embedded NATS server if there is one to run, connect, watch heartbeats.

        Raises:
            BrokerStartError: The embedded server could not start (its port is in use...).
            ConnectionFailed: The transport could not connect.
        """
        self._stop_requested = asyncio.Event()
        await self._start_broker()
        try:
            await super().start()
            await self._start_registrar()
        except BaseException:
            await self._stop_registrar()
            await self._stop_broker()
            raise
        identities = " (per-agent identities)" if self._registrar is not None else ""
        logger.info(
            "{}: admin of workspace {!r} on {}{}",
            self.name,
            self.workspace_id,
            self.address,
            identities,
        )

    async def _start_broker(self) -> None:
        if self._transport_spec is not None or self.port is None or self._broker is not None:
            return
        from serendib.transports.identity import Identity
        from serendib.transports.nats import NatsOptions

        options = self.nats_options
        identity = Identity.generate()
        broker = EmbeddedBroker(
            self.port,
            self.host,
            token=self.token or (options.token if options else None) or os.environ.get(TOKEN_ENV),
            user=options.user if options else None,
            password=options.password if options else None,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            workspace=self.workspace_id,
            admin_key=identity.public_key,
            identities_file=self.identities_file,
        )
        self._signed_options = NatsOptions(
            nkey_seed=identity.seed,
            tls_ca=options.tls_ca if options else None,
            connect_timeout=options.connect_timeout if options else 3.0,
        )
        logger.info(
            "{}: starting an embedded NATS server on {}:{}", self.name, self.host, self.port
        )
        await broker.start()
        self._broker = broker
        self.token = broker.token

    async def _start_registrar(self) -> None:
        broker, options = self._broker, self._signed_options
        if broker is None or options is None or not broker.identities or not options.nkey_seed:
            return
        from serendib.transports.identity import Registrar

        registrar = Registrar(
            broker.url,
            options.nkey_seed,
            self.workspace_id,
            self.name,
            self._may_register,
            lambda request: broker.authorize(request.name, request.key),
            tls=options.tls_context(),
        )
        await registrar.start()
        self._registrar = registrar

    async def _stop_registrar(self) -> None:
        registrar, self._registrar = self._registrar, None
        if registrar is not None:
            await registrar.stop()

    async def _may_register(self, request: RegistrationRequest) -> str | None:
        """Whether the run asking for an identity may have its name: None, or why not."""
        if request.name == self.name:
            return "that is the admin's name"
        broker = self._broker
        member = self._members.get(request.name)
        if broker is not None and broker.key_of(request.name) == request.key:
            # The same identity, restarted (a supervisor restarts what was killed): it
            # takes its own place at once, and what the old run held goes back to the queue.
            if member is not None:
                agent_id = member.detail.id
                why = "replaced by a new run of the same identity"
                self._call_soon(lambda: self._replace(request.name, agent_id, why))
            return None
        if member is None:
            return None
        if await self._holder_alive(member):
            return f"an agent named {request.name!r} with another identity is connected"
        # Its holder is dead: the new run takes its place now, not after missed heartbeats.
        agent_id = member.detail.id
        self._call_soon(lambda: self._replace(request.name, agent_id))
        return None

    def _left(self, agent: AgentDetail) -> None:
        # A client's identity is of no further use once it leaves (each run of the CLI is a
        # new client); a worker's is kept for its return.
        broker = self._broker
        if agent.role == "client" and broker is not None and broker.identities:
            self._spawn(broker.revoke(agent.name), f"revoke-{agent.name}")

    async def _stop_broker(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()
            logger.debug("{}: embedded NATS server stopped", self.name)

    async def _close(self, drain_timeout: float | None) -> None:
        try:
            await self._stop_registrar()
            await super()._close(drain_timeout)
        finally:
            await self._stop_broker()

    async def _say_goodbye(self) -> None:
        await self._publish(self._subject_all, AdminStopping(admin=self.name))

    def _admin_stopping(self, notice: AdminStopping) -> None:
        """Another admin of the workspace stopping is no concern of this one."""

    async def stop(self, drain_timeout: float | None = 10.0) -> None:
        """Stop the admin, and with it the workers it runs in this process.

        Safe to call from a handler: the run ends once the handler returns.
        """
        if self._workers is not None and self._stop_requested is not None:
            self._draining = True  # handle nothing more; arun stops the admin, then the workers
            self._stop_requested.set()
            # From a handler (ours or a worker's), waiting would wait on itself.
            if current_message() is None and asyncio.current_task() is not self._dispatcher:
                await self.wait_stopped()
            return
        await super().stop(drain_timeout)

    async def arun(self, workers: Iterable[Agent] = ()) -> None:
        """Start the admin and ``workers`` in this process; return when the admin stops.

        With no transport given, everything runs on a private in-process hub. Every worker is
        subscribed before any of them joins, so no ``on_agent_connected`` reaction is missed.

        Raises:
            DuplicateAgentName: Two workers share a name.
            ValueError: A worker belongs to another workspace.
        """
        crew = list(workers)
        names: set[str] = {self.name}
        for worker in crew:
            if worker.name in names:
                raise DuplicateAgentName(worker.name, self.workspace_id)
            if worker.workspace_id != self.workspace_id:
                raise ValueError(
                    f"worker {worker.name!r} is in workspace {worker.workspace_id!r}, "
                    f"but the admin runs {self.workspace_id!r}"
                )
            names.add(worker.name)
        if crew and self._transport_spec is None:
            hub = MemoryHub.private()
            self.use_transport(MemoryTransport(hub))
            for worker in crew:
                if not worker.has_transport:
                    worker.use_transport(MemoryTransport(hub))
        self._workers = crew
        try:
            await self.start()
            assert self._stop_requested is not None
            for worker in crew:
                await worker.open()
            await asyncio.gather(*(worker.join() for worker in crew))
            await self._stop_requested.wait()
        finally:
            self._workers = None
            busy = sum(1 for w in crew if w.status is AgentStatus.RUNNING)
            if busy:
                logger.debug("{}: stopping {} workers", self.name, busy)
            await super().stop(drain_timeout=None)
            await asyncio.gather(*(w.stop() for w in crew), return_exceptions=True)

    def run(self, workers: Iterable[Agent] = ()) -> None:
        """Blocking form of :meth:`arun`; Ctrl-C stops everything cleanly (a second one
        interrupts the stop)."""
        try:
            asyncio.run(self._run_interruptible(workers))
        except KeyboardInterrupt:
            logger.info("{}: interrupted; stopped", self.name)

    async def _run_interruptible(self, workers: Iterable[Agent]) -> None:
        # The loop's own SIGINT handler, not asyncio.run's: a signal handled by the loop
        # wakes it through its wakeup fd whichever thread the signal lands on (asyncio.run's
        # handler cancels the main task, and a SIGINT delivered to another thread while the
        # loop sleeps was seen to leave a run that never stopped).
        loop = asyncio.get_running_loop()
        interrupts = 0

        def interrupted() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                raise KeyboardInterrupt
            logger.info("{}: interrupted; stopping", self.name)
            if self._stop_requested is not None:
                self._stop_requested.set()
            else:
                main.cancel()  # not started yet

        main = asyncio.ensure_future(self.arun(workers))
        try:
            loop.add_signal_handler(signal.SIGINT, interrupted)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            await main
            return
        try:
            await main
        except asyncio.CancelledError:
            if interrupts:
                return
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def run_admin(self, inputs: bytes = b"", workers: Iterable[Agent] = ()) -> None:
        """Tutorial (Ceylon) spelling of :meth:`run`; ``inputs`` is accepted and ignored."""
        self.run(workers)


def _default_identities(workspace: str) -> str:
    """Where an admin keeps its server's identities: per workspace and (chosen) port."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "serendib" / workspace / "identities-{port}.json")

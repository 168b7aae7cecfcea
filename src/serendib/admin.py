"""The Admin: an agent that keeps the workspace's membership and can run a whole system.

It keeps the workspace's membership (:class:`~serendib._membership.Membership`: welcomes
agents, tracks their heartbeats, and turns presence into ``on_agent_connected`` /
``on_agent_lost`` / ``on_agent_disconnected`` calls, made in order with the messages it
handles). ``run(workers=[...])`` runs the admin and in-process workers until it stops.
Given a port and no NATS URL, it runs an embedded ``nats-server`` on that port for agents
in other processes, and stops it when it stops.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from loguru import logger

from serendib._membership import Membership
from serendib.agent import Agent, AgentStatus, current_message
from serendib.errors import DuplicateAgentName
from serendib.presence import AdminStarted, AdminStopping, AgentDetail
from serendib.transports import MemoryHub, MemoryTransport, Transport
from serendib.transports.embedded import TOKEN_ENV, EmbeddedBroker

if TYPE_CHECKING:
    from serendib.transports.identity import Registrar, RegistrationRequest

__all__ = ["Admin"]


class Admin(Membership):
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
        self._init_membership(lost_after)
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

    async def _join(self) -> None:
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
                if worker._transport_spec is None:
                    worker.use_transport(MemoryTransport(hub))
        self._workers = crew
        try:
            await self.start()
            assert self._stop_requested is not None
            for worker in crew:
                await worker._open()
            await asyncio.gather(*(worker._join() for worker in crew))
            await self._stop_requested.wait()
        finally:
            self._workers = None
            busy = sum(1 for w in crew if w.status is AgentStatus.RUNNING)
            if busy:
                logger.debug("{}: stopping {} workers", self.name, busy)
            await super().stop(drain_timeout=None)
            await asyncio.gather(*(w.stop() for w in crew), return_exceptions=True)

    def run(self, workers: Iterable[Agent] = ()) -> None:
        """Blocking form of :meth:`arun`; Ctrl-C stops everything cleanly."""
        try:
            asyncio.run(self.arun(workers))
        except KeyboardInterrupt:
            logger.info("{}: interrupted; stopped", self.name)

    def run_admin(self, inputs: bytes = b"", workers: Iterable[Agent] = ()) -> None:
        """Tutorial (Ceylon) spelling of :meth:`run`; ``inputs`` is accepted and ignored."""
        self.run(workers)


def _default_identities(workspace: str) -> str:
    """Where an admin keeps its server's identities: per workspace and (chosen) port."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "serendib" / workspace / "identities-{port}.json")

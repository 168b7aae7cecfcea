"""The Agent: typed handlers, broadcast / send / request, presence and lifecycle.

An agent belongs to one workspace. Messages it receives go through one inbox and are
handled one at a time, in arrival order, so messages from one sender are handled in the
order they were sent and a handler never races another handler of the same agent.

The transport's receive callback runs on its read loop, so it only decodes, checks that
the sender is the one the subject names, routes replies to the requests waiting for them,
and queues everything else; one dispatcher task takes the inbox in order and runs the
handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import time
import uuid
from collections.abc import Coroutine
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from loguru import logger

from serendib._droplog import DropLog
from serendib.errors import (
    AdminUnreachable,
    AgentNotRunning,
    DecodeError,
    DuplicateAgentName,
    MessageError,
    RemoteError,
    RequestTimeout,
    SerendibError,
    StoreError,
)
from serendib.handlers import HandlerTable, on_message
from serendib.limits import MAX_HEARTBEAT_INTERVAL_S
from serendib.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Envelope,
    RequestFailed,
    decode,
    default_registry,
    new_envelope,
)
from serendib.presence import (
    AdminStarted,
    AdminStopping,
    AgentDetail,
    Goodbye,
    Heartbeat,
    Hello,
    Probe,
    ProbeReply,
    Welcome,
)
from serendib.subjects import (
    broadcast_pattern,
    broadcast_subject,
    direct_subject,
    inbox_pattern,
    presence_subject,
    sender_of,
    validate_name,
)
from serendib.transports import MemoryTransport, Transport, open_transport
from serendib.transports.base import TOKEN_ENV

if TYPE_CHECKING:
    from serendib.transports.identity import Identity
    from serendib.transports.nats import NatsOptions
    from serendib.transports.shared import ConnectionPool

__all__ = ["Agent", "AgentStatus", "current_message"]

_current: contextvars.ContextVar[Envelope | None] = contextvars.ContextVar(
    "serendib_current_message", default=None
)


def current_message() -> Envelope | None:
    """The envelope of the message whose handler is running, or ``None`` outside handlers.

    Use it to learn a message's sender or id from within a handler.
    """
    return _current.get()


NETWORK_HEARTBEAT_S = 1.0
IN_PROCESS_HEARTBEAT_S = 30.0


class AgentStatus(Enum):
    """Where an agent is in its life."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Agent:
    """A member of a workspace that handles typed messages.

    Subclass it and mark async methods with :func:`~serendib.on_message`. It sends with
    ``broadcast`` / ``send`` / ``request``.

    Args:
        name: Unique name within the workspace (letters, digits, ``_`` and ``-``).
        workspace_id: The workspace to join; agents of other workspaces are never reached.
        admin_port: Port of the admin's NATS server, for an agent in another process.
        admin_ip: Host of the admin's NATS server.
        transport: A transport or URL (``memory://NAME``, ``nats://HOST:PORT``); overrides
            ``admin_ip``/``admin_port``. When the agent is run by an admin in the same
            process (``Admin.run(workers=[...])``), the admin supplies it.
        token: NATS auth token (``SERENDIB_TOKEN`` is read when not given).
        nats_options: Other NATS credentials and TLS (user/password, creds file, CA...).
        role: What the agent is, as the admin sees it.
        attributes: Facts published with the agent's presence (skills, capacity, ...).
        heartbeat_interval: Seconds between heartbeats (an agent silent for three is lost).
            Default: 1 s over the network; 30 s in one process, where an agent cannot
            vanish without saying goodbye and heartbeats only guard against a stuck one.
        join_timeout: Seconds to wait for the admin's welcome before giving up.
        max_message_bytes: Largest message accepted or sent.
        identity: For an agent joining an admin's embedded server (``admin_port``): its
            identity there, an :class:`~serendib.transports.identity.Identity` or the path
            of a file keeping one (created if missing). The token only lets an agent ask
            for an identity; with it, the agent can publish only under its own name. A
            worker restarted with the same identity takes its own place at once. Default:
            a new identity for each run.
        connections: Share one NATS connection with the other agents of this process given
            the same pool and URL (a worker serving several workspaces). An agent that gets
            an identity of its own from an admin's server keeps a connection of its own.
    """

    role: ClassVar[str] = "agent"
    _handler_table: ClassVar[HandlerTable] = HandlerTable(object)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handler_table = HandlerTable(cls)

    def __init__(
        self,
        name: str,
        workspace_id: str = "default",
        *,
        admin_port: int | None = None,
        admin_ip: str = "127.0.0.1",
        transport: Transport | str | None = None,
        token: str | None = None,
        nats_options: NatsOptions | None = None,
        role: str | None = None,
        attributes: dict[str, Any] | None = None,
        heartbeat_interval: float | None = None,
        join_timeout: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        identity: Identity | str | Path | None = None,
        connections: ConnectionPool | None = None,
    ) -> None:
        self.name = validate_name(name, "agent name")
        self.workspace_id = validate_name(workspace_id, "workspace")
        if heartbeat_interval is not None and not 0 < heartbeat_interval <= (
            MAX_HEARTBEAT_INTERVAL_S
        ):
            raise ValueError(
                f"heartbeat_interval must be > 0 and <= {MAX_HEARTBEAT_INTERVAL_S:g}, "
                f"got {heartbeat_interval}"
            )
        self.admin_port = admin_port
        self.admin_ip = admin_ip
        self._transport_spec = transport
        self.token = token
        self.nats_options = nats_options
        self.detail = AgentDetail(
            name=name,
            id=uuid.uuid4().hex,
            role=role or type(self).role,
            workspace=workspace_id,
            attributes=dict(attributes or {}),
        )
        self._heartbeat_given = heartbeat_interval
        self.heartbeat_interval = heartbeat_interval or NETWORK_HEARTBEAT_S
        self.join_timeout = join_timeout
        self.max_message_bytes = max_message_bytes
        self.status = AgentStatus.CREATED
        self.admin_name: str | None = None
        self._admin_pinned = False
        self._identity_spec = identity
        self._connections = connections
        self._signed_options: NatsOptions | None = None
        self.drops = DropLog(name)
        self._transport: Transport | None = None
        self._subscriptions: list[Any] = []
        self._inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        self._pending: dict[str, tuple[asyncio.Future[Envelope], str | None]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._hooks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._joined = False
        self._stopped: asyncio.Event | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._subject_all = broadcast_subject(workspace_id, name)
        self._subject_presence = presence_subject(workspace_id, name)

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"<{kind} {self.name!r} workspace={self.workspace_id!r} {self.status.value}>"

    # --- the connection ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where this agent's transport connects (or will)."""
        if self._transport is not None:
            return self._transport.address
        spec = self._transport_spec
        if spec is None:
            return self._default_transport_url()
        return spec if isinstance(spec, str) else spec.address

    @property
    def is_connected(self) -> bool:
        """Whether the agent's connection is up now (NATS reconnects by itself when it is not)."""
        if self._transport is None:
            return False
        return bool(getattr(self._transport, "is_connected", True))

    def _default_transport_url(self) -> str:
        if self.admin_port is not None:
            return f"nats://{self.admin_ip}:{self.admin_port}"
        return "memory://default"

    def _make_transport(self) -> Transport:
        spec = self._transport_spec or self._default_transport_url()
        if not isinstance(spec, str):
            return spec
        name = f"{self.workspace_id}/{self.name}"
        if self._signed_options is not None:  # an identity from the admin's server
            return open_transport(spec, name=name, options=self._signed_options)
        if self._connections is not None and spec.startswith(("nats://", "tls://")):
            return self._connections.transport(
                spec, token=self.token, name=name, options=self.nats_options
            )
        return open_transport(spec, token=self.token, name=name, options=self.nats_options)

    # --- sending ------------------------------------------------------------------------------

    def _require_running(self, operation: str) -> Transport:
        if self._transport is None or not self._can_send():
            raise AgentNotRunning(self.name, operation)
        return self._transport

    async def _publish(self, subject: str, message: object, to: str | None = None) -> Envelope:
        assert self._transport is not None
        envelope = new_envelope(message, self.name, to)
        await self._transport.publish(subject, envelope)
        return envelope

    async def broadcast(self, message: object) -> None:
        """Send ``message`` to every other agent of the workspace.

        Raises:
            AgentNotRunning: The agent has not been started.
            NotAMessageType: ``message`` is not a model or dataclass instance.
        """
        self._require_running("broadcast")
        await self._publish(self._subject_all, message)

    async def send(self, to: str, message: object) -> None:
        """Send ``message`` to the agent named ``to`` only.

        Raises:
            AgentNotRunning: The agent has not been started.
            NotAMessageType: ``message`` is not a model or dataclass instance.
        """
        self._require_running("send")
        await self._publish(direct_subject(self.workspace_id, to, self.name), message, to)

    async def request(self, to: str, message: object, timeout: float = 5.0) -> Any:
        """Send ``message`` to ``to`` and wait for its handler's return value.

        Returns:
            The reply message.

        Raises:
            AgentNotRunning: The agent has not been started.
            RequestTimeout: No reply within ``timeout`` seconds (also a ``TimeoutError``).
            RemoteError: The remote handler raised.
        """
        self._require_running("request")
        subject = direct_subject(self.workspace_id, to, self.name)
        return await self._request_on(subject, to, message, timeout)

    # Tutorial (Ceylon) spelling of broadcast.
    broadcast_data = broadcast

    async def _request_on(
        self, subject: str, to: str | None, message: object, timeout: float
    ) -> Any:
        assert self._transport is not None
        envelope = new_envelope(message, self.name, to, rq=True)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Envelope] = loop.create_future()
        # Only the recipient may answer; a request to no one in particular (joining) only the
        # admin, once the agent knows which one is its own (registration told it).
        expected = to if to is not None else (self.admin_name if self._admin_pinned else None)
        self._pending[envelope.id] = (future, expected)
        # A timer failing the future, not asyncio.wait_for: that wraps the wait in another
        # task and costs a third of a request's time.
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self._transport.publish(subject, envelope)
            reply = await future
        except TimeoutError:
            raise RequestTimeout(to or subject, envelope.type, timeout) from None
        finally:
            timer.cancel()
            self._pending.pop(envelope.id, None)
        if isinstance(reply.data, RequestFailed):
            raise RemoteError(reply.sender, reply.data.error)
        return reply.data

    async def _reply(self, request: Envelope, message: object) -> None:
        if self._transport is None:
            return
        envelope = new_envelope(message, self.name, request.sender, re=request.id)
        subject = direct_subject(self.workspace_id, request.sender, self.name)
        await self._transport.publish(subject, envelope)

    def _fail_pending(self, operation: str) -> None:
        """End every request still waiting for a reply (the agent is stopping)."""
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(AgentNotRunning(self.name, operation))
        self._pending.clear()

    # --- receiving ----------------------------------------------------------------------------

    def _receive(self, subject: str, message: Envelope | bytes) -> None:
        """Transport callback: decode, route replies, queue everything else. Never blocks.

        A message counts as its sender's only if it arrived on a subject naming that sender
        (the one subject a server with per-agent permissions lets the sender publish on).
        """
        if isinstance(message, bytes):
            try:
                envelope = decode(message, default_registry, self.max_message_bytes)
            except MessageError as e:
                e.sender = sender_of(subject)  # who sent it, whatever it claims
                self.drops.record(e, message)
                return
            except Exception as e:  # e.g. RecursionError from absurdly nested JSON
                self.drops.record(DecodeError(f"undecodable ({type(e).__name__})"), message)
                return
        else:
            envelope = message
        if envelope.sender != sender_of(subject):
            error = DecodeError(f"claims to come from {envelope.sender}")
            error.sender = sender_of(subject)
            self.drops.record(error, message if isinstance(message, bytes) else None)
            return
        if envelope.sender == self.name and envelope.to is None:
            return
        self._heard_from(envelope)
        if envelope.re is not None:
            pending = self._pending.get(envelope.re)
            if (
                pending is not None
                and not pending[0].done()
                and pending[1] in (None, envelope.sender)
            ):
                pending[0].set_result(envelope)
            return
        kind = type(envelope.data)
        if kind is AdminStopping:
            # Not queued: whatever the admin sent before it, the agent may want to stop now.
            self._admin_stopping(envelope.data)
            return
        if kind is Probe:
            # Not queued either: a busy handler must not make a live agent look dead.
            self._probed(envelope)
            return
        if not self._draining:
            self._inbox.put_nowait(envelope)

    def _heard_from(self, envelope: Envelope) -> None:
        """Hook: ``envelope`` arrived from its sender (the admin counts it as a sign of life)."""

    # --- dispatching ---------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        inbox = self._inbox
        while True:
            envelope = await inbox.get()
            if envelope is _STOP:
                return
            await self._dispatch(envelope)
            if self._draining:
                return

    async def _dispatch(self, envelope: Envelope) -> None:
        names = self._handler_table.names_for(type(envelope.data))
        token = _current.set(envelope)
        try:
            if not names:
                await self.on_unhandled(envelope)
                if envelope.rq:
                    await self._reply(
                        envelope, RequestFailed(error=f"no handler for {envelope.type}")
                    )
                return
            for name in names:
                await self._conclude(
                    envelope, f"handler {name}", getattr(self, name)(envelope.data)
                )
        except Exception as e:  # a failed reply must not end the dispatch loop
            logger.opt(exception=e).error("{}: could not answer message {}", self.name, envelope.id)
        finally:
            _current.reset(token)

    async def _conclude(
        self, envelope: Envelope, what: str, work: Coroutine[Any, Any, object]
    ) -> None:
        """Run ``work`` (a handler's call) for ``envelope``; answer a request with its result
        or its error. An expected error (an unknown task id: the requester's to act on) is
        logged at DEBUG; any other with its traceback."""
        try:
            result = await work
        except Exception as e:
            if envelope.rq and _answers(e):
                logger.debug(
                    "{}: {} answered {} from {} with {}: {}",
                    self.name,
                    what,
                    envelope.type,
                    envelope.sender,
                    type(e).__name__,
                    e,
                )
            else:
                logger.opt(exception=e).error(
                    "{}: {} failed on message {} ({} from {})",
                    self.name,
                    what,
                    envelope.id,
                    envelope.type,
                    envelope.sender,
                )
            if envelope.rq:
                await self._reply(envelope, RequestFailed(error=f"{type(e).__name__}: {e}"))
        else:
            if envelope.rq and result is not None:
                await self._reply(envelope, result)

    def _reply_later(self, envelope: Envelope, work: Coroutine[Any, Any, object]) -> None:
        """Answer request ``envelope`` with what ``work`` returns, once it has, while the
        dispatch loop goes on (a handler that would wait on a disk returns None at once).
        An error is answered as a handler's would be."""

        async def answer() -> None:
            token = _current.set(envelope)
            try:
                await self._conclude(envelope, "request", work)
            except Exception as e:  # a failed reply must not go unseen
                logger.opt(exception=e).error(
                    "{}: could not answer message {}", self.name, envelope.id
                )
            finally:
                _current.reset(token)

        self._spawn(answer(), "reply")

    async def on_unhandled(self, envelope: Envelope) -> None:
        """Hook: a message arrived that no handler of this agent takes. Logs it at TRACE level.

        Args:
            envelope: The message, with its sender and type name.
        """
        logger.trace("{}: no handler for {} from {}", self.name, envelope.type, envelope.sender)

    def _post(self, data: object) -> None:
        """Queue an internal event so it is handled in order with received messages."""
        self._inbox.put_nowait(new_envelope(data, self.name, self.name))

    def _stop_dispatcher(self) -> None:
        """Let the dispatcher finish the message it is handling, then return."""
        self._inbox.put_nowait(_STOP)

    # --- lifecycle ----------------------------------------------------------------------------

    def use_transport(self, transport: Transport | str) -> None:
        """Set the transport before :meth:`start` (an admin running this agent in-process does)."""
        if self.status is not AgentStatus.CREATED and self.status is not AgentStatus.STOPPED:
            raise RuntimeError(
                f"agent {self.name!r} is {self.status.value}: set its transport first"
            )
        self._transport_spec = transport

    async def start(self) -> None:
        """Connect, subscribe, and join the workspace (waiting for the admin's welcome).

        Raises:
            ConnectionFailed: The transport could not connect.
            AdminUnreachable: No admin welcomed the agent within ``join_timeout``.
            DuplicateAgentName: Another live agent of the workspace has this name.
        """
        await self.open()
        try:
            await self.join()
        except BaseException:
            await self._close(drain_timeout=0)
            raise

    @property
    def has_transport(self) -> bool:
        """Whether a transport or URL was given (else the admin or the defaults decide)."""
        return self._transport_spec is not None

    async def open(self) -> None:
        """Connect and subscribe, without joining: after this no message sent to the agent is
        missed. :meth:`start` is ``open()`` then :meth:`join`; an admin running several
        agents in one process opens them all before any joins, so none misses another's
        announcement.

        Raises:
            ConnectionFailed: The transport could not connect.
        """
        if self.status is AgentStatus.RUNNING:
            return
        self.status = AgentStatus.STARTING
        self._stopped = asyncio.Event()
        self._draining = False
        self._joined = False
        self._inbox = asyncio.Queue()
        if self._registers():
            try:
                await self._register()
            except BaseException:
                self.status = AgentStatus.STOPPED
                self._stopped.set()
                raise
        transport = self._make_transport()
        if self._heartbeat_given is None:
            in_process = isinstance(transport, MemoryTransport)
            self.heartbeat_interval = IN_PROCESS_HEARTBEAT_S if in_process else NETWORK_HEARTBEAT_S
        try:
            await transport.connect()
        except BaseException:
            self.status = AgentStatus.STOPPED
            self._stopped.set()
            raise
        self._transport = transport
        try:
            for subject in self._subjects():
                self._subscriptions.append(await transport.subscribe(subject, self._receive))
            self._dispatcher = asyncio.create_task(
                self._dispatch_loop(), name=f"{self.name}-dispatch"
            )
            self.status = AgentStatus.RUNNING
            await self.on_start()
        except BaseException:
            await self._close(drain_timeout=0)
            raise

    def _subjects(self) -> list[str]:
        return [broadcast_pattern(self.workspace_id), inbox_pattern(self.workspace_id, self.name)]

    def _registers(self) -> bool:
        """Whether this agent asks the server for an identity first.

        It must at an admin's embedded server (``admin_port``); it tries at a NATS URL given
        without credentials of its own (it may be an admin's server or any other).
        """
        spec = self._transport_spec
        if spec is None:
            return self.admin_port is not None
        options = self.nats_options
        return (
            isinstance(spec, str)
            and spec.startswith(("nats://", "tls://"))
            and not (options and (options.creds_file or options.nkey_seed))
        )

    async def _register(self) -> None:
        """Get an identity from the admin, so this agent speaks only as itself."""
        from serendib.transports.identity import Identity, register
        from serendib.transports.nats import NatsOptions

        spec = self._identity_spec
        identity = (
            spec
            if isinstance(spec, Identity)
            else Identity.generate()
            if spec is None
            else Identity.load_or_create(spec)
        )
        options = self.nats_options or NatsOptions()
        secret = options.password or self.token or options.token or os.environ.get(TOKEN_ENV)
        # At an admin's port, the server is most likely the admin's own (with identities);
        # it may also be a NATS server the admin uses: then nobody serves registrations.
        embedded = self._transport_spec is None
        url = self._transport_spec if isinstance(self._transport_spec, str) else None
        admin = await register(
            url or self._default_transport_url(),
            self.workspace_id,
            self.name,
            self.detail.role,
            identity,
            user=options.user,
            password=secret,
            timeout=self.join_timeout,
            connect_timeout=options.connect_timeout,
            tls=options.tls_context(),
            optional=True,
            # A restarting or busy admin may take seconds to serve registrations on its own
            # server: give up on it (and connect as given) only after a while.
            patience=min(self.join_timeout, 5.0) if embedded else 0.0,
        )
        if admin is None:
            return  # not an admin's server, or one without identities: connect as given
        self.admin_name = admin
        self._admin_pinned = True
        self._signed_options = dataclasses.replace(
            options, nkey_seed=identity.seed, token=None, user=None, password=None
        )

    async def join(self) -> None:
        """Announce the agent to the admin and wait for the welcome (after :meth:`open`).

        Raises:
            AdminUnreachable: No admin welcomed the agent within ``join_timeout``.
            DuplicateAgentName: Another live agent of the workspace has this name.
        """
        deadline = time.monotonic() + self.join_timeout
        rejected = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if rejected:
                    raise DuplicateAgentName(self.name, self.workspace_id)
                raise AdminUnreachable(
                    self.name, self.workspace_id, self.address, self.join_timeout
                )
            try:
                hello = Hello(agent=self.detail, interval=self.heartbeat_interval)
                reply = await self._request_on(
                    self._subject_presence, None, hello, min(1.0, remaining)
                )
            except RequestTimeout:
                continue
            if isinstance(reply, Welcome) and reply.accepted:
                self.admin_name = reply.admin
            if isinstance(reply, Welcome) and not reply.accepted:
                # The name may belong to a previous run of this agent that has not yet been
                # declared lost: ask again until the admin forgets it, or give up.
                rejected = True
                await asyncio.sleep(min(0.5, max(remaining, 0)))
                continue
            break
        self._joined = True
        self._spawn(self._heartbeat_loop(), "heartbeat")

    async def stop(self, drain_timeout: float | None = 10.0) -> None:
        """Stop the agent: leave the workspace, let the running handler finish, close.

        Messages received but not yet handled are dropped (and counted in the log). Safe to
        call from one of the agent's own handlers: the agent then stops once it returns.

        Args:
            drain_timeout: Seconds to let the running handler finish before cancelling it;
                ``None`` waits as long as it takes.
        """
        if self.status in (AgentStatus.CREATED, AgentStatus.STOPPED):
            return
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(
                self._close(drain_timeout), name=f"{self.name}-stop"
            )
        if asyncio.current_task() is self._dispatcher:
            return
        await asyncio.shield(self._shutdown)

    async def wait_stopped(self) -> None:
        """Return once the agent has stopped."""
        if self._stopped is not None:
            await self._stopped.wait()

    async def _close(self, drain_timeout: float | None) -> None:
        self.status = AgentStatus.STOPPING
        self._draining = True
        await self._drain(drain_timeout)
        try:
            await self._finish(drain_timeout)
        except Exception as e:
            logger.opt(exception=e).error("{}: could not finish its work while stopping", self.name)
        for task in list(self._background):
            task.cancel()
        if self._transport is not None and self._joined:
            self._joined = False
            try:
                await self._say_goodbye()
            except Exception as e:
                logger.debug("{}: could not say goodbye: {}", self.name, e)
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        try:
            await self.on_stop()
        except Exception as e:
            logger.opt(exception=e).error("{}: on_stop failed", self.name)
        self._fail_pending("request")
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
        self.status = AgentStatus.STOPPED
        self._shutdown = None
        assert self._stopped is not None
        self._stopped.set()

    async def _drain(self, drain_timeout: float | None) -> None:
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        dropped = self._inbox.qsize()
        self._stop_dispatcher()
        done, _ = await asyncio.wait({dispatcher}, timeout=drain_timeout)
        if not done:
            logger.warning(
                "{}: handler still running after {}s; cancelling it", self.name, drain_timeout
            )
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        if dropped:
            logger.info("{}: stopped with {} received messages not handled", self.name, dropped)
        self._dispatcher = None

    async def _finish(self, drain_timeout: float | None) -> None:
        """Subclass hook: finish owned work after the last handler, before leaving."""

    async def _say_goodbye(self) -> None:
        """Tell the workspace this agent is leaving (an admin says it differently)."""
        await self._publish(self._subject_presence, Goodbye(name=self.name, id=self.detail.id))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def on_start(self) -> None:
        """Hook: called once the agent is subscribed, before it joins its workspace."""

    async def on_stop(self) -> None:
        """Hook: called while stopping, after the last handler has finished."""

    async def on_admin_stopped(self, admin: str) -> None:
        """Hook: the workspace's admin announced it is stopping. Logs it.

        It runs at once, not after the messages already queued; override it to stop the
        agent (``await self.stop()``) when it has no reason to outlive its admin. Otherwise
        the agent stays, and joins the admin again when it comes back.

        Args:
            admin: The admin's name.
        """
        level = "DEBUG" if self.address.startswith("memory://") else "INFO"
        logger.log(level, "{}: admin {} stopped", self.name, admin)

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=f"{self.name}-{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _heartbeat_loop(self) -> None:
        beat = Heartbeat(agent=self.detail, interval=self.heartbeat_interval)
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._publish(self._subject_presence, beat)
            except Exception as e:  # a broken connection must not end the heartbeats for good
                logger.debug("{}: heartbeat not sent: {}", self.name, e)

    @on_message
    async def _on_admin_started(self, data: AdminStarted) -> None:
        """An admin (re)started: tell it at once that this agent is here."""
        if self.detail.role != "admin" and self.status is AgentStatus.RUNNING:
            beat = Heartbeat(agent=self.detail, interval=self.heartbeat_interval)
            await self._publish(self._subject_presence, beat)

    def _can_send(self) -> bool:
        # A handler still running while the agent stops may still send: its work is done.
        return self.status in _CAN_SEND

    def _admin_stopping(self, notice: AdminStopping) -> None:
        """Run :meth:`on_admin_stopped` in a task of its own (it may stop this agent)."""
        if self.status is not AgentStatus.RUNNING or self.detail.role == "admin":
            return
        if self.admin_name is not None and notice.admin != self.admin_name:
            return
        task = asyncio.create_task(self._run_admin_stopped(notice.admin))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    def _probed(self, probe: Envelope) -> None:
        """Answer the admin's liveness probe if it names this run of the agent."""
        data = probe.data
        if not isinstance(data, Probe) or data.id != self.detail.id or not self._can_send():
            return
        self._spawn(self._reply(probe, ProbeReply(id=self.detail.id)), "probe-reply")

    async def _run_admin_stopped(self, admin: str) -> None:
        try:
            await self.on_admin_stopped(admin)
        except Exception as e:
            logger.opt(exception=e).error("{}: on_admin_stopped failed", self.name)


_STOP: Envelope = Envelope("", "", "", None, 0.0, None)


def _answers(error: Exception) -> bool:
    """Whether a request handler's ``error`` is an expected answer, not a fault: a Serendib
    error (an unknown task id, bad input) other than the store failing, which stays an ERROR
    with its traceback like any unexpected exception."""
    return isinstance(error, SerendibError) and not isinstance(error, StoreError)


def _expire(future: asyncio.Future[Envelope]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


Agent._handler_table = HandlerTable(Agent)
_CAN_SEND = (AgentStatus.RUNNING, AgentStatus.STOPPING)

"""How an agent's messages move: its connection, broadcast / send / request, receiving, and
dispatching.

The receive callback runs on the transport's read loop, so it only decodes, routes replies
to the requests waiting for them, and queues everything else in the agent's inbox. One
dispatcher task takes the inbox in order and runs the handlers, one message at a time.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, ClassVar

from loguru import logger

from serendib._droplog import DropLog
from serendib.errors import (
    AgentNotRunning,
    DecodeError,
    MessageError,
    RemoteError,
    RequestTimeout,
)
from serendib.handlers import HandlerTable
from serendib.messages import Envelope, RequestFailed, decode, default_registry, new_envelope
from serendib.presence import AdminStopping, Probe
from serendib.subjects import direct_subject, sender_of
from serendib.transports import Transport, open_transport

if TYPE_CHECKING:
    from serendib.transports.nats import NatsOptions

__all__ = ["Messaging", "current_message"]

_current: contextvars.ContextVar[Envelope | None] = contextvars.ContextVar(
    "serendib_current_message", default=None
)


def current_message() -> Envelope | None:
    """The envelope of the message whose handler is running, or ``None`` outside handlers.

    Use it to learn a message's sender or id from within a handler.
    """
    return _current.get()


class Messaging:
    """How :class:`~serendib.Agent` sends, receives and dispatches (a mixin).

    The agent provides the attributes annotated here, decides through :meth:`_can_send`
    when sending is allowed, and reacts to an admin stopping in :meth:`_admin_stopping`.
    """

    _handler_table: ClassVar[HandlerTable]
    name: str
    workspace_id: str
    admin_port: int | None
    admin_ip: str
    token: str | None
    nats_options: NatsOptions | None
    _transport_spec: Transport | str | None
    max_message_bytes: int
    drops: DropLog
    _transport: Transport | None
    _inbox: asyncio.Queue[Envelope]
    _draining: bool
    _subject_all: str
    _signed_options: NatsOptions | None
    _pending: dict[str, tuple[asyncio.Future[Envelope], str | None]]
    admin_name: str | None
    _admin_pinned: bool

    def _can_send(self) -> bool:
        raise NotImplementedError

    def _admin_stopping(self, notice: AdminStopping) -> None:
        raise NotImplementedError

    def _probed(self, probe: Envelope) -> None:
        raise NotImplementedError

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
                try:
                    result = await getattr(self, name)(envelope.data)
                except Exception as e:
                    logger.opt(exception=e).error(
                        "{}: handler {} failed on message {} ({} from {})",
                        self.name,
                        name,
                        envelope.id,
                        envelope.type,
                        envelope.sender,
                    )
                    if envelope.rq:
                        await self._reply(envelope, RequestFailed(error=f"{type(e).__name__}: {e}"))
                else:
                    if envelope.rq and result is not None:
                        await self._reply(envelope, result)
        except Exception as e:  # a failed reply must not end the dispatch loop
            logger.opt(exception=e).error("{}: could not answer message {}", self.name, envelope.id)
        finally:
            _current.reset(token)

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


_STOP: Envelope = Envelope("", "", "", None, 0.0, None)


def _expire(future: asyncio.Future[Envelope]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())

"""The NATS transport: agents in other processes and on other machines.

Envelopes are encoded as one JSON line each; consecutive messages to the same subject are
sent as one NATS message of several lines (see :mod:`serendib.transports.framing`), so a
burst costs one publish, not one per message. Incoming messages are handed to receivers
straight from the connection's read loop, in the order they arrived on the socket, whatever
their subject: that is what keeps per-sender order across broadcast and direct subjects.
Receivers only decode and queue, so a slow handler never blocks the read loop.

Requires the ``nats`` extra (``pip install 'serendib[nats]'``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from serendib.errors import ConnectionFailed, TransportError
from serendib.messages import DEFAULT_MAX_MESSAGE_BYTES, Envelope, encode
from serendib.subjects import is_direct
from serendib.transports.base import TOKEN_ENV, Receiver
from serendib.transports.framing import frames, split_frames

try:
    from nats.aio.client import PING_PROTO, Client
    from nats.errors import AuthorizationError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the NATS transport needs the 'nats' extra: pip install 'serendib[nats]'"
    ) from e

__all__ = ["TOKEN_ENV", "NatsOptions", "NatsSubscription", "NatsTransport", "redact"]


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Credentials and TLS for a NATS connection; all optional.

    Attributes:
        token: Auth token (also read from ``SERENDIB_TOKEN`` when not given).
        user: User name.
        password: Password.
        creds_file: Path of a NATS ``.creds`` file (JWT + nkey).
        tls_ca: CA bundle to verify the server with (turns TLS on).
        tls_cert: Client certificate, for mutual TLS.
        tls_key: Client key, for mutual TLS.
        connect_timeout: Seconds to wait for the first connection.
        reconnect_wait: Seconds between reconnection attempts.
    """

    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 3.0
    reconnect_wait: float = 0.25

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these options describe, or ``None`` for plain TCP."""
        if not (self.tls_ca or self.tls_cert):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def redact(url: str) -> str:
    """``url`` with any password or token replaced by ``***``."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one)
        if split.username or split.password:
            host = split.hostname or ""
            port = f":{split.port}" if split.port else ""
            one = f"{split.scheme}://***@{host}{port}"
        parts.append(one)
    return ",".join(parts)


class _Client(Client):
    """A nats-py client that hands our subscriptions' payloads over in socket order."""

    def __init__(self) -> None:
        super().__init__()
        self.receivers: dict[int, Callable[[bytes], None]] = {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        receiver = self.receivers.get(sid)
        if receiver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        receiver(data)

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        # nats-py writes PING straight to the socket, ahead of the commands still waiting in
        # its buffer, so flush() would be no barrier: a SUB or PUB made before it could reach
        # the server after the PONG came back. Queue the PING behind them instead.
        self._pongs.append(future or asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()


class NatsSubscription:
    """A subscription on a :class:`NatsTransport`."""

    def __init__(self, transport: NatsTransport, subject: str, sub: Any) -> None:
        self._transport = transport
        self._subject = subject
        self._sub = sub

    @property
    def subject(self) -> str:
        """The subject subscribed to."""
        return self._subject

    async def unsubscribe(self) -> None:
        """Stop delivering messages. Idempotent."""
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        self._transport._client.receivers.pop(sub._id, None)
        if not self._transport._client.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as e:
                logger.debug("unsubscribe from {} failed: {}", self._subject, e)


class NatsTransport:
    """A :class:`~serendib.transports.base.Transport` over NATS.

    Args:
        url: ``nats://HOST:PORT`` (``tls://`` for TLS); comma-separated URLs for a cluster.
            Credentials may be in the URL (``nats://TOKEN@host:port``, ``nats://user:pw@…``).
        options: Credentials, TLS and timeouts.
        name: Connection name shown in NATS monitoring.
        max_message_bytes: Largest single message; bursts are split below the server's limit.
    """

    def __init__(
        self,
        url: str,
        options: NatsOptions | None = None,
        *,
        name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url
        self.options = options or NatsOptions()
        self.name = name
        self.max_message_bytes = max_message_bytes
        self._client = _Client()
        self._runs: list[tuple[str, list[bytes]]] = []
        self._open: dict[str, list[bytes]] = {}  # direct subject -> its run since the last barrier
        self._flusher: asyncio.Task[None] | None = None
        self._subscriptions: list[NatsSubscription] = []
        self._max_payload = max_message_bytes
        self._last_error: Exception | None = None
        self._refused: asyncio.Event | None = None
        self._up = False
        self._last_logged: str | None = None

    @property
    def address(self) -> str:
        """The server URL(s), credentials redacted."""
        return redact(self.url)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up now (it reconnects by itself when it is not)."""
        return bool(self._client.is_connected)

    async def connect(self) -> None:
        """Connect; afterwards the client reconnects by itself whenever the server returns.

        Raises:
            ConnectionFailed: No server answered within the connect timeout, or the server
                refused the credentials. Its reason says which.
        """
        options = self.options
        token = options.token or os.environ.get(TOKEN_ENV) or None
        kwargs: dict[str, Any] = {
            "servers": [u.strip() for u in self.url.split(",") if u.strip()],
            "name": self.name,
            "connect_timeout": options.connect_timeout,
            "reconnect_time_wait": options.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if token and not options.user:
            kwargs["token"] = token
        if options.user:
            kwargs["user"] = options.user
            kwargs["password"] = options.password
        if options.creds_file:
            kwargs["user_credentials"] = options.creds_file
        tls = options.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
        self._refused = asyncio.Event()
        connecting = asyncio.create_task(self._client.connect(**kwargs))
        refused = asyncio.create_task(self._refused.wait())
        try:
            await asyncio.wait(
                {connecting, refused},
                timeout=options.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (connecting, refused):
                task.cancel()
            await asyncio.wait({connecting, refused})
            error = None if connecting.cancelled() else connecting.exception()
            if connecting.cancelled() or error is not None:
                await self._abandon()
        if connecting.cancelled() or error is not None:
            reason = self._why(error or self._last_error)
            raise ConnectionFailed(self.address, reason) from error
        self._up = True
        server_max = getattr(self._client, "max_payload", 0) or self.max_message_bytes
        self._max_payload = min(self.max_message_bytes, server_max)

    async def _abandon(self) -> None:
        try:
            await self._client.close()
        except Exception as e:
            logger.trace("closing a failed NATS connection: {}", e)

    def _why(self, error: BaseException | None) -> str:
        """A connection failure's reason, in words that say what to check."""
        timeout = self.options.connect_timeout
        refused = self._refused is not None and self._refused.is_set()
        if refused or (error is not None and _is_auth_error(error)):
            return "authorization violation: wrong or missing token or credentials"
        if error is None:
            return f"no answer within {timeout:g}s"
        if isinstance(error, ConnectionRefusedError) or "Connect call failed" in str(error):
            return (
                f"connection refused (still refused after {timeout:g}s): is the admin or "
                "NATS server running, and on that port?"
            )
        return str(error) or type(error).__name__

    async def _on_error(self, error: Exception) -> None:
        # While the server is away the same error comes back at every attempt: log it once.
        text = str(error)
        level = "TRACE" if text == self._last_logged else "DEBUG"
        self._last_logged = text
        logger.log(level, "NATS {}: {}", self.address, error)
        if not self._up:
            self._last_error = error
            if _is_auth_error(error) and self._refused is not None:
                self._refused.set()

    async def _on_disconnected(self) -> None:
        if self._up and not self._client.is_closed:
            logger.warning("NATS {}: disconnected; reconnecting", self.address)

    async def _on_reconnected(self) -> None:
        self._last_logged = None
        logger.info("NATS {}: reconnected", self.address)

    async def publish(self, subject: str, message: Envelope | bytes) -> None:
        """Queue ``message`` for ``subject``; queued messages leave together, in order.

        Raises:
            MessageTooLarge: The encoded envelope exceeds the limit.
            TransportError: The transport is closed.
        """
        if self._client.is_closed:
            raise TransportError(f"{self.address}: publish on a closed transport")
        payload = (
            message if isinstance(message, bytes) else encode(message, max_bytes=self._max_payload)
        )
        self._queue(subject, payload)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_runs())

    def _queue(self, subject: str, payload: bytes) -> None:
        """Add ``payload`` to the run its subject continues, keeping every receiver's order.

        Consecutive messages to one subject share a run. A direct subject also joins its
        earlier run past messages to *other* agents' direct subjects (no receiver sees both),
        but never past a broadcast or presence message: those are barriers.
        """
        runs = self._runs
        if is_direct(subject):
            run = self._open.get(subject)
            if run is None:
                run = self._open[subject] = []
                runs.append((subject, run))
        elif runs and runs[-1][0] == subject:
            run = runs[-1][1]
        else:
            run = []
            runs.append((subject, run))
            self._open.clear()
        run.append(payload)

    async def _flush_runs(self) -> None:
        try:
            while self._runs:
                runs, self._runs = self._runs, []
                self._open.clear()
                for subject, payloads in runs:
                    for frame in frames(payloads, self._max_payload):
                        await self._client.publish(subject, frame)
        except Exception as e:
            logger.error("NATS {}: messages not sent: {}", self.address, e)
        finally:
            self._flusher = None

    async def subscribe(self, subject: str, receiver: Receiver) -> NatsSubscription:
        """Call ``receiver`` with the bytes of every message on ``subject`` from now on."""

        def deliver(data: bytes) -> None:
            for frame in split_frames(data):
                try:
                    receiver(frame)
                except Exception as e:  # the read loop must survive whatever a receiver does
                    logger.opt(exception=e).error("NATS {}: receiver failed", self.address)

        try:
            sub = await self._client.subscribe(subject)
        except Exception as e:
            raise TransportError(f"{self.address}: cannot subscribe to {subject}: {e}") from e
        self._client.receivers[sub._id] = deliver
        subscription = NatsSubscription(self, subject, sub)
        self._subscriptions.append(subscription)
        return subscription

    async def flush(self) -> None:
        """Return once every message published so far has reached the server."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._client.is_connected:
            try:
                await self._client.flush(timeout=5)
            except Exception as e:
                raise TransportError(f"{self.address}: flush failed: {e}") from e

    async def close(self) -> None:
        """Send what is queued, then close. Idempotent."""
        if self._client.is_closed:
            return
        try:
            await asyncio.wait_for(self.flush(), 5)
        except (TransportError, TimeoutError) as e:
            logger.debug("NATS {}: closing with unsent messages: {}", self.address, e)
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()
        self._up = False
        await self._abandon()


def _is_auth_error(error: BaseException) -> bool:
    return isinstance(error, AuthorizationError) or "authorization" in str(error).lower()

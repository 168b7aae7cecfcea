"""The NATS transport: agents in other processes and on other machines.

Envelopes are encoded as one JSON line each; consecutive messages to the same subject are
sent as one NATS message of several lines (see :mod:`serendib.transports.framing`), so a
burst costs one publish, not one per message. Incoming messages are handed to receivers
straight from the connection's read loop, in the order they arrived on the socket, whatever
their subject: that is what keeps per-sender order across broadcast and direct subjects.
Receivers only decode and queue, so a slow handler never blocks the read loop.

Several comma-separated URLs name the nodes of one cluster. They are tried in the order
given (each within the connect timeout), and an agent whose node is lost moves on to the
next: nats-py reconnects by itself, subscriptions included, when the socket drops (a node
killed) or when the server leaves PINGs unanswered (a node frozen; see
:attr:`NatsOptions.ping_interval`). Nodes the cluster announces join the list.

A dead connection is never silent. nats-py reconnects by itself only after a socket
disconnect or a stale connection; when it closes a client for good (the server answered
``-ERR`` and hung up, reconnection gave up, ...) the transport logs a warning with the
reason and re-establishes: a new client, the same options, every live subscription
subscribed again with the same receiver, retried with backoff for as long as the transport
is open. Meanwhile :attr:`NatsTransport.is_connected` is False, and messages published are
held (up to :data:`MAX_HELD_BYTES`; past that, publish raises
:class:`~serendib.errors.TransportError`) and sent, in order, once the new connection is up.
:attr:`NatsTransport.state`, :attr:`NatsTransport.reestablished` and the ``on_state``
callback tell owners about it.

Nothing the server would refuse is ever sent, since one ``-ERR`` costs the whole
connection: subjects are checked before a publish or subscribe (:func:`check_subject`) and a
message over the server's ``max_payload`` raises :class:`~serendib.errors.MessageTooLarge`.

Requires the ``nats`` extra (``pip install 'serendib[nats]'``).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from serendib.errors import ConnectionFailed, InvalidSubject, MessageTooLarge, TransportError
from serendib.messages import DEFAULT_MAX_MESSAGE_BYTES, Envelope, encode
from serendib.subjects import is_direct
from serendib.transports.base import TOKEN_ENV, Receiver
from serendib.transports.framing import frames, split_frames
from serendib.urls import redact_url

try:
    from nats.aio.client import PING_PROTO, Client
    from nats.errors import AuthorizationError, ConnectionClosedError, MaxPayloadError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the NATS transport needs the 'nats' extra: pip install 'serendib[nats]'"
    ) from e

__all__ = [
    "MAX_HELD_BYTES",
    "MAX_OUTSTANDING_PINGS",
    "MAX_SUBJECT_CHARS",
    "TOKEN_ENV",
    "ConnectionState",
    "NatsOptions",
    "NatsSubscription",
    "NatsTransport",
    "check_subject",
    "redact",
]

MAX_SUBJECT_CHARS = 512
"""Longest subject sent to the server. Ours are at most 398 characters
(``serendib.<workspace>.to.<agent>.<sender>``, names up to 128); the server's whole control line
(``PUB <subject> <size>``) must stay under 4096 bytes or it closes the connection."""

MAX_HELD_BYTES = 2 * 1024 * 1024
"""Bytes of messages held while a connection is re-established (nats-py holds as much during
its own reconnects); publishing more meanwhile raises TransportError."""

MAX_BACKOFF_S = 5.0
"""Longest wait between two attempts to re-establish a connection."""

STABLE_S = 10.0
"""A connection up at least this long resets the backoff when it dies."""

MAX_OUTSTANDING_PINGS = 2
"""PINGs left unanswered before a server is taken for dead (nats-py's default). With nats-py's
default interval (120 s) a frozen server would hold its clients for six minutes; ours is
:attr:`NatsOptions.ping_interval`."""

# One subject token: printable ASCII except '.', '*' and '>' (no whitespace, no control
# characters, no NUL, nothing the server's parser or our names do not need).
_TOKEN = r"[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+"
_PUBLISH_SUBJECT = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")
_WILD = rf"(?:{_TOKEN}|\*)"
_SUBSCRIBE_SUBJECT = re.compile(rf"{_WILD}(?:\.{_WILD})*(?:\.>)?|>")


class ConnectionState(enum.StrEnum):
    """Where a :class:`NatsTransport`'s connection stands.

    Attributes:
        NEW: Not connected yet (or the first connection failed).
        CONNECTED: Up.
        RECONNECTING: The socket dropped; nats-py is reconnecting the same client.
        REESTABLISHING: The client closed for good; a new one is being connected.
        CLOSED: Closed by :meth:`NatsTransport.close`.
    """

    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    REESTABLISHING = "reestablishing"
    CLOSED = "closed"


def check_subject(subject: str, *, wildcards: bool = False) -> str:
    """Check that ``subject`` is safe to send to the server.

    Args:
        subject: The subject.
        wildcards: Whether ``*`` tokens and a final ``>`` are allowed (subscribing).

    Returns:
        ``subject`` unchanged.

    Raises:
        InvalidSubject: Too long, empty or with an empty token, with whitespace, control
            or non-ASCII characters, or with a wildcard where none is allowed.
    """
    # The length first, outside the cache: an attacker's 4,100-character subject must
    # neither reach the regex nor sit in the cache.
    if len(subject) > MAX_SUBJECT_CHARS or not _subject_ok(subject, wildcards):
        raise InvalidSubject(subject, _why_invalid(subject, wildcards))
    return subject


@functools.lru_cache(maxsize=16_384)
def _subject_ok(subject: str, wildcards: bool) -> bool:
    pattern = _SUBSCRIBE_SUBJECT if wildcards else _PUBLISH_SUBJECT
    return pattern.fullmatch(subject) is not None


def _why_invalid(subject: str, wildcards: bool) -> str:
    """Why ``subject`` failed :func:`check_subject`, in words (the slow path only)."""
    if len(subject) > MAX_SUBJECT_CHARS:
        return f"{len(subject)} characters, over the limit of {MAX_SUBJECT_CHARS}"
    if not subject:
        return "empty"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in subject):
        return "whitespace or a control character"
    if not subject.isascii():
        return "a non-ASCII character"
    if "" in subject.split("."):
        return "an empty token"
    if not wildcards and ("*" in subject or ">" in subject):
        return "a wildcard ('*' or '>'), which only a subscription may have"
    return "a misplaced wildcard ('*' must be a whole token, '>' the whole last one)"


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
        connect_timeout: Seconds to wait for a server to answer; a cluster's servers are
            tried in turn, each given this long (so connecting gives up after this times
            the number of URLs).
        reconnect_wait: Seconds between reconnection attempts.
        ping_interval: Seconds between the client's PINGs. A server that still owes the
            answers to the last :data:`MAX_OUTSTANDING_PINGS` when the next is due is taken
            for dead (frozen, or on a host gone without closing the socket) and the client
            moves on to the next server: within ``(MAX_OUTSTANDING_PINGS + 1) *
            ping_interval`` seconds of its last answer.
        nkey_seed: An nkey seed to authenticate with (an agent's identity on its admin's
            embedded server, see :mod:`serendib.transports.identity`).
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
    ping_interval: float = 2.0
    nkey_seed: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these options describe, or ``None`` for plain TCP."""
        if not (self.tls_ca or self.tls_cert):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def redact(url: str) -> str:
    """``url`` with any password or token replaced by ``***`` (see :func:`redact_url`)."""
    return redact_url(url, user_is_secret=True)


class _Client(Client):
    """A nats-py client that hands our subscriptions' payloads over in socket order."""

    def __init__(self) -> None:
        super().__init__()
        self.receivers: dict[int, Callable[[bytes, bytes], None]] = {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        receiver = self.receivers.get(sid)
        if receiver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        receiver(subject, data)

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        # nats-py writes PING straight to the socket, ahead of the commands still waiting in
        # its buffer, so flush() would be no barrier: a SUB or PUB made before it could reach
        # the server after the PONG came back. Queue the PING behind them instead.
        self._pongs.append(future or asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()


class NatsSubscription:
    """A subscription on a :class:`NatsTransport`; it survives the connection's re-establishment."""

    def __init__(
        self, transport: NatsTransport, subject: str, deliver: Callable[[bytes, bytes], None]
    ) -> None:
        self._transport = transport
        self._subject = subject
        self._deliver = deliver
        self._client: _Client | None = None  # the client it is subscribed on, if any
        self._sub: Any = None
        self._live = True

    @property
    def subject(self) -> str:
        """The subject subscribed to."""
        return self._subject

    async def _attach(self, client: _Client) -> None:
        """Subscribe on ``client`` (the first connection, or a re-established one)."""
        sub = await client.subscribe(self._subject)
        client.receivers[sub._id] = self._deliver
        self._client, self._sub = client, sub

    async def unsubscribe(self) -> None:
        """Stop delivering messages. Idempotent."""
        if not self._live:
            return
        self._live = False
        self._transport._subscriptions.pop(self, None)
        client, sub = self._client, self._sub
        self._client = self._sub = None
        if client is None:
            return
        client.receivers.pop(sub._id, None)
        if not client.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as e:
                logger.debug("unsubscribe from {} failed: {}", self._subject, e)


class NatsTransport:
    """A :class:`~serendib.transports.base.Transport` over NATS.

    Args:
        url: ``nats://HOST:PORT`` (``tls://`` for TLS); comma-separated URLs for a cluster,
            tried in that order: the first that answers is used, and when it is lost the
            client moves on to the next (servers the cluster announces join the list).
            Credentials may be in the URL (``nats://TOKEN@host:port``, ``nats://user:pw@…``).
        options: Credentials, TLS and timeouts.
        name: Connection name shown in NATS monitoring.
        max_message_bytes: Largest single message; bursts are split below the server's limit.
        on_state: Called with the new :class:`ConnectionState` whenever it changes (from the
            event loop; it must not block, and what it raises is logged and ignored).
    """

    def __init__(
        self,
        url: str,
        options: NatsOptions | None = None,
        *,
        name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_state: Callable[[ConnectionState], None] | None = None,
    ) -> None:
        self.url = url
        self.options = options or NatsOptions()
        self.name = name
        self.max_message_bytes = max_message_bytes
        self.on_state = on_state
        self._client = _Client()
        self._runs: list[tuple[str, list[bytes]]] = []
        self._open: dict[str, list[bytes]] = {}  # direct subject -> its run since the last barrier
        self._flusher: asyncio.Task[None] | None = None
        self._subscriptions: dict[NatsSubscription, None] = {}  # live ones, in order
        self._max_payload = max_message_bytes
        self._dialing: _Client | None = None
        self._last_error: Exception | None = None
        self._refused: asyncio.Event | None = None
        self._up = False
        self._closed = False
        self._reviver: asyncio.Task[None] | None = None
        self._held = 0  # bytes published while re-establishing
        self._backoff = self.options.reconnect_wait
        self._up_since = 0.0
        self._reestablished = 0
        self._last_logged: str | None = None

    @property
    def address(self) -> str:
        """The server URL(s), credentials redacted."""
        return redact(self.url)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up now (it comes back by itself when it is not)."""
        return self._reviver is None and bool(self._client.is_connected)

    @property
    def state(self) -> ConnectionState:
        """Where the connection stands now."""
        if self._closed:
            return ConnectionState.CLOSED
        if self._reviver is not None:
            return ConnectionState.REESTABLISHING
        if not self._up:
            return ConnectionState.NEW
        if self._client.is_connected:
            return ConnectionState.CONNECTED
        return ConnectionState.RECONNECTING

    @property
    def reestablished(self) -> int:
        """How many times a connection closed for good was replaced by a new one."""
        return self._reestablished

    def _notify(self) -> None:
        if self.on_state is None:
            return
        try:
            self.on_state(self.state)
        except Exception as e:
            logger.opt(exception=e).error("NATS {}: on_state callback failed", self.address)

    async def connect(self) -> None:
        """Connect; afterwards the connection comes back by itself whenever it is lost.

        Raises:
            ConnectionFailed: No server answered within the connect timeout (each server of
                the list in turn), or the server refused the credentials. Its reason says
                which.
        """
        await self._dial(self._client)
        self._up = True
        self._up_since = time.monotonic()
        self._notify()

    def _connect_options(self, client: _Client) -> dict[str, Any]:
        """nats-py's connect arguments: the same for the first client and every new one."""
        options = self.options
        token = options.token or os.environ.get(TOKEN_ENV) or None
        kwargs: dict[str, Any] = {
            "servers": self._servers(),
            # A cluster's URLs are tried in the order given, first connection and failover
            # alike (nats-py would shuffle them): the first is the preferred node, and an
            # operator spreads agents over the nodes by giving them different orders.
            "dont_randomize": True,
            "name": self.name,
            "connect_timeout": options.connect_timeout,
            "reconnect_time_wait": options.reconnect_wait,
            "max_reconnect_attempts": -1,
            "ping_interval": options.ping_interval,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
            "allow_reconnect": True,
            # Bound to their client, so a replaced client's late callbacks are ignored.
            "error_cb": functools.partial(self._on_error, client),
            "disconnected_cb": functools.partial(self._on_disconnected, client),
            "reconnected_cb": functools.partial(self._on_reconnected, client),
            "closed_cb": functools.partial(self._on_closed, client),
        }
        if token and not options.user:
            kwargs["token"] = token
        if options.user:
            kwargs["user"] = options.user
            kwargs["password"] = options.password
        if options.creds_file:
            kwargs["user_credentials"] = options.creds_file
        if options.nkey_seed:  # an identity: it replaces any token
            kwargs.pop("token", None)
            kwargs["nkeys_seed_str"] = options.nkey_seed
        tls = options.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
        return kwargs

    def _servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def _dial_timeout(self) -> float:
        """How long connecting may take: each server in the list gets the connect timeout (a
        frozen first node must not cost the agent the others)."""
        return self.options.connect_timeout * max(1, len(self._servers()))

    async def _dial(self, client: _Client) -> None:
        """Connect ``client``, giving up after the connect timeout (per server) or at a refusal.

        Raises:
            ConnectionFailed: As :meth:`connect`; ``client`` is closed then.
        """
        kwargs = self._connect_options(client)
        self._dialing, self._last_error = client, None
        self._refused = asyncio.Event()
        connecting = asyncio.create_task(client.connect(**kwargs))
        refused = asyncio.create_task(self._refused.wait())
        try:
            await asyncio.wait(
                {connecting, refused},
                timeout=self._dial_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (connecting, refused):
                task.cancel()
            await asyncio.wait({connecting, refused})
            self._dialing = None
            error = None if connecting.cancelled() else connecting.exception()
            if connecting.cancelled() or error is not None:
                await _abandon(client)
        if connecting.cancelled() or error is not None:
            reason = self._why(error or self._last_error)
            raise ConnectionFailed(self.address, reason) from error
        server_max = getattr(client, "max_payload", 0) or self.max_message_bytes
        self._max_payload = min(self.max_message_bytes, server_max)

    def _why(self, error: BaseException | None) -> str:
        """A connection failure's reason, in words that say what to check."""
        timeout = self._dial_timeout
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

    async def _on_error(self, client: _Client, error: Exception) -> None:
        # While the server is away the same error comes back at every attempt: log it once.
        text = str(error)
        # A refused publish or subscribe (per-agent permissions) is a mistake worth seeing.
        refused = "permissions violation" in text.lower()
        level = "TRACE" if text == self._last_logged else "WARNING" if refused else "DEBUG"
        self._last_logged = text
        logger.log(level, "NATS {}: {}", self.address, error)
        if client is self._dialing:
            self._last_error = error
            if _is_auth_error(error) and self._refused is not None:
                self._refused.set()

    async def _on_disconnected(self, client: _Client) -> None:
        if client is self._client and self._up and not client.is_closed:
            logger.warning("NATS {}: disconnected; reconnecting", self.address)
            self._notify()

    async def _on_reconnected(self, client: _Client) -> None:
        if client is not self._client:
            return
        self._last_logged = None
        logger.info("NATS {}: reconnected", self.address)
        self._notify()

    async def _on_closed(self, client: _Client) -> None:
        """nats-py closed ``client`` for good: unless we asked it to, re-establish."""
        if client is not self._client or not self._up or self._closed or self._reviver:
            return
        error = client.last_error
        reason = f"{type(error).__name__}: {error}" if error is not None else "no reason given"
        if time.monotonic() - self._up_since >= STABLE_S:
            self._backoff = self.options.reconnect_wait
        logger.warning(
            "NATS {}: connection closed for good ({}); re-establishing", self.address, reason
        )
        self._reviver = asyncio.create_task(self._reestablish())
        self._notify()

    async def _reestablish(self) -> None:
        """Connect a new client and re-subscribe every live subscription, until it works."""
        failures = 0
        try:
            while not self._closed:
                # Also before the first attempt: a server that hangs up on every connection
                # must not get a tight loop of them.
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
                client = _Client()
                try:
                    await self._dial(client)
                    await self._resubscribe(client)
                except asyncio.CancelledError:  # closed meanwhile: do not leak the new client
                    await _abandon(client)
                    raise
                except Exception as e:
                    await _abandon(client)
                    failures += 1
                    # The first failure is worth a warning; its repeats are not.
                    level = "WARNING" if failures == 1 else "DEBUG"
                    logger.log(
                        level, "NATS {}: re-establishing failed ({}); retrying", self.address, e
                    )
                    continue
                if self._closed:  # closed while we dialled: do not leak the new client
                    await _abandon(client)
                    return
                self._client = client
                self._reviver = None
                self._reestablished += 1
                self._up_since = time.monotonic()
                self._held = 0
                self._last_logged = None
                logger.info("NATS {}: connection re-established", self.address)
                if self._runs and self._flusher is None:
                    self._flusher = asyncio.create_task(self._flush_runs())
                self._notify()
                return
        finally:
            if self._reviver is asyncio.current_task():
                self._reviver = None

    async def _resubscribe(self, client: _Client) -> None:
        """Subscribe every live subscription on ``client``, then wait for the server to have
        them all (so that once the transport says it is connected, they are live)."""
        while True:
            # subscribe() may add subscriptions while this awaits: go round until none is left.
            pending = [s for s in self._subscriptions if s._client is not client]
            if not pending:
                break
            for subscription in pending:
                if subscription._live:
                    await subscription._attach(client)
        await client.flush(timeout=max(1, round(self.options.connect_timeout)))

    async def publish(self, subject: str, message: Envelope | bytes) -> None:
        """Queue ``message`` for ``subject``; queued messages leave together, in order.

        While a connection closed for good is being re-established, messages are held (up to
        :data:`MAX_HELD_BYTES`) and sent once it is up.

        Raises:
            InvalidSubject: ``subject`` is not one the server would take (see
                :func:`check_subject`); nothing was sent and the connection is unharmed.
            MessageTooLarge: The message exceeds the limit (the server's ``max_payload``
                included).
            TransportError: The transport is closed, or is being re-established and already
                holds as much as it may.
        """
        if self._closed:
            raise TransportError(f"{self.address}: publish on a closed transport")
        check_subject(subject)
        limit = self._max_payload
        if isinstance(message, bytes):
            if len(message) > limit:
                raise MessageTooLarge(len(message), limit)
            payload = message
        else:
            payload = encode(message, max_bytes=limit)
        if self._reviver is not None:
            if self._held + len(payload) > max(MAX_HELD_BYTES, limit):
                raise TransportError(
                    f"{self.address}: the connection is being re-established and "
                    f"{self._held} bytes are already waiting for it"
                )
            self._held += len(payload)
            self._queue(subject, payload)
            return  # sent by the flusher the re-establishment starts
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
            while self._runs and self._reviver is None:
                runs, self._runs = self._runs, []
                self._open.clear()
                for index, (subject, payloads) in enumerate(runs):
                    sent = await self._send_run(subject, payloads)
                    if sent < len(payloads):  # the client closed for good under us
                        self._hold([(subject, payloads[sent:]), *runs[index + 1 :]])
                        return
        except Exception as e:
            logger.error("NATS {}: messages not sent: {}", self.address, e)
        finally:
            self._flusher = None

    async def _send_run(self, subject: str, payloads: list[bytes]) -> int:
        """Send one run; the number of its payloads sent (all, unless the client closed)."""
        client = self._client
        sent = 0
        for frame in frames(payloads, self._max_payload):
            # Payloads never contain a newline (framing), so a frame's lines are its payloads.
            count = frame.count(b"\n") + 1
            if client.is_closed:
                return sent
            try:
                await client.publish(subject, frame)
            except ConnectionClosedError:
                return sent
            except MaxPayloadError:
                # Only if a re-established server takes less than the one it was queued for.
                logger.error(
                    "NATS {}: {} message(s) to {} dropped: over the server's limit of {} bytes",
                    self.address,
                    count,
                    subject,
                    client.max_payload,
                )
            sent += count
        return sent

    def _hold(self, unsent: list[tuple[str, list[bytes]]]) -> None:
        """Put runs the dead client did not send back in front, for the next connection."""
        self._held += sum(len(p) for _, run in unsent for p in run)
        self._runs[:0] = unsent  # later runs (and their open direct runs) stay after them

    async def subscribe(self, subject: str, receiver: Receiver) -> NatsSubscription:
        """Call ``receiver`` with the bytes of every message on ``subject`` from now on.

        The subscription lasts until unsubscribed or the transport closes, across
        re-established connections. Made while one is being re-established, it starts with
        the new connection.

        Raises:
            InvalidSubject: ``subject`` is not one the server would take (see
                :func:`check_subject`, wildcards allowed).
            TransportError: The transport is closed, or the server refused the subscription.
        """
        if self._closed:
            raise TransportError(f"{self.address}: subscribe on a closed transport")
        check_subject(subject, wildcards=True)

        def deliver(subject: bytes, data: bytes) -> None:
            arrived = subject.decode()
            for frame in split_frames(data):
                try:
                    receiver(arrived, frame)
                except Exception as e:  # the read loop must survive whatever a receiver does
                    logger.opt(exception=e).error("NATS {}: receiver failed", self.address)

        subscription = NatsSubscription(self, subject, deliver)
        if self._reviver is None:
            try:
                await subscription._attach(self._client)
            except Exception as e:
                raise TransportError(f"{self.address}: cannot subscribe to {subject}: {e}") from e
        self._subscriptions[subscription] = None
        return subscription

    async def flush(self) -> None:
        """Return once every message published so far has reached the server.

        While the connection is down it returns at once: what is held leaves when it is up.
        """
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self.is_connected:
            try:
                await self._client.flush(timeout=5)
            except Exception as e:
                raise TransportError(f"{self.address}: flush failed: {e}") from e

    async def close(self) -> None:
        """Send what is queued, then close. Idempotent."""
        if self._closed:
            return
        try:
            await asyncio.wait_for(self.flush(), 5)
        except (TransportError, TimeoutError) as e:
            logger.debug("NATS {}: closing with unsent messages: {}", self.address, e)
        self._closed = True  # from here on, a closing client is ours: no re-establishing
        reviver, self._reviver = self._reviver, None
        if reviver is not None:
            reviver.cancel()
            await asyncio.wait({reviver})
        if self._runs:
            held = sum(len(run) for _, run in self._runs)
            logger.debug("NATS {}: closing with {} unsent messages", self.address, held)
            self._runs.clear()
            self._open.clear()
        for subscription in list(self._subscriptions):
            await subscription.unsubscribe()
        self._up = False
        await _abandon(self._client)
        self._notify()


async def _abandon(client: Client) -> None:
    try:
        await client.close()
    except Exception as e:
        logger.trace("closing a failed NATS connection: {}", e)


def _is_auth_error(error: BaseException) -> bool:
    return isinstance(error, AuthorizationError) or "authorization" in str(error).lower()

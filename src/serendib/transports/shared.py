"""One NATS connection shared by the agents of a process (a worker serving several workspaces).

Agents given the same :class:`ConnectionPool` and connecting to the same URL with the same
credentials use one connection: one socket, one read loop, and their messages coalesced into
the same frames. Each agent gets a :class:`SharedTransport` of its own, a lease on the
connection: its subscriptions are its own (unsubscribed when it closes), the connection is
opened by the first lease that connects and closed when the last one closes, and opened anew
if a lease connects again after that.

Agents that get an identity of their own from an admin's embedded server (an nkey user that may
publish only under its name) cannot share: they keep a connection each (see
:class:`~serendib.Agent`). Order is kept as on a connection of one's own: every receiver is
called in socket order, and what an agent publishes leaves in the order it was published.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from serendib.errors import TransportError
from serendib.messages import Envelope
from serendib.transports.base import Receiver, Subscription, Transport

if TYPE_CHECKING:
    from serendib.transports.nats import NatsOptions

__all__ = ["ConnectionPool", "SharedTransport"]

_Key = tuple[str, str | None, "NatsOptions | None"]


class ConnectionPool:
    """The connections a process's agents share, one per server and credentials.

    Args:
        name: The connection name shown in NATS monitoring (default: the first agent's).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._connections: dict[_Key, _Connection] = {}

    def transport(
        self,
        url: str,
        *,
        token: str | None = None,
        name: str | None = None,
        options: NatsOptions | None = None,
    ) -> SharedTransport:
        """A lease on the connection to ``url`` with these credentials (not yet connected)."""
        key = (url, token, options)
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = _Connection(
                url, token, self.name or name, options
            )
        return SharedTransport(connection)

    @property
    def open_connections(self) -> int:
        """How many connections are open now."""
        return sum(1 for c in self._connections.values() if c.users)


class _Connection:
    """One transport and the leases using it."""

    def __init__(
        self, url: str, token: str | None, name: str | None, options: NatsOptions | None
    ) -> None:
        self.url, self.token, self.name, self.options = url, token, name, options
        self.users = 0
        self._lock = asyncio.Lock()
        self.transport = self._new()

    def _new(self) -> Transport:
        from serendib.transports import open_transport

        return open_transport(self.url, token=self.token, name=self.name, options=self.options)

    async def acquire(self) -> None:
        async with self._lock:
            if self.users == 0:
                try:
                    await self.transport.connect()
                except BaseException:
                    self.transport = self._new()  # a failed transport is not dialled again
                    raise
            self.users += 1

    async def release(self) -> None:
        async with self._lock:
            self.users -= 1
            if self.users == 0:
                transport, self.transport = self.transport, self._new()
                await transport.close()


class SharedTransport:
    """One agent's lease on a shared connection: a :class:`~serendib.transports.Transport`.

    Made by :meth:`ConnectionPool.transport`.
    """

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._subscriptions: list[Subscription] = []
        self._open = False

    @property
    def address(self) -> str:
        """Where the shared connection goes."""
        return self._connection.transport.address

    @property
    def is_connected(self) -> bool:
        """Whether this lease is open and the shared connection up now."""
        return self._open and bool(getattr(self._connection.transport, "is_connected", True))

    def _live(self, operation: str) -> Transport:
        if not self._open:
            raise TransportError(f"{self.address}: {operation} on a closed transport")
        return self._connection.transport

    async def connect(self) -> None:
        """Use the connection, opening it if no other lease has. Idempotent.

        Raises:
            ConnectionFailed: It was not open and could not be opened.
        """
        if self._open:
            return
        await self._connection.acquire()
        self._open = True

    async def publish(self, subject: str, message: Envelope | bytes) -> None:
        """Publish on the shared connection (see the underlying transport)."""
        await self._live("publish").publish(subject, message)

    async def subscribe(self, subject: str, receiver: Receiver) -> Subscription:
        """Subscribe on the shared connection; this lease's until it closes."""
        subscription = await self._live("subscribe").subscribe(subject, receiver)
        self._subscriptions.append(subscription)
        return subscription

    async def flush(self) -> None:
        """Return once everything published on the shared connection so far has left."""
        if self._open:
            await self._connection.transport.flush()

    async def close(self) -> None:
        """Unsubscribe this lease's subscriptions and flush; the last lease closes the
        connection. Idempotent."""
        if not self._open:
            return
        self._open = False
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        with contextlib.suppress(TransportError, TimeoutError):
            await asyncio.wait_for(self._connection.transport.flush(), 5)
        await self._connection.release()

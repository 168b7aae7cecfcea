"""The transport interface: how envelopes and bytes move between agents.

A transport publishes to subjects and calls a receiver for every message on a subscribed
subject, in the order the publisher sent them. Receivers are plain callables: they must not
block, only hand the message on (agents put it in their inbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from serendib.messages import Envelope

__all__ = ["TOKEN_ENV", "Receiver", "Subscription", "Transport"]

TOKEN_ENV = "SERENDIB_TOKEN"
"""Environment variable read for the NATS token when none is given."""

Receiver = Callable[[str, Envelope | bytes], None]
"""Called once per message with the subject it arrived on and the message: an
:class:`Envelope` (in-process) or the raw bytes (network)."""


@runtime_checkable
class Subscription(Protocol):
    """A live subscription returned by :meth:`Transport.subscribe`."""

    @property
    def subject(self) -> str:
        """The subject subscribed to."""
        ...

    async def unsubscribe(self) -> None:
        """Stop delivering messages to the receiver. Idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Moves messages between agents. One instance is one agent's connection."""

    @property
    def address(self) -> str:
        """Where this transport connects, as a person would write it (for errors and logs)."""
        ...

    async def connect(self) -> None:
        """Open the connection.

        Raises:
            ConnectionFailed: The server could not be reached; the error names the address.
        """
        ...

    async def publish(self, subject: str, message: Envelope | bytes) -> None:
        """Send ``message`` to every subscriber of ``subject``.

        An :class:`Envelope` is encoded as the transport needs (in-process transports hand
        the object over as it is); ``bytes`` are sent unchanged.

        Raises:
            MessageTooLarge: The encoded message exceeds the transport's limit.
            TransportError: The connection is closed or failed.
        """
        ...

    async def subscribe(self, subject: str, receiver: Receiver) -> Subscription:
        """Call ``receiver`` for every message published to ``subject`` from now on.

        ``subject`` may end with the wildcard token ``*`` (any one last token).
        """
        ...

    async def flush(self) -> None:
        """Return once every message published so far has left this process."""
        ...

    async def close(self) -> None:
        """Flush, unsubscribe everything and close the connection. Idempotent."""
        ...

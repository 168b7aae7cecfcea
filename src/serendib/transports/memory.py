"""The in-process transport: agents of one process exchange envelopes without copying.

Hubs are named (``memory://NAME``); every transport opened on the same name in one process
shares a hub. A subscription may end with ``*``, matching any one last token (the sender).
Envelopes are handed over as objects, so messages should be treated as
immutable; raw bytes published here (for instance by a test playing a hostile client) are
delivered as bytes and decoded and validated by the receiving agent, as on the network.
"""

from __future__ import annotations

import functools
import itertools
import weakref

from serendib.errors import TransportError
from serendib.messages import Envelope
from serendib.transports.base import Receiver

__all__ = ["MemoryHub", "MemorySubscription", "MemoryTransport"]

_anonymous = itertools.count(1)


class MemoryHub:
    """Routes messages between the memory transports of one name."""

    _hubs: weakref.WeakValueDictionary[str, MemoryHub] = weakref.WeakValueDictionary()

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: dict[str, list[Receiver]] = {}

    @classmethod
    def named(cls, name: str) -> MemoryHub:
        """Return the hub called ``name``, creating it if no live transport uses it."""
        hub = cls._hubs.get(name)
        if hub is None:
            hub = cls(name)
            cls._hubs[name] = hub
        return hub

    @classmethod
    def private(cls) -> MemoryHub:
        """Return a new hub with a unique name."""
        return cls.named(f"run-{next(_anonymous)}")

    def deliver(self, subject: str, message: Envelope | bytes) -> None:
        """Hand ``message`` to every receiver of ``subject`` (or of its ``prefix.*``)."""
        for key in (subject, _wildcard(subject)):
            receivers = self._receivers.get(key)
            if receivers:
                for receiver in tuple(receivers) if len(receivers) > 1 else receivers:
                    receiver(subject, message)

    def add(self, subject: str, receiver: Receiver) -> None:
        """Subscribe ``receiver`` to ``subject``."""
        self._receivers.setdefault(subject, []).append(receiver)

    def remove(self, subject: str, receiver: Receiver) -> None:
        """Unsubscribe ``receiver`` from ``subject``, if subscribed."""
        receivers = self._receivers.get(subject)
        if receivers and receiver in receivers:
            receivers.remove(receiver)
            if not receivers:
                del self._receivers[subject]


@functools.lru_cache(maxsize=65_536)
def _wildcard(subject: str) -> str:
    """The subscription matching ``subject`` whatever its last token: ``prefix.*``."""
    return subject[: subject.rfind(".") + 1] + "*"


class MemorySubscription:
    """A subscription on a :class:`MemoryHub`."""

    def __init__(self, transport: MemoryTransport, subject: str, receiver: Receiver) -> None:
        self._transport = transport
        self._subject = subject
        self._receiver = receiver
        self._active = True

    @property
    def subject(self) -> str:
        """The subject subscribed to."""
        return self._subject

    async def unsubscribe(self) -> None:
        """Stop delivering messages. Idempotent."""
        self._drop()

    def _drop(self) -> None:
        if self._active:
            self._active = False
            self._transport.hub.remove(self._subject, self._receiver)
            self._transport._subscriptions.discard(self)


class MemoryTransport:
    """A :class:`~serendib.transports.base.Transport` within one process.

    Args:
        hub: The hub to join: a :class:`MemoryHub`, a ``memory://NAME`` URL, or a bare name.
    """

    def __init__(self, hub: MemoryHub | str = "default") -> None:
        if isinstance(hub, str):
            hub = MemoryHub.named(hub.removeprefix("memory://") or "default")
        self.hub = hub
        self._subscriptions: set[MemorySubscription] = set()
        self._closed = False

    @property
    def address(self) -> str:
        """``memory://NAME``."""
        return f"memory://{self.hub.name}"

    async def connect(self) -> None:
        """Nothing to connect: the hub lives in this process."""
        self._closed = False

    async def publish(self, subject: str, message: Envelope | bytes) -> None:
        """Deliver ``message`` to the subject's receivers before returning."""
        if self._closed:
            raise TransportError(f"{self.address}: publish on a closed transport")
        self.hub.deliver(subject, message)

    async def subscribe(self, subject: str, receiver: Receiver) -> MemorySubscription:
        """Call ``receiver`` for every message on ``subject`` from now on."""
        if self._closed:
            raise TransportError(f"{self.address}: subscribe on a closed transport")
        subscription = MemorySubscription(self, subject, receiver)
        self.hub.add(subject, receiver)
        self._subscriptions.add(subscription)
        return subscription

    async def flush(self) -> None:
        """Delivery is synchronous: nothing is ever pending."""

    async def close(self) -> None:
        """Drop every subscription. Idempotent."""
        for subscription in list(self._subscriptions):
            subscription._drop()
        self._closed = True

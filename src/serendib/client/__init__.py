"""Submit tasks from your own program and get their results back.

:class:`AsyncClient` is the client (asyncio); :class:`Client` is the same for code without an
event loop (scripts, web apps): it runs one in a thread of its own. Both reach a running
manager the way the CLI does (``--admin HOST:PORT`` or a NATS URL) and are pushed each
outcome as soon as it is stored: waiting for a result never polls.
"""

from __future__ import annotations

from serendib.client.aio import AsyncClient, AsyncTaskHandle, SubmitSummary, TaskInput
from serendib.client.sync import Client, TaskHandle
from serendib.tasks.messages import EventMessage, TaskOutcome

__all__ = [
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "EventMessage",
    "SubmitSummary",
    "TaskHandle",
    "TaskInput",
    "TaskOutcome",
]

"""Serendib: a distributed multi-agent task-management system.

Agents exchange typed (pydantic) messages in workspaces, in one process or across machines
over NATS; the task manager in :mod:`serendib.tasks` hands tasks to workers by skill, and
:class:`Client` / :class:`AsyncClient` (:mod:`serendib.client`) submit tasks to it from any
program and are pushed their outcomes.
"""

from __future__ import annotations

from serendib._gc import tune_gc
from serendib.admin import Admin
from serendib.agent import Agent, AgentStatus, current_message
from serendib.client import AsyncClient, AsyncTaskHandle, Client, TaskHandle, TaskOutcome
from serendib.errors import (
    AdminUnreachable,
    AgentError,
    AgentNotRunning,
    ConnectionFailed,
    DashboardError,
    DecodeError,
    DuplicateAgentName,
    InvalidSubject,
    MessageError,
    MessageTooLarge,
    MessageValidationError,
    RemoteError,
    RequestTimeout,
    ResultError,
    SerendibError,
    TaskError,
    TaskNotFound,
    TransportError,
    UnknownMessageType,
    UnsupportedVersion,
    WorkerNotFound,
)
from serendib.handlers import on_message
from serendib.messages import Envelope, message_type
from serendib.presence import AgentDetail

CoreAdmin = Admin
"""The tutorial's (Ceylon's) name for :class:`Admin`."""

__version__ = "0.1.0"

__all__ = [
    # agents
    "Admin",
    "Agent",
    "AgentDetail",
    "AgentStatus",
    "CoreAdmin",
    "current_message",
    "on_message",
    "tune_gc",
    # clients
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "TaskHandle",
    "TaskOutcome",
    # messages
    "Envelope",
    "message_type",
    # errors
    "AdminUnreachable",
    "AgentError",
    "AgentNotRunning",
    "ConnectionFailed",
    "DashboardError",
    "DecodeError",
    "DuplicateAgentName",
    "InvalidSubject",
    "MessageError",
    "MessageTooLarge",
    "MessageValidationError",
    "RemoteError",
    "RequestTimeout",
    "ResultError",
    "SerendibError",
    "TaskError",
    "TaskNotFound",
    "TransportError",
    "UnknownMessageType",
    "UnsupportedVersion",
    "WorkerNotFound",
]

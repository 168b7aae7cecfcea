"""Serendib: a distributed multi-agent task-management system.

Agents exchange typed (pydantic) messages in workspaces, in one process or across machines
over NATS; the task manager in :mod:`serendib.tasks` hands tasks to workers by skill.
"""

from __future__ import annotations

from serendib._gc import tune_gc
from serendib.admin import Admin
from serendib.agent import Agent, AgentStatus, current_message
from serendib.errors import (
    AdminUnreachable,
    AgentError,
    AgentNotRunning,
    ConnectionFailed,
    DashboardError,
    DecodeError,
    DuplicateAgentName,
    MessageError,
    MessageTooLarge,
    MessageValidationError,
    RemoteError,
    RequestTimeout,
    SerendibError,
    TaskError,
    TransportError,
    UnknownMessageType,
    UnsupportedVersion,
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
    "MessageError",
    "MessageTooLarge",
    "MessageValidationError",
    "RemoteError",
    "RequestTimeout",
    "SerendibError",
    "TaskError",
    "TransportError",
    "UnknownMessageType",
    "UnsupportedVersion",
]

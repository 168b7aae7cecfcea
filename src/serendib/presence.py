"""Presence: who an agent is, and the messages agents and their admin exchange about it.

An agent announces itself with :class:`Hello` (the admin answers :class:`Welcome`), sends a
:class:`Heartbeat` every interval, and a :class:`Goodbye` when it stops. An admin announces
:class:`AdminStarted` when it starts and :class:`AdminStopping` when it stops.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serendib.limits import MAX_HEARTBEAT_INTERVAL_S, JsonObject, Name, Note, Token
from serendib.messages import message_type

__all__ = [
    "MAX_HEARTBEAT_INTERVAL_S",
    "AdminStarted",
    "AdminStopping",
    "AgentDetail",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "Probe",
    "ProbeReply",
    "Welcome",
]


class AgentDetail(BaseModel):
    """Who an agent is, as its admin and peers see it.

    Attributes:
        name: Unique name within the workspace.
        id: Unique id of this run of the agent (a restarted agent gets a new one).
        role: ``"agent"``, ``"worker"``, ``"admin"``, or anything an application chooses.
        workspace: The workspace the agent belongs to.
        attributes: Free-form facts the agent publishes about itself (skills, capacity, ...).
    """

    model_config = ConfigDict(frozen=True)

    name: Name
    id: Token
    role: Token = "agent"
    workspace: Name = "default"
    attributes: JsonObject = Field(default_factory=dict)


@message_type("serendib.Hello")
class Hello(BaseModel):
    """An agent asks to join its workspace.

    Attributes:
        agent: Who asks.
        interval: Seconds between the agent's heartbeats, so the admin knows when one is late.
    """

    model_config = ConfigDict(frozen=True)
    agent: AgentDetail
    interval: float = Field(default=1.0, gt=0, le=MAX_HEARTBEAT_INTERVAL_S)


@message_type("serendib.Welcome")
class Welcome(BaseModel):
    """The admin's answer to :class:`Hello`."""

    model_config = ConfigDict(frozen=True)
    admin: Name
    accepted: bool
    reason: Note | None = None


@message_type("serendib.Heartbeat")
class Heartbeat(BaseModel):
    """An agent is still alive. Carries the full detail so a restarted admin learns it.

    Attributes:
        agent: Who is alive.
        interval: Seconds until the next heartbeat.
    """

    model_config = ConfigDict(frozen=True)
    agent: AgentDetail
    interval: float = Field(default=1.0, gt=0, le=MAX_HEARTBEAT_INTERVAL_S)


@message_type("serendib.Goodbye")
class Goodbye(BaseModel):
    """An agent is stopping cleanly."""

    model_config = ConfigDict(frozen=True)
    name: Name
    id: Token


@message_type("serendib.AdminStarted")
class AdminStarted(BaseModel):
    """An admin (re)started: agents already running announce themselves again."""

    model_config = ConfigDict(frozen=True)
    admin: Name


@message_type("serendib.AdminStopping")
class AdminStopping(BaseModel):
    """An admin is stopping: its agents' ``on_admin_stopped`` hook runs at once."""

    model_config = ConfigDict(frozen=True)
    admin: Name


@message_type("serendib.Probe")
class Probe(BaseModel):
    """The admin asks whether the agent run ``id`` is still alive (another asked for its name).

    Every agent listening on the name's subject receives it; only the run it names answers.
    """

    model_config = ConfigDict(frozen=True)
    id: Token


@message_type("serendib.ProbeReply")
class ProbeReply(BaseModel):
    """The answer of the agent run a :class:`Probe` names: it is alive."""

    model_config = ConfigDict(frozen=True)
    id: Token

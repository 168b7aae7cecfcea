"""One error tree for Serendib, rooted at :class:`SerendibError`.

Every error carries typed fields and builds its own message, so callers can both
read it and act on it. Timeouts also subclass the built-in :class:`TimeoutError`.
"""

from __future__ import annotations

from typing import Self


class SerendibError(Exception):
    """Root of every error Serendib raises."""


# --- messages ---------------------------------------------------------------------------------


class MessageError(SerendibError):
    """A message could not be encoded, decoded or routed.

    Attributes:
        sender: For a message received, its sender's name when the envelope named a valid
            one (set by :func:`serendib.messages.decode`), else None.
    """

    sender: str | None = None


class DecodeError(MessageError):
    """Bytes that are not a well-formed Serendib envelope.

    Attributes:
        reason: What was wrong with the bytes.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed message: {reason}")


class UnsupportedVersion(MessageError):
    """An envelope of a wire version this build does not speak."""

    def __init__(self, version: object, supported: int) -> None:
        self.version = version
        self.supported = supported
        super().__init__(
            f"unsupported envelope version {version!r} (this build speaks {supported})"
        )


class UnknownMessageType(MessageError):
    """An envelope naming a message type that is not registered here."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(
            f"unknown message type {type_name!r}: no class of that name is registered "
            "(define the class, or register it with serendib.message_type, in this process)"
        )


class MessageValidationError(MessageError):
    """An envelope whose data fails validation against its registered type."""

    def __init__(self, type_name: str, details: str) -> None:
        self.type_name = type_name
        self.details = details
        super().__init__(f"invalid {type_name}: {details}")


class MessageTooLarge(MessageError):
    """A message over the configured size limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")


class NotAMessageType(MessageError, TypeError):
    """A class that cannot be used as a message (not a pydantic model or dataclass)."""

    def __init__(self, obj: object) -> None:
        self.obj = obj
        super().__init__(
            f"{obj!r} is not a message type: use a pydantic BaseModel or a "
            "pydantic/stdlib dataclass"
        )


# --- agents -----------------------------------------------------------------------------------


class AgentError(SerendibError):
    """An agent was misused or could not take part in its workspace."""


class AgentNotRunning(AgentError):
    """An operation that needs a started agent was called on one that is not running."""

    def __init__(self, name: str, operation: str) -> None:
        self.name = name
        self.operation = operation
        super().__init__(f"agent {name!r} is not running: start it before calling {operation}()")


class DuplicateAgentName(AgentError):
    """Another live agent of the workspace already has this name."""

    def __init__(self, name: str, workspace: str) -> None:
        self.name = name
        self.workspace = workspace
        super().__init__(
            f"an agent named {name!r} is already connected to workspace {workspace!r}; "
            "agent names must be unique within a workspace"
        )


class AdminUnreachable(AgentError, TimeoutError):
    """No admin answered an agent's announcement in time."""

    def __init__(self, name: str, workspace: str, address: str, waited_s: float) -> None:
        self.name = name
        self.workspace = workspace
        self.address = address
        self.waited_s = waited_s
        super().__init__(
            f"agent {name!r} found no admin for workspace {workspace!r} at {address} "
            f"after {waited_s:g}s: is the admin running, and on that address?"
        )


class RequestTimeout(AgentError, TimeoutError):
    """A request got no reply in time."""

    def __init__(self, to: str, type_name: str, timeout: float) -> None:
        self.to = to
        self.type_name = type_name
        self.timeout = timeout
        super().__init__(f"no reply from {to!r} to {type_name} within {timeout:g}s")


class RemoteError(AgentError):
    """The handler that served a request raised; carries its error text."""

    def __init__(self, agent: str, error: str) -> None:
        self.agent = agent
        self.error = error
        super().__init__(f"agent {agent!r} failed to handle the request: {error}")


# --- transports -------------------------------------------------------------------------------


class TransportError(SerendibError):
    """Bytes could not be moved."""


class ConnectionFailed(TransportError):
    """A transport could not connect to its server."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"could not connect to {address}: {reason}")


class BrokerStartError(TransportError):
    """The embedded NATS server could not be started."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"could not start the embedded NATS server on {host}:{port}: {reason}")


class UnsupportedTransport(TransportError, ValueError):
    """A transport URL whose scheme Serendib does not know."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"unsupported transport URL {url!r}: use memory://NAME or nats://HOST:PORT"
        )


# --- tasks ------------------------------------------------------------------------------------


class TaskError(SerendibError):
    """The task manager could not do what was asked."""


class _NotFound(TaskError, KeyError):
    """Nothing known by this name; ``key`` is the name ("" when only a remote agent's
    message says it)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def from_message(cls, message: str) -> Self:
        """The error as a remote agent described it (the name only in the message)."""
        found = cls.__new__(cls)
        _NotFound.__init__(found, "", message)
        return found


class TaskNotFound(_NotFound):
    """No task with this id is known."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, f"no task with id {task_id!r}")

    @property
    def task_id(self) -> str:
        """The id asked for."""
        return self.key


class WorkerNotFound(_NotFound):
    """No worker of this name is connected."""

    def __init__(self, worker: str) -> None:
        super().__init__(worker, f"no connected worker named {worker!r}")

    @property
    def worker(self) -> str:
        """The name asked for."""
        return self.key


class ResultError(TaskError):
    """A task whose result was asked for ended without one: failed or cancelled."""

    def __init__(self, task_id: str, state: str, error: str | None) -> None:
        self.task_id = task_id
        self.state = state
        self.error = error
        super().__init__(f"task {task_id!r} {state}: {error or 'no reason given'}")


class TasksRefused(TaskError, ValueError):
    """The manager refused tasks of a submission: an unknown parent, a dependency cycle, or
    a parent refused for either. The other tasks were stored.

    Attributes:
        refused: Why each refused task was (the first :data:`SHOWN` of them at most kept
            with reasons beyond the count).
        count: How many were refused.
        accepted: How many of the submission were stored.
    """

    SHOWN = 1_000

    def __init__(self, refused: dict[str, str], count: int, accepted: int) -> None:
        self.refused = refused
        self.count = count
        self.accepted = accepted
        shown = "; ".join(f"{task_id}: {why}" for task_id, why in list(refused.items())[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"{count} task{'s' if count != 1 else ''} refused: {shown}{more}")


class NoEligibleWorker(TaskError):
    """No connected worker has the skill a task needs."""

    def __init__(self, task_id: str, skill: str, level: int) -> None:
        self.task_id = task_id
        self.skill = skill
        self.level = level
        super().__init__(
            f"task {task_id!r} needs a worker with {skill} >= {level}; none is connected"
        )


class InvalidTaskFile(TaskError, ValueError):
    """A task file with an entry that is not a valid task.

    Attributes:
        path: The file.
        location: Where in it (entry, line).
        reason: What is wrong.
        submitted: Tasks of the file submitted before the error was found (a file read as
            it is submitted), None if nothing was submitted.
    """

    def __init__(self, path: str, location: str, reason: str, submitted: int | None = None) -> None:
        self.path = path
        self.location = location
        self.reason = reason
        self.submitted = submitted
        after = (
            "nothing from this file was submitted"
            if not submitted
            else f"the {submitted} tasks before it were submitted"
        )
        super().__init__(f"{path}: {location}: {reason} ({after})")


class StoreError(TaskError):
    """The task store failed or was given a URL it cannot open.

    Attributes:
        url: The store's URL (any password replaced by ``***``), when known.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)


class StoreNotFound(StoreError):
    """A task store opened for reading only (``open_store(url, create=False)``) does not
    exist: no file, or no Serendib tables in the database or schema. Nothing was created.
    """

    def __init__(self, url: str) -> None:
        super().__init__(f"no task store at {url}", url=url)


class DashboardError(SerendibError, ValueError):
    """The dashboard could not serve on its address (taken, unknown host, no permission).

    Also a ``ValueError``, as it was before this class existed.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot serve the dashboard on {host}:{port}: {reason}")


class RecordRefused(StoreError):
    """The task store refused a record for its content (a value the database cannot hold).

    Unlike an unavailable store, retrying the same record fails again; other writes of the
    same transaction are stored.
    """


class InvalidSubject(TransportError, ValueError):
    """A subject the NATS server would refuse (and close the connection over); never sent.

    Attributes:
        subject: The subject, as given.
        reason: What is wrong with it.
    """

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        shown = repr(subject[:60]) + ("..." if len(subject) > 60 else "")
        super().__init__(f"invalid subject {shown}: {reason}")

"""Typed messages: the envelope, the registry of message types, and JSON encode/decode.

A message is a pydantic ``BaseModel`` or a (pydantic or stdlib) dataclass. On the wire it
travels inside a JSON envelope ``{"v":1,"id":…,"type":…,"from":…,"to":…,"ts":…,"data":{…}}``;
the receiver looks the type name up in its registry and validates ``data`` before any handler
sees it. Nothing here can execute code carried by a message: there is no pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from serendib.errors import (
    DecodeError,
    MessageError,
    MessageTooLarge,
    MessageValidationError,
    NotAMessageType,
    UnknownMessageType,
    UnsupportedVersion,
)
from serendib.limits import is_name, safe_text

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "WIRE_VERSION",
    "Envelope",
    "MessageRegistry",
    "RequestFailed",
    "decode",
    "default_registry",
    "encode",
    "is_message_type",
    "message_type",
    "new_envelope",
    "summarise",
]

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

T = TypeVar("T", bound=type)


class Envelope(NamedTuple):
    """One message in flight: the typed payload and where it comes from and goes to.

    Immutable, and a tuple rather than a frozen dataclass: one is made for every message
    sent, and a frozen dataclass costs twice as much to build.

    Attributes:
        id: Unique id of this message (hex).
        type: Registered wire name of ``data``'s class.
        sender: Name of the sending agent.
        to: Recipient's name for a direct message, ``None`` for a broadcast.
        ts: Sender's wall-clock time at sending (seconds since the epoch).
        data: The message itself, an instance of the registered class.
        re: For a reply, the id of the request it answers.
        rq: True when the sender waits for a reply (see ``Agent.request``).
    """

    id: str
    type: str
    sender: str
    to: str | None
    ts: float
    data: Any
    re: str | None = None
    rq: bool = False


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    name: str
    cls: type
    adapter: TypeAdapter[Any]
    compact: bool = False
    """Encoded without the fields (nested ones too) that hold their default value."""


def is_message_type(cls: object) -> bool:
    """Tell whether ``cls`` can be used as a message type.

    Args:
        cls: Any object.

    Returns:
        True for pydantic ``BaseModel`` subclasses and dataclasses (pydantic or stdlib).
    """
    if not isinstance(cls, type):
        return False
    return issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls)


def _module_name(cls: type) -> str:
    module = cls.__module__
    if module != "__main__":
        return module
    # A script's classes live in "__main__"; name them after the script so a process that
    # imports the same file as a module agrees on the wire name.
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    main_file = getattr(main, "__file__", None)
    return Path(main_file).stem if main_file else module


def default_type_name(cls: type) -> str:
    """The wire name a class gets unless it was registered under an explicit one.

    Args:
        cls: A message class.

    Returns:
        ``module.QualifiedName``, so same-named classes of different modules never collide.
    """
    return f"{_module_name(cls)}.{cls.__qualname__}"


class MessageRegistry:
    """Maps wire type names to message classes and back.

    Classes register themselves when a handler or a send first uses them; the registry is
    safe to share between threads.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, _TypeInfo] = {}
        self._by_cls: dict[type, _TypeInfo] = {}
        self._lock = threading.Lock()

    def register(self, cls: type, name: str | None = None) -> str:
        """Register a message class.

        Args:
            cls: A pydantic model or dataclass.
            name: Wire name to use; defaults to ``module.QualifiedName``.

        Returns:
            The wire name.

        Raises:
            NotAMessageType: ``cls`` is not a model or dataclass.
        """
        known = self._by_cls.get(cls)
        if known is not None and (name is None or name == known.name):
            return known.name
        if not is_message_type(cls):
            raise NotAMessageType(cls)
        explicit = getattr(cls, "__serendib_type__", None)
        wire_name = name or (explicit if isinstance(explicit, str) else default_type_name(cls))
        compact = getattr(cls, "__serendib_compact__", False) is True
        info = _TypeInfo(wire_name, cls, TypeAdapter(cls), compact)
        with self._lock:
            # A class defined again (a function-local class on a second call) takes over
            # its name: the newest definition is the one handlers are written against.
            self._by_name[wire_name] = info
            self._by_cls[cls] = info
        return wire_name

    def info_for(self, cls: type) -> _TypeInfo:
        """Return the registration of ``cls``, registering it on first use."""
        info = self._by_cls.get(cls)
        if info is None:
            self.register(cls)
            info = self._by_cls[cls]
        return info

    def name_of(self, cls: type) -> str:
        """Return the wire name of ``cls``, registering it on first use."""
        return self.info_for(cls).name

    def lookup(self, name: str) -> _TypeInfo:
        """Return the registration for a wire name.

        Raises:
            UnknownMessageType: nothing is registered under ``name``.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownMessageType(name) from None


default_registry = MessageRegistry()


def message_type(name: str | None = None, *, compact: bool = False) -> Callable[[T], T]:
    """Class decorator registering a message class, optionally under an explicit wire name.

    An explicit name lets two programs whose classes live in different modules agree on a
    type. Registration also happens implicitly when a class is first handled or sent.

    Args:
        name: Wire name; defaults to ``module.QualifiedName``.
        compact: Leave out of the encoding every field (nested ones too) that holds its
            default: decoding fills it in again. For messages carrying many records with
            mostly default fields (a submission of tasks is ten times smaller), where both
            sides know the same defaults; a default then may never change meaning.

    Returns:
        A decorator returning the class unchanged.
    """

    def decorate(cls: T) -> T:
        if name is not None:
            cls.__serendib_type__ = name  # type: ignore[attr-defined]
        if compact:
            cls.__serendib_compact__ = True  # type: ignore[attr-defined]
        default_registry.register(cls, name)
        return cls

    return decorate


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The reply sent when the handler serving a request raised."""

    error: str


default_registry.register(RequestFailed, "serendib.RequestFailed")


def new_envelope(
    data: object,
    sender: str,
    to: str | None = None,
    re: str | None = None,
    rq: bool = False,
    registry: MessageRegistry = default_registry,
) -> Envelope:
    """Wrap a message in a fresh envelope.

    Args:
        data: Instance of a message class.
        sender: Sending agent's name.
        to: Recipient's name, or ``None`` for a broadcast.
        re: Id of the request this replies to, if any.
        rq: Whether the sender waits for a reply.
        registry: Where to find (or register) the message's type.

    Returns:
        The envelope.

    Raises:
        NotAMessageType: ``data`` is not an instance of a model or dataclass.
    """
    type_name = registry.name_of(type(data))
    return Envelope(_next_id(), type_name, sender, to, time.time(), data, re, rq)


def _fresh_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:16]
    _id_counter = itertools.count(1)


_id_prefix = ""
_id_counter = itertools.count(1)
_fresh_id_prefix()
# A forked child would repeat its parent's ids: it gets a prefix of its own.
os.register_at_fork(after_in_child=_fresh_id_prefix)


def _next_id() -> str:
    """A message id unique across processes: a random per-process prefix and a counter.

    (A uuid4 per message cost a fifth of the time of sending a small one.)
    """
    return f"{_id_prefix}{next(_id_counter):x}"


@functools.lru_cache(maxsize=4096)
def _json_str(text: str) -> str:
    """``text`` as a JSON string literal; names repeat, so the escaping is cached."""
    return json.dumps(text, ensure_ascii=False)


def encode(
    envelope: Envelope,
    registry: MessageRegistry = default_registry,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> bytes:
    """Encode an envelope as compact JSON (one line: it never contains a raw newline).

    Args:
        envelope: The envelope.
        registry: Where ``envelope.data``'s type is registered.
        max_bytes: Size limit of the encoded message.

    Returns:
        The UTF-8 JSON bytes.

    Raises:
        MessageTooLarge: The encoded message exceeds ``max_bytes``.
    """
    info = registry.info_for(type(envelope.data))
    to = "null" if envelope.to is None else _json_str(envelope.to)
    # Built by hand, not with json.dumps: the header is most of the cost of a small message.
    head = (
        f'{{"v":{WIRE_VERSION},"id":{json.dumps(envelope.id)},"type":{_json_str(envelope.type)},'
        f'"from":{_json_str(envelope.sender)},"to":{to},"ts":{float(envelope.ts)!r}'
    )
    if envelope.re is not None:
        head += f',"re":{json.dumps(envelope.re)}'
    if envelope.rq:
        head += ',"rq":true'
    data = info.adapter.dump_json(envelope.data, exclude_defaults=info.compact)
    raw = b"".join((head.encode(), b',"data":', data, b"}"))
    if len(raw) > max_bytes:
        raise MessageTooLarge(len(raw), max_bytes)
    return raw


_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_TYPE_NAME = re.compile(r"[A-Za-z0-9_.<>\-]{1,200}")


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool) -> Any:
    if key not in obj:
        if optional:
            return None
        raise DecodeError(f"envelope has no {key!r} field")
    value = obj[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"envelope field {key!r} has the wrong type ({type(value).__name__})")
    return value


@functools.lru_cache(maxsize=4096)
def _valid_name(value: str) -> bool:
    return is_name(value)


def _check(valid: bool, key: str, value: object) -> None:
    if not valid:
        raise DecodeError(f"envelope field {key!r} is not valid: {safe_text(value, 60)}")


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _sent_by(error: MessageError, sender: str | None) -> MessageError:
    error.sender = sender
    return error


def decode(
    raw: bytes,
    registry: MessageRegistry = default_registry,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Envelope:
    """Decode and validate one envelope.

    Args:
        raw: Bytes received from a transport.
        registry: Where to look the message type up.
        max_bytes: Size limit; larger input is rejected before it is parsed.

    Returns:
        The envelope, its ``data`` an instance of the registered class.

    Raises:
        MessageTooLarge: ``raw`` exceeds ``max_bytes``.
        DecodeError: Not JSON, or not an envelope.
        UnsupportedVersion: An envelope version this build does not speak.
        UnknownMessageType: A type name nothing is registered under.
        MessageValidationError: ``data`` fails validation against its type.
    """
    if len(raw) > max_bytes:
        raise MessageTooLarge(len(raw), max_bytes)
    try:
        obj = pydantic_core.from_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DecodeError(f"not JSON ({type(e).__name__}: {e})"[:200]) from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    claimed = obj.get("from")
    # Named in the drop's log line only once it is known to be a valid name.
    sender = claimed if isinstance(claimed, str) and _valid_name(claimed) else None
    try:
        envelope = _envelope(obj, registry)
    except MessageError as e:
        raise _sent_by(e, sender) from None
    return envelope


def _envelope(obj: dict[str, Any], registry: MessageRegistry) -> Envelope:
    version = obj.get("v")
    if version != WIRE_VERSION:
        if version is None:
            raise DecodeError("envelope has no 'v' (version) field")
        shown = version if isinstance(version, int) else safe_text(version, 20)
        raise UnsupportedVersion(shown, WIRE_VERSION)
    type_name = _field(obj, "type", str, optional=False)
    _check(_TYPE_NAME.fullmatch(type_name) is not None, "type", type_name)
    msg_id = _field(obj, "id", str, optional=False)
    _check(_ID.fullmatch(msg_id) is not None, "id", msg_id)
    sender = _field(obj, "from", str, optional=False)
    _check(_valid_name(sender), "from", sender)
    to = _field(obj, "to", str, optional=True)
    if to is not None:
        _check(_valid_name(to), "to", to)
    ts = _field(obj, "ts", (int, float), optional=False)
    _check(_finite(ts), "ts", ts)
    re_id = _field(obj, "re", str, optional=True)
    if re_id is not None:
        _check(_ID.fullmatch(re_id) is not None, "re", re_id)
    rq = obj.get("rq", False) is True
    if "data" not in obj:
        raise DecodeError("envelope has no 'data' field")
    info = registry.lookup(type_name)
    try:
        data = info.adapter.validate_python(obj["data"])
    except ValidationError as e:
        raise MessageValidationError(type_name, summarise(e)) from None
    return Envelope(msg_id, type_name, sender, to, float(ts), data, re_id, rq)


def summarise(error: ValidationError, limit: int = 5, what: str = "data") -> str:
    """A pydantic validation error as one line for people: each problem's place and reason.

    Places can hold keys a peer chose, so they are made safe for a log line.

    Args:
        error: The validation error.
        limit: Problems listed; the rest are counted.
        what: The place of a problem with no location.
    """
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = safe_text(".".join(str(p) for p in item["loc"]), 80) or what
        parts.append(f"{where}: {safe_text(item['msg'], 200)}")
    more = error.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)

"""Bounds on everything that arrives from the network, as validated pydantic field types.

Every message field a peer controls is one of these: names and ids are subject-safe tokens
of bounded length, integers fit the store's columns, floats are finite, text has a documented
size and no NUL, and free-form JSON (payloads, outputs, attributes) has bounded depth. A
message breaking any of them fails validation and is dropped before any handler, log line,
subject or store sees it. :func:`safe_text` renders untrusted text for a log line.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

__all__ = [
    "MAX_ATTEMPT",
    "MAX_HEARTBEAT_INTERVAL_S",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_NAME_CHARS",
    "MAX_NOTE_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TIMESTAMP",
    "MODEL_CONFIG",
    "Count",
    "FiniteFloat",
    "Int64",
    "JsonObject",
    "JsonValue",
    "MessageId",
    "Name",
    "Note",
    "TaskId",
    "Text",
    "Timestamp",
    "Token",
    "check_json_depth",
    "clip_text",
    "is_name",
    "safe_text",
]

MAX_NAME_CHARS = 128
"""Agent and workspace names: letters, digits, ``_`` and ``-``, not starting with ``-``."""
MAX_ID_CHARS = 200
"""Task ids: any printable text without control characters."""
MAX_TEXT_CHARS = 10_000
"""Descriptions and error texts."""
MAX_NOTE_CHARS = 1_000
"""Reasons and progress notes."""
MAX_JSON_DEPTH = 32
"""Nesting of payloads, outputs and attributes (the JSON parser itself stops at 200)."""
MAX_ATTEMPT = 2**31 - 1
"""Attempt numbers and other counts stored in 32-bit columns."""
MAX_TIMESTAMP = 1e11
"""Seconds since the epoch (the year 5138): later is a forgery or a broken clock."""
MAX_HEARTBEAT_INTERVAL_S = 60.0
"""The longest heartbeat interval an agent may announce: a member silent for longer than
three of them is lost, so a "ghost" cannot hold work for hours by announcing a long one."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}")
_TOKEN = r"^[A-Za-z0-9_.:<>\-]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUL = "\x00"
_INT64 = 2**63 - 1


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid agent or workspace name (a subject token)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """Return ``value`` if its lists and objects nest at most ``limit`` deep.

    Raises:
        ValueError: It nests deeper.
    """
    if not isinstance(value, (dict, list, tuple)) or not value:
        return value  # the common case: nothing nested at all
    if isinstance(value, dict) and not any(
        isinstance(child, (dict, list, tuple)) for child in value.values()
    ):
        return value
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit:
            raise ValueError(f"nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)
    return value


Name = Annotated[str, Field(pattern=f"^{_NAME.pattern}$", max_length=MAX_NAME_CHARS)]
"""An agent or workspace name: it becomes a subject token."""
Token = Annotated[str, Field(min_length=1, max_length=64, pattern=_TOKEN)]
"""A short identifier (an agent id, a role, a manager epoch, a task kind)."""
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
"""A message id."""
# Checked by pydantic's own (Rust) regex rather than a Python validator: these are on every
# assignment and result, and a Python call per field costs more than the rest of the field.
TaskId = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""A task id. Models holding one set ``coerce_numbers_to_str`` (:data:`MODEL_CONFIG`), so
ids given as numbers (the seed's) become text, in pydantic's core rather than in Python."""

MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)
"""The configuration of Serendib's message and record models: frozen, no unknown fields,
numbers accepted as text."""
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=r"^[^\x00]*$")]
"""A description or an error text."""
Note = Annotated[str, Field(max_length=MAX_NOTE_CHARS, pattern=r"^[^\x00]*$")]
"""A reason or a note."""
Int64 = Annotated[int, Field(ge=-_INT64 - 1, le=_INT64)]
"""An integer that fits a 64-bit column."""
Count = Annotated[int, Field(ge=0, le=MAX_ATTEMPT)]
"""A non-negative integer that fits a 32-bit column (attempts, counters)."""
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is neither infinite nor NaN."""
Timestamp = Annotated[float, Field(ge=0.0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
"""Seconds since the epoch."""
JsonValue = Annotated[Any, AfterValidator(check_json_depth)]
"""Any JSON value nesting at most :data:`MAX_JSON_DEPTH` deep."""
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_depth)]
"""A JSON object nesting at most :data:`MAX_JSON_DEPTH` deep."""


def clip_text(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` made acceptable as :data:`Text`: NUL characters replaced, cut at ``limit``."""
    if _NUL in value:
        value = value.replace(_NUL, "\ufffd")
    return value if len(value) <= limit else value[: limit - 20] + " ... (truncated)"


def safe_text(value: object, limit: int = 120) -> str:
    """``value`` as one printable line for a log: control characters escaped, cut at ``limit``.

    Untrusted names and reasons go through this before a log line, so a peer cannot forge
    log lines (newlines, terminal escapes) or flood the log with a huge name.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"...({len(text)} chars)"
    if _CONTROL.search(text) or '"' in text or "\\" in text:
        text = json.dumps(text)[1:-1]
    return text

"""The bounds on fields from the network, and log lines that a peer cannot forge."""

from __future__ import annotations

import json

import pytest
from loguru import logger
from pydantic import BaseModel, ValidationError

from serendib._droplog import DropLog
from serendib.errors import MessageError
from serendib.limits import (
    MAX_JSON_DEPTH,
    Int64,
    JsonObject,
    Name,
    TaskId,
    Text,
    check_json_depth,
    clip_text,
    is_name,
    safe_text,
)
from serendib.messages import decode
from serendib.presence import Heartbeat
from serendib.tasks.messages import TaskResult, WorkerSync
from serendib.tasks.models import Task


class Fields(BaseModel):
    name: Name = "a"
    task_id: TaskId = "t"
    text: Text = ""
    number: Int64 = 0
    blob: JsonObject = {}


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"k": [value]}
    return value


@pytest.mark.parametrize("name", ["worker-1", "A_b", "_x", "x" * 128])
def test_names_that_are_subject_tokens_are_accepted(name: str) -> None:
    assert is_name(name)
    assert Fields(name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "-x", "a b", "a.b", "a*", "a>", "a\x00", "a\n", "x" * 129, "é"]
)
def test_names_that_are_not_subject_tokens_are_refused(name: str) -> None:
    assert not is_name(name)
    with pytest.raises(ValidationError):
        Fields(name=name)


def test_task_ids_refuse_control_characters_and_length() -> None:
    assert Fields(task_id="batch 1/3 (é)").task_id == "batch 1/3 (é)"
    for bad in ("a\x00b", "a\nb", "x" * 201, ""):
        with pytest.raises(ValidationError):
            Fields(task_id=bad)


def test_integers_must_fit_64_bits_and_text_may_not_hold_nul() -> None:
    assert Fields(number=2**63 - 1).number == 2**63 - 1
    with pytest.raises(ValidationError):
        Fields(number=2**63)
    with pytest.raises(ValidationError):
        Fields(text="a\x00b")
    with pytest.raises(ValidationError):
        Fields(text="x" * 10_001)


def test_json_nesting_is_bounded() -> None:
    check_json_depth(nested(MAX_JSON_DEPTH // 2))
    with pytest.raises(ValueError, match="deeper than"):
        check_json_depth(nested(MAX_JSON_DEPTH))
    with pytest.raises(ValidationError):
        Fields(blob={"x": nested(MAX_JSON_DEPTH)})


def test_task_messages_bound_every_field() -> None:
    with pytest.raises(ValidationError):
        TaskResult(task_id="t", attempt=10**30, worker="w", success=True)
    with pytest.raises(ValidationError):
        TaskResult(task_id="t", attempt=1, worker="w\x00", success=True)
    with pytest.raises(ValidationError):
        TaskResult(task_id="t", attempt=1, worker="w", success=True, finished_at=float("inf"))
    with pytest.raises(ValidationError):
        Task(id="t", difficulty=1, timeout_s=float("nan"))
    with pytest.raises(ValidationError):
        Task(id="t", difficulty=1, payload={"x": nested(MAX_JSON_DEPTH)})
    with pytest.raises(ValidationError):
        WorkerSync(holding=[("t", 2**40)])


def test_a_heartbeat_interval_has_a_maximum() -> None:
    agent = {"name": "ghost", "id": "abc"}
    assert Heartbeat.model_validate({"agent": agent, "interval": 60}).interval == 60
    with pytest.raises(ValidationError):
        Heartbeat.model_validate({"agent": agent, "interval": 3600})


def test_safe_text_escapes_control_characters_and_cuts_long_text() -> None:
    assert safe_text("plain") == "plain"
    assert "\n" not in safe_text("a\nINFO forged")
    assert "\x1b" not in safe_text("\x1b[31mred")
    assert len(safe_text("x" * 10_000, 50)) < 80
    assert clip_text("a\x00b") == "a\ufffdb"
    assert len(clip_text("y" * 20_000)) <= 10_000


def test_a_drop_is_one_log_line_naming_the_sender_and_never_the_message() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        drops = DropLog("bob")
        long_name = "x" * 4_100
        for sender in ("eve", long_name, "mallory\nINFO admin: all tasks succeeded"):
            raw = json.dumps(
                {"v": 1, "type": "nope", "id": "i", "from": sender, "ts": 1, "data": {"s": 1}}
            ).encode()
            with pytest.raises(MessageError) as info:
                decode(raw)
            drops.record(info.value, raw)
    finally:
        logger.remove(sink)
    assert len(lines) == 3
    assert all(line.count("\n") == 1 for line in lines)  # the sink's own newline only
    assert "from eve" in lines[0]
    assert "an unknown sender" in lines[1]
    assert long_name not in lines[1]
    assert "an unknown sender" in lines[2]
    assert "INFO admin" not in lines[2].split(":", 1)[0]
    assert all('"s"' not in line for line in lines)
    assert drops.counts == {"UnknownMessageType": 1, "DecodeError": 2}

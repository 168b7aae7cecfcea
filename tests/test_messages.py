"""Envelope encoding and decoding: pure, no event loop, no server."""

from __future__ import annotations

import json
from dataclasses import dataclass as std_dataclass

import pytest
from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass

from serendib.errors import (
    DecodeError,
    MessageTooLarge,
    MessageValidationError,
    NotAMessageType,
    UnknownMessageType,
    UnsupportedVersion,
)
from serendib.messages import (
    MessageRegistry,
    decode,
    default_registry,
    encode,
    message_type,
    new_envelope,
)
from serendib.tasks.messages import SubmitTasks
from serendib.tasks.models import Backoff, Task


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1)


@dataclass
class Point:
    x: int
    y: int


@std_dataclass
class Plain:
    label: str


def roundtrip(data: object) -> object:
    envelope = new_envelope(data, "alice", to="bob")
    back = decode(encode(envelope))
    assert back.id == envelope.id
    assert back.sender == "alice"
    assert back.to == "bob"
    assert back.type == envelope.type
    return back.data


def test_pydantic_model_roundtrips() -> None:
    assert roundtrip(Order(item="tea", quantity=2)) == Order(item="tea", quantity=2)


def test_pydantic_dataclass_roundtrips() -> None:
    assert roundtrip(Point(x=1, y=2)) == Point(x=1, y=2)


def test_stdlib_dataclass_roundtrips() -> None:
    assert roundtrip(Plain(label="x")) == Plain(label="x")


def test_encoded_envelope_is_one_json_line_with_the_documented_fields() -> None:
    raw = encode(new_envelope(Order(item="multi\nline", quantity=1), "alice"))
    assert b"\n" not in raw
    obj = json.loads(raw)
    assert set(obj) == {"v", "id", "type", "from", "to", "ts", "data"}
    assert obj["v"] == 1
    assert obj["to"] is None
    assert obj["type"] == "tests.test_messages.Order"
    assert obj["data"] == {"item": "multi\nline", "quantity": 1}


def test_same_class_name_in_different_scopes_gets_different_wire_names() -> None:
    def make() -> type[BaseModel]:
        class Order(BaseModel):
            sku: int

        return Order

    local = make()
    assert default_registry.name_of(local) != default_registry.name_of(Order)
    data = roundtrip(local(sku=3))
    assert type(data) is local


def test_explicit_wire_name_is_used() -> None:
    @message_type("acme.Invoice")
    class Invoice(BaseModel):
        total: int

    envelope = new_envelope(Invoice(total=3), "a")
    assert envelope.type == "acme.Invoice"
    assert json.loads(encode(envelope))["type"] == "acme.Invoice"


def test_a_compact_message_leaves_out_its_defaults_and_decodes_to_the_same() -> None:
    class Line(BaseModel):
        item: str
        quantity: int = 1
        notes: list[str] = Field(default_factory=list)

    @message_type("acme.Basket", compact=True)
    class Basket(BaseModel):
        lines: list[Line]
        currency: str = "EUR"

    basket = Basket(lines=[Line(item="tea"), Line(item="jam", quantity=2, notes=["x"])])
    raw = encode(new_envelope(basket, "a"))

    assert json.loads(raw)["data"] == {
        "lines": [{"item": "tea"}, {"item": "jam", "quantity": 2, "notes": ["x"]}]
    }
    assert decode(raw).data == basket


def test_a_submission_of_tasks_travels_compact() -> None:
    tasks = [Task(id=f"t{i}", difficulty=i % 10 + 1) for i in range(100)]
    tasks.append(Task(id="full", difficulty=3, labels=("gpu",), retry=Backoff(base_s=2.0)))
    message = SubmitTasks(tasks=tasks, watch=True)
    raw = encode(new_envelope(message, "client"))

    assert len(raw) < 60 * len(tasks)  # ~300 bytes a task with every default spelt out
    assert decode(raw).data == message


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        decode(b"\x00\xffgarbage")


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        {"id": "x", "type": "t", "from": "a", "ts": 1, "data": {}},
        {"v": 1, "type": 3, "id": "x", "from": "a", "ts": 1, "data": {}},
        {"v": 1, "type": "tests.test_messages.Order", "from": "a", "ts": 1, "data": {}},
        {"v": 1, "type": "tests.test_messages.Order", "id": "x", "from": "a", "ts": 1},
        {"v": 1, "type": "tests.test_messages.Order", "id": "x", "from": "a", "ts": True},
    ],
)
def test_wrong_shapes_are_decode_errors(obj: object) -> None:
    with pytest.raises(DecodeError):
        decode(json.dumps(obj).encode())


def test_unknown_version_is_rejected_with_the_version() -> None:
    raw = json.dumps({"v": 99, "type": "x", "id": "i", "from": "a", "ts": 1, "data": {}})
    with pytest.raises(UnsupportedVersion) as info:
        decode(raw.encode())
    assert info.value.version == 99


def test_unknown_type_is_rejected_with_its_name() -> None:
    raw = json.dumps({"v": 1, "type": "evil.Payload", "id": "i", "from": "a", "ts": 1, "data": {}})
    with pytest.raises(UnknownMessageType) as info:
        decode(raw.encode())
    assert info.value.type_name == "evil.Payload"


def test_invalid_data_is_rejected_with_the_field_and_reason() -> None:
    default_registry.register(Order)
    raw = json.dumps(
        {
            "v": 1,
            "type": "tests.test_messages.Order",
            "id": "i",
            "from": "a",
            "ts": 1,
            "data": {"item": "tea", "quantity": 0},
        }
    )
    with pytest.raises(MessageValidationError) as info:
        decode(raw.encode())
    assert "quantity" in info.value.details


def test_oversize_is_rejected_before_parsing() -> None:
    with pytest.raises(MessageTooLarge) as info:
        decode(b"{" * 2000, max_bytes=1000)
    assert info.value.size == 2000


def test_oversize_is_rejected_when_encoding() -> None:
    with pytest.raises(MessageTooLarge):
        encode(new_envelope(Order(item="x" * 5000, quantity=1), "a"), max_bytes=1000)


def test_non_message_objects_cannot_be_sent() -> None:
    with pytest.raises(NotAMessageType):
        new_envelope({"a": 1}, "a")


def test_registries_are_independent() -> None:
    registry = MessageRegistry()
    with pytest.raises(UnknownMessageType):
        registry.lookup("tests.test_messages.Order")
    assert registry.register(Order) == "tests.test_messages.Order"
    assert registry.lookup("tests.test_messages.Order").cls is Order


def test_reply_ids_from_the_network_are_escaped_when_encoded_and_refused_when_decoded() -> None:
    envelope = new_envelope(Order(item="x", quantity=1), "alice", to="bob", re='a"b\\c\n')
    raw = encode(envelope)
    assert json.loads(raw)["re"] == 'a"b\\c\n'  # no JSON injection through the id
    with pytest.raises(DecodeError, match="'re' is not valid") as info:
        decode(raw)
    assert info.value.sender == "alice"


def test_message_ids_are_unique_and_short() -> None:
    ids = {new_envelope(Order(item="x", quantity=1), "a").id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) <= 32 for i in ids)

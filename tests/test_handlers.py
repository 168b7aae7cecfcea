"""The @on_message decorator: dispatch tables and mistakes caught at definition time."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from serendib import Agent, on_message


class Base(BaseModel):
    x: int = 0


class Derived(Base):
    pass


def test_bare_decorator_reads_the_type_hint() -> None:
    class A(Agent):
        @on_message
        async def handle(self, message: Base) -> None:
            pass

    assert A._handler_table.names_for(Base) == ("handle",)


def test_bare_decorator_resolves_a_class_defined_in_the_same_function() -> None:
    class Local(BaseModel):
        y: int

    class A(Agent):
        @on_message
        async def handle(self, message: Local) -> None:
            pass

    assert A._handler_table.names_for(Local) == ("handle",)


def test_handlers_of_base_message_classes_take_subclasses() -> None:
    class A(Agent):
        @on_message(type=Base)
        async def handle(self, message: Base) -> None:
            pass

    assert A._handler_table.names_for(Derived) == ("handle",)


def test_subclass_overrides_a_handler_by_name() -> None:
    class A(Agent):
        @on_message(type=Base)
        async def handle(self, message: Base) -> None:
            pass

    class B(A):
        @on_message(type=Derived)
        async def handle(self, message: Base) -> None:
            pass

    assert B._handler_table.names_for(Base) == ()
    assert B._handler_table.names_for(Derived) == ("handle",)


def test_sync_handler_is_rejected_at_definition() -> None:
    with pytest.raises(TypeError, match="async"):

        class A(Agent):
            @on_message(type=Base)  # type: ignore[type-var]
            def handle(self, message: Base) -> None:
                pass


def test_missing_type_is_rejected_at_definition() -> None:
    with pytest.raises(TypeError, match="type hint"):

        class A(Agent):
            @on_message
            async def handle(self, message) -> None:  # type: ignore[no-untyped-def]
                pass


def test_non_message_type_is_rejected_at_definition() -> None:
    with pytest.raises(TypeError, match="not a message type"):

        class A(Agent):
            @on_message(type=int)
            async def handle(self, message: int) -> None:
                pass


def test_unresolvable_hint_is_rejected_at_definition() -> None:
    with pytest.raises(TypeError, match="cannot resolve"):

        class A(Agent):
            @on_message
            async def handle(self, message: Missing) -> None:  # type: ignore[name-defined]  # noqa: F821
                pass


def test_invalid_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="agent name"):
        Agent("has space")
    with pytest.raises(ValueError, match="workspace"):
        Agent("ok", "bad.workspace")

"""The ``@on_message`` decorator and the per-class table of handlers it builds.

Handlers are found by the message's class (and its base classes), never by its name, so
classes defined inside functions and same-named classes of different modules both work.
Mistakes (a handler that is not async, no message type) raise when the class is defined.
"""

from __future__ import annotations

import builtins
import inspect
import sys
import typing
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from serendib.messages import default_registry, is_message_type

__all__ = ["HandlerTable", "on_message"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_MARK = "__serendib_handles__"


def _caller_namespaces(depth: int) -> dict[str, Any]:
    """Locals of the frames defining a class, so hints naming function-local classes resolve."""
    names: dict[str, Any] = {}
    frame = sys._getframe(depth)
    chain: list[Any] = []
    while frame is not None and len(chain) < 4:
        chain.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    for f in reversed(chain):
        names.update(f.f_locals)
    return names


def _type_from_hint(fn: Callable[..., Any], depth: int) -> type:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
        raise TypeError(
            f"handler {fn.__qualname__} must take (self, message); "
            "or give the type explicitly: @on_message(type=MyMessage)"
        )
    hint_name = params[1].name
    try:
        hints = typing.get_type_hints(
            fn, globalns=fn.__globals__, localns=_caller_namespaces(depth)
        )
    except NameError as e:
        raise TypeError(
            f"cannot resolve the type hint of {fn.__qualname__}({hint_name}): {e}; "
            "pass it explicitly: @on_message(type=MyMessage)"
        ) from None
    if hint_name not in hints:
        raise TypeError(
            f"handler {fn.__qualname__} has no type hint on {hint_name!r}: annotate it, or use "
            "@on_message(type=MyMessage)"
        )
    hint = hints[hint_name]
    if not isinstance(hint, builtins.type):
        raise TypeError(
            f"handler {fn.__qualname__}: {hint!r} is not a class; use @on_message(type=MyMessage)"
        )
    return hint


def _mark(fn: F, message_type: type) -> F:
    if not inspect.iscoroutinefunction(typing.cast(Any, fn)):
        raise TypeError(f"handler {fn.__qualname__} must be an async function (async def)")
    if not is_message_type(message_type):
        raise TypeError(
            f"handler {fn.__qualname__}: {message_type!r} is not a message type "
            "(use a pydantic BaseModel or a dataclass)"
        )
    default_registry.register(message_type)
    setattr(fn, _MARK, message_type)
    return fn


@overload
def on_message(fn: F, /) -> F: ...


@overload
def on_message(*, type: builtins.type) -> Callable[[F], F]: ...


def on_message(
    fn: F | None = None, /, *, type: builtins.type | None = None
) -> F | Callable[[F], F]:
    """Mark an async method as the handler of one message type.

    Use it as ``@on_message(type=TaskResult)``, or bare (``@on_message``) to read the type
    from the hint of the method's message parameter. The method is called as
    ``await handler(self, message)`` for every message of that type (or a subclass) the
    agent receives; if the message was a request, a non-``None`` return value is the reply.

    Args:
        fn: The method, when used bare.
        type: The message class to handle.

    Returns:
        The method unchanged (marked), or a decorator.

    Raises:
        TypeError: The method is not async, or its message type cannot be determined.
    """
    if fn is not None:
        return _mark(fn, _type_from_hint(fn, depth=3))
    if type is None:
        raise TypeError("on_message() needs the message type: @on_message(type=MyMessage)")
    message_type = type

    def decorate(f: F) -> F:
        return _mark(f, message_type)

    return decorate


class HandlerTable:
    """Which methods of an agent class handle which message types."""

    def __init__(self, cls: builtins.type) -> None:
        by_type: dict[builtins.type, list[str]] = {}
        seen: set[str] = set()
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                handled = getattr(value, _MARK, None)
                if handled is not None:
                    by_type.setdefault(handled, []).append(attr)
        self._by_type = {t: tuple(names) for t, names in by_type.items()}
        self._resolved: dict[builtins.type, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_type)

    def types(self) -> tuple[builtins.type, ...]:
        """The message types handled directly."""
        return tuple(self._by_type)

    def names_for(self, message_type: builtins.type) -> tuple[str, ...]:
        """Method names handling ``message_type``, most specific class first."""
        found = self._resolved.get(message_type)
        if found is None:
            names: list[str] = []
            for klass in message_type.__mro__:
                names.extend(self._by_type.get(klass, ()))
            found = tuple(names)
            self._resolved[message_type] = found
        return found

"""Names: validation of agent and workspace names, and the subjects messages travel on.

Pure functions, shared by every transport: ``serendib.<workspace>.all`` for broadcasts,
``serendib.<workspace>.to.<agent>`` for direct messages and replies, and
``serendib.<workspace>.presence`` for announcements, heartbeats and goodbyes.
"""

from __future__ import annotations

import functools

from serendib.limits import MAX_NAME_CHARS, is_name

__all__ = [
    "broadcast_subject",
    "direct_subject",
    "is_direct",
    "presence_subject",
    "validate_name",
]

PREFIX = "serendib"


def validate_name(value: str, what: str) -> str:
    """Check that ``value`` can name an agent or a workspace.

    Names become subject tokens, so they are limited to letters, digits, ``_`` and ``-``.

    Args:
        value: The proposed name.
        what: What is being named, for the error message ("agent name", "workspace").

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: The name is empty, too long, or has other characters.
    """
    if not is_name(value):
        shown = repr(value)[:60]
        raise ValueError(
            f"invalid {what} {shown}: use 1-{MAX_NAME_CHARS} letters, digits, '_' or '-', "
            "not starting with '-'"
        )
    return value


def broadcast_subject(workspace: str) -> str:
    """Subject every agent of ``workspace`` listens on."""
    return f"{PREFIX}.{workspace}.all"


@functools.lru_cache(maxsize=65_536)
def direct_subject(workspace: str, agent: str) -> str:
    """Subject only the agent named ``agent`` of ``workspace`` listens on."""
    return f"{PREFIX}.{workspace}.to.{agent}"


def is_direct(subject: str) -> bool:
    """Whether ``subject`` is one agent's direct subject (``serendib.<ws>.to.<agent>``)."""
    return subject.startswith(f"{PREFIX}.") and ".to." in subject


def presence_subject(workspace: str) -> str:
    """Subject of announcements, heartbeats and goodbyes in ``workspace``."""
    return f"{PREFIX}.{workspace}.presence"

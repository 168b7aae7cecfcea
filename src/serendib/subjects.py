"""Names: validation of agent and workspace names, and the subjects messages travel on.

Pure functions, shared by every transport. Every subject ends with the sender's name, so a
receiver knows who sent a message from where it arrived, and a NATS server with per-agent
permissions (see :mod:`serendib.transports.identity`) lets each agent publish only under its
own name:

- ``serendib.<workspace>.all.<sender>``: broadcasts (agents subscribe to ``…all.*``);
- ``serendib.<workspace>.to.<agent>.<sender>``: direct messages and replies (an agent
  subscribes to ``…to.<itself>.*``);
- ``serendib.<workspace>.presence.<sender>``: announcements, heartbeats and goodbyes (the
  admin subscribes to ``…presence.*``);
- ``serendib.<workspace>.register``: requests for an identity (the admin's embedded server).
"""

from __future__ import annotations

import functools

from serendib.limits import MAX_NAME_CHARS, is_name

__all__ = [
    "broadcast_pattern",
    "broadcast_subject",
    "direct_subject",
    "inbox_pattern",
    "is_direct",
    "presence_pattern",
    "presence_subject",
    "register_subject",
    "sender_of",
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


def broadcast_subject(workspace: str, sender: str) -> str:
    """Subject of ``sender``'s broadcasts to every agent of ``workspace``."""
    return f"{PREFIX}.{workspace}.all.{sender}"


def broadcast_pattern(workspace: str) -> str:
    """Subscription to every broadcast of ``workspace``."""
    return f"{PREFIX}.{workspace}.all.*"


@functools.lru_cache(maxsize=65_536)
def direct_subject(workspace: str, agent: str, sender: str) -> str:
    """Subject of ``sender``'s messages to the agent named ``agent`` of ``workspace``."""
    return f"{PREFIX}.{workspace}.to.{agent}.{sender}"


def inbox_pattern(workspace: str, agent: str) -> str:
    """Subscription to every message sent to ``agent``."""
    return f"{PREFIX}.{workspace}.to.{agent}.*"


def is_direct(subject: str) -> bool:
    """Whether ``subject`` is a direct one (``serendib.<ws>.to.<agent>.<sender>``)."""
    return subject.startswith(f"{PREFIX}.") and ".to." in subject


def presence_subject(workspace: str, sender: str) -> str:
    """Subject of ``sender``'s announcements, heartbeats and goodbyes in ``workspace``."""
    return f"{PREFIX}.{workspace}.presence.{sender}"


def presence_pattern(workspace: str) -> str:
    """Subscription to every agent's presence in ``workspace``."""
    return f"{PREFIX}.{workspace}.presence.*"


def register_subject(workspace: str) -> str:
    """Subject of requests for an identity in ``workspace`` (see ``transports.identity``)."""
    return f"{PREFIX}.{workspace}.register"


def sender_of(subject: str) -> str:
    """The sender a subject names: its last token."""
    return subject[subject.rfind(".") + 1 :]

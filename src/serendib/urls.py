"""URLs shown to people: the one place secrets are taken out of them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str, *, user_is_secret: bool = False) -> str:
    """``url`` (or comma-separated URLs) with any password replaced by ``***``.

    Args:
        url: One URL, or several separated by commas (a NATS cluster).
        user_is_secret: The user part alone is a secret too (a NATS token:
            ``nats://TOKEN@host``); the whole of it is then replaced.

    Returns:
        The URL, safe to log; unchanged when it holds no secret or cannot be parsed.
    """
    return ",".join(_redact_one(one, user_is_secret) for one in url.split(","))


def _redact_one(url: str, user_is_secret: bool) -> str:
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return url
    host = parts.netloc.rpartition("@")[2]
    if password:
        who = "***" if user_is_secret else f"{user or ''}:***"
    elif user and user_is_secret:
        who = "***"
    else:
        return url
    return urlunsplit(parts._replace(netloc=f"{who}@{host}"))

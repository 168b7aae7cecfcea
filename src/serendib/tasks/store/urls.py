"""Where a task store is: :func:`open_store` and the URLs it understands.

A SQLite file by default, PostgreSQL by URL. Both are the same group-commit store (see
:mod:`serendib.tasks.store.group_commit`): concurrent writes are queued and a single writer
commits everything queued in one transaction, so a write is durable when its call returns and
the store is not the manager's bottleneck. The PostgreSQL backend (and psycopg) is imported
only when a PostgreSQL URL is opened.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from serendib.errors import StoreError
from serendib.tasks.store.group_commit import SqlTaskStore
from serendib.tasks.store.protocol import TaskStore
from serendib.tasks.store.sqlite import SqliteBackend
from serendib.urls import redact_url

__all__ = ["DEFAULT_STORE_FILE", "open_store"]

DEFAULT_STORE_FILE = "serendib.db"

_ACCEPTED = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path ending in .db, "
    ".sqlite or .sqlite3, sqlite://:memory:, or postgresql://user:password@host:port/database "
    "(optionally ?schema=NAME)"
)
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SQLITE_OPTIONS = {"synchronous": ("normal", "full")}
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def open_store(url: str | None = None, *, create: bool = True) -> TaskStore:
    """The store at ``url``, not yet opened (call ``open`` or use ``async with``).

    Args:
        url: None or ``""`` for ``serendib.db`` in the current directory;
            ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a path ending in
            ``.db``/``.sqlite``/``.sqlite3`` for a SQLite file (``?synchronous=full`` also
            survives power loss; the default survives the process being killed);
            ``sqlite://:memory:`` for a private in-memory database (tests);
            ``postgresql://user:password@host:port/database`` (or ``postgres://``) for
            PostgreSQL, with ``?schema=NAME`` to keep the tables in their own schema.
        create: False to open only a store that exists, as readers do: ``open`` then raises
            :class:`~serendib.errors.StoreNotFound` if there is none (no SQLite file, or no
            Serendib tables in the database or schema) and creates nothing. A store made by
            an older Serendib is still upgraded.

    Raises:
        StoreError: The URL is none of the above.
        ImportError: A PostgreSQL URL, and psycopg (the ``postgres`` extra) is not installed.
    """
    text = (url or "").strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        from serendib.tasks.store.postgres import PostgresBackend

        conninfo, schema = _postgres_target(text)
        return SqlTaskStore(PostgresBackend(conninfo, redact_url(text), schema, create=create))

    path, synchronous = _sqlite_target(text, scheme)
    return SqlTaskStore(SqliteBackend(path, synchronous, create=create))


def _sqlite_target(text: str, scheme: str) -> tuple[Path | None, str]:
    """The file (None for in-memory) and ``synchronous`` level a SQLite URL names."""
    if not text:
        return Path(DEFAULT_STORE_FILE).resolve(), "normal"
    if scheme == "sqlite":
        location, _, query = text[len("sqlite://") :].partition("?")
        synchronous = _sqlite_options(text, query)
        if location in (":memory:", "/:memory:"):
            return None, synchronous
        if location.startswith("/") and len(location) > 1:
            return Path(location[1:]).resolve(), synchronous
    elif not scheme and text.lower().endswith(_SQLITE_SUFFIXES):
        return Path(text).expanduser().resolve(), "normal"
    raise StoreError(
        f"cannot open a task store at {redact_url(text)!r}: {_ACCEPTED}", url=redact_url(text)
    )


def _sqlite_options(url: str, query: str) -> str:
    options = dict(parse_qsl(query, keep_blank_values=True))
    for name, value in options.items():
        allowed = _SQLITE_OPTIONS.get(name)
        if allowed is None or value.lower() not in allowed:
            raise StoreError(
                f"unsupported option {name}={value!r} in task store URL {url!r}: "
                "the only SQLite option is synchronous=normal|full",
                url=redact_url(url),
            )
    return options.get("synchronous", "normal").lower()


def _postgres_target(url: str) -> tuple[str, str | None]:
    """The libpq connection URL (without ``schema``) and the schema a PostgreSQL URL names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), None)
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise StoreError(
            f"invalid schema {schema!r} in task store URL {redact_url(url)!r}: use letters, "
            "digits and underscores, starting with a letter or underscore (at most 63)",
            url=redact_url(url),
        )
    if schema is None:
        return url, None
    rest = urlencode([(name, value) for name, value in query if name != "schema"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), schema

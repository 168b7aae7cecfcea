"""The task store's schema, as numbered migrations per backend (pure: SQL text only).

A store records its schema version in ``serendib_meta`` (key ``schema_version``). Opening a
store applies, in one transaction under the store's write lock (see
:meth:`serendib.tasks.store.backend.Backend.open_writer`), every step after the version it
records (all of them for a new store) and records the last: a store made by an older
Serendib is upgraded in place; a store of a *newer* version than this build knows is refused
(:func:`pending`). Steps are never edited once released: a schema change is a new step.

- Step 1: the schema of version 1: tasks, their indexes, attempts, the counts per state kept
  by triggers, ``serendib_meta``.
- Step 2: ``serendib_quarantine`` (records the database refused, see
  :func:`serendib.tasks.store.rows.quarantine_row`). Version 1 stores made by a recent
  Serendib already have it (it was first added without a version change), and the oldest
  ones lack the counts per state (added the same way): both are created if missing.
- Step 3: the indexes a search walks (:mod:`serendib.tasks.store.search`): ``(kind, seq)``
  and, for finished tasks only, ``(finished_at, seq)``. Neither column changes once set, so
  neither costs the manager's updates anything.
- Step 4: ``replays`` and ``attempt_base`` (a task run again after it ended).
- Step 5: dependencies and times: ``serendib_edges`` (parent, child) for the tasks that
  depend on others (a task's dependents, read by :meth:`TaskStore.children`), the tasks'
  ``not_before`` (when a delayed task or a retry waiting out its backoff may be assigned),
  and ``serendib_schedules`` (recurring work and when each last fired).
- Step 6: ``serendib_leases``: per workspace, the manager that leads it (``holder``), its
  ``epoch`` (the fencing token, one more at every change of leader) and when its lease
  expires, in seconds by the database's clock (see :mod:`serendib.tasks.store.lease`).

The counts per state are rebuilt at every open, in the same transaction, whatever the
migrations did (:attr:`serendib.tasks.store.rows.Statements.recount`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serendib.errors import StoreError

__all__ = ["LATEST", "SCHEMA_VERSION", "Migration", "pending", "postgres", "sqlite"]


@dataclass(frozen=True)
class Migration:
    """One numbered step of a backend's schema.

    Attributes:
        version: The schema version the store is at once the step is applied (1, 2, ...).
        summary: What it changes, for people.
        statements: The SQL it runs, in order, without parameters.
    """

    version: int
    summary: str
    statements: tuple[str, ...]


LATEST = 6
"""The schema version this Serendib makes and reads."""
SCHEMA_VERSION = str(LATEST)
""":data:`LATEST` as stored in ``serendib_meta``."""


# --- SQLite -----------------------------------------------------------------------------------

_SQLITE_COUNTS = (
    "CREATE TABLE IF NOT EXISTS serendib_counts "
    "(state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TRIGGER IF NOT EXISTS serendib_tasks_counted AFTER INSERT ON serendib_tasks
    BEGIN
        INSERT INTO serendib_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS serendib_tasks_recounted AFTER UPDATE OF state ON serendib_tasks
    WHEN OLD.state IS NOT NEW.state
    BEGIN
        UPDATE serendib_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO serendib_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END""",
)

_SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks, attempts, counts per state",
        (
            "CREATE TABLE IF NOT EXISTS serendib_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS serendib_tasks (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT,
        reason TEXT NOT NULL,
        difficulty INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        required_skill TEXT NOT NULL,
        kind TEXT NOT NULL,
        submitted_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        task TEXT NOT NULL,
        output TEXT,
        error TEXT
    )""",
            "CREATE INDEX IF NOT EXISTS serendib_tasks_state ON serendib_tasks (state, seq)",
            "CREATE INDEX IF NOT EXISTS serendib_tasks_worker ON serendib_tasks (worker, seq)",
            """CREATE TABLE IF NOT EXISTS serendib_attempts (
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT NOT NULL,
        reason TEXT NOT NULL,
        outcome TEXT NOT NULL,
        assigned_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        escalated INTEGER NOT NULL,
        stale_results INTEGER NOT NULL,
        PRIMARY KEY (task_id, attempt)
    ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS serendib_attempts_running "
            "ON serendib_attempts (task_id, attempt) WHERE outcome = 'running'",
            *_SQLITE_COUNTS,
        ),
    ),
    Migration(
        2,
        "the quarantine of refused records",
        (
            """CREATE TABLE IF NOT EXISTS serendib_quarantine (
        seq INTEGER PRIMARY KEY,
        quarantined_at REAL NOT NULL,
        kind TEXT NOT NULL,
        task_id TEXT NOT NULL,
        attempt TEXT,
        error TEXT NOT NULL,
        record TEXT NOT NULL
    )""",
            *_SQLITE_COUNTS,
        ),
    ),
    Migration(
        3,
        "the indexes of searches by kind and by finish time",
        (
            "CREATE INDEX IF NOT EXISTS serendib_tasks_kind ON serendib_tasks (kind, seq)",
            "CREATE INDEX IF NOT EXISTS serendib_tasks_finished "
            "ON serendib_tasks (finished_at, seq) WHERE finished_at IS NOT NULL",
        ),
    ),
    Migration(
        4,
        "replays: how often a task was run again, and its attempts before the last replay",
        (
            "ALTER TABLE serendib_tasks ADD COLUMN replays INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE serendib_tasks ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        5,
        "dependencies between tasks, and when a task may be assigned",
        (
            "CREATE TABLE IF NOT EXISTS serendib_edges (parent TEXT NOT NULL, child TEXT NOT NULL, "
            "PRIMARY KEY (parent, child)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS serendib_schedules (name TEXT PRIMARY KEY, "
            "spec TEXT NOT NULL, last_fired REAL NOT NULL)",
            "ALTER TABLE serendib_tasks ADD COLUMN not_before REAL",
        ),
    ),
    Migration(
        6,
        "the lease of the manager that leads each workspace (standby managers)",
        (
            """CREATE TABLE IF NOT EXISTS serendib_leases (
        workspace TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
        ),
    ),
)


def sqlite() -> tuple[Migration, ...]:
    """The SQLite store's migrations, in order."""
    return _SQLITE


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_counts(prefix: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS {prefix}serendib_counts "
        "(state text PRIMARY KEY, n bigint NOT NULL)",
        f"""CREATE OR REPLACE FUNCTION {prefix}serendib_count_states() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF OLD.state = NEW.state THEN
                    RETURN NULL;
                END IF;
                UPDATE {prefix}serendib_counts SET n = n - 1 WHERE state = OLD.state;
            END IF;
            INSERT INTO {prefix}serendib_counts AS c (state, n) VALUES (NEW.state, 1)
                ON CONFLICT (state) DO UPDATE SET n = c.n + 1;
            RETURN NULL;
        END $$""",
        f"DROP TRIGGER IF EXISTS serendib_tasks_counted ON {prefix}serendib_tasks",
        f"CREATE TRIGGER serendib_tasks_counted AFTER INSERT OR UPDATE OF state "
        f"ON {prefix}serendib_tasks FOR EACH ROW EXECUTE FUNCTION {prefix}serendib_count_states()",
    )


def postgres(schema: str | None) -> tuple[Migration, ...]:
    """The PostgreSQL store's migrations, in order, for tables in ``schema`` (None: the
    connection's default schema). ``schema`` must be a valid name (``open_store`` checks)."""
    prefix = f'"{schema}".' if schema else ""
    create_schema = (f'CREATE SCHEMA IF NOT EXISTS "{schema}"',) if schema else ()
    return (
        Migration(
            1,
            "tasks, attempts, counts per state",
            (
                *create_schema,
                f"CREATE TABLE IF NOT EXISTS {prefix}serendib_meta "
                "(key text PRIMARY KEY, value text NOT NULL)",
                f"""CREATE TABLE IF NOT EXISTS {prefix}serendib_tasks (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            id text PRIMARY KEY,
            state text NOT NULL,
            attempt integer NOT NULL,
            worker text,
            reason text NOT NULL,
            difficulty integer NOT NULL,
            priority integer NOT NULL,
            required_skill text NOT NULL,
            kind text NOT NULL,
            submitted_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            finished_at double precision,
            task json NOT NULL,
            output json,
            error text
        )""",
                f"CREATE INDEX IF NOT EXISTS serendib_tasks_state "
                f"ON {prefix}serendib_tasks (state, seq)",
                f"CREATE INDEX IF NOT EXISTS serendib_tasks_worker "
                f"ON {prefix}serendib_tasks (worker, seq)",
                f"""CREATE TABLE IF NOT EXISTS {prefix}serendib_attempts (
            task_id text NOT NULL,
            attempt integer NOT NULL,
            worker text NOT NULL,
            reason text NOT NULL,
            outcome text NOT NULL,
            assigned_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            error text,
            escalated boolean NOT NULL,
            stale_results integer NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )""",
                f"CREATE INDEX IF NOT EXISTS serendib_attempts_running "
                f"ON {prefix}serendib_attempts (task_id, attempt) WHERE outcome = 'running'",
                *_postgres_counts(prefix),
            ),
        ),
        Migration(
            2,
            "the quarantine of refused records",
            (
                f"""CREATE TABLE IF NOT EXISTS {prefix}serendib_quarantine (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            quarantined_at double precision NOT NULL,
            kind text NOT NULL,
            task_id text NOT NULL,
            attempt text,
            error text NOT NULL,
            record text NOT NULL
        )""",
                *_postgres_counts(prefix),
            ),
        ),
        Migration(
            3,
            "the indexes of searches by kind and by finish time",
            (
                f"CREATE INDEX IF NOT EXISTS serendib_tasks_kind "
                f"ON {prefix}serendib_tasks (kind, seq)",
                f"CREATE INDEX IF NOT EXISTS serendib_tasks_finished "
                f"ON {prefix}serendib_tasks (finished_at, seq) WHERE finished_at IS NOT NULL",
            ),
        ),
        Migration(
            4,
            "replays: how often a task was run again, and its attempts before the last replay",
            (
                f"ALTER TABLE {prefix}serendib_tasks "
                "ADD COLUMN IF NOT EXISTS replays integer NOT NULL DEFAULT 0",
                f"ALTER TABLE {prefix}serendib_tasks "
                "ADD COLUMN IF NOT EXISTS attempt_base integer NOT NULL DEFAULT 0",
            ),
        ),
        Migration(
            5,
            "dependencies between tasks, and when a task may be assigned",
            (
                f"CREATE TABLE IF NOT EXISTS {prefix}serendib_edges "
                "(parent text NOT NULL, child text NOT NULL, PRIMARY KEY (parent, child))",
                f"CREATE TABLE IF NOT EXISTS {prefix}serendib_schedules "
                "(name text PRIMARY KEY, spec text NOT NULL, last_fired double precision NOT NULL)",
                f"ALTER TABLE {prefix}serendib_tasks "
                "ADD COLUMN IF NOT EXISTS not_before double precision",
            ),
        ),
        Migration(
            6,
            "the lease of the manager that leads each workspace (standby managers)",
            (
                f"""CREATE TABLE IF NOT EXISTS {prefix}serendib_leases (
            workspace text PRIMARY KEY,
            holder text NOT NULL,
            epoch bigint NOT NULL,
            acquired_at double precision NOT NULL,
            expires_at double precision NOT NULL
        )""",
            ),
        ),
    )


# --- what to apply ------------------------------------------------------------------------------


def pending(found: str | None, migrations: Sequence[Migration], url: str) -> list[Migration]:
    """The steps to apply to a store that records schema version ``found``, in order.

    Args:
        found: The stored ``schema_version``; None for a new store (no version recorded).
        migrations: The backend's steps, numbered 1, 2, ... in order.
        url: The store's (redacted) URL, for errors.

    Returns:
        Every step after ``found`` (all of them for a new store; none for a current one).

    Raises:
        StoreError: ``found`` is a version newer than this Serendib knows (upgrade
            Serendib), or not a version at all.
    """
    latest = migrations[-1].version if migrations else 0
    if found is None:
        return list(migrations)
    version = int(found) if found.isascii() and found.isdecimal() else 0
    if version < 1:
        raise StoreError(
            f"the task store at {url} has schema version {found!r}, which no Serendib makes: "
            "it is not a Serendib task store, or it is damaged",
            url=url,
        )
    if version > latest:
        raise StoreError(
            f"the task store at {url} has schema version {version}, newer than this Serendib "
            f"knows (version {latest}): upgrade Serendib to open it",
            url=url,
        )
    return [step for step in migrations if step.version > version]

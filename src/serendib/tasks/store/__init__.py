"""Durable task state: the :class:`TaskStore` interface and :func:`open_store`.

A SQLite file by default, PostgreSQL by URL, one module per concept:

- :mod:`~serendib.tasks.store.protocol`: the :class:`TaskStore` Protocol and the plain row
  types it speaks (:class:`TaskUpdate`, :class:`AttemptRow`, :class:`Rejected`,
  :class:`QuarantinedRecord`);
- :mod:`~serendib.tasks.store.urls`: :func:`open_store` and the URLs it understands;
- :mod:`~serendib.tasks.store.group_commit`: the store itself (``SqlTaskStore``), queueing
  concurrent writes and committing each batch in one transaction;
- :mod:`~serendib.tasks.store.backend`: the abstract synchronous ``Backend`` it drives;
- :mod:`~serendib.tasks.store.sqlite` and :mod:`~serendib.tasks.store.postgres`: the two
  backends (psycopg is imported only when a PostgreSQL URL is opened);
- :mod:`~serendib.tasks.store.rows`: row encoding and decoding, batch planning, statements;
- :mod:`~serendib.tasks.store.search`: searches (filters, orders, keyset paging, each page
  bounded in the rows it examines);
- :mod:`~serendib.tasks.store.migrations`: the numbered schema migrations of each backend;
- :mod:`~serendib.tasks.store.lease`: the lease a standby manager leads its workspace by, and
  the fence it puts on every write (:class:`LeadLost` once another manager took over).
"""

from __future__ import annotations

from serendib.tasks.store.lease import LEASE_S, Fence, LeadLost, LeaseState, StoreLease
from serendib.tasks.store.protocol import (
    AttemptRow,
    QuarantinedRecord,
    Rejected,
    TaskStore,
    TaskUpdate,
    attempt_row,
)
from serendib.tasks.store.urls import DEFAULT_STORE_FILE, open_store
from serendib.urls import redact_url

__all__ = [
    "DEFAULT_STORE_FILE",
    "LEASE_S",
    "AttemptRow",
    "Fence",
    "LeadLost",
    "LeaseState",
    "QuarantinedRecord",
    "Rejected",
    "StoreLease",
    "TaskStore",
    "TaskUpdate",
    "attempt_row",
    "open_store",
    "redact_url",
]

"""The manager's engine: the book (its state machine) and the parts it is made of.

``book`` (TaskBook: every transition), ``entries`` (the working copies of tasks and
attempts), ``roster`` (connected and suspect workers), ``ledger`` (save, then send).
"""

from __future__ import annotations

from serendib.tasks.engine.book import TaskBook
from serendib.tasks.engine.entries import Entry, Lease
from serendib.tasks.engine.ledger import Ledger
from serendib.tasks.engine.roster import Roster

__all__ = ["Entry", "Lease", "Ledger", "Roster", "TaskBook"]

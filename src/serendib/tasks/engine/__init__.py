"""The manager's engine: the book (its state machine) and the parts it is made of."""

from __future__ import annotations

from serendib.tasks.engine.book import TaskBook
from serendib.tasks.engine.roster import Roster

__all__ = ["Roster", "TaskBook"]

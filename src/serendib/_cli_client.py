"""Kept for ``tests/tasks/test_ledger.py``, which imports :func:`offline_report` from here:
the command line is :mod:`serendib.cli` now (this is :mod:`serendib.cli.client`'s)."""

from __future__ import annotations

from serendib.cli.client import offline_report

__all__ = ["offline_report"]

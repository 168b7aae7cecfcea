"""The ``serendib`` command line (serendib.cli)."""

from __future__ import annotations


def one_line(stderr: str) -> str:
    """The one line a failing command printed, with no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]

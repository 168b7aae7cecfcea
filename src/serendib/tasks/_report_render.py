"""The report as plain-text tables for a terminal: headline, tables, counts and latency lines.

Pure: a :class:`~serendib.tasks.report.Report` in, a string out, without colour or escape codes.
"""

from __future__ import annotations

from io import StringIO
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from serendib.tasks.report import (
        DifficultyRow,
        DurationStats,
        QuarantineRow,
        Report,
        UnassignedRow,
        WorkerRow,
    )

__all__ = ["render_report"]


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


def _headline(report: Report) -> str:
    if report.success_rate is None:
        return "Success rate: n/a (no task has succeeded or failed yet)"
    decided = report.succeeded + report.failed
    return (
        f"Success rate: {_percent(report.success_rate)} "
        f"({report.succeeded} of {_plural(decided, 'task')})"
    )


def _duration_line(label: str, stats: DurationStats, unit: str) -> str:
    if stats.count == 0:
        return f"{label}: no data"
    return (
        f"{label} ({_plural(stats.count, unit)}): p50 {_seconds(stats.p50)}, "
        f"p95 {_seconds(stats.p95)}, p99 {_seconds(stats.p99)}, "
        f"mean {_seconds(stats.mean)}, max {_seconds(stats.max)}"
    )


def _worker_table(rows: list[WorkerRow]) -> Table:
    table = Table(title="Per worker", title_justify="left")
    table.add_column("Worker")
    for heading in ("Attempts", "Succeeded", "Failed", "Lost", "Mean run", "Success"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            Text(row.name),
            str(row.attempts),
            str(row.succeeded),
            str(row.failed),
            str(row.lost),
            _seconds(row.mean_run_s),
            _percent(row.success_rate),
        )
    return table


def _difficulty_table(rows: list[DifficultyRow]) -> Table:
    table = Table(title="Per difficulty", title_justify="left")
    for heading in ("Difficulty", "Tasks", "Succeeded", "Failed", "Success"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            str(row.difficulty),
            str(row.tasks),
            str(row.succeeded),
            str(row.failed),
            _percent(row.success_rate),
        )
    return table


def _unassigned_table(rows: list[UnassignedRow], limit: int) -> Table:
    table = Table(title="Never assigned", title_justify="left")
    table.add_column("Task")
    table.add_column("Difficulty", justify="right")
    table.add_column("Skill")
    table.add_column("State")
    table.add_column("Reason")
    for row in rows[:limit]:
        table.add_row(
            Text(row.id),
            str(row.difficulty),
            Text(row.required_skill),
            row.state.value,
            Text(row.reason or "-"),
        )
    return table


def _printable(text: str) -> str:
    # Quarantined records are the ones that may be hostile: no control codes to the terminal.
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _quarantine_table(rows: list[QuarantineRow], limit: int) -> Table:
    table = Table(title="Quarantined (the store refused these changes)", title_justify="left")
    table.add_column("Task")
    table.add_column("What")
    table.add_column("Error")
    for row in rows[:limit]:
        what = row.kind if row.attempt is None else f"{row.kind} {row.attempt}"
        table.add_row(
            Text(_printable(row.task_id)), Text(_printable(what)), Text(_printable(row.error))
        )
    return table


def render_report(
    report: Report, *, width: int = 100, max_unassigned: int = 20, max_quarantined: int = 20
) -> str:
    """The report as plain-text tables for a terminal.

    The headline comes first, then the per-worker and per-difficulty tables, a line on attempts,
    latency lines, the tasks that never found a worker with their reasons (only if any), and
    the records the store refused to save (only if any).

    Args:
        report: The report.
        width: Columns to fit into.
        max_unassigned: At most this many never-assigned tasks are listed; the rest are counted.
        max_quarantined: At most this many quarantined records are listed; the rest are
            counted.

    Returns:
        The text, without colour or escape codes.
    """
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=False,
        color_system=None,
        emoji=False,
        highlight=False,
    )
    out = console.print
    out(_headline(report), markup=False)
    out(
        f"Tasks: {report.total} ({report.succeeded} succeeded, {report.failed} failed, "
        f"{report.cancelled} cancelled, {report.unfinished} unfinished)",
        markup=False,
    )
    if report.per_worker:
        out()
        out(_worker_table(report.per_worker))
    if report.per_difficulty:
        out()
        out(_difficulty_table(report.per_difficulty))
    a = report.attempts
    out()
    out(
        f"Attempts: {a.total} ({_plural(a.retries, 'retry', 'retries')}, "
        f"{_plural(a.escalations, 'escalation')}; {a.lost} lost, {a.timed_out} timed out, "
        f"{a.cancelled} cancelled; {_plural(a.stale_results, 'stale result')}"
        + (f"; {_plural(a.replays, 'replay')}" if a.replays else "")
        + ")",
        markup=False,
    )
    out(_duration_line("Latency, end to end", report.latency.end_to_end, "task"), markup=False)
    out(_duration_line("Run time", report.latency.run, "attempt"), markup=False)
    if report.never_assigned:
        out()
        out(_unassigned_table(report.never_assigned, max_unassigned))
        hidden = len(report.never_assigned) - max_unassigned
        if hidden > 0:
            out(f"... and {hidden} more", markup=False)
    if report.quarantined:
        out()
        out(
            f"Quarantined: {_plural(report.quarantined, 'record')} the store refused to save "
            "(the manager went on; the store missed these changes)",
            markup=False,
        )
        out(_quarantine_table(report.quarantine, max_quarantined))
        hidden = report.quarantined - min(len(report.quarantine), max_quarantined)
        if hidden > 0:
            out(f"... and {hidden} more", markup=False)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"

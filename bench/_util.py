"""Shared pieces of the benchmarks: result tables, their text and JSON forms, machine facts.

Every benchmark module exposes ``run(quick: bool = False) -> list[Table]`` and, to be run
alone, ends with ``raise SystemExit(module_main(run, __doc__))``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from serendib.tasks.report import percentile as report_percentile

T = TypeVar("T")

__all__ = [
    "Table",
    "machine",
    "machine_line",
    "module_main",
    "parser",
    "percentile",
    "quiet_logs",
    "render",
    "rss_bytes",
    "to_json",
]

Value = float | int | str | None


@dataclass
class Table:
    """One benchmark's figures: a row per case, a column per measure.

    Attributes:
        title: What was measured.
        columns: Column headers, in order; each row maps them to values.
        rows: The cases.
        notes: Lines printed under the table (parameters, targets).
    """

    title: str
    columns: list[str]
    rows: list[dict[str, Value]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100), as the report computes it;
    NaN for no values, so a table cell stays a number."""
    value = report_percentile(values, q)
    return math.nan if value is None else value


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``/proc``), or ``None`` elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def machine() -> dict[str, Any]:
    """The facts a figure depends on: CPU model and count, Python, OS."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
    }


def quiet_logs() -> None:
    """Send serendib's (loguru) log to stderr at WARNING and above, as a deployment would.

    Loguru's default sink prints DEBUG lines (one per agent connected, for instance), which
    would measure the terminal rather than the framework.
    """
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _fmt(value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(table: Table) -> str:
    """The table as aligned text."""
    cells = [[_fmt(row.get(c)) for c in table.columns] for row in table.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(table.columns)]

    def line(items: Sequence[str]) -> str:
        # The first column (the case) is left-aligned, figures right-aligned.
        parts = [
            items[0].ljust(widths[0]),
            *(s.rjust(w) for s, w in zip(items[1:], widths[1:], strict=True)),
        ]
        return "  ".join(parts).rstrip()

    out = [table.title, "=" * len(table.title), line(table.columns)]
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    out.extend(f"  {note}" for note in table.notes)
    return "\n".join(out)


def _finite(value: Any) -> Any:
    # JSON has no NaN: an unmeasurable figure is reported as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(tables: Sequence[Table], quick: bool) -> str:
    """The tables, the machine they ran on and its load average, as JSON."""
    doc = {
        "machine": machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "quick": quick,
        "tables": [asdict(t) for t in tables],
    }
    return json.dumps(_finite(doc), indent=2, allow_nan=False, default=str)


def parser(description: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line every benchmark entry point shares: ``--quick`` and ``--json``."""
    summary = (description or "").strip().splitlines()
    p = argparse.ArgumentParser(prog=prog, description=summary[0] if summary else None)
    p.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds in all")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def module_main(
    run: Callable[[bool], list[Table]], description: str | None, argv: Sequence[str] | None = None
) -> int:
    """Run one benchmark module from the command line; returns the exit status."""
    args = parser(description).parse_args(argv)
    if not args.json:
        print(machine_line(), flush=True)
    print_tables(run(args.quick), args.json, args.quick)
    return 0


def print_tables(tables: list[Table], as_json: bool, quick: bool) -> None:
    """Print a module's tables: as JSON (with the machine), or rendered one after another."""
    if as_json:
        print(to_json(tables, quick))
        return
    for table in tables:
        print()
        print(render(table), flush=True)


def machine_line() -> str:
    """The machine in one line, printed above the tables, with a warning if it is busy."""
    m = machine()
    line = f"{m['cpu']}, {m['cores']} cores, {m['python']}, {m['os']}"
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        line += f"; load average {load:.2f}"
        if load > 0.5 * (m["cores"] or 1):
            line += " (busy: other processes share the CPU, figures will be low and noisy)"
    return line


async def guard(awaitable: Awaitable[T], limit: float, *others: asyncio.Task[Any], who: str) -> T:
    """Await ``awaitable`` within ``limit`` s, failing at once if one of ``others`` ends first.

    ``who``: what ``others`` run, for the error ("the manager stopped before ...").
    """
    main = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({main, *others}, timeout=limit, return_when="FIRST_COMPLETED")
    if main in done:
        return main.result()
    main.cancel()
    for task in others:
        if task in done:
            task.result()  # raises what ended it
            raise RuntimeError(f"{who} stopped before the measurement ended")
    raise TimeoutError(f"measurement took more than {limit:g} s")

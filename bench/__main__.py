"""Run every benchmark module there is: ``python -m bench [--quick] [--json] [--only NAME]``.

A benchmark module is ``bench/<name>.py`` (no leading underscore, not one of HELPERS)
exposing ``run(quick: bool = False) -> list[Table]`` (see ``bench._util``). The modules of
ORDER run first, in that order, if they exist; any other module found in ``bench/`` runs after
them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bench._util import Table, machine_line, parser, render, to_json

ORDER = ("inproc", "scheduling", "store")
HELPERS = frozenset({"cases"})
"""Modules the benchmarks share, not benchmarks themselves."""


def modules() -> list[str]:
    """Names of the benchmark modules present, in the order they run."""
    found = {
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_") and m.name not in HELPERS
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main(argv: Sequence[str] | None = None) -> int:
    present = modules()
    p = parser(__doc__, prog="python -m bench")
    p.add_argument("--only", action="append", choices=present, metavar="NAME", help="run only NAME")
    args = p.parse_args(argv)
    if not args.json:
        print(machine_line(), flush=True)
    tables: list[Table] = []
    for name in args.only or present:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue  # a helper module, not a benchmark
        print(f"bench.{name} ...", file=sys.stderr, flush=True)
        found = cast("list[Table]", module.run(quick=args.quick))
        tables += found
        if not args.json:
            for table in found:
                print()
                print(render(table), flush=True)
    if args.json:
        print(to_json(tables, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Workflows: what dependencies, limits and groups cost, beside the plain figure.

Two parts:

- ``shapes``: the issue #13 workload through the client from this process to separate
  ``serendib admin`` and 4 ``serendib worker --capacity 1`` processes (the set-up of
  :mod:`bench.client_e2e`), N no-op tasks in several shapes: *plain*; *chains* (N/10 chains
  of 10, each task depending on the one before it); *layers* (10 layers of N/10, each task
  depending on 2 tasks of the layer before: the graph is only as wide as a layer); *limit
  1,000* (every task of one ``concurrency_key``, a limit that never binds: its cost only);
  *limit 2* (a limit that binds: at most 2 of the 4 workers busy); *groups* (10 groups,
  served in turns). Timed from the first submit to the last outcome received.
- ``graph``: the engine alone on one core (a manager and 4 single-slot workers in one
  process, in-memory transport, SQLite store), plain tasks against a layered graph of the
  same size at 10^4 and 10^5 tasks: CPU per task must not grow with the graph (a diagnosis,
  not the product's number).

Run alone: ``python -m bench.workflows [--quick] [--json] [--part shapes|graph]``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench._util import (
    Table,
    Value,
    machine_line,
    parser,
    print_tables,
    quiet_logs,
)
from bench.client_e2e import (
    REPEATS,
    Cluster,
    Result,
    Timer,
    _alternate,
    _row,
    levels_for,
)
from serendib import AsyncClient
from serendib._gc import tune_gc
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task, TaskState
from serendib.tasks.worker import WorkerAgent
from serendib.transports.memory import MemoryHub, MemoryTransport

__all__ = ["run"]

PARTS = ("shapes", "graph")
TASKS = 10_000
Shape = Callable[[int, str], list[Task]]
SHAPE_COLUMNS = (
    "case",
    "tasks/s",
    "runs tasks/s",
    "admin us/task",
    "workers us/task",
    "total us/task",
    "load",
    "other %",
)


def plain(count: int, prefix: str, **fields: object) -> list[Task]:
    return [
        Task.model_validate({"id": f"{prefix}{i}", "difficulty": i % 10 + 1, **fields})
        for i in range(count)
    ]


def chains(count: int, prefix: str) -> list[Task]:
    """Chains of 10: task i depends on task i-1 of its chain."""
    return [
        Task(
            id=f"{prefix}{i}",
            difficulty=i % 10 + 1,
            depends_on=[f"{prefix}{i - 1}"] if i % 10 else [],
        )
        for i in range(count)
    ]


def layers(count: int, prefix: str, depth: int = 10) -> list[Task]:
    """``depth`` layers; each task depends on 2 tasks of the layer before."""
    width = max(count // depth, 1)
    tasks = []
    for i in range(count):
        layer, at = divmod(i, width)
        parents = (
            [
                f"{prefix}{(layer - 1) * width + at}",
                f"{prefix}{(layer - 1) * width + (at + 1) % width}",
            ]
            if layer
            else []
        )
        tasks.append(Task(id=f"{prefix}{i}", difficulty=i % 10 + 1, depends_on=parents))
    return tasks


def keyed(count: int, prefix: str) -> list[Task]:
    return plain(count, prefix, concurrency_key="k")


def grouped(count: int, prefix: str) -> list[Task]:
    return [
        Task(id=f"{prefix}{i}", difficulty=i % 10 + 1, group=f"g{i % 10}") for i in range(count)
    ]


SHAPES: list[tuple[str, Shape, list[str]]] = [
    ("plain", plain, []),
    ("chains of 10", chains, []),
    ("10 layers, 2 parents each", layers, []),
    ("one key, limit 1,000", keyed, ["--limit", "k=1000"]),
    ("one key, limit 2", keyed, ["--limit", "k=2"]),
    ("10 groups", grouped, []),
]


async def through_client(
    shape: Shape, admin_args: Sequence[str], total: int, prefix: str
) -> Result:
    tasks = shape(total, prefix)
    failed = ""
    with Cluster(levels_for(4), admin_args=admin_args) as cluster:
        async with AsyncClient(cluster.address, timeout=60.0) as client:
            with Timer(cluster) as span:
                handles = await client.submit(tasks)
                outcomes = await client.wait([h.id for h in handles], timeout=300)
    done = sum(1 for o in outcomes.values() if o.state is TaskState.SUCCEEDED)
    if done != total:
        failed = f"{done} of {total} succeeded"
    return Result(f"N={total:,}", total, span, {}, failed)


def shapes_table(total: int, repeats: int) -> Table:
    configs = [
        (
            name,
            lambda r, shape=shape, args=args: asyncio.run(
                through_client(shape, args, total, f"r{r}-")
            ),
        )
        for name, shape, args in SHAPES
    ]
    runs = _alternate(configs, repeats)
    columns = SHAPE_COLUMNS
    rows = [{k: row[k] for k in columns} for row in (_row(n, f) for n, f in runs.items())]
    return Table(
        f"Workflows through the client: N={total:,} no-op tasks, 4 single-slot workers",
        list(columns),
        rows,
        [
            "the set-up of bench.client_e2e's throughput (separate processes, SQLite store, "
            "client submit(tasks) then wait(ids)); timed first submit -> last outcome",
            "chains: each task depends on the one before it in its chain of 10; layers: 10 "
            "layers of N/10, each task depending on 2 of the layer before",
            f"limit 2 binds (2 of 4 workers busy); median of {repeats} runs by rate",
        ],
    )


async def in_process(tasks: list[Task]) -> tuple[float, float]:
    """Seconds and CPU seconds for a manager and 4 workers in this process to run ``tasks``."""
    tune_gc()
    hub = MemoryHub.private()
    with tempfile.TemporaryDirectory() as directory:
        manager = TaskManager(
            workspace_id="g", transport=MemoryTransport(hub), store=str(Path(directory) / "t.db")
        )
        await manager.start()
        workers = [
            WorkerAgent(
                f"w{i}", level, workspace_id="g", transport=MemoryTransport(hub), time_scale=0
            )
            for i, level in enumerate((3, 5, 8, 10))
        ]
        # Every task is submitted before the workers start: every child of a graph then
        # waits for its parents (whatever the size), and the time covers it all.
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(tasks), 1_000):
            await manager.submit(tasks[start : start + 1_000])
        for worker in workers:
            await worker.start()
        await manager.wait_done()
        took, used = time.perf_counter() - started, time.process_time() - cpu
        for worker in workers:
            await worker.stop(drain_timeout=1)
        await manager.stop()
    return took, used


def graph_table(sizes: Sequence[int], repeats: int) -> Table:
    rows: list[dict[str, Value]] = []
    for size in sizes:
        for name, shape in (("plain", plain), ("10 layers, 2 parents each", layers)):
            found = [
                asyncio.run(in_process(shape(size, f"{name[:1]}{r}-"))) for r in range(repeats)
            ]
            took, used = sorted(found)[len(found) // 2]
            rows.append(
                {
                    "case": f"{name}, N={size:,}",
                    "tasks/s": size / took,
                    "CPU us/task": used / size * 1e6,
                    "runs tasks/s": " / ".join(f"{size / t:,.0f}" for t, _ in found),
                }
            )
    return Table(
        "The engine alone with a dependency graph (one process, in-memory transport)",
        ["case", "tasks/s", "CPU us/task", "runs tasks/s"],
        rows,
        [
            "a manager and 4 single-slot workers (skills 3/5/8/10) in one process, SQLite "
            "store, tune_gc(); every task submitted (chunks of 1,000) before the workers "
            "start, so every child of the graph waits for its parents; timed to the last final",
            "a diagnosis of the engine's cost with a graph (not the product's number): CPU "
            "per task should not grow from 10^4 to 10^5 tasks",
        ],
    )


def run(quick: bool = False, parts: Sequence[str] = PARTS) -> list[Table]:
    quiet_logs()
    repeats = 1 if quick else REPEATS
    tables = []
    if "shapes" in parts:
        tables.append(shapes_table(TASKS // 10 if quick else TASKS, repeats))
    if "graph" in parts:
        tables.append(graph_table((2_000,) if quick else (10_000, 100_000), repeats))
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part")
    args = p.parse_args(argv)
    if not args.json:
        print(machine_line(), flush=True)
    print_tables(run(args.quick, args.part or PARTS), args.json, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

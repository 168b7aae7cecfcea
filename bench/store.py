"""Task store throughput: row writes per second in batches, on SQLite (and PostgreSQL).

A task's life as the manager stores it: *add* (submitted, 1 row), *assign* (the task and
its new attempt, 2 rows), *finish* (the task and the ended attempt, 2 rows). Each phase is
measured three ways: one ``save`` per task awaited in waves of concurrent calls (the store's
group commit batches them), ``save`` of 1,000 tasks at a time (as the manager's ledger
does), and four such saves in flight at once; each case is the best of three runs. Then
the reads a dashboard makes, with every task stored. Target: 60,000 row writes/s on SQLite
(20,000 tasks/s at ~3 writes each). PostgreSQL is measured when SERENDIB_TEST_POSTGRES_URL
is set, in a schema of its own that is dropped afterwards.

Run alone: ``python -m bench.store [--quick] [--json]``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench._util import Table, module_main
from serendib.tasks.models import AttemptOutcome, AttemptRecord, Task, TaskRecord, TaskState
from serendib.tasks.store import TaskStore, open_store

__all__ = ["run"]

POSTGRES_ENV = "SERENDIB_TEST_POSTGRES_URL"
BATCH = 1_000
WAVE = 5_000
IN_FLIGHT = 4
TARGET = 60_000
REPEATS = 3

Row = dict[str, float | int | str | None]


def _tasks(count: int, prefix: str) -> list[TaskRecord]:
    return [
        TaskRecord(
            task=Task(id=f"{prefix}{n:08d}", difficulty=1 + n % 10, payload={"n": n}),
            submitted_at=1_000.0 + n,
        )
        for n in range(count)
    ]


async def _one_by_one(
    store: TaskStore, tasks: list[TaskRecord], attempts: list[AttemptRecord]
) -> None:
    for start in range(0, len(tasks), WAVE):
        wave = range(start, min(start + WAVE, len(tasks)))
        await asyncio.gather(*(store.save([tasks[i]], attempts[i : i + 1]) for i in wave))


async def _batched(
    store: TaskStore, tasks: list[TaskRecord], attempts: list[AttemptRecord], in_flight: int
) -> None:
    starts = range(0, len(tasks), BATCH)
    for first in range(0, len(starts), in_flight):
        group = starts[first : first + in_flight]
        await asyncio.gather(
            *(store.save(tasks[i : i + BATCH], attempts[i : i + BATCH]) for i in group)
        )


async def _measure(
    store: TaskStore, label: str, rows: int, write: Callable[[], Awaitable[None]]
) -> Row:
    transactions = store.transactions
    wall, cpu = time.perf_counter(), time.process_time()
    await write()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "case": label,
        "rows": rows,
        "seconds": wall,
        "rows/s": rows / wall,
        "rows/cpu-s": rows / cpu if cpu > 0 else None,
        "transactions": store.transactions - transactions,
    }


async def _lifecycle(store: TaskStore, count: int, mode: str, prefix: str) -> list[Row]:
    """Add, assign and finish ``count`` new tasks, saving them the ``mode`` way."""
    submitted = _tasks(count, prefix)
    now = time.time()
    assigned = [r.assigned(f"w{n % 64}", "fit", now) for n, r in enumerate(submitted)]
    running = [
        AttemptRecord(task_id=r.id, attempt=1, worker=r.worker or "", assigned_at=now)
        for r in assigned
    ]
    finished = [r.running(now).succeeded({"ok": True}, now) for r in assigned]
    ended = [a.ended(AttemptOutcome.SUCCEEDED, now, started_at=now) for a in running]

    async def write(tasks: list[TaskRecord], attempts: list[AttemptRecord]) -> None:
        if mode == "one save per task":
            await _one_by_one(store, tasks, attempts)
        else:
            await _batched(store, tasks, attempts, IN_FLIGHT if "in flight" in mode else 1)

    async def add() -> None:
        if mode == "one save per task":
            await _one_by_one(store, submitted, [])
            return
        in_flight = IN_FLIGHT if "in flight" in mode else 1
        starts = range(0, count, BATCH)
        for first in range(0, len(starts), in_flight):
            group = starts[first : first + in_flight]
            await asyncio.gather(*(store.add(submitted[i : i + BATCH]) for i in group))

    return [
        await _measure(store, f"{mode}: add", count, add),
        await _measure(store, f"{mode}: assign", 2 * count, lambda: write(assigned, running)),
        await _measure(store, f"{mode}: finish", 2 * count, lambda: write(finished, ended)),
    ]


async def _reads(store: TaskStore) -> list[Row]:
    async def timed(label: str, read: Callable[[], Awaitable[object]]) -> Row:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            await read()
            times.append(time.perf_counter() - start)
        return {"read": label, "ms (best of 3)": min(times) * 1_000}

    total = sum((await store.counts()).values())
    _, deep = await store.query(limit=total // 2)
    return [
        await timed(
            "query state=succeeded, first page", lambda: store.query(state=TaskState.SUCCEEDED)
        ),
        await timed(
            "query state=succeeded, middle page",
            lambda: store.query(state=TaskState.SUCCEEDED, after=deep),
        ),
        await timed("query worker=w7, middle page", lambda: store.query(worker="w7", after=deep)),
        await timed("get one task", lambda: store.get("b0-00000123")),
        await timed("unfinished (none)", store.unfinished),
        await timed(f"counts ({total:,} tasks)", store.counts),
    ]


async def _bench(url: str, label: str, count: int) -> list[Table]:
    writes = Table(
        f"Task store writes: {label}",
        ["case", "rows", "seconds", "rows/s", "rows/cpu-s", "transactions"],
        notes=[
            f"{count:,} tasks per mode; waves of {WAVE:,} concurrent saves; batches of {BATCH:,} "
            f"tasks; best of {REPEATS} runs; target {TARGET:,} rows/s on SQLite",
            "rows/cpu-s: rows per second of this process's CPU time (the machine may be shared)",
        ],
    )
    async with open_store(url) as store:
        for mode in ("one save per task", "batches of 1,000", f"{IN_FLIGHT} batches in flight"):
            runs = [await _lifecycle(store, count, mode, f"{mode[0]}{r}-") for r in range(REPEATS)]
            for phase in zip(*runs, strict=True):
                writes.rows.append(max(phase, key=lambda row: float(row["rows/s"] or 0)))
        reads = Table(f"Task store reads: {label}", ["read", "ms (best of 3)"])
        reads.rows += await _reads(store)
    return [writes, reads]


def run(quick: bool = False) -> list[Table]:
    """Measure SQLite, and PostgreSQL when its test URL is set."""
    count = 20_000 if quick else 100_000
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="serendib-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        tables += asyncio.run(_bench(url, "SQLite (WAL, synchronous=NORMAL)", count))
    postgres = os.environ.get(POSTGRES_ENV)
    if postgres:
        schema = f"serendib_bench_{uuid.uuid4().hex[:8]}"
        separator = "&" if "?" in postgres else "?"
        try:
            tables += asyncio.run(
                _bench(f"{postgres}{separator}schema={schema}", "PostgreSQL", count)
            )
        finally:
            _drop_schema(postgres, schema)
    return tables


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    raise SystemExit(module_main(run, __doc__))

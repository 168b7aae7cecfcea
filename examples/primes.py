"""Real work across workers of different skills: counting primes in ranges.

A task's difficulty grows with the size of its range; a worker's skill says how large a
range it may take. Workers run the counting in a thread so they stay responsive, and the
report shows who did what.

    python examples/primes.py [--tasks 40]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
from pathlib import Path

from serendib.tasks import (
    Task,
    TaskContext,
    TaskManager,
    TaskState,
    WorkerAgent,
    open_store,
    render_report,
)


def count_primes(start: int, stop: int) -> int:
    """Primes in ``[start, stop)``, by trial division (deliberately plain work)."""
    return sum(
        1 for n in range(max(start, 2), stop) if all(n % d for d in range(2, math.isqrt(n) + 1))
    )


async def primes(task: Task, context: TaskContext) -> int:
    """Task handler: count the primes of the task's range, off the event loop."""
    start, stop = int(task.payload["start"]), int(task.payload["stop"])
    await context.progress(0.0, f"counting primes in [{start}, {stop})")
    return await asyncio.to_thread(count_primes, start, stop)


def make_tasks(count: int) -> list[Task]:
    """Ranges of growing size; difficulty 1-10 follows the size."""
    tasks = []
    for i in range(count):
        difficulty = 1 + i % 10
        start = i * 10_000
        tasks.append(
            Task(
                id=f"primes-{i}",
                description=f"primes in a range of {difficulty * 2_000}",
                difficulty=difficulty,
                kind="primes",
                payload={"start": start, "stop": start + difficulty * 2_000},
            )
        )
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()

    workers = [
        WorkerAgent(
            name, skill_level=level, capacity=2, workspace_id="primes", handlers={"primes": primes}
        )
        for name, level in [("apprentice", 4), ("journeyman", 7), ("master", 10)]
    ]
    tasks = make_tasks(args.tasks)
    store = Path(tempfile.mkdtemp(prefix="serendib-primes-")) / "tasks.db"
    manager = TaskManager(workspace_id="primes", store=str(store), tasks=tasks, stop_when_done=True)
    manager.run(workers=workers)

    assert manager.last_report is not None
    print(render_report(manager.last_report))
    counted = asyncio.run(total_output(str(store)))
    expected = sum(count_primes(int(t.payload["start"]), int(t.payload["stop"])) for t in tasks)
    print(f"Primes counted by the workers: {counted}; by a direct count: {expected}")
    if counted != expected:
        raise SystemExit("the workers' counts do not add up")


async def total_output(store_url: str) -> int:
    """Sum of the outputs of the succeeded tasks in a store."""
    store = open_store(store_url)
    await store.open()
    try:
        return sum(
            int(r.output) for r in await store.all_records() if r.state is TaskState.SUCCEEDED
        )
    finally:
        await store.close()


if __name__ == "__main__":
    main()

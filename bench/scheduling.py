"""Scheduler throughput: assignments per second as workers and pending tasks grow.

Pure Python, no transport: a :class:`~serendib.tasks.scheduling.Scheduler` with W workers
(levels 1-10, four slots each) and P pending tasks (levels 1-10, three priorities). *Bulk* is
the first ``assign()`` placing everything it can at once; *steady* is a busy manager's round:
one attempt finishes (``release``), one task arrives (``add_task``), ``assign()``.

Run alone: ``python -m bench.scheduling [--quick] [--json]``.
"""

from __future__ import annotations

import random
import time

from bench._util import Table, module_main
from serendib.tasks.scheduling import Scheduler

__all__ = ["run"]

CAPACITY = 4
SKILLS = [f"skill{i}" for i in range(20)]


def _build(workers: int, pending: int, multi: bool, rng: random.Random) -> tuple[Scheduler, float]:
    """A scheduler with ``workers`` and ``pending`` tasks; also add_task calls per second."""
    s = Scheduler()
    for i in range(workers):
        if multi:
            skills = {skill: rng.randint(1, 10) for skill in rng.sample(SKILLS, 3)}
        else:
            skills = {"general": 1 + i % 10}
        s.add_worker(f"w{i}", skills, CAPACITY)
    start = time.perf_counter()
    for i in range(pending):
        skill = rng.choice(SKILLS) if multi else "general"
        s.add_task(f"t{i}", skill, rng.randint(1, 10), rng.randint(0, 2))
    return s, pending / (time.perf_counter() - start)


def _case(
    label: str, workers: int, pending: int, rounds: int, multi: bool = False
) -> dict[str, float | int | str | None]:
    rng = random.Random(7)
    s, submits = _build(workers, pending, multi, rng)

    start = time.perf_counter()
    first = s.assign()
    bulk_s = time.perf_counter() - start

    # Steady state: finish the oldest attempt, submit one task, assign. Submitting keeps the
    # backlog at its size even when every task fits at once.
    in_flight = [a.worker for a in first]
    made, head, n = 0, 0, pending
    start = time.perf_counter()
    for _ in range(rounds):
        if head < len(in_flight):
            s.release(in_flight[head])
            head += 1
        skill = rng.choice(SKILLS) if multi else "general"
        s.add_task(f"t{n}", skill, rng.randint(1, 10), rng.randint(0, 2))
        n += 1
        for a in s.assign():
            in_flight.append(a.worker)
            made += 1
    steady_s = time.perf_counter() - start
    return {
        "case": label,
        "workers": workers,
        "pending": pending,
        "add_task/s": submits,
        "placed at once": len(first),
        "bulk assign/s": len(first) / bulk_s if first else None,
        "steady rounds/s": rounds / steady_s,
        "steady assign/s": made / steady_s,
    }


def run(quick: bool = False) -> list[Table]:
    """Measure the scheduler; ``quick`` uses smaller sizes."""
    sizes = [10, 1_000, 10_000] if quick else [10, 1_000, 100_000]
    backlogs = [10_000] if quick else [10_000, 100_000]
    rounds = 2_000 if quick else 20_000
    table = Table(
        title="Scheduler: assignments per second",
        columns=[
            "case",
            "workers",
            "pending",
            "add_task/s",
            "placed at once",
            "bulk assign/s",
            "steady rounds/s",
            "steady assign/s",
        ],
        notes=[
            f"workers: levels 1-10, {CAPACITY} slots each; tasks: levels 1-10, priorities 0-2",
            "steady round: release one slot, submit one task, assign()",
            "multi-skill: each worker has 3 of 20 skills, each task needs one of the 20",
        ],
    )
    for workers in sizes:
        for pending in backlogs:
            table.rows.append(_case("one skill", workers, pending, rounds))
    table.rows.append(_case("multi-skill", sizes[-1], backlogs[-1], rounds, multi=True))
    return [table]


if __name__ == "__main__":
    raise SystemExit(module_main(run, __doc__))

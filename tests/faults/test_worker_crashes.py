"""Workers killed with SIGKILL every second mid-run: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

from tests.faults._run import Run

SOAK = os.environ.get("SERENDIB_SOAK") == "1"  # make soak: longer, bigger
TASKS = 20_000 if SOAK else 2_000
KILLS = 60 if SOAK else 8


async def test_workers_killed_every_second_lose_and_double_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.start_admin()
    crew = ["--skill", "10", "--capacity", "8", "--time-scale", "0.02"]
    for i in range(4):
        run.start_worker(f"w{i}", *crew)
    for worker in run.workers.values():
        await asyncio.to_thread(worker.wait_for, "joined workspace")
    run.submit(TASKS)
    rng = random.Random(3)
    kills = 0
    next_name = 4
    try:
        while await run.final() < TASKS and kills < KILLS:
            await asyncio.sleep(1.0)  # the fault's own rhythm: one kill a second
            victim = rng.choice(sorted(run.workers))
            run.workers.pop(victim).stop(signal.SIGKILL)
            kills += 1
            run.start_worker(f"w{next_name}", *crew)
            next_name += 1
        await run.wait_all_final(deadline_s=600 if SOAK else 120)
    finally:
        run.stop_all()
    assert kills >= 3, "the run ended before the faults could bite; make tasks slower"
    await run.verdict()
    _, attempts = await run.everything()
    assert any(a.outcome.value == "lost" for a in attempts), "no attempt was lost to a kill"

"""The seed tutorial's scenario, done right with serendib.tasks.

Three tasks, three workers of different skill: each task goes to the least skilled worker
able to do it, so every task succeeds, and the report says why each went where it did.

    python examples/seed_task_manager.py [--time-scale 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from serendib.tasks import Task, TaskManager, WorkerAgent, render_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-scale", type=float, default=1.0, help="seconds per difficulty")
    args = parser.parse_args()

    tasks = [
        Task(id=1, description="Simple calculation", difficulty=2),
        Task(id=2, description="Data analysis", difficulty=5),
        Task(id=3, description="Machine learning model training", difficulty=8),
    ]
    workers = [
        WorkerAgent(name, skill_level=level, workspace_id="seed", time_scale=args.time_scale)
        for name, level in [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]
    ]
    store = Path(tempfile.mkdtemp(prefix="serendib-seed-")) / "tasks.db"
    manager = TaskManager(workspace_id="seed", store=str(store), tasks=tasks, stop_when_done=True)
    manager.run(workers=workers)

    assert manager.last_report is not None
    print(render_report(manager.last_report))


if __name__ == "__main__":
    main()

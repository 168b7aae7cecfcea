"""The tutorial across processes: its manager in one, each of its workers in another.

The manager runs the embedded NATS server on its port; each worker joins it from its own
process. Start the manager first, then the three workers, in four terminals:

    python examples/tutorial_distributed.py admin --port 8000
    python examples/tutorial_distributed.py worker Junior 3 --port 8000
    python examples/tutorial_distributed.py worker Intermediate 6 --port 8000
    python examples/tutorial_distributed.py worker Senior 9 --port 8000

The classes are the tutorial's own, imported from ``examples/tutorial.py``, so both sides
agree on the messages' wire names (``tutorial.TaskAssignment``...). Two things differ, both
because the parts no longer start together: the manager assigns the tasks once as many
workers are *connected* as there are tasks (the tutorial counts the workers it was given),
and a worker leaves when the manager stops (in one process, the run ends for everyone).
As in the tutorial, the manager stops at the first three results, and a worker finishes the
task it is running before it leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tutorial import Task, TaskManager, WorkerAgent

from serendib import AgentDetail, SerendibError

TASKS = [
    Task(id=1, description="Simple calculation", difficulty=2),
    Task(id=2, description="Data analysis", difficulty=5),
    Task(id=3, description="Machine learning model training", difficulty=8),
]


class DistributedTaskManager(TaskManager):
    """The tutorial's manager, counting the workers that connect to it."""

    def __init__(self, tasks: list[Task], port: int, host: str) -> None:
        super().__init__(tasks, [])
        self.port = port  # the tutorial hard-codes 8000
        self.host = host

    async def on_agent_connected(self, topic: str, agent_id: AgentDetail) -> None:
        self.workers.append(agent_id.name)
        await super().on_agent_connected(topic, agent_id)

    async def on_agent_disconnected(self, agent: AgentDetail) -> None:
        if agent.name in self.workers:
            self.workers.remove(agent.name)


class DistributedWorker(WorkerAgent):
    """The tutorial's worker, joining the manager's port from a process of its own."""

    def __init__(self, name: str, skill_level: int, port: int, host: str) -> None:
        super().__init__(name, skill_level)
        self.admin_port = port  # the tutorial hard-codes 8000
        self.admin_ip = host

    async def on_admin_stopped(self, admin: str) -> None:
        logger.info(f"{self.name}: the task manager stopped; leaving")
        await self.stop()


async def run_worker(name: str, skill_level: int, port: int, host: str) -> None:
    worker = DistributedWorker(name, skill_level, port, host)
    await worker.start()
    try:
        await worker.wait_stopped()
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    roles = parser.add_subparsers(dest="role", required=True)
    admin = roles.add_parser("admin", help="run the task manager and its NATS server")
    worker = roles.add_parser("worker", help="run one worker")
    worker.add_argument("name")
    worker.add_argument("skill_level", type=int)
    for role in (admin, worker):
        role.add_argument("--port", type=int, default=8000)
        role.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        if args.role == "admin":
            DistributedTaskManager(TASKS, args.port, args.host).run_admin(inputs=b"", workers=[])
        else:
            asyncio.run(run_worker(args.name, args.skill_level, args.port, args.host))
    except SerendibError as e:
        logger.error(str(e))
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

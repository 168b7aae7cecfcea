"""Submit work from your own program and get the results back: ``serendib.Client``.

Start an admin and a worker or two (each in a terminal of its own), then run this::

    serendib admin --port 4222 --store tasks.db
    serendib worker --name Senior --skill 9 --capacity 4
    python examples/client.py --admin 127.0.0.1:4222

It submits a batch of tasks, prints each outcome as it arrives (pushed by the manager, never
polled), then one task's result on its own, and exits 0 if every task succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from serendib import AsyncClient, ResultError
from serendib.tasks import TaskState


async def main(admin: str, count: int) -> int:
    async with AsyncClient(admin) as client:
        # A batch: the handles come back once every task is stored; outcomes come later.
        handles = await client.submit(
            [{"id": f"example-{i}", "difficulty": 1 + i % 9} for i in range(count)]
        )
        succeeded = 0
        async for outcome in client.as_completed(h.id for h in handles):
            print(f"{outcome.task_id}: {outcome.state.value} on {outcome.worker}")
            succeeded += outcome.state is TaskState.SUCCEEDED

        # One task, and its result (or the reason it has none).
        one = await client.submit({"id": "example-one", "difficulty": 2})
        try:
            print(f"result of {one.id}: {await one.result(timeout=60)}")
        except ResultError as e:
            print(f"no result: {e}")
            return 1
        print(f"{succeeded} of {count} succeeded")
        return 0 if succeeded == count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin", default="127.0.0.1:4222", help="the admin's HOST:PORT")
    parser.add_argument("--tasks", type=int, default=10, help="tasks in the batch")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.admin, args.tasks)))

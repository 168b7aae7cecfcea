"""A node of a three-node NATS cluster lost mid-run: its clients fail over, nothing is lost.

Each agent is given all three URLs, in an order of its own, and connects to the first node of
its list: the admin and one worker to node 0, the other workers to nodes 1 and 2. A fifth of
the way through the run one node is lost: killed with SIGKILL (its clients' sockets close),
or frozen with SIGSTOP (they stay open and nothing answers, as with a hung server or a host
gone without a word; the clients notice by their PINGs going unanswered). Its clients move
to another node by themselves; a worker started then with the lost node first in its list
joins through the next; and every task still ends once, succeeded, counted once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serendib.tasks.models import TaskState
from tests.faults._cluster import Cluster
from tests.faults._run import HEARTBEAT, Run
from tests.processes import Process

pytestmark = pytest.mark.slow

TASKS = 400
ADMIN = (0, 1, 2)  # the order of the admin's URLs
WORKERS = {"w0": (1, 2, 0), "w1": (2, 0, 1), "w2": (0, 2, 1)}  # name -> its URLs' order


@pytest.mark.parametrize(
    ("fault", "victim"),
    [("kill", 0), ("kill", 1), ("freeze", 0)],
    ids=["the-admins-node-killed", "a-workers-node-killed", "the-admins-node-frozen"],
)
async def test_a_lost_cluster_node_loses_and_doubles_nothing(
    tmp_path: Path, fault: str, victim: int
) -> None:
    cluster = Cluster(tmp_path)
    await cluster.start()
    run = Run(tmp_path)
    run.where = ["--nats", cluster.urls(2, 1, 0), "--workspace", run.workspace]
    try:
        run.admin = Process(
            tmp_path / "admin.log",
            "admin",
            "--nats",
            cluster.urls(*ADMIN),
            "--store",
            run.store,
            "--workspace",
            run.workspace,
            "--heartbeat",
            HEARTBEAT,
        )
        run.admin.wait_for("admin of workspace")
        crew = ["--skill", "10", "--capacity", "4", "--time-scale", "0.02"]
        for name, order in WORKERS.items():
            run.start_worker(name, "--nats", cluster.urls(*order), *crew)
        for worker in run.workers.values():
            await asyncio.to_thread(worker.wait_for, "joined workspace")
        agents = {"manager": (run.admin, ADMIN)} | {
            name: (run.workers[name], order) for name, order in WORKERS.items()
        }
        for name, (_, order) in agents.items():  # everyone is on the first node of its list
            await cluster.wait_on(f"{run.workspace}/{name}", {order[0]})
        moving = {name: proc for name, (proc, order) in agents.items() if order[0] == victim}

        run.submit(TASKS)
        await run.wait_final(TASKS // 5)
        if fault == "kill":
            cluster.nodes[victim].kill()
        else:
            cluster.nodes[victim].freeze()
        done_at_fault = await run.final()
        survivors = {n.index for n in cluster.nodes if n.running}
        for name in moving:  # each moved to a node still up
            await cluster.wait_on(f"{run.workspace}/{name}", survivors)
        # A worker started now with the lost node first in its list joins through the next.
        late = run.start_worker("late", "--nats", cluster.urls(victim, *sorted(survivors)), *crew)
        await asyncio.to_thread(late.wait_for, "joined workspace")
        await cluster.wait_on(f"{run.workspace}/late", survivors)
        await run.wait_all_final(deadline_s=60)
        assert done_at_fault < TASKS, "the run ended before the fault; make tasks slower"
        for name, proc in moving.items():  # nats-py's reconnection, not a restart
            assert ": reconnected" in proc.log.read_text(), name
    finally:
        run.stop_all()
        cluster.stop()
    await run.verdict()
    assert await run.counts() == {TaskState.SUCCEEDED: TASKS}

"""The NATS server stopped for a few seconds mid-run: everyone reconnects, nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from serendib.transports.embedded import EmbeddedBroker
from tests.faults._run import Run
from tests.processes import Process, free_port

TASKS = 600
OUTAGE_S = 3.0


async def test_broker_restart_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    run = Run(tmp_path)
    url = broker.url
    run.where = ["--nats", url, "--workspace", run.workspace]
    run.admin = Process(
        tmp_path / "admin.log",
        "admin",
        "--nats",
        url,
        "--store",
        run.store,
        "--workspace",
        run.workspace,
        "--heartbeat",
        "0.2",
    )
    run.admin.wait_for("admin of workspace")
    for i in range(3):
        run.start_worker(f"w{i}", "--skill", "10", "--capacity", "4", "--time-scale", "0.01")
    try:
        for worker in run.workers.values():
            await asyncio.to_thread(worker.wait_for, "joined workspace")
        run.submit(TASKS)
        await run.wait_final(TASKS // 5)
        broker.kill()
        done_at_outage = await run.final()
        await asyncio.sleep(OUTAGE_S)  # the outage itself is the behaviour under test
        await broker.start()
        await run.wait_all_final()
        assert done_at_outage < TASKS, "the run ended before the outage; make tasks slower"
        assert "reconnected" in run.admin.log.read_text()
    finally:
        run.stop_all()
        await broker.stop()
    await run.verdict()

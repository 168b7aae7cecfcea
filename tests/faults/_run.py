"""A task run across processes for fault tests: an admin, workers, a store, and the checks.

Every fault test ends with the same verdict: each submitted task is in exactly one final
state, each success was counted once (one succeeded attempt), and the report equals a
recount made straight from the store.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path

from serendib.tasks.models import AttemptOutcome, AttemptRecord, TaskRecord, TaskState
from serendib.tasks.report import build_report
from serendib.tasks.store import open_store
from tests.helpers import until
from tests.processes import Process, free_port, run

HEARTBEAT = "0.2"


class Run:
    """An admin process on its own port and store, and the workers that join it."""

    def __init__(self, tmp: Path, store_url: str | None = None, workspace: str = "faults") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.store = store_url or str(tmp / "tasks.db")
        self.workspace = workspace
        self.where = ["--admin", f"127.0.0.1:{self.port}", "--workspace", workspace]
        self.admin: Process | None = None
        self.workers: dict[str, Process] = {}
        self._restarts = 0

    def start_admin(self) -> Process:
        self._restarts += 1
        self.admin = Process(
            self.tmp / f"admin-{self._restarts}.log",
            "admin",
            "--port",
            str(self.port),
            "--store",
            self.store,
            "--workspace",
            self.workspace,
            "--heartbeat",
            HEARTBEAT,
        )
        self.admin.wait_for("admin of workspace")
        return self.admin

    def start_worker(self, name: str, *extra: str) -> Process:
        worker = Process(
            self.tmp / f"{name}.log",
            "worker",
            "--name",
            name,
            "--heartbeat",
            HEARTBEAT,
            *self.where,
            *extra,
        )
        self.workers[name] = worker
        return worker

    def submit(self, count: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        path = self.tmp / "tasks.yaml"
        path.write_text(
            "".join(f"- {{id: t{i}, difficulty: {rng.randint(1, 10)}}}\n" for i in range(count))
        )
        done = run("submit", str(path), *self.where)
        assert done.returncode == 0, done.stderr
        self.total = count

    def stop_all(self) -> None:
        for proc in [*self.workers.values(), *([self.admin] if self.admin else [])]:
            proc.stop(signal.SIGTERM)

    async def counts(self) -> Counter[TaskState]:
        store = open_store(self.store)
        await store.open()
        try:
            return Counter({k: v for k, v in (await store.counts()).items() if v})
        finally:
            await store.close()

    async def final(self) -> int:
        counts = await self.counts()
        return sum(v for k, v in counts.items() if k.is_final)

    async def wait_final(self, count: int | None = None, deadline_s: float = 120) -> None:
        """Wait until ``count`` tasks (default: all) are final, polling the store."""
        target = self.total if count is None else count

        async def reached() -> bool:
            return await self.final() >= target

        await until(reached, deadline_s, f"{target} tasks final", every=0.05)

    async def wait_all_final(self, deadline_s: float = 120) -> None:
        """Wait until every submitted task is final."""
        await self.wait_final(None, deadline_s)

    async def everything(self) -> tuple[list[TaskRecord], list[AttemptRecord]]:
        store = open_store(self.store)
        await store.open()
        try:
            return await store.all_records(), await store.all_attempts()
        finally:
            await store.close()

    async def verdict(self) -> None:
        """Exactly one final state per task, each success counted once, report == recount."""
        records, attempts = await self.everything()
        assert sorted(r.id for r in records) == sorted(f"t{i}" for i in range(self.total))
        assert all(r.state.is_final for r in records), Counter(r.state for r in records)
        wins = Counter(a.task_id for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED)
        assert all(n == 1 for n in wins.values()), "a task's success was counted twice"
        succeeded = {r.id for r in records if r.state is TaskState.SUCCEEDED}
        assert set(wins) == succeeded
        report = build_report(records, attempts)
        assert report.succeeded == len(succeeded)
        assert report.failed == sum(1 for r in records if r.state is TaskState.FAILED)
        assert report.total == self.total

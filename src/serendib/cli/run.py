"""``serendib admin``, ``worker`` and ``demo``: the long-running commands.

One function per command; :data:`COMMANDS` lists them for :mod:`serendib.cli`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from loguru import logger
from pydantic import ValidationError
from rich.console import Console

from serendib._gc import tune_gc, tune_threads
from serendib.cli.client import offline_report, print_report
from serendib.cli.options import (
    DEFAULT_PORT,
    EXIT_LOST_LEAD,
    EXIT_OK,
    EXIT_USAGE,
    Address,
    BackoffSpec,
    CommandFailed,
    KeyValue,
    Link,
    Skills,
    command,
    json_option,
    link_options,
    option,
    progress_bar,
    run_until_signalled,
)
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Backoff, Schedule, Task
from serendib.tasks.report import Report
from serendib.tasks.worker import TaskHandler, WorkerAgent
from serendib.transports import ConnectionPool

if TYPE_CHECKING:
    from serendib.dashboard import DashboardServer

__all__ = ["COMMANDS", "demo_scenario", "identity_path", "load_handler"]

SEED_TASKS = [
    Task(id=1, description="Simple calculation", difficulty=2),
    Task(id=2, description="Data analysis", difficulty=5),
    Task(id=3, description="Machine learning model training", difficulty=8),
]
SEED_WORKERS = [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]
UNQUALIFIED_WAIT_S = 1.0  # random demo tasks beyond every worker's skill fail after this
DASHBOARD_DEFAULT = "127.0.0.1:8080"

Callback = Callable[..., int]


def dashboard_options(callback: Callback) -> Callback:
    """``--dashboard [HOST:PORT]`` and ``--dashboard-token`` (``admin`` and ``demo``)."""
    callback = option(
        "--dashboard-token",
        show_default=False,
        help="token the dashboard requires; without one, a dashboard beyond loopback is read-only",
    )(callback)
    return option(
        "--dashboard",
        type=Address(),
        is_flag=False,
        flag_value=DASHBOARD_DEFAULT,
        default=None,
        help=f"serve the web dashboard, JSON API and /metrics (alone: {DASHBOARD_DEFAULT})",
    )(callback)


def _dashboard(
    manager: TaskManager, address: tuple[str, int] | None, token: str | None
) -> DashboardServer | None:
    """The dashboard ``--dashboard`` asks for, not yet started.

    Raises:
        ValueError: The ``dashboard`` extra is not installed.
    """
    if address is None:
        return None
    try:
        from serendib.dashboard import DashboardServer
    except ImportError as e:
        raise ValueError(str(e)) from None
    host, port = address
    return DashboardServer(manager, host, port, token)


def load_handler(spec: str) -> tuple[str, TaskHandler]:
    """Load ``[KIND=]MODULE:FUNCTION``; the kind defaults to the function's name.

    Raises:
        ValueError: The spec is malformed, or the function cannot be imported.
    """
    kind, _, target = spec.rpartition("=")
    module_name, _, function = target.partition(":")
    if not module_name or not function:
        raise ValueError(f"--handler {spec!r}: expected [KIND=]MODULE:FUNCTION")
    # Modules of the working directory import as they would in a script run there (as
    # `celery -A` does): the console script's own path does not include it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        handler = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--handler {spec!r}: cannot load {target}: {e}") from None
    if not asyncio.iscoroutinefunction(handler):
        raise ValueError(f"--handler {spec!r}: {target} must be an async function (task, context)")
    return kind or function, handler


async def _serve(
    agent: Any,
    started: Callable[[], None] | None = None,
    dashboard: DashboardServer | None = None,
    late_dashboard: bool = False,
) -> int:
    async def body() -> int:
        if dashboard is not None and not late_dashboard:
            await dashboard.start()
        await agent.start()
        if dashboard is not None and late_dashboard:  # a standby's, once it leads
            await dashboard.start()
        if started is not None:
            started()
        await agent.wait_stopped()
        return EXIT_OK

    stopping: list[asyncio.Future[None]] = []

    def stop() -> None:
        stopping.append(asyncio.ensure_future(agent.stop()))

    try:
        return await run_until_signalled(body(), stop)
    finally:
        await agent.stop()
        if dashboard is not None:
            await dashboard.stop()


@command(
    "admin",
    examples=[
        "serendib admin --port 4222 --store tasks.db",
        "serendib admin --host 0.0.0.0 --dashboard 0.0.0.0:8080 --dashboard-token SECRET",
        "serendib admin --nats nats://a:4222 --store postgresql://user@db/serendib",
        "serendib admin --standby --nats nats://a:4222,nats://b:4222 "
        "--store postgresql://user@db/serendib",
    ],
)
@option("--port", type=int, default=DEFAULT_PORT, help="embedded NATS port")
@option("--host", default="127.0.0.1", help="interface the embedded NATS server binds to")
@option("--nats", metavar="URL", help="use this NATS URL instead of embedding one")
@option("--tls-cert", metavar="FILE", help="embedded NATS: serve TLS with this certificate")
@option("--tls-key", metavar="FILE", help="embedded NATS: its key")
@option("--name", default="manager", help="the manager's agent name")
@option("--store", metavar="URL", default="serendib.db", help="task store URL or SQLite file")
@option(
    "--attempt-unqualified",
    is_flag=True,
    help="give tasks nobody is skilled enough for to the most skilled worker anyway",
)
@option(
    "--lost-grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="seconds a silent worker keeps its attempts before they are requeued "
    "(default: 6 heartbeats; 0: at once)",
)
@option(
    "--limit",
    type=KeyValue(integer=True),
    multiple=True,
    help="at most N tasks of concurrency_key KEY run at once (repeatable)",
)
@option(
    "--rate",
    type=KeyValue(integer=False),
    multiple=True,
    help="at most N tasks of concurrency_key KEY start per second (repeatable)",
)
@option(
    "--retry-backoff",
    type=BackoffSpec(),
    help="a failed attempt's retry waits BASE seconds, times FACTOR per further failure, "
    "spread by JITTER, at most MAX (tasks may say their own 'retry'; default: at once)",
)
@option(
    "--learn",
    is_flag=True,
    help="escalate a failed task's retry to the more skilled worker with the best record "
    "for its kind and difficulty (learnt from outcomes), not only to the next more skilled",
)
@option(
    "--schedules",
    metavar="FILE",
    help="recurring work: a YAML or JSON list of schedules (name, cron, task), kept in the "
    "store with when each last fired",
)
@option(
    "--standby",
    is_flag=True,
    help="one of several admins of the workspace (same --nats and PostgreSQL --store): "
    "lead while holding the store's lease, else wait and take over within 5 s of the "
    "leader's loss; exit 4 once another took the lead over",
)
@dashboard_options
@link_options(address=False)
def admin(
    port: int,
    host: str,
    tls_cert: str | None,
    tls_key: str | None,
    name: str,
    store: str,
    attempt_unqualified: bool,
    lost_grace: float | None,
    limit: tuple[tuple[str, float], ...],
    rate: tuple[tuple[str, float], ...],
    retry_backoff: Backoff | None,
    learn: bool,
    schedules: str | None,
    standby: bool,
    dashboard: tuple[str, int] | None,
    dashboard_token: str | None,
    link: Link,
) -> int:
    """Run a task manager that workers join, on an embedded NATS server or an existing one."""
    tune_gc()
    tune_threads()
    if standby:
        _check_standby(link.nats, store)
    manager = TaskManager(
        name,
        None if link.nats else port,
        workspace_id=link.workspace,
        host=host,
        nats_url=link.nats,
        token=link.token,
        store=store,
        attempt_unqualified=attempt_unqualified,
        lost_grace_s=lost_grace,
        limits={key: int(n) for key, n in limit},
        rates=dict(rate),
        retry_backoff=retry_backoff,
        schedules=load_schedules(schedules) if schedules else (),
        learn=learn,
        heartbeat_interval=link.heartbeat,
        tls_cert=tls_cert,
        tls_key=tls_key,
        nats_options=link.nats_options(),
        standby=standby,
    )
    board = _dashboard(manager, dashboard, dashboard_token)
    code = asyncio.run(_serve(manager, dashboard=board, late_dashboard=standby))
    return EXIT_LOST_LEAD if manager.lead_lost is not None else code


def _check_standby(nats: str | None, store: str) -> None:
    """Standby admins share a NATS server or cluster and a PostgreSQL store.

    Raises:
        CommandFailed: Either is missing (exit 2).
    """
    if not nats:
        raise CommandFailed(
            "--standby: the embedded NATS server cannot be shared by several admins (it stops "
            "with its admin): run a NATS server or cluster and give every admin and worker "
            "its URLs with --nats",
            EXIT_USAGE,
        )
    if not store.strip().lower().startswith(("postgresql://", "postgres://")):
        raise CommandFailed(
            "--standby needs a PostgreSQL store (--store postgresql://user@host/db), which "
            "every admin reaches: a SQLite file is one machine's, and a leader paused in a "
            "transaction would hold its lock",
            EXIT_USAGE,
        )


def load_schedules(path: str) -> list[Schedule]:
    """The schedules of a YAML or JSON file: a list of ``{name, cron, task}``.

    Raises:
        CommandFailed: It cannot be read, or an entry is not a schedule (exit 2).
    """
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise CommandFailed(f"cannot read schedules from {path}: {e}", EXIT_USAGE) from None
    if not isinstance(entries, list):
        raise CommandFailed(f"{path}: expected a list of schedules", EXIT_USAGE)
    found = []
    for index, entry in enumerate(entries):
        try:
            found.append(Schedule.model_validate(entry))
        except ValidationError as e:
            problem = e.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "entry"
            raise CommandFailed(
                f"{path}: schedule {index}: {where}: {problem['msg']}", EXIT_USAGE
            ) from None
    return found


def identity_path(workspace: str, name: str) -> Path:
    """Where ``serendib worker`` keeps a worker's identity by default."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "serendib" / workspace / f"{name}.nk"


@command(
    "worker",
    examples=[
        "serendib worker --name Junior --skill 3",
        "serendib worker --name Senior --skill general=9,python=9 --handler primes:primes",
        "serendib worker --name gpu-1 --label gpu --label region=eu --admin 10.0.0.5:4222",
        "serendib worker --name w1 --workspace a --workspace b --nats nats://10.0.0.5:4222",
    ],
)
@option("--name", required=True, help="unique name in the workspace (in each of them)")
@option(
    "--skill",
    type=Skills(),
    default="5",
    help="a level (7: general 7) or name=level pairs (python=7,sql=3)",
)
@option("--capacity", type=click.IntRange(min=1), default=1, help="tasks run at once")
@option(
    "--prefetch",
    type=click.IntRange(min=0, max=10_000),
    help="tasks kept ready beyond those running, so a slot never waits a round trip "
    "[default: adjusted to about 50 ms of work; none for long tasks]",
)
@option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="a label for constraints that are not levels (gpu, region=eu): a task requiring "
    "labels goes only to a worker that has them all (repeatable)",
)
@option(
    "--handler",
    multiple=True,
    metavar="[KIND=]MODULE:FUNCTION",
    help="task handler to load, imported from the working directory (repeatable)",
)
@option("--time-scale", type=float, default=1.0, help="simulated work: seconds per level")
@option(
    "--identity",
    metavar="FILE",
    help="file keeping this worker's identity on the admin's server (created if missing; "
    "default: $XDG_STATE_HOME/serendib/WORKSPACE/NAME.nk); restarted with it, the worker "
    "takes its own place at once; one workspace only",
)
@link_options(workspaces=True)
def worker(
    name: str,
    skill: dict[str, int],
    capacity: int,
    prefetch: int | None,
    labels: tuple[str, ...],
    handler: tuple[str, ...],
    time_scale: float,
    identity: str | None,
    workspaces: tuple[str, ...],
    link: Link,
) -> int:
    """Run a worker that joins an admin and runs the tasks it assigns (with --workspace
    repeated: one worker in each workspace, in this one process)."""
    if identity and len(workspaces) > 1:
        raise click.BadParameter(
            "one file for one workspace: leave it out with several --workspace (each keeps "
            "its own under $XDG_STATE_HOME/serendib/WORKSPACE/)",
            param_hint="'--identity'",
        )
    tune_gc()
    tune_threads()
    handlers = dict(load_handler(spec) for spec in handler)
    host, port = link.admin
    # Workers of several workspaces share one connection where they can: not at an admin's
    # embedded server, where each gets an identity (a NATS user) of its own.
    pool = ConnectionPool(f"{'+'.join(workspaces)}/{name}") if len(workspaces) > 1 else None
    agents = [
        WorkerAgent(
            name,
            skills=skill,
            capacity=capacity,
            prefetch=prefetch,
            labels=list(labels),
            workspace_id=workspace,
            handlers=handlers,
            time_scale=time_scale,
            transport=link.nats,
            admin_ip=host,
            admin_port=port,
            token=link.token,
            heartbeat_interval=link.heartbeat,
            nats_options=link.nats_options(),
            identity=None if link.nats else (identity or identity_path(workspace, name)),
            connections=pool,
        )
        for workspace in workspaces
    ]

    def joined() -> None:
        for agent in agents:
            logger.info(
                "{}: joined workspace {!r} at {} ({}, capacity {}{})",
                agent.name,
                agent.workspace_id,
                agent.address,
                ", ".join(f"{k} {v}" for k, v in agent.skills.items()),
                agent.capacity,
                "".join(f", label {label}" for label in agent.labels),
            )

    return asyncio.run(_serve(agents[0] if len(agents) == 1 else _Crew(agents), joined))


class _Crew:
    """The workers of one ``serendib worker`` process serving several workspaces, started,
    waited for and stopped together (what :func:`_serve` does with one agent)."""

    def __init__(self, agents: list[WorkerAgent]) -> None:
        self.agents = agents

    async def start(self) -> None:
        """Start every worker; if one cannot start, stop the others and raise its error."""
        started = await asyncio.gather(*(a.start() for a in self.agents), return_exceptions=True)
        failures = [e for e in started if isinstance(e, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def wait_stopped(self) -> None:
        await asyncio.gather(*(a.wait_stopped() for a in self.agents))

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents))


def demo_scenario(
    tasks: int | None, workers: int | None, seed: int
) -> tuple[list[Task], list[tuple[str, int]]]:
    """The seed's three tasks and workers, or a random scenario of the given size."""
    if tasks is None and workers is None:
        return list(SEED_TASKS), list(SEED_WORKERS)
    rng = random.Random(seed)
    crew = [(f"worker-{i + 1}", rng.randint(1, 10)) for i in range(workers or 3)]
    batch = [
        Task(
            id=f"t{i + 1}",
            description=f"random task {i + 1}",
            difficulty=rng.randint(1, 10),
            wait_timeout_s=UNQUALIFIED_WAIT_S,
        )
        for i in range(tasks or 3)
    ]
    return batch, crew


@dataclass(frozen=True)
class _Demo:
    """What ``serendib demo`` was asked for: its options, by name."""

    time_scale: float
    tasks: int | None
    workers: int | None
    seed: int
    capacity: int
    store: str | None
    attempt_unqualified: bool
    as_json: bool
    dashboard: tuple[str, int] | None
    dashboard_token: str | None


async def _demo(demo: _Demo) -> Report:
    tasks, crew = demo_scenario(demo.tasks, demo.workers, demo.seed)
    store = demo.store or str(Path(tempfile.mkdtemp(prefix="serendib-demo-")) / "demo.db")
    manager = TaskManager(
        "manager",
        workspace_id="demo",
        store=store,
        tasks=tasks,
        stop_when_done=demo.dashboard is None,
        attempt_unqualified=demo.attempt_unqualified,
    )
    dashboard = _dashboard(manager, demo.dashboard, demo.dashboard_token)
    workers = [
        WorkerAgent(
            name, level, workspace_id="demo", capacity=demo.capacity, time_scale=demo.time_scale
        )
        for name, level in crew
    ]
    if dashboard is not None:
        await dashboard.start()
    try:
        with progress_bar(len(tasks), not demo.as_json) as (progress, bar):
            run = asyncio.create_task(manager.arun(workers))
            done = run if dashboard is None else asyncio.ensure_future(manager.wait_done())
            while not done.done() and not run.done():
                progress.update(bar, completed=manager.final_count)
                await asyncio.wait({run, done}, timeout=0.1)
            progress.update(bar, completed=manager.final_count)  # the end: N/N
            done.cancel()
        if dashboard is not None:
            return await _keep_serving(manager, run, dashboard, store, demo.as_json)
        await run
    finally:
        if dashboard is not None:
            await dashboard.stop()
    return await offline_report(store)


async def _keep_serving(
    manager: TaskManager,
    run: asyncio.Task[None],
    dashboard: DashboardServer,
    store: str,
    as_json: bool,
) -> Report:
    """Print the demo's report, then keep the system and its dashboard up until Ctrl-C."""
    if run.done():
        await run
        return await offline_report(store)
    report = await manager.report()
    print_report(report, as_json)
    Console(stderr=True).print(
        f"Dashboard: {dashboard.url}"
        + (" (append ?token=YOUR_TOKEN)" if dashboard.policy.token else "")
        + " - the workers stay up for more tasks; press Ctrl-C to stop."
    )

    async def until_stopped() -> int:
        await run
        return EXIT_OK

    stopping: list[asyncio.Future[None]] = []
    await run_until_signalled(
        until_stopped(), lambda: stopping.append(asyncio.ensure_future(manager.stop()))
    )
    return report


@command(
    "demo",
    examples=[
        "serendib demo",
        "serendib demo --time-scale 0 --tasks 30 --workers 3 --seed 2",
        "serendib demo --dashboard",
    ],
)
@option("--time-scale", type=float, default=1.0, help="seconds per difficulty level")
@option(
    "--tasks",
    type=click.IntRange(min=1),
    help="random scenario: number of tasks (those beyond every worker's skill fail after 1 s)",
)
@option("--workers", type=click.IntRange(min=1), help="random scenario: number of workers")
@option("--seed", type=int, default=1, help="random scenario: seed")
@option("--capacity", type=click.IntRange(min=1), default=1, help="tasks each worker runs at once")
@option("--store", metavar="URL", help="task store URL (default: a temporary file)")
@option("--attempt-unqualified", is_flag=True, help="the seed's behaviour")
@dashboard_options
@json_option
def demo(**options: Any) -> int:
    """Run the seed's scenario (or a random one) in one process, with a progress bar and the
    report; exit 1 if a task failed or did not finish."""
    tune_gc()
    tune_threads()
    asked = _Demo(**options)
    report = asyncio.run(_demo(asked))
    if asked.dashboard is None:  # with a dashboard, it was printed before serving on
        print_report(report, asked.as_json)
    return 0 if report.failed == 0 and report.unfinished == 0 else 1


COMMANDS = [admin, worker, demo]
"""The long-running commands, in the order ``serendib --help`` lists them."""

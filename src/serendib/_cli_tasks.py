"""``serendib admin``, ``worker`` and ``demo``: the long-running commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from serendib import _cli_client
from serendib._cli_common import EXIT_OK, nats_options, parse_address, run_until_signalled
from serendib.tasks.manager import TaskManager
from serendib.tasks.models import Task
from serendib.tasks.report import Report
from serendib.tasks.worker import TaskHandler, WorkerAgent

if TYPE_CHECKING:
    from serendib.dashboard import DashboardServer

__all__ = ["add_task_commands", "admin_args", "run_admin", "run_worker"]

SEED_TASKS = [
    Task(id=1, description="Simple calculation", difficulty=2),
    Task(id=2, description="Data analysis", difficulty=5),
    Task(id=3, description="Machine learning model training", difficulty=8),
]
SEED_WORKERS = [("Junior", 3), ("Intermediate", 6), ("Senior", 9)]
UNQUALIFIED_WAIT_S = 1.0  # random demo tasks beyond every worker's skill fail after this


def admin_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``serendib admin`` beyond the connection ones."""
    parser.add_argument("--name", default="manager", help="the manager's agent name")
    parser.add_argument(
        "--store", default=None, help="task store URL (default: sqlite file serendib.db)"
    )
    parser.add_argument(
        "--attempt-unqualified",
        action="store_true",
        help="give tasks nobody is skilled enough for to the most skilled worker anyway",
    )
    parser.add_argument(
        "--lost-grace",
        type=float,
        default=None,
        metavar="S",
        help="seconds a silent worker keeps its attempts before they are requeued "
        "(default: 6 heartbeats; 0: at once)",
    )
    dashboard_args(parser)


def dashboard_args(parser: argparse.ArgumentParser) -> None:
    """``--dashboard [HOST:PORT]`` and ``--dashboard-token`` (``admin`` and ``demo``)."""
    parser.add_argument(
        "--dashboard",
        type=parse_address,
        nargs="?",
        const=("127.0.0.1", 8080),
        default=None,
        metavar="HOST:PORT",
        help="serve the web dashboard, JSON API and /metrics (default 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--dashboard-token",
        default=os.environ.get("SERENDIB_DASHBOARD_TOKEN"),
        help="token the dashboard requires (default: $SERENDIB_DASHBOARD_TOKEN); without "
        "one, a dashboard beyond loopback is read-only",
    )


def _dashboard(manager: TaskManager, args: argparse.Namespace) -> DashboardServer | None:
    """The dashboard ``--dashboard`` asks for, not yet started.

    Raises:
        ValueError: The ``dashboard`` extra is not installed.
    """
    if args.dashboard is None:
        return None
    try:
        from serendib.dashboard import DashboardServer
    except ImportError as e:
        raise ValueError(str(e)) from None
    host, port = args.dashboard
    return DashboardServer(manager, host, port, args.dashboard_token)


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
) -> int:
    async def body() -> int:
        if dashboard is not None:
            await dashboard.start()
        await agent.start()
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


def run_admin(args: argparse.Namespace) -> int:
    """``serendib admin``: a long-lived task manager."""
    manager = TaskManager(
        args.name,
        None if args.nats else args.port,
        workspace_id=args.workspace,
        host=args.host,
        nats_url=args.nats,
        token=args.token,
        store=args.store,
        attempt_unqualified=args.attempt_unqualified,
        lost_grace_s=args.lost_grace,
        heartbeat_interval=args.heartbeat,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        nats_options=nats_options(args),
    )
    return asyncio.run(_serve(manager, dashboard=_dashboard(manager, args)))


def identity_path(workspace: str, name: str) -> Path:
    """Where ``serendib worker`` keeps a worker's identity by default."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "serendib" / workspace / f"{name}.nk"


def run_worker(args: argparse.Namespace) -> int:
    """``serendib worker``: join an admin and run the tasks it assigns."""
    handlers = dict(load_handler(spec) for spec in args.handler)
    host, port = args.admin
    identity = None if args.nats else (args.identity or identity_path(args.workspace, args.name))
    worker = WorkerAgent(
        args.name,
        skills=args.skill,
        capacity=args.capacity,
        workspace_id=args.workspace,
        handlers=handlers,
        time_scale=args.time_scale,
        transport=args.nats,
        admin_ip=host,
        admin_port=port,
        token=args.token,
        heartbeat_interval=args.heartbeat,
        nats_options=nats_options(args),
        identity=identity,
    )

    def joined() -> None:
        logger.info(
            "{}: joined workspace {!r} at {} ({}, capacity {})",
            worker.name,
            worker.workspace_id,
            worker.address,
            ", ".join(f"{k} {v}" for k, v in worker.skills.items()),
            worker.capacity,
        )

    return asyncio.run(_serve(worker, joined))


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


async def _demo(args: argparse.Namespace) -> tuple[Report, int]:
    tasks, crew = demo_scenario(args.tasks, args.workers, args.seed)
    store = args.store or str(Path(tempfile.mkdtemp(prefix="serendib-demo-")) / "demo.db")
    manager = TaskManager(
        "manager",
        workspace_id="demo",
        store=store,
        tasks=tasks,
        stop_when_done=args.dashboard is None,
        attempt_unqualified=args.attempt_unqualified,
    )
    dashboard = _dashboard(manager, args)
    workers = [
        WorkerAgent(
            name, level, workspace_id="demo", capacity=args.capacity, time_scale=args.time_scale
        )
        for name, level in crew
    ]
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]tasks"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.json or not console.is_terminal,
    )
    if dashboard is not None:
        await dashboard.start()
    try:
        with progress:
            bar = progress.add_task("tasks", total=len(tasks))
            run = asyncio.create_task(manager.arun(workers))
            done = run if dashboard is None else asyncio.ensure_future(manager.wait_done())
            while not done.done() and not run.done():
                progress.update(bar, completed=manager.final_count)
                await asyncio.wait({run, done}, timeout=0.1)
            done.cancel()
        if dashboard is not None:
            return await _keep_serving(manager, run, dashboard, store, args.json), len(tasks)
        await run
    finally:
        if dashboard is not None:
            await dashboard.stop()
    report = await _cli_client.offline_report(store)
    return report, len(tasks)


async def _keep_serving(
    manager: TaskManager,
    run: asyncio.Task[None],
    dashboard: DashboardServer,
    store: str,
    json: bool,
) -> Report:
    """Print the demo's report, then keep the system and its dashboard up until Ctrl-C."""
    if run.done():
        await run
        return await _cli_client.offline_report(store)
    report = await manager.report()
    _cli_client.print_report(report, json)
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


def run_demo(args: argparse.Namespace) -> int:
    """``serendib demo``: the seed's scenario, done right, in one process."""
    report, _ = asyncio.run(_demo(args))
    if args.dashboard is None:  # with a dashboard, it was printed before serving on
        _cli_client.print_report(report, args.json)
    return 0 if report.failed == 0 and report.unfinished == 0 else 1


def add_task_commands(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``demo`` and the client commands to the ``serendib`` parser."""
    demo = commands.add_parser("demo", help="run the seed's scenario in one process")
    demo.add_argument("--time-scale", type=float, default=1.0, help="seconds per difficulty level")
    demo.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="random scenario: number of tasks (those beyond every worker's skill fail after 1 s)",
    )
    demo.add_argument(
        "--workers", type=int, default=None, help="random scenario: number of workers"
    )
    demo.add_argument("--seed", type=int, default=1, help="random scenario: seed")
    demo.add_argument("--capacity", type=int, default=1, help="tasks each worker runs at once")
    demo.add_argument("--store", default=None, help="task store URL (default: a temporary file)")
    demo.add_argument("--attempt-unqualified", action="store_true", help="the seed's behaviour")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    dashboard_args(demo)
    common(demo)
    demo.set_defaults(run=run_demo)
    _cli_client.add_client_commands(commands, common)

"""``serendib submit | status | tasks | task | cancel | report``: talk to a running manager."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from serendib._cli_common import address_args, connection_args, nats_options
from serendib.agent import Agent
from serendib.tasks.messages import (
    CancelReply,
    CancelRequest,
    ReportRequest,
    StatusReply,
    StatusRequest,
    SubmitReply,
    SubmitTasks,
    TaskPage,
    TaskQuery,
)
from serendib.tasks.models import TaskRecord, TaskState
from serendib.tasks.report import Report, build_report, render_report
from serendib.tasks.store import open_store
from serendib.tasks.taskfile import load_task_file

__all__ = ["add_client_commands", "offline_report", "print_report"]

REQUEST_TIMEOUT_S = 30.0


async def ask(args: argparse.Namespace, message: object) -> Any:
    """Join the workspace as a client, send one request to its manager, return the reply."""
    host, port = args.admin
    client = Agent(
        f"cli-{uuid.uuid4().hex[:8]}",
        args.workspace,
        role="client",
        transport=args.nats,
        admin_ip=host,
        admin_port=port,
        token=args.token,
        nats_options=nats_options(args),
        join_timeout=5.0,
    )
    await client.start()
    try:
        assert client.admin_name is not None
        return await client.request(client.admin_name, message, timeout=REQUEST_TIMEOUT_S)
    finally:
        await client.stop()


_UNWRAPPED = 10_000
"""Columns of the console off a terminal: a table piped to a file or a program is not
wrapped at 80 columns, one word per line."""


def _console() -> Console:
    width = None if sys.stdout.isatty() else _UNWRAPPED
    return Console(highlight=False, soft_wrap=True, width=width)


def run_submit(args: argparse.Namespace) -> int:
    """``serendib submit FILE``: validate the whole file, then submit it."""
    tasks = load_task_file(args.file)
    reply: SubmitReply = asyncio.run(ask(args, SubmitTasks(tasks=tasks)))
    console = _console()
    console.print(f"submitted {len(reply.accepted)} new tasks from {args.file}")
    if reply.duplicates:
        console.print(f"{len(reply.duplicates)} already known (same id), left as they were")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """``serendib status``: task counts and workers."""
    status: StatusReply = asyncio.run(ask(args, StatusRequest()))
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    console = _console()
    counts = ", ".join(f"{state.value} {status.counts.get(state, 0)}" for state in TaskState)
    console.print(f"workspace {status.workspace}: {counts}")
    console.print(
        f"throughput {status.tasks_per_s:.1f} tasks/s; stale results ignored {status.stale_results}"
    )
    table = Table("worker", "skills", "load", "completed", title=f"{len(status.workers)} workers")
    for worker in status.workers:
        skills = ", ".join(f"{k} {v}" for k, v in worker.info.skills.items())
        name = worker.info.name + (" (suspect: silent, no new work)" if worker.suspect else "")
        table.add_row(name, skills, f"{worker.load}/{worker.info.capacity}", str(worker.completed))
    console.print(table)
    return 0


def _task_table(records: list[TaskRecord]) -> Table:
    table = Table("id", "state", "difficulty", "skill", "attempt", "worker", "why")
    for r in records:
        table.add_row(
            r.id,
            r.state.value,
            str(r.task.difficulty),
            r.task.required_skill,
            str(r.attempt),
            r.worker or "",
            r.error if r.state is TaskState.FAILED and r.error else r.reason,
        )
    return table


def run_tasks(args: argparse.Namespace) -> int:
    """``serendib tasks``: a page of tasks, with why each was assigned or is waiting."""
    state = TaskState(args.state) if args.state else None
    page: TaskPage = asyncio.run(
        ask(args, TaskQuery(state=state, worker=args.worker, after=args.after, limit=args.limit))
    )
    if args.json:
        print(page.model_dump_json(indent=2))
        return 0
    console = _console()
    console.print(_task_table(page.records))
    if page.next_cursor is not None:
        console.print(f"more: --after {page.next_cursor}")
    return 0


def run_task(args: argparse.Namespace) -> int:
    """``serendib task ID``: one task and why it is where it is."""
    page: TaskPage = asyncio.run(ask(args, TaskQuery(task_id=args.id)))
    record = page.records[0]
    if args.json:
        print(record.model_dump_json(indent=2))
        return 0
    console = _console()
    console.print(_task_table([record]))
    if record.output is not None:
        console.print(f"output: {json.dumps(record.output)}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    """``serendib cancel ID``."""
    reply: CancelReply = asyncio.run(ask(args, CancelRequest(task_id=args.id)))
    state = reply.record.state.value
    message = (
        f"task {args.id} cancelled" if reply.cancelled else f"task {args.id} was already {state}"
    )
    _console().print(message)
    return 0


async def offline_report(store_url: str) -> Report:
    """The report of every task in a store, read directly (no manager needed)."""
    store = open_store(store_url)
    await store.open()
    try:
        records, attempts = await store.all_records(), await store.all_attempts()
        quarantined = await store.quarantined()
    finally:
        await store.close()
    return build_report(records, attempts, quarantined=quarantined)


def print_report(report: Report, as_json: bool) -> None:
    """Print a report as tables, or as JSON."""
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_report(report, width=_console().width))


def run_report(args: argparse.Namespace) -> int:
    """``serendib report``: from the running manager, or straight from a store with --store."""
    if args.store:
        report = asyncio.run(offline_report(args.store))
    else:
        report = asyncio.run(ask(args, ReportRequest()))
    print_report(report, args.json)
    return 0


def add_client_commands(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the client commands to the ``serendib`` parser."""
    submit = commands.add_parser("submit", help="submit a YAML or JSON file of tasks")
    submit.add_argument("file", help="tasks.yaml or tasks.json: a list of tasks")
    submit.set_defaults(run=run_submit)

    status = commands.add_parser("status", help="task counts and connected workers")
    status.set_defaults(run=run_status)

    tasks = commands.add_parser("tasks", help="list tasks")
    tasks.add_argument("--state", choices=[s.value for s in TaskState], default=None)
    tasks.add_argument("--worker", default=None)
    tasks.add_argument("--after", type=int, default=None, help="cursor of the next page")
    tasks.add_argument("--limit", type=int, default=50)
    tasks.set_defaults(run=run_tasks)

    task = commands.add_parser("task", help="show one task")
    task.add_argument("id")
    task.set_defaults(run=run_task)

    cancel = commands.add_parser("cancel", help="cancel a task")
    cancel.add_argument("id")
    cancel.set_defaults(run=run_cancel)

    report = commands.add_parser("report", help="success rate and statistics")
    report.add_argument("--store", default=None, help="read this store directly instead")
    report.set_defaults(run=run_report)

    for parser in (submit, status, tasks, task, cancel, report):
        address_args(parser)
        connection_args(parser, heartbeat=False)
        if parser is not submit and parser is not cancel:
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        common(parser)

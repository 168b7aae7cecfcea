"""``serendib submit | status | tasks | task | cancel | report``: talk to a running manager.

One function per command, each a :func:`client_command`; :data:`COMMANDS` lists them for
:mod:`serendib.cli`. A new client command is a function here that asks the manager with
:func:`ask` and prints the reply (as JSON with ``--json``), added to :data:`COMMANDS`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from serendib.agent import Agent
from serendib.cli.options import Link, command, json_option, link_options, option, remote_failure
from serendib.errors import RemoteError, StoreNotFound
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
from serendib.tasks.store import open_store, redact_url
from serendib.tasks.taskfile import load_task_file

__all__ = ["COMMANDS", "ask", "client_command", "offline_report", "print_report"]

REQUEST_TIMEOUT_S = 30.0


async def ask(link: Link, message: object) -> Any:
    """Join the workspace as a client, send one request to its manager, return the reply.

    Raises:
        CommandFailed: The manager's handler raised (an unknown task id: exit 2).
    """
    host, port = link.admin
    client = Agent(
        f"cli-{uuid.uuid4().hex[:8]}",
        link.workspace,
        role="client",
        transport=link.nats,
        admin_ip=host,
        admin_port=port,
        token=link.token,
        nats_options=link.nats_options(),
        join_timeout=5.0,
    )
    await client.start()
    try:
        assert client.admin_name is not None
        return await client.request(client.admin_name, message, timeout=REQUEST_TIMEOUT_S)
    except RemoteError as e:
        raise remote_failure(e) from None
    finally:
        await client.stop()


def client_command(
    name: str, *, examples: Sequence[str]
) -> Callable[[Callable[..., int]], click.Command]:
    """A command that asks the manager: with the connection options (given as ``link``) and
    ``--json`` (given as ``as_json``) after its own."""

    def decorate(callback: Callable[..., int]) -> click.Command:
        return command(name, examples=examples)(
            link_options(heartbeat=False)(json_option(callback))
        )

    return decorate


_UNWRAPPED = 10_000
"""Columns of the console off a terminal: a table piped to a file or a program is not
wrapped at 80 columns, one word per line."""


def _console() -> Console:
    width = None if sys.stdout.isatty() else _UNWRAPPED
    return Console(highlight=False, soft_wrap=True, width=width)


@client_command(
    "submit", examples=["serendib submit tasks.yaml", "serendib submit tasks.json --json"]
)
@click.argument("file")
def submit(file: str, link: Link, as_json: bool) -> int:
    """Submit a YAML or JSON file of tasks (a list), validated whole first.

    FILE is tasks.yaml or tasks.json; a bad entry is reported with its index, line and
    reason, and nothing from the file is submitted.
    """
    tasks = load_task_file(file)
    reply: SubmitReply = asyncio.run(ask(link, SubmitTasks(tasks=tasks)))
    if as_json:
        print(reply.model_dump_json(indent=2))
        return 0
    console = _console()
    console.print(f"submitted {len(reply.accepted)} new tasks from {file}")
    if reply.duplicates:
        console.print(f"{len(reply.duplicates)} already known (same id), left as they were")
    return 0


@client_command(
    "status", examples=["serendib status", "serendib status --admin 10.0.0.5:4222 --json"]
)
def status(link: Link, as_json: bool) -> int:
    """Task counts and connected workers."""
    reply: StatusReply = asyncio.run(ask(link, StatusRequest()))
    if as_json:
        print(reply.model_dump_json(indent=2))
        return 0
    console = _console()
    counts = ", ".join(f"{state.value} {reply.counts.get(state, 0)}" for state in TaskState)
    console.print(f"workspace {reply.workspace}: {counts}")
    console.print(
        f"throughput {reply.tasks_per_s:.1f} tasks/s; stale results ignored {reply.stale_results}"
    )
    table = Table("worker", "skills", "load", "completed", title=f"{len(reply.workers)} workers")
    for worker in reply.workers:
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


@client_command(
    "tasks",
    examples=[
        "serendib tasks --state pending",
        "serendib tasks --worker Senior --limit 100 --after 250 --json",
    ],
)
@option("--state", type=click.Choice([s.value for s in TaskState]), help="only tasks in this state")
@option("--worker", help="only tasks of this worker")
@option("--after", type=int, metavar="CURSOR", help="cursor of the next page")
@option("--limit", type=click.IntRange(1, 10_000), default=50, help="tasks per page")
def tasks(
    state: str | None,
    worker: str | None,
    after: int | None,
    limit: int,
    link: Link,
    as_json: bool,
) -> int:
    """A page of tasks, with why each was assigned or is waiting."""
    query = TaskQuery(
        state=TaskState(state) if state else None, worker=worker, after=after, limit=limit
    )
    page: TaskPage = asyncio.run(ask(link, query))
    if as_json:
        print(page.model_dump_json(indent=2))
        return 0
    console = _console()
    console.print(_task_table(page.records))
    if page.next_cursor is not None:
        console.print(f"more: --after {page.next_cursor}")
    return 0


@client_command("task", examples=["serendib task t4", "serendib task t4 --json"])
@click.argument("task_id", metavar="ID")
def task(task_id: str, link: Link, as_json: bool) -> int:
    """One task, and why it is where it is (exit 2 if there is no such task)."""
    page: TaskPage = asyncio.run(ask(link, TaskQuery(task_id=task_id)))
    record = page.records[0]
    if as_json:
        print(record.model_dump_json(indent=2))
        return 0
    console = _console()
    console.print(_task_table([record]))
    if record.output is not None:
        console.print(f"output: {json.dumps(record.output)}")
    return 0


@client_command("cancel", examples=["serendib cancel t4", "serendib cancel t4 --json"])
@click.argument("task_id", metavar="ID")
def cancel(task_id: str, link: Link, as_json: bool) -> int:
    """Cancel a task that is not final (exit 2 if there is no such task)."""
    reply: CancelReply = asyncio.run(ask(link, CancelRequest(task_id=task_id)))
    if as_json:
        print(reply.model_dump_json(indent=2))
        return 0
    state = reply.record.state.value
    message = (
        f"task {task_id} cancelled" if reply.cancelled else f"task {task_id} was already {state}"
    )
    _console().print(message)
    return 0


async def offline_report(store_url: str) -> Report:
    """The report of every task in a store, read directly (no manager needed).

    Raises:
        StoreNotFound: There is no store at ``store_url`` (none is created).
    """
    store = open_store(store_url, create=False)
    try:
        await store.open()
    except StoreNotFound:
        raise StoreNotFound(redact_url(store_url)) from None  # as the user wrote it
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


@client_command("report", examples=["serendib report", "serendib report --store tasks.db --json"])
@option(
    "--store",
    metavar="URL",
    help="read this task store directly instead of asking the admin (never created)",
)
def report(store: str | None, link: Link, as_json: bool) -> int:
    """The success rate and statistics: from the running manager, or from a store."""
    found = asyncio.run(offline_report(store) if store else ask(link, ReportRequest()))
    print_report(found, as_json)
    return 0


COMMANDS = [submit, status, tasks, task, cancel, report]
"""The client commands, in the order ``serendib --help`` lists them."""

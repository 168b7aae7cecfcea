"""``serendib submit | result | status | tasks | task | cancel | retry | configure | report``: talk
to a running manager (``submit`` and ``result`` through :class:`serendib.AsyncClient`).

One function per command, each a :func:`client_command`; :data:`COMMANDS` lists them for
:mod:`serendib.cli`. A new client command is a function here that asks the manager with
:func:`ask` and prints the reply (as JSON with ``--json``), added to :data:`COMMANDS`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    Progress,
    TaskID,
)
from rich.table import Table

from serendib.agent import Agent
from serendib.cli.options import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandFailed,
    Link,
    Skills,
    command,
    json_option,
    link_options,
    option,
    progress_bar,
    remote_failure,
)
from serendib.client import AsyncClient, SubmitSummary
from serendib.errors import RemoteError, RequestTimeout, StoreNotFound, TaskNotFound
from serendib.messages import summarise
from serendib.tasks.messages import (
    CancelReply,
    CancelRequest,
    ConfigureReply,
    ConfigureRequest,
    Reconfigure,
    ReportRequest,
    RetryReply,
    ScheduleInfo,
    StatusReply,
    StatusRequest,
    TaskOutcome,
    TaskPage,
    TaskQuery,
)
from serendib.tasks.models import TaskRecord, TaskState, WorkerInfo
from serendib.tasks.report import Report, build_report, render_report
from serendib.tasks.store import open_store, redact_url
from serendib.tasks.taskfile import iter_task_file

T = TypeVar("T")

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
        join_timeout=15.0,  # a busy machine may take seconds to welcome a new agent
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


def _client(link: Link, **options: Any) -> AsyncClient:
    return AsyncClient(
        link.admin,
        nats=link.nats,
        workspace=link.workspace,
        token=link.token,
        nats_options=link.nats_options(),
        timeout=REQUEST_TIMEOUT_S,
        **options,
    )


async def _call(link: Link, work: Callable[[AsyncClient], Awaitable[T]], **options: Any) -> T:
    """Run ``work`` with a client connected to the workspace; the manager's answers of the
    user's mistakes (an unknown id) are a command failure (exit 2)."""
    async with _client(link, **options) as client:
        try:
            return await work(client)
        except RemoteError as e:
            raise remote_failure(e) from None


_WAIT_CHUNK = 10_000
"""Ids waited for at once by ``submit --wait``: outcomes are counted and forgotten."""


@client_command(
    "submit",
    examples=[
        "serendib submit tasks.yaml",
        "serendib submit tasks.jsonl --wait",
        "serendib submit tasks.json --json",
    ],
)
@click.argument("file")
@option("--wait", is_flag=True, help="wait until every task has ended; exit 1 if any failed")
@option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="with --wait: give up after S"
)
def submit(file: str, wait: bool, timeout: float | None, link: Link, as_json: bool) -> int:
    """Submit a file of tasks: YAML, JSON or JSON Lines (.jsonl, one task per line).

    Every entry is checked first: a bad one is reported with its index, line and reason, and
    nothing from the file is submitted. A JSON list or JSON Lines file of any size is then
    streamed in bounded memory; ids already known are left as they were. A task naming a
    parent neither known nor earlier in the file (or in the same chunk of 1,000), or in a
    dependency cycle, is refused with why (exit 2; the others run).
    """
    count = sum(1 for _ in iter_task_file(file))  # validated whole, nothing kept
    console = _console()

    async def work(client: AsyncClient) -> tuple[SubmitSummary, Counter[str]]:
        summary = await client.submit_many(iter_task_file(file), watch=False)
        ended: Counter[str] = Counter()
        if wait and not summary.refused:
            with progress_bar(count, not as_json) as (progress, bar):
                await asyncio.wait_for(_await_all(client, file, ended, progress, bar), timeout)
        return summary, ended

    try:
        summary, ended = asyncio.run(_call(link, work))
    except RequestTimeout:
        raise
    except TimeoutError:
        raise CommandFailed(f"not every task of {file} ended within {timeout}s", 1) from None
    failed = ended["failed"] + ended["cancelled"]
    if as_json:
        print(
            json.dumps(
                {"file": file, "accepted": summary.accepted, "duplicates": summary.duplicates}
                | ({"refused": summary.refusals} if summary.refused else {})
                | ({"ended": dict(ended)} if wait and not summary.refused else {}),
                indent=2,
            )
        )
    else:
        console.print(f"submitted {summary.accepted} new tasks from {file}")
        if summary.duplicates:
            console.print(f"{summary.duplicates} already known (same id), left as they were")
        if wait and not summary.refused:
            console.print(", ".join(f"{state} {n}" for state, n in sorted(ended.items())))
    if summary.refused:
        for task_id, why in list(summary.refusals.items())[:10]:
            click.echo(f"serendib submit: refused {task_id}: {why}", err=True)
        if summary.refused > 10:
            click.echo(f"serendib submit: ... {summary.refused - 10} more refused", err=True)
        return EXIT_USAGE
    return EXIT_FAILED if wait and failed else 0


async def _await_all(
    client: AsyncClient, file: str, ended: Counter[str], progress: Progress, bar: TaskID
) -> None:
    """Wait for every task of ``file``, ``_WAIT_CHUNK`` ids at a time, counting outcomes."""
    ids: list[str] = []

    async def drain() -> None:
        async for outcome in client.as_completed(ids):
            ended[outcome.state.value] += 1
            progress.advance(bar)
        client.forget(ids)
        ids.clear()

    for task in iter_task_file(file):  # ids only, a chunk at a time: memory stays bounded
        ids.append(task.id)
        if len(ids) >= _WAIT_CHUNK:
            await drain()
    await drain()
    progress.update(bar, completed=progress.tasks[0].total)  # an id repeated: one task


@client_command(
    "result",
    examples=[
        "serendib result t1",
        "serendib result t1 --wait --timeout 60",
        "serendib result t1 --json",
    ],
)
@click.argument("task_id", metavar="ID")
@option("--wait", is_flag=True, help="wait for the task to end (pushed, never polled)")
@option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="with --wait: give up after S"
)
def result(task_id: str, wait: bool, timeout: float | None, link: Link, as_json: bool) -> int:
    """The output of a task (exit 0), or why it has none: it failed or was cancelled, or has
    not ended (exit 1); exit 2 if there is no such task."""

    async def work(client: AsyncClient) -> TaskOutcome | TaskRecord:
        if wait:
            return await client.outcome(task_id, timeout)
        record = await client.get(task_id)
        return TaskOutcome.of(record) if record.state.is_final else record

    try:
        found = asyncio.run(_call(link, work))
    except RequestTimeout:
        raise
    except TimeoutError:
        raise CommandFailed(f"task {task_id} did not end within {timeout}s", 1) from None
    except TaskNotFound as e:
        raise CommandFailed(str(e), EXIT_USAGE) from None
    if isinstance(found, TaskRecord):
        if as_json:
            print(found.model_dump_json(indent=2))
        else:
            _console().print(f"task {task_id} has not ended: {found.state.value} ({found.reason})")
        return EXIT_FAILED
    if as_json:
        print(found.model_dump_json(indent=2))
    elif found.succeeded:
        print(json.dumps(found.output))
    else:
        _console().print(f"task {task_id} {found.state.value}: {found.error or 'no reason given'}")
    return 0 if found.succeeded else EXIT_FAILED


@client_command(
    "configure",
    examples=[
        "serendib configure Senior --capacity 8",
        "serendib configure gpu-1 --label gpu --label region=eu",
        "serendib configure Junior --skill general=5,sql=3 --prefetch 0",
    ],
)
@click.argument("worker", metavar="WORKER")
@option("--skill", type=Skills(), help="its skills from now on: a level (7) or python=7,sql=3")
@option("--label", multiple=True, help="its labels from now on (repeatable)")
@option("--no-labels", is_flag=True, help="remove every label")
@option("--capacity", type=click.IntRange(1, 100_000), help="attempts it runs at once")
@option(
    "--prefetch",
    type=click.IntRange(0, 10_000),
    help="attempts it keeps ready beyond those it runs (fixed from now on)",
)
def configure(
    worker: str,
    skill: dict[str, int] | None,
    label: tuple[str, ...],
    no_labels: bool,
    capacity: int | None,
    prefetch: int | None,
    link: Link,
    as_json: bool,
) -> int:
    """Change a running worker's skills, labels, capacity or prefetch; the manager places
    pending work again at once (exit 2 if no worker of that name is connected)."""
    labels = () if no_labels else (label or None)
    if skill is None and labels is None and capacity is None and prefetch is None:
        raise click.UsageError("nothing to change: give --skill, --label, --capacity or --prefetch")
    try:
        change = Reconfigure(skills=skill, labels=labels, capacity=capacity, prefetch=prefetch)
    except ValidationError as e:
        raise click.UsageError(summarise(e)) from None
    reply: ConfigureReply = asyncio.run(ask(link, ConfigureRequest(worker=worker, change=change)))
    if as_json:
        print(reply.info.model_dump_json(indent=2))
        return 0
    _console().print(f"worker {worker}: {_profile(reply.info)}")
    return 0


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str | None) -> float | None:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``) or an ISO
    8601 time, as seconds since the epoch."""
    if text is None:
        return None
    unit = _SINCE_UNITS.get(text[-1:])
    try:
        if unit is not None:
            return time.time() - float(text[:-1]) * unit
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration (90s, 15m, 2h, 1d) or an ISO time, got {text!r}",
            param_hint="'--since'",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a user means it
    return moment.timestamp()


@client_command(
    "retry",
    examples=[
        "serendib retry t3 t7",
        "serendib retry --state failed --since 2h",
        "serendib retry --state cancelled --json",
    ],
)
@click.argument("task_ids", metavar="[ID]...", nargs=-1)
@option(
    "--state",
    type=click.Choice(["failed", "cancelled"]),
    help="every task in this state (with the IDs given, if any)",
)
@option(
    "--since", help="with --state: only those that ended since: 90s, 15m, 2h, 1d or an ISO time"
)
def retry(
    task_ids: tuple[str, ...], state: str | None, since: str | None, link: Link, as_json: bool
) -> int:
    """Run failed or cancelled tasks again as new attempts, keeping their history (the report
    counts replays); exit 2 if an id is unknown, 1 if a task was refused (it succeeded or has
    not ended)."""
    if not task_ids and state is None:
        raise click.UsageError("give task IDs, or --state failed|cancelled")
    if since is not None and state is None:
        raise click.UsageError("--since goes with --state")
    after = _since(since)

    async def work(client: AsyncClient) -> RetryReply:
        ids = list(task_ids)
        if state is not None:
            cursor = None
            while True:
                page = await client.list(state=state, after=cursor, limit=10_000)
                ids += [
                    r.id for r in page.records if after is None or (r.finished_at or 0) >= after
                ]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        if not ids:
            return RetryReply()
        return await client.retry(ids)

    reply = asyncio.run(_call(link, work))
    if as_json:
        print(reply.model_dump_json(indent=2))
    else:
        console = _console()
        console.print(f"{len(reply.retried)} tasks run again")
        for task_id, why in reply.refused.items():
            console.print(f"not {task_id}: {why}")
        if reply.unknown:
            console.print(f"unknown: {', '.join(reply.unknown)}")
    if reply.unknown:
        return EXIT_USAGE
    return EXIT_FAILED if reply.refused else 0


def _profile(info: WorkerInfo) -> str:
    parts = [", ".join(f"{k} {v}" for k, v in info.skills.items()), f"capacity {info.capacity}"]
    if info.prefetch:
        parts.append(f"prefetch {info.prefetch}")
    if info.labels:
        parts.append("labels " + ",".join(info.labels))
    return "; ".join(parts)


@client_command(
    "schedules",
    examples=[
        "serendib schedules",
        "serendib schedules --add nightly.yaml",
        "serendib schedules --remove nightly --json",
    ],
)
@option("--add", "add", metavar="FILE", help="add (or replace) the schedules of this file")
@option("--remove", "remove", metavar="NAME", multiple=True, help="remove a schedule (repeatable)")
def schedules(add: str | None, remove: tuple[str, ...], link: Link, as_json: bool) -> int:
    """The manager's recurring work: each schedule's cron, when it last fired and fires next
    (exit 2 for a bad file, 1 if a schedule to remove is unknown)."""
    from serendib.cli.run import load_schedules

    adding = load_schedules(add) if add else []

    async def work(client: AsyncClient) -> tuple[list[ScheduleInfo], list[str]]:
        for schedule in adding:
            await client.add_schedule(schedule)
        unknown = [name for name in remove if not await client.remove_schedule(name)]
        return await client.schedules(), unknown

    found, unknown = asyncio.run(_call(link, work))
    if as_json:
        listing = [info.model_dump(mode="json") for info in found]
        print(json.dumps({"schedules": listing, "unknown": unknown}, indent=2))
    else:
        table = Table("name", "cron", "task", "last fired", "next", title=f"{len(found)} schedules")
        for info in found:
            task = ", ".join(f"{k}={v}" for k, v in info.schedule.task.items())
            table.add_row(
                info.schedule.name,
                info.schedule.cron,
                task,
                _when(info.last_fired),
                _when(info.next_at),
            )
        console = _console()
        console.print(table)
        for name in unknown:
            console.print(f"no schedule named {name!r}")
    return EXIT_FAILED if unknown else 0


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


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
    table = Table(
        "worker",
        "skills",
        "kinds",
        "labels",
        "load",
        "completed",
        title=f"{len(reply.workers)} workers",
    )
    for worker in reply.workers:
        info = worker.info
        skills = ", ".join(f"{k} {v}" for k, v in info.skills.items())
        name = info.name + (" (suspect: silent, no new work)" if worker.suspect else "")
        kinds = "any" if info.kinds is None else ", ".join(info.kinds)
        running = min(worker.load, info.capacity)
        load = f"{running}/{info.capacity}" + (
            f" +{worker.load - running} ready" if worker.load > running else ""
        )
        table.add_row(name, skills, kinds, ", ".join(info.labels), load, str(worker.completed))
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
    children = page.children or []
    if as_json:
        print(json.dumps(record.model_dump(mode="json") | {"children": children}, indent=2))
        return 0
    console = _console()
    console.print(_task_table([record]))
    if record.task.depends_on:
        console.print("parents: " + ", ".join(record.task.depends_on), markup=False)
    if children:
        console.print("children: " + ", ".join(children), markup=False)
    if record.output is not None:
        console.print(f"output: {json.dumps(record.output)}", markup=False)
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


COMMANDS = [submit, result, status, tasks, task, cancel, retry, schedules, configure, report]
"""The client commands, in the order ``serendib --help`` lists them."""

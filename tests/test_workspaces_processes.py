"""Several workspaces on one nats-server and one PostgreSQL (a schema each), in real processes:
a manager per workspace, and one ``serendib worker`` process serving two of them over one
shared connection. Each workspace's tasks run for its own manager only; nothing crosses."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serendib import AsyncClient
from serendib.tasks.models import Task, TaskState
from tests.faults._cluster import Cluster
from tests.helpers import until
from tests.processes import CONSOLE, Process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

POSTGRES_ENV = "SERENDIB_TEST_POSTGRES_URL"
TASKS = 40
HANDLER = '''
async def where(task, context):
    """Which workspace's worker ran the task, and the payload it was given."""
    return {"workspace": context.worker.workspace_id, "payload": task.payload}
'''


@pytest.fixture
def postgres() -> Iterator[tuple[str, list[str]]]:
    """The test PostgreSQL's URL and a list the test adds the schemas it uses to (dropped
    after)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set, and CI must test PostgreSQL")
        pytest.skip(f"PostgreSQL not tested: set {POSTGRES_ENV}=postgresql://...")
    schemas: list[str] = []
    yield base, schemas
    import psycopg

    with psycopg.connect(base, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _store(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


async def test_two_workspaces_on_one_broker_and_database_stay_apart(
    tmp_path: Path, postgres: tuple[str, list[str]]
) -> None:
    base, schemas = postgres
    suffix = uuid.uuid4().hex[:8]
    one, two = f"alpha-{suffix}", f"beta-{suffix}"
    schemas += [f"ws_alpha_{suffix}", f"ws_beta_{suffix}"]
    (tmp_path / "where.py").write_text(HANDLER)
    broker = Cluster(tmp_path, size=1)
    await broker.start()
    url = broker.urls()
    processes: list[Process] = []

    def start(log: str, *args: str) -> Process:
        process = Process(tmp_path / log, *args, command=CONSOLE, cwd=tmp_path)
        processes.append(process)
        return process

    try:
        for workspace, schema in zip((one, two), schemas, strict=True):
            admin = start(
                f"admin-{workspace}.log",
                "admin", "--nats", url, "--workspace", workspace,
                "--store", _store(base, schema),
            )  # fmt: skip
            admin.wait_for("admin of workspace", 60)
        shared = start(
            "shared.log",
            "worker", "--name", "w1", "--workspace", one, "--workspace", two,
            "--nats", url, "--skill", "10", "--capacity", "2", "--time-scale", "0",
            "--handler", "where:where",
        )  # fmt: skip
        # A worker of workspace two only, with a kind nobody in workspace one has.
        solo = start(
            "solo.log",
            "worker", "--name", "only-two", "--workspace", two, "--nats", url,
            "--skill", "10", "--time-scale", "0", "--handler", "only_two=where:where",
        )  # fmt: skip
        shared.wait_for(f"joined workspace '{one}'", 60)
        shared.wait_for(f"joined workspace '{two}'", 60)
        solo.wait_for("joined workspace", 60)

        # One connection for the worker process serving both workspaces.
        names = broker.nodes[0].connections()
        assert f"{one}+{two}/w1" in names
        assert f"{one}/w1" not in names
        assert f"{two}/w1" not in names

        outcomes = {}
        for workspace in (one, two):
            async with AsyncClient(nats=url, workspace=workspace, timeout=30) as client:
                # The same ids in both workspaces: each is its own workspace's task.
                mark = {"from": workspace}
                tasks = [
                    Task(id=f"t{i}", kind="where", difficulty=1 + i % 10, payload=mark)
                    for i in range(TASKS)
                ]
                tasks.append(Task(id="only-two", kind="only_two", difficulty=1, payload=mark))
                handles = await client.submit(tasks)
                outcomes[workspace] = await client.wait(
                    [h.id for h in handles if h.id != "only-two"], timeout=60
                )
                status = await client.status()
                workers = {w.info.name for w in status.workers}
                if workspace == one:
                    # Workspace two's only_two worker is not one of this workspace's: the
                    # task waits, saying why.
                    assert workers == {"w1"}

                    async def says_why() -> bool:
                        record = await client.get("only-two")
                        assert record.state is TaskState.PENDING
                        return "only_two" in record.reason

                    await until(says_why, 30, "the stray task's reason", every=0.1)
                else:
                    assert workers == {"w1", "only-two"}
                    outcome = await client.outcome("only-two", timeout=60)
                    assert outcome.state is TaskState.SUCCEEDED
                    assert outcome.worker == "only-two"
                    assert outcome.output == {"workspace": two, "payload": {"from": two}}
                assert status.counts.get(TaskState.SUCCEEDED, 0) >= TASKS

        for workspace, told in outcomes.items():
            assert len(told) == TASKS
            for outcome in told.values():
                assert outcome.state is TaskState.SUCCEEDED
                assert outcome.worker == "w1"
                # Run by the worker of its own workspace, on its own payload.
                assert outcome.output == {"workspace": workspace, "payload": {"from": workspace}}

        # Each schema holds its own workspace's tasks only.
        import psycopg

        with psycopg.connect(base, autocommit=True) as connection:
            for workspace, schema in zip((one, two), schemas, strict=True):
                rows = connection.execute(f'SELECT task FROM "{schema}".serendib_tasks').fetchall()
                assert len(rows) == TASKS + 1
                assert all(_payload(row[0]) == {"from": workspace} for row in rows)
    finally:
        for process in reversed(processes):
            process.stop(signal.SIGTERM)
        broker.stop()
    for process in processes:
        assert "Traceback" not in process.log.read_text(), process.log.read_text()


def _payload(task: object) -> object:
    import json

    found = json.loads(task) if isinstance(task, str) else task
    assert isinstance(found, dict)
    return found.get("payload")

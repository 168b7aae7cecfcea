"""Two standby admins on one PostgreSQL store and one nats-server: the leader lost mid-run.

Real processes: a nats-server, two ``serendib admin --standby --nats ... --store
postgresql://...?schema=...`` (the first leads, the second waits), three ``serendib worker``
processes and ``serendib submit``. A quarter of the way through the run the leader is lost:

- SIGKILL: the standby takes over within 5 s of the kill (the figure is recorded), the
  workers follow it without restarting, and every task succeeds, counted once.
- SIGSTOP (a leader paused, or its host cut off for a while): the standby takes over; the old
  leader is resumed (SIGCONT) and writes nothing more to the store (an audit trigger records
  every row written and by which connection, named after its leader's epoch): it exits 4,
  saying it lost the lead and to whom; and every task succeeds, counted once.

And what cannot work is refused at once: ``--standby`` with the embedded broker (it cannot be
shared) or with a SQLite store exits 2 with one line saying what to use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serendib.transports.embedded import EmbeddedBroker
from tests.faults._run import HEARTBEAT, Run
from tests.helpers import until
from tests.processes import Process, run

pytestmark = pytest.mark.slow

TASKS = 1000
TAKEOVER_S = 5.0
"""The promise: a standby leads within this long of the leader's loss."""
WORKSPACE = "standby"


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URL of a PostgreSQL store in a schema of its own, and the schema."""
    base = os.environ.get("SERENDIB_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail("SERENDIB_TEST_POSTGRES_URL is not set, and CI must test PostgreSQL")
        pytest.skip("PostgreSQL not tested: set SERENDIB_TEST_POSTGRES_URL=postgresql://...")
    schema = f"standby_{uuid.uuid4().hex[:10]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}", schema
    import psycopg

    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _sql(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(os.environ["SERENDIB_TEST_POSTGRES_URL"], autocommit=True) as conn:
        cursor = conn.execute(query, params or None)  # no parameters: a script may run
        return cursor.fetchall() if cursor.description else []


class Pair:
    """Two standby admins of one workspace, and the run they share."""

    def __init__(self, tmp: Path, nats: str, store: str) -> None:
        self.run = Run(tmp, store, WORKSPACE)
        self.run.where = ["--nats", nats, "--workspace", WORKSPACE]
        self.nats = nats
        self.admins: list[Process] = []

    def start_admin(self) -> Process:
        admin = Process(
            self.run.tmp / f"admin-{len(self.admins)}.log",
            "admin",
            "--standby",
            "--nats",
            self.nats,
            "--store",
            self.run.store,
            "--workspace",
            WORKSPACE,
            "--heartbeat",
            HEARTBEAT,
        )
        self.admins.append(admin)
        return admin

    async def start(self) -> tuple[Process, Process]:
        """The leader (the first admin, serving) and the standby (waiting), and workers."""
        leader = self.start_admin()
        await asyncio.to_thread(leader.wait_for, "admin of workspace")
        standby = self.start_admin()
        await asyncio.to_thread(standby.wait_for, "standby for workspace")
        crew = ["--skill", "10", "--capacity", "4", "--time-scale", "0.02"]
        for i in range(3):
            self.run.start_worker(f"w{i}", *crew)
        for worker in self.run.workers.values():
            await asyncio.to_thread(worker.wait_for, "joined workspace")
        return leader, standby

    def stop_all(self) -> None:
        for admin in self.admins:
            if admin.proc.poll() is None:
                admin.proc.send_signal(signal.SIGCONT)
        self.run.admin = None
        self.run.stop_all()
        for admin in self.admins:
            admin.stop(signal.SIGTERM)


async def _took_over(standby: Process, since: float) -> float:
    """Seconds from ``since`` until the standby serves the workspace (it logs so)."""

    def serving() -> bool:
        if standby.proc.poll() is not None:
            raise AssertionError(f"the standby exited:\n{standby.log.read_text()}")
        return "admin of workspace" in standby.log.read_text()

    await until(serving, 30, "the standby to take over", every=0.01)
    return time.monotonic() - since


def _workers_never_restarted(run: Run) -> None:
    for name, worker in run.workers.items():
        assert worker.proc.poll() is None, f"{name} exited"
        assert worker.log.read_text().count("joined workspace") == 1, name


async def test_the_leader_killed_mid_run_a_standby_takes_over_within_5_s(
    tmp_path: Path,
    nats_server: EmbeddedBroker,
    postgres: tuple[str, str],
    record_property: Any,
) -> None:
    pair = Pair(tmp_path, nats_server.url, postgres[0])
    run = pair.run
    try:
        leader, standby = await pair.start()
        run.submit(TASKS)
        await run.wait_final(TASKS // 4)
        killed = time.monotonic()
        leader.stop(signal.SIGKILL)
        done_at_kill = await run.final()

        takeover = await _took_over(standby, killed)
        record_property("takeover_s", round(takeover, 3))
        print(f"standby took over {takeover:.2f}s after the leader was killed")
        assert takeover < TAKEOVER_S, standby.log.read_text()
        assert done_at_kill < TASKS  # mid-run
        await run.wait_all_final()
        _workers_never_restarted(run)
        log = standby.log.read_text()
        assert "took the lead of workspace 'standby' (epoch 2)" in log
        assert "resumed" in log
    finally:
        pair.stop_all()
    await run.verdict()


_AUDIT = """
CREATE TABLE "{s}".audit (app text NOT NULL, at double precision NOT NULL);
CREATE FUNCTION "{s}".audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO "{s}".audit VALUES (current_setting('application_name'),
        extract(epoch FROM clock_timestamp()));
    RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON "{s}".serendib_tasks
    FOR EACH ROW EXECUTE FUNCTION "{s}".audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON "{s}".serendib_attempts
    FOR EACH ROW EXECUTE FUNCTION "{s}".audit();
"""


def _written_by(schema: str, epoch: int) -> int:
    """Rows of tasks and attempts committed by the leader of ``epoch`` (its writer's name)."""
    rows = _sql(
        f'SELECT count(*) FROM "{schema}".audit WHERE app = %s',
        (f"serendib {WORKSPACE} epoch {epoch}",),
    )
    return int(rows[0][0])


def _is_stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state in ("T", "t")


async def test_a_paused_leader_resumed_after_a_standby_took_over_writes_nothing_and_exits(
    tmp_path: Path,
    nats_server: EmbeddedBroker,
    postgres: tuple[str, str],
    record_property: Any,
) -> None:
    store, schema = postgres
    pair = Pair(tmp_path, nats_server.url, store)
    run = pair.run
    try:
        leader, standby = await pair.start()
        _sql(_AUDIT.format(s=schema))
        run.submit(TASKS)
        await run.wait_final(TASKS // 4)
        paused = time.monotonic()
        leader.proc.send_signal(signal.SIGSTOP)
        await until(lambda: _is_stopped(leader.proc.pid), 5, "the leader to stop")
        said = len(leader.log.read_text())

        takeover = await _took_over(standby, paused)
        record_property("takeover_s", round(takeover, 3))
        print(f"standby took over {takeover:.2f}s after the leader was paused")
        assert takeover < TAKEOVER_S, standby.log.read_text()
        # The new leader runs tasks while the old one is paused.
        final = await run.final()
        await run.wait_final(final + 50)
        before = _written_by(schema, 1)
        assert before > 0
        assert _written_by(schema, 2) > 0

        leader.proc.send_signal(signal.SIGCONT)
        code = await asyncio.to_thread(leader.proc.wait, 30)
        after = leader.log.read_text()[said:]
        assert code == 4, after
        assert "lost the lead of workspace 'standby' to " in after
        assert "(epoch 2); stopping" in after
        # It acted on nothing it found waiting (a summary of what it did before may follow).
        assert " succeeded on " not in after
        assert _written_by(schema, 1) == before  # not a single row more

        await run.wait_all_final()
        _workers_never_restarted(run)
    finally:
        pair.stop_all()
    await run.verdict()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--store", "postgresql://nobody@127.0.0.1:1/none"], "--nats"),
        (["--nats", "nats://127.0.0.1:1", "--store", "tasks.db"], "PostgreSQL"),
    ],
    ids=["embedded-broker", "sqlite"],
)
def test_a_standby_without_a_shared_broker_or_store_is_refused_in_one_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    done = run("admin", "--standby", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--standby" in lines[0]
    assert says in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing started

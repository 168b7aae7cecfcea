"""The manager SIGKILLed mid-run and restarted on the same store (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._run import Run

TASKS = 300


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "tasks.db")
        return
    base = os.environ.get("SERENDIB_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail("SERENDIB_TEST_POSTGRES_URL is not set, and CI must test PostgreSQL")
        pytest.skip("PostgreSQL not tested: set SERENDIB_TEST_POSTGRES_URL=postgresql://...")
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_manager_killed_mid_run_resumes_on_the_same_store(
    tmp_path: Path, store_url: str
) -> None:
    run = Run(tmp_path, store_url)
    run.start_admin()
    for i in range(3):
        run.start_worker(f"w{i}", "--skill", "10", "--capacity", "4", "--time-scale", "0.01")
    run.submit(TASKS)
    try:
        await run.wait_final(TASKS // 4)
        assert run.admin is not None
        run.admin.stop(signal.SIGKILL)
        restarted = run.start_admin()
        await run.wait_all_final()
        assert "resumed" in restarted.log.read_text()
    finally:
        run.stop_all()
    await run.verdict()

"""The dashboard's JSON API, over HTTP, against a running manager with workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serendib.dashboard import DashboardServer
from serendib.errors import DashboardError
from serendib.tasks.models import Task
from tests.dashboard.conftest import DEADLINE, System, gate_task, running_system, until

IMPOSSIBLE = 10  # harder than the most skilled worker (Senior, 9)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with running_system(tmp_path / "tasks.db") as running:
        yield running


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with system.client() as http:
        yield http


def impossible(task_id: str) -> Task:
    return Task(id=task_id, difficulty=IMPOSSIBLE, description=f"too hard {task_id}")


async def stored_as(system: System, task_id: str, state: str) -> bool:
    return await system.state_of(task_id) == state


# --- workers ----------------------------------------------------------------------------------


async def test_workers_show_skills_capacity_load_and_connection(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(gate_task("a", difficulty=2))
    await until(lambda: "a" in system.gates.started, "task a to start")

    response = await client.get("/api/workers")

    assert response.status_code == 200
    by_name = {w["name"]: w for w in response.json()}
    assert list(by_name) == ["Junior", "Intermediate", "Senior"]
    assert by_name["Junior"] == {
        "name": "Junior",
        "skills": {"general": 3},
        "labels": [],
        "kinds": ["gate", "simulate"],
        "capacity": 2,
        "load": 1,
        "status": "connected",
        "succeeded": 0,
        "failed": 0,
        "success_rate": None,
    }
    assert by_name["Senior"]["load"] == 0


async def test_a_worker_that_leaves_is_shown_as_lost_with_its_skills(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.workers[0].stop()
    await until(lambda: "Junior" not in system.manager.workers, "Junior to leave")

    workers = (await client.get("/api/workers")).json()

    junior = next(w for w in workers if w["name"] == "Junior")
    assert junior["status"] == "lost"
    assert junior["skills"] == {"general": 3}
    assert junior["load"] == 0
    assert [w["name"] for w in workers][-1] == "Junior"


async def test_worker_success_rate_counts_each_ended_attempt(
    system: System, client: httpx.AsyncClient
) -> None:
    # Fails on its first attempt (Junior, the least skilled eligible), then escalates.
    await system.submit(gate_task("flaky", difficulty=2, payload={"fail_attempts": [1]}))
    system.gates.open("flaky")
    await until(lambda: system.manager.stats.succeeded == 1, "flaky to succeed")

    by_name = {w["name"]: w for w in (await client.get("/api/workers")).json()}

    assert (by_name["Junior"]["succeeded"], by_name["Junior"]["failed"]) == (0, 1)
    assert by_name["Junior"]["success_rate"] == 0.0
    assert (by_name["Intermediate"]["succeeded"], by_name["Intermediate"]["failed"]) == (1, 0)
    assert by_name["Intermediate"]["success_rate"] == 1.0


# --- the task table ---------------------------------------------------------------------------


async def test_tasks_page_through_the_store_with_the_keyset_cursor(
    system: System, client: httpx.AsyncClient
) -> None:
    ids = [f"p{i:02d}" for i in range(25)]
    await system.submit(*(impossible(i) for i in ids))

    seen: list[str] = []
    cursors: list[int | None] = []
    after: int | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 10} | ({"after": after} if after is not None else {})
        page = (await client.get("/api/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        after = page["next_cursor"]
        cursors.append(after)
        if after is None:
            break

    assert seen == ids
    assert len(cursors) == 3
    assert cursors[-1] is None


async def test_tasks_filter_by_state_and_by_worker(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(impossible("waits"), gate_task("hard1", 8), gate_task("hard2", 8))
    await until(lambda: len(system.gates.started) == 2, "both hard tasks to start")
    system.gates.open("hard1")
    await until(lambda: system.manager.stats.succeeded == 1, "hard1 to succeed")

    async def ids(**params: str) -> list[str]:
        page = (await client.get("/api/tasks", params=params)).json()
        return [t["id"] for t in page["tasks"]]

    await until(lambda: stored_as(system, "hard1", "succeeded"), "hard1 to be stored")
    assert await ids(state="pending") == ["waits"]
    assert await ids(worker="Senior") == ["hard1", "hard2"]
    assert await ids(worker="Senior", state="succeeded") == ["hard1"]
    assert await ids(worker="Junior") == []
    pending = (await client.get("/api/tasks", params={"state": "pending"})).json()["tasks"][0]
    assert pending["reason"].startswith("waiting for a worker with general >= 10")


# --- one task ---------------------------------------------------------------------------------


async def test_a_waiting_task_says_why_it_waits(system: System, client: httpx.AsyncClient) -> None:
    await system.submit(impossible("hard"))

    detail = (await client.get("/api/tasks/hard")).json()

    assert detail["row"]["state"] == "pending"
    assert detail["waiting_reason"] == (
        "waiting for a worker with general >= 10 (most skilled connected: general 9)"
    )
    assert detail["attempts"] == []
    assert detail["task"]["difficulty"] == IMPOSSIBLE


async def test_a_task_history_lists_attempts_workers_timings_and_errors(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(gate_task("flaky", difficulty=2, payload={"fail_attempts": [1]}))
    system.gates.open("flaky")

    await until(lambda: stored_as(system, "flaky", "succeeded"), "flaky to be stored")
    detail = (await client.get("/api/tasks/flaky")).json()

    first, second = detail["attempts"]
    assert (first["worker"], first["outcome"], first["escalated"]) == ("Junior", "failed", False)
    assert first["error"] == "attempt 1 told to fail"
    assert (second["worker"], second["outcome"], second["escalated"]) == (
        "Intermediate",
        "succeeded",
        True,
    )
    for attempt in (first, second):
        assert attempt["queued_s"] >= 0
        assert attempt["run_s"] >= 0
    assert detail["output"] == {"worker": "Intermediate", "attempt": 2}
    assert detail["waiting_reason"] is None
    assert detail["total_s"] >= 0


async def test_a_task_id_with_a_slash_is_found_and_cancelled(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(impossible("batch/7"))

    found = await client.get("/api/tasks/batch%2F7")
    cancelled = await client.post("/api/tasks/batch%2F7/cancel")

    assert found.json()["task"]["id"] == "batch/7"
    assert cancelled.json()["cancelled"] is True


# --- submitting and cancelling ----------------------------------------------------------------


async def test_submit_stores_new_tasks_and_reports_known_ids_as_duplicates(
    system: System, client: httpx.AsyncClient
) -> None:
    body = {"tasks": [{"id": "n1", "difficulty": IMPOSSIBLE}, {"id": 2, "difficulty": 3}]}

    first = await client.post("/api/tasks", json=body)
    again = await client.post("/api/tasks", json={"tasks": [{"id": "n1", "difficulty": 1}]})

    assert first.status_code == 200
    assert first.json() == {"accepted": ["n1", "2"], "duplicates": []}
    assert again.json() == {"accepted": [], "duplicates": ["n1"]}
    await until(lambda: stored_as(system, "n1", "pending"), "n1 to be stored")
    assert (await client.get("/api/tasks/n1")).json()["row"]["state"] == "pending"


async def test_cancel_ends_a_pending_or_running_task_once(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(impossible("waiting"), gate_task("busy"))
    await until(lambda: "busy" in system.gates.started, "busy to start")

    pending = await client.post("/api/tasks/waiting/cancel")
    running = await client.post("/api/tasks/busy/cancel")
    again = await client.post("/api/tasks/waiting/cancel")

    assert pending.json()["cancelled"] is True
    assert pending.json()["task"]["state"] == "cancelled"
    assert running.json()["cancelled"] is True
    assert again.status_code == 200
    assert again.json()["cancelled"] is False
    assert again.json()["task"]["state"] == "cancelled"


# --- stats, events, description ---------------------------------------------------------------


async def test_stats_count_tasks_by_state_with_the_success_rate(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(
        gate_task("ok"), gate_task("bad", payload={"fail_attempts": [1]}, max_attempts=1)
    )
    await system.submit(impossible("waits"))
    system.gates.open("ok", "bad")
    await until(lambda: system.manager.final_count == 2, "ok and bad to end")

    async def counted() -> bool:
        stats = (await client.get("/api/stats")).json()
        return bool(stats["counts"]["failed"] == 1 and stats["counts"]["succeeded"] == 1)

    await until(counted, "counts to show the results")
    stats = (await client.get("/api/stats")).json()

    assert stats["counts"] == {
        "pending": 1,
        "assigned": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert stats["total"] == 3
    assert stats["success_rate"] == 0.5
    assert stats["counters"]["submitted"] == 3
    assert stats["counters"]["assignments"] == 2
    assert stats["running"] is True
    assert stats["workspace"] == "dash"
    assert sum(stats["throughput"]["succeeded"]) == 1
    assert sum(stats["throughput"]["failed"]) == 1


async def _updates(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event == "update":
            yield json.loads(line.partition(":")[2])


async def test_the_event_stream_sends_an_update_when_a_task_finishes(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(gate_task("slow"))
    await until(lambda: "slow" in system.gates.started, "slow to start")

    async with asyncio.timeout(DEADLINE), client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        updates = _updates(response)
        first = await anext(updates)
        assert {w["name"] for w in first["workers"]} == {"Junior", "Intermediate", "Senior"}
        system.gates.open("slow")
        async for update in updates:
            if update["stats"]["counts"]["succeeded"] == 1:
                assert update["tasks_version"] > first["tasks_version"]
                break


async def test_stopping_the_server_ends_its_event_streams(tmp_path: Path) -> None:
    async with running_system(tmp_path / "t.db") as system, system.client() as client:
        async with asyncio.timeout(DEADLINE), client.stream("GET", "/api/events") as response:
            updates = _updates(response)
            await anext(updates)
            await system.server.stop()
            remaining = [update async for update in updates]
        assert len(remaining) <= 1


# --- a stopped manager, a taken port ----------------------------------------------------------


async def test_a_stopped_manager_is_503_with_the_reason(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.manager.stop()

    read = await client.get("/api/tasks")
    submit = await client.post("/api/tasks", json={"tasks": [{"id": "late", "difficulty": 1}]})
    cancel = await client.post("/api/tasks/late/cancel")

    assert read.status_code == 503
    assert "closed" in read.json()["error"]
    assert submit.status_code == 503
    assert "not running" in submit.json()["error"]
    assert cancel.status_code == 503


async def test_a_port_in_use_is_refused_with_the_reason(system: System) -> None:
    second = DashboardServer(system.manager, "127.0.0.1", system.server.port)

    with pytest.raises(DashboardError, match=r"cannot serve the dashboard on 127\.0\.0\.1"):
        await second.start()
    await second.stop()

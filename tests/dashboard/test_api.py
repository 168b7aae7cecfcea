"""The dashboard's JSON API, over HTTP, against a running manager with workers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serendib.dashboard import DashboardServer
from serendib.errors import DashboardError
from serendib.tasks.models import Schedule, Task
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
    assert first.json() == {"accepted": ["n1", "2"], "duplicates": [], "rejected": {}}
    assert again.json() == {"accepted": [], "duplicates": ["n1"], "rejected": {}}
    await until(lambda: stored_as(system, "n1", "pending"), "n1 to be stored")
    assert (await client.get("/api/tasks/n1")).json()["row"]["state"] == "pending"


async def test_a_pipeline_through_the_api_shows_parents_and_children_and_refuses_cycles(
    system: System, client: httpx.AsyncClient
) -> None:
    body = {
        "tasks": [
            {"id": "root", "difficulty": IMPOSSIBLE},
            {"id": "leaf", "difficulty": 1, "depends_on": ["root"], "group": "team-a"},
            {"id": "ring-1", "difficulty": 1, "depends_on": ["ring-2"]},
            {"id": "ring-2", "difficulty": 1, "depends_on": ["ring-1"]},
        ]
    }

    submitted = await client.post("/api/tasks", json=body)

    assert submitted.json()["accepted"] == ["root", "leaf"]
    assert submitted.json()["rejected"] == {
        "ring-1": "in a dependency cycle: ring-1 -> ring-2 -> ring-1",
        "ring-2": "in a dependency cycle: ring-1 -> ring-2 -> ring-1",
    }
    await until(lambda: stored_as(system, "leaf", "pending"), "leaf to be stored")
    root = (await client.get("/api/tasks/root")).json()
    leaf = (await client.get("/api/tasks/leaf")).json()
    assert (root["parents"], root["children"]) == ([], ["leaf"])
    assert (leaf["parents"], leaf["children"]) == (["root"], [])
    assert leaf["waiting_reason"] == "waiting for parent root (0 of 1 done)"


async def test_the_schedules_are_listed_with_when_each_fires_next(
    system: System, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/schedules")).json() == []
    await system.manager.add_schedule(
        Schedule(name="hourly", cron="0 * * * *", task={"difficulty": 2})
    )

    [listed] = (await client.get("/api/schedules")).json()

    assert (listed["name"], listed["cron"], listed["task"]) == (
        "hourly",
        "0 * * * *",
        {"difficulty": 2},
    )
    assert listed["next_at"] > listed["last_fired"]


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


# --- running tasks, search and sort -----------------------------------------------------------


async def test_a_started_task_is_counted_and_listed_as_running(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(gate_task("busy"), impossible("waits"))
    await until(lambda: stored_as(system, "busy", "running"), "busy to be stored as running")

    async def counted() -> bool:
        return bool((await client.get("/api/stats")).json()["counts"]["running"] == 1)

    await until(counted, "the running task to be counted")
    running = (await client.get("/api/tasks", params={"state": "running"})).json()["tasks"]

    assert [(t["id"], t["worker"], t["kind"]) for t in running] == [("busy", "Junior", "gate")]


async def test_the_task_table_is_searched_filtered_and_sorted_on_the_server(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(
        Task(id="etl/1", difficulty=IMPOSSIBLE, kind="etl", description="Nightly load"),
        Task(id="etl/2", difficulty=IMPOSSIBLE, kind="etl", description="hourly LOAD"),
        Task(id="api-9", difficulty=IMPOSSIBLE, kind="web", description="render page"),
        gate_task("done-1"),
        gate_task("done-2"),
    )
    system.gates.open("done-2")
    await until(lambda: stored_as(system, "done-2", "succeeded"), "done-2 to be stored")
    system.gates.open("done-1")
    await until(lambda: stored_as(system, "done-1", "succeeded"), "done-1 to be stored")

    async def ids(**params: str) -> list[str]:
        response = await client.get("/api/tasks", params=params)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["tasks"]]

    assert await ids(id="etl/") == ["etl/1", "etl/2"]
    assert await ids(id="etl/", sort="-id") == ["etl/2", "etl/1"]
    assert await ids(text="load") == ["etl/1", "etl/2"]
    assert await ids(text="LOAD", kind="etl", id="etl/2") == ["etl/2"]
    assert await ids(kind="web") == ["api-9"]
    assert await ids(kind="gate", worker="Junior") == ["done-1", "done-2"]
    assert await ids(sort="-submitted") == ["done-2", "done-1", "api-9", "etl/2", "etl/1"]
    assert await ids(sort="id") == ["api-9", "done-1", "done-2", "etl/1", "etl/2"]
    assert await ids(sort="-finished") == ["done-1", "done-2"]  # finished tasks, latest first
    assert await ids(sort="finished", state="succeeded") == ["done-2", "done-1"]
    assert await ids(text="nothing like it") == []


async def test_a_sorted_search_pages_with_its_cursor(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(*(impossible(f"p{i:02d}") for i in range(12)))

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5, "sort": "-id", "id": "p"}
    while True:
        page = (await client.get("/api/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        assert page["truncated"] is False
        if page["next_cursor"] is None:
            break
        params["after"] = page["next_cursor"]

    assert seen == [f"p{i:02d}" for i in reversed(range(12))]


# --- one worker -------------------------------------------------------------------------------


async def test_a_worker_page_shows_its_profile_tasks_and_success_by_difficulty(
    system: System, client: httpx.AsyncClient
) -> None:
    # Junior (3) fails the first attempt of "flaky" (2): the retry escalates to Intermediate.
    await system.submit(gate_task("flaky", difficulty=2, payload={"fail_attempts": [1]}))
    system.gates.open("flaky")
    await until(lambda: stored_as(system, "flaky", "succeeded"), "flaky to succeed")
    await system.submit(gate_task("ok", difficulty=1), gate_task("held", difficulty=3))
    system.gates.open("ok")
    await until(lambda: stored_as(system, "ok", "succeeded"), "ok to succeed")
    await until(lambda: stored_as(system, "held", "running"), "held to run")

    junior = (await client.get("/api/workers/Junior")).json()
    senior = (await client.get("/api/workers/Senior")).json()

    assert junior["worker"]["kinds"] == ["gate", "simulate"]
    assert junior["worker"]["labels"] == []
    assert (junior["worker"]["load"], junior["worker"]["capacity"]) == (1, 2)
    assert [t["id"] for t in junior["current"]] == ["held"]
    assert [t["id"] for t in junior["recent"]] == ["held", "ok"]  # newest first
    assert junior["by_difficulty"] == [
        {"difficulty": 1, "succeeded": 1, "failed": 0, "success_rate": 1.0},
        {"difficulty": 2, "succeeded": 0, "failed": 1, "success_rate": 0.0},
    ]
    assert (senior["current"], senior["recent"], senior["by_difficulty"]) == ([], [], [])


async def test_an_unknown_or_malformed_worker_name_is_4xx(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/api/workers/nobody")
    control = await client.get("/api/workers/a%00b")
    long = await client.get("/api/workers/" + "w" * 129)

    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no connected worker named 'nobody'"
    assert control.status_code == 422
    assert long.status_code == 422


async def test_a_lost_workers_page_still_shows_what_it_ran(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(gate_task("once"))
    system.gates.open("once")
    await until(lambda: stored_as(system, "once", "succeeded"), "once to succeed")
    await system.workers[0].stop()
    await until(lambda: "Junior" not in system.manager.workers, "Junior to leave")

    junior = (await client.get("/api/workers/Junior")).json()

    assert junior["worker"]["status"] == "lost"
    assert [t["id"] for t in junior["recent"]] == ["once"]


# --- queue depth and latency ------------------------------------------------------------------


async def test_stats_chart_the_queue_depth_and_the_latency(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(*(impossible(f"w{i}") for i in range(3)), gate_task("quick"))
    system.gates.open("quick")
    await until(lambda: stored_as(system, "quick", "succeeded"), "quick to succeed")

    async def charted() -> bool:
        stats = (await client.get("/api/stats")).json()
        return bool(stats["queue"]["pending"][-1] == 3 and stats["latency"]["p50"][-1])

    await until(charted, "the queue of 3 and the latency of quick to be charted")
    stats = (await client.get("/api/stats")).json()

    assert len(stats["queue"]["pending"]) == len(stats["latency"]["p95"]) == 120
    assert stats["latency"]["window_s"] == 10
    assert 0 < stats["latency"]["p50"][-1] <= stats["latency"]["p95"][-1] < DEADLINE


# --- who may cancel ---------------------------------------------------------------------------


async def test_a_loopback_dashboard_without_a_token_lets_local_users_change_things(
    client: httpx.AsyncClient,
) -> None:
    access = (await client.get("/api/access")).json()

    assert access == {"token": False, "writable": True, "reason": None}


async def test_with_a_token_cancelling_needs_it(tmp_path: Path) -> None:
    async with running_system(tmp_path / "t.db", token="s3cret") as system:
        await system.submit(impossible("waits"))
        async with system.client() as anonymous, system.client("s3cret") as authorised:
            refused = await anonymous.post("/api/tasks/waits/cancel")
            still = await system.state_of("waits")
            access = (await authorised.get("/api/access")).json()
            cancelled = await authorised.post("/api/tasks/waits/cancel")

    assert refused.status_code == 401
    assert still == "pending"
    assert access == {"token": True, "writable": True, "reason": None}
    assert cancelled.json()["cancelled"] is True
    assert cancelled.json()["task"]["state"] == "cancelled"


async def test_beyond_loopback_without_a_token_the_dashboard_says_it_is_read_only(
    tmp_path: Path,
) -> None:
    async with (
        running_system(tmp_path / "t.db", policy_host="203.0.113.5") as system,
        system.client() as client,
    ):
        await system.submit(impossible("waits"))
        access = (await client.get("/api/access")).json()
        refused = await client.post("/api/tasks/waits/cancel")
        still = await system.state_of("waits")

    assert access["writable"] is False
    assert "--dashboard-token" in access["reason"]
    assert refused.status_code == 403
    assert refused.json()["error"] == access["reason"]
    assert still == "pending"


# --- the server's address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url", "remote"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/", None),
        ("::1", "http://[::1]:8080/", None),
        ("0.0.0.0", "http://127.0.0.1:8080/", True),
        ("::", "http://[::1]:8080/", True),
        ("192.0.2.7", "http://192.0.2.7:8080/", None),
    ],
)
def test_the_servers_address_is_one_a_browser_can_open(
    tmp_path: Path, host: str, url: str, remote: bool | None
) -> None:
    from serendib.tasks.manager import TaskManager

    server = DashboardServer(TaskManager("manager", store=str(tmp_path / "t.db")), host, 8080)

    assert server.url == url
    if remote:
        assert server.remote_url == f"http://{socket.gethostname()}:8080/"
    else:
        assert server.remote_url is None


async def test_retry_runs_a_failed_or_cancelled_task_again_and_refuses_the_rest(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.submit(impossible("gave-up"), gate_task("busy"))
    await until(lambda: "busy" in system.gates.started, "busy to start")
    await client.post("/api/tasks/gave-up/cancel")

    again = await client.post("/api/tasks/gave-up/retry")
    refused = await client.post("/api/tasks/busy/retry")
    unknown = await client.post("/api/tasks/nosuch/retry")

    assert again.status_code == 200
    assert again.json()["retried"] is True
    assert again.json()["task"]["state"] == "pending"
    assert refused.json()["retried"] is False
    assert "has not ended" in refused.json()["reason"]
    assert unknown.status_code == 404

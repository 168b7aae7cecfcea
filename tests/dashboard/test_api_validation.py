"""Malformed input and unknown ids: the API answers 4xx with the reason, never 500.

One running system serves the whole module: these requests change nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.dashboard.conftest import running_system

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    store = tmp_path_factory.mktemp("validation") / "tasks.db"
    async with running_system(store) as system, system.client() as http:
        yield http


async def test_an_unknown_task_is_404_with_the_reason(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tasks/nope")

    assert response.status_code == 404
    assert response.json()["error"] == "no task with id 'nope'"


async def test_cancelling_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/tasks/ghost/cancel")

    assert response.status_code == 404
    assert "ghost" in response.json()["error"]


# --- malformed input: always 4xx with the reason, never 500 -----------------------------------

TOO_MANY = {"tasks": [{"id": f"x{i}", "difficulty": 1} for i in range(10_001)]}


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
        (b"[]", 422, "invalid input"),
        (b'"tasks"', 422, "invalid input"),
        (b"{}", 422, "invalid tasks: Field required"),
        (b'{"tasks": []}', 422, "invalid tasks: List should have at least 1 item"),
        (b'{"tasks": "all"}', 422, "invalid tasks: Input should be a valid list"),
        (b'{"tasks": [{"id": "a"}]}', 422, "invalid tasks.0.difficulty: Field required"),
        (b'{"tasks": [{"id": "a", "difficulty": "hard"}]}', 422, "tasks.0.difficulty"),
        (b'{"tasks": [{"id": "a", "difficulty": 11}]}', 422, "less than or equal to 10"),
        (b'{"tasks": [{"id": "", "difficulty": 1}]}', 422, "tasks.0.id"),
        (b'{"tasks": [{"id": "a", "difficulty": 1, "colour": 1}]}', 422, "not permitted"),
        (b'{"tasks": [{"id": "a", "difficulty": 1}], "extra": 1}', 422, "extra"),
        (b'{"tasks": [{"id": "a", "difficulty": 1, "max_attempts": 0}]}', 422, "max_attempts"),
        (b'{"tasks": [{"id": "a", "difficulty": 1e999}]}', 422, "tasks.0.difficulty"),
        (json.dumps(TOO_MANY).encode(), 422, "at most 10000 items"),
    ],
)
async def test_malformed_submissions_are_refused_with_the_reason(
    client: httpx.AsyncClient, content: bytes, status: int, reason: str
) -> None:
    response = await client.post(
        "/api/tasks", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == status, response.text
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("limit=100000", "invalid limit: Input should be less than or equal to 1000"),
        ("limit=0", "invalid limit: Input should be greater than or equal to 1"),
        ("limit=ten", "invalid limit: Input should be a valid integer"),
        ("after=-1", "invalid after: Input should be greater than or equal to 0"),
        ("after=abc", "invalid after: Input should be a valid integer"),
        ("after=99999999999999999999999", "invalid after"),
        ("after=1.5", "invalid after"),
        ("state=lost", "invalid state: Input should be 'pending'"),
        ("worker=", "invalid worker"),
        ("worker=" + "w" * 201, "invalid worker"),
        ("colour=red", "invalid colour: Extra inputs are not permitted"),
    ],
)
async def test_bad_task_queries_are_422_with_the_reason(
    client: httpx.AsyncClient, query: str, reason: str
) -> None:
    response = await client.get(f"/api/tasks?{query}")

    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(reason)
    assert response.json()["detail"]


async def test_a_cursor_past_the_end_is_an_empty_last_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tasks", params={"after": 2**62})

    assert response.json() == {"tasks": [], "next_cursor": None}


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/tasks",
        content=b" " * (8 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert "larger than" in response.json()["error"]


async def test_wrong_methods_and_paths_are_json_4xx(client: httpx.AsyncClient) -> None:
    wrong_method = await client.delete("/api/tasks")
    wrong_path = await client.get("/api/nothing")

    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "Method Not Allowed"
    assert wrong_path.status_code == 404
    assert wrong_path.json()["error"] == "Not Found"


async def test_the_openapi_description_covers_every_route_and_resolves(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/api/openapi.json")).json()

    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/api/workers",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/cancel",
        "/api/stats",
        "/api/events",
        "/metrics",
    }
    schemas = document["components"]["schemas"]
    refs = [r for r in _refs(document) if r.startswith("#/components/schemas/")]
    assert refs
    assert all(r.rpartition("/")[2] in schemas for r in refs)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []

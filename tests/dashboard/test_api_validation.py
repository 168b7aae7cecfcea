"""Malformed input and unknown ids: the API answers 4xx with the reason, never 5xx.

One running system serves most of the module: these requests change nothing. Control
characters in ids and filters are tried on SQLite and PostgreSQL (``SERENDIB_TEST_POSTGRES_URL``;
skipped without it, except in CI). Every response carries the security headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from serendib.dashboard import DashboardServer
from serendib.tasks.manager import TaskManager
from serendib.transports import MemoryHub, MemoryTransport
from tests.dashboard.conftest import running_system
from tests.helpers import postgres_test_url

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
        ("after=-1", "invalid after: String should match pattern"),
        ("after=abc", "invalid after: String should match pattern"),
        ("after=99999999999999999999999", "invalid after"),
        ("after=9999999999999999999", "invalid after: '9999999999999999999' is not a cursor"),
        ("after=1.5", "invalid after"),
        ("sort=finished&after=12", "invalid after: '12' is not a cursor of the 'finished'"),
        ("sort=newest", "invalid sort: Input should be 'submitted'"),
        ("kind=", "invalid kind"),
        ("id=" + "x" * 201, "invalid id"),
        ("text=" + "x" * 201, "invalid text"),
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

    assert response.json() == {"tasks": [], "next_cursor": None, "truncated": False}


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
        "/api/workers/{name}",
        "/api/access",
        "/api/schedules",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/cancel",
        "/api/tasks/{task_id}/retry",
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


# --- hostile input: nesting, control characters -----------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="list-100000-deep"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="object-100000-deep"),
        pytest.param(b"[" * 65 + b"]" * 65, id="list-65-deep"),
        pytest.param(
            b'{"tasks": [{"id": "a", "difficulty": 1, "payload": '
            + b'{"x": ' * 70
            + b"1"
            + b"}" * 70
            + b"}]}",
            id="in-a-payload",
        ),
    ],
)
async def test_a_body_nested_too_deep_is_400_with_the_reason(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post(
        "/api/tasks", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "the body nests deeper than 64 levels"


async def test_a_body_64_deep_is_parsed_and_validated(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/tasks",
        content=b"[" * 64 + b"]" * 64,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid input")


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgres"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a dashboard whose manager (no workers) runs on SQLite, then PostgreSQL."""
    schema = f"serendib_api_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("control") / "tasks.db")
    else:
        base = _postgres_url()
        url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    manager = TaskManager(
        "manager", workspace_id="api", store=url, transport=MemoryTransport(MemoryHub.private())
    )
    await manager.start()
    server = DashboardServer(manager, "127.0.0.1", 0)
    try:
        await server.start()
        async with httpx.AsyncClient(base_url=server.url.rstrip("/"), timeout=15) as http:
            yield http
    finally:
        await server.stop()
        await manager.stop()
        if request.param == "postgres":
            await _drop_schema(base, schema)


def _postgres_url() -> str:
    return postgres_test_url("the API on PostgreSQL", "PostgreSQL")


async def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


CONTROL = "must not contain control characters"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tasks/%00"),
        ("GET", "/api/tasks/a%00b"),
        ("GET", "/api/tasks/tab%09"),
        ("GET", "/api/tasks/bell%07"),
        ("GET", "/api/tasks/del%7F"),
        ("POST", "/api/tasks/%00/cancel"),
        ("POST", "/api/tasks/a%00b/cancel"),
    ],
)
async def test_a_task_id_with_control_characters_is_422_on_every_store(
    any_store: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await any_store.request(method, path)

    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid task_id")
    assert CONTROL in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/tasks/line%0Abreak"), ("POST", "/api/tasks/line%0Abreak/cancel")],
)
async def test_a_task_id_with_a_line_break_matches_no_route(
    any_store: httpx.AsyncClient, method: str, path: str
) -> None:
    # Starlette's path pattern stops at a line break: no route, so nothing reaches the store.
    response = await any_store.request(method, path)

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "Not Found"


async def test_a_task_id_longer_than_any_task_has_is_422(any_store: httpx.AsyncClient) -> None:
    response = await any_store.get("/api/tasks/" + "x" * 201)

    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid task_id")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("worker=%00", f"invalid worker: Value error, {CONTROL}"),
        ("worker=w%00x", f"invalid worker: Value error, {CONTROL}"),
        ("worker=%1B%5B31m", f"invalid worker: Value error, {CONTROL}"),
        ("state=pending%00", "invalid state"),
        ("after=1%00", "invalid after"),
        ("limit=%00", "invalid limit"),
        ("kind=a%00", f"invalid kind: Value error, {CONTROL}"),
        ("id=t%00", f"invalid id: Value error, {CONTROL}"),
        ("text=%07", f"invalid text: Value error, {CONTROL}"),
    ],
)
async def test_a_filter_with_control_characters_is_422_on_every_store(
    any_store: httpx.AsyncClient, query: str, reason: str
) -> None:
    response = await any_store.get(f"/api/tasks?{query}")

    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(reason)


async def test_ordinary_ids_and_filters_still_reach_the_store(
    any_store: httpx.AsyncClient,
) -> None:
    unknown = await any_store.get("/api/tasks/no such task")
    filtered = await any_store.get("/api/tasks", params={"worker": "Junior", "state": "pending"})

    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no task with id 'no such task'"
    assert filtered.json() == {"tasks": [], "next_cursor": None, "truncated": False}


# --- security headers on every response -------------------------------------------------------

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def _assert_security_headers(response: httpx.Response, csp: str = API_CSP) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == csp
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/workers", 200),
        ("GET", "/api/stats", 200),
        ("GET", "/api/openapi.json", 200),
        ("GET", "/api/tasks/nope", 404),
        ("GET", "/api/tasks?limit=0", 422),
        ("POST", "/api/tasks", 400),
        ("DELETE", "/api/tasks", 405),
        ("GET", "/api/nothing", 404),
        ("GET", "/static/app.js", 200),
        ("GET", "/static/missing.js", 404),
        ("GET", "/metrics", 200),
    ],
)
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)

    assert response.status_code == status, response.text
    _assert_security_headers(response)


async def test_the_page_keeps_its_own_policy_with_the_other_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_event_stream_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        _assert_security_headers(response)

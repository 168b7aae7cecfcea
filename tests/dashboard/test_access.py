"""Who may use the dashboard: the policy as a pure function, then over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serendib.dashboard import AccessPolicy, Dashboard, create_app
from serendib.dashboard.access import is_loopback
from serendib.tasks.manager import TaskManager
from tests.dashboard.conftest import running_system

LOCAL = {"host": "127.0.0.1:8080"}


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST", "app.localhost"]
)
def test_loopback_addresses_and_names_are_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "10.0.0.1", "example.com", ""])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_a_loopback_dashboard_without_token_is_open_to_local_users() -> None:
    policy = AccessPolicy("127.0.0.1")

    assert policy.check("GET", "/api/tasks", LOCAL, {}) is None
    assert policy.check("POST", "/api/tasks", LOCAL, {}) is None
    assert policy.check("GET", "/", {"host": "localhost:8080"}, {}) is None


def test_a_loopback_dashboard_answers_only_to_loopback_host_names() -> None:
    denial = AccessPolicy("127.0.0.1").check("GET", "/api/tasks", {"host": "evil.example"}, {})

    assert denial is not None
    assert denial.status == 421


def test_mutating_calls_from_another_origin_are_refused() -> None:
    policy = AccessPolicy("127.0.0.1")
    cross = {**LOCAL, "origin": "https://evil.example"}
    same = {**LOCAL, "origin": "http://127.0.0.1:8080"}

    denial = policy.check("POST", "/api/tasks/a/cancel", cross, {})

    assert denial is not None
    assert (denial.status, denial.reason) == (
        403,
        "cross-origin request from https://evil.example refused",
    )
    assert policy.check("POST", "/api/tasks/a/cancel", same, {}) is None
    assert policy.check("GET", "/api/tasks", cross, {}) is None


def test_beyond_loopback_without_token_reads_are_open_and_changes_refused() -> None:
    policy = AccessPolicy("0.0.0.0")
    headers = {"host": "192.168.1.5:8080"}

    denial = policy.check("POST", "/api/tasks", headers, {})

    assert policy.check("GET", "/api/tasks", headers, {}) is None
    assert denial is not None
    assert denial.status == 403
    assert "--dashboard-token" in denial.reason


def test_with_a_token_every_call_but_static_files_needs_it() -> None:
    policy = AccessPolicy("0.0.0.0", token="s3cret")
    headers = {"host": "192.168.1.5:8080"}
    bearer = {**headers, "authorization": "Bearer s3cret"}

    for path in ("/", "/api/tasks", "/api/events", "/metrics"):
        missing = policy.check("GET", path, headers, {})
        assert missing is not None
        assert missing.status == 401
    wrong = policy.check("GET", "/api/tasks", {**headers, "authorization": "Bearer nope"}, {})
    assert wrong is not None
    assert wrong.reason == "wrong token"
    assert policy.check("GET", "/static/app.js", headers, {}) is None
    assert policy.check("GET", "/api/tasks", bearer, {}) is None
    assert policy.check("GET", "/api/events", headers, {"token": "s3cret"}) is None
    assert policy.check("POST", "/api/tasks", bearer, {}) is None


async def test_a_dashboard_beyond_loopback_refuses_to_submit_without_a_token(
    tmp_path: Path,
) -> None:
    manager = TaskManager("manager", store=str(tmp_path / "tasks.db"))
    app = create_app(Dashboard(manager), AccessPolicy("203.0.113.5"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://203.0.113.5") as client:
        refused = await client.post("/api/tasks", json={"tasks": [{"id": "a", "difficulty": 1}]})
        cancel = await client.post("/api/tasks/a/cancel")
        page = await client.get("/")

    assert refused.status_code == 403
    assert "--dashboard-token" in refused.json()["error"]
    assert cancel.status_code == 403
    assert page.status_code == 200


async def test_with_a_token_the_running_dashboard_needs_it_everywhere(tmp_path: Path) -> None:
    async with running_system(tmp_path / "tasks.db", token="s3cret") as system:
        async with system.client() as anonymous:
            page = await anonymous.get("/")
            api = await anonymous.get("/api/workers")
            metrics = await anonymous.get("/metrics")
            script = await anonymous.get("/static/app.js")
            with_query = await anonymous.get("/api/workers", params={"token": "s3cret"})
        async with system.client("s3cret") as client:
            workers = await client.get("/api/workers")
            submitted = await client.post(
                "/api/tasks", json={"tasks": [{"id": "a", "difficulty": 1}]}
            )

    assert (page.status_code, api.status_code, metrics.status_code) == (401, 401, 401)
    assert api.headers["www-authenticate"] == "Bearer"
    assert api.json()["error"].startswith("this dashboard needs a token")
    assert script.status_code == 200
    assert with_query.status_code == 200
    assert len(workers.json()) == 3
    assert submitted.json()["accepted"] == ["a"]


@pytest.mark.parametrize(
    ("policy", "method", "path", "status"),
    [
        (AccessPolicy("203.0.113.5", token="s3cret"), "GET", "/api/workers", 401),
        (AccessPolicy("203.0.113.5", token="s3cret"), "GET", "/", 401),
        (AccessPolicy("203.0.113.5"), "POST", "/api/tasks/a/cancel", 403),
        (AccessPolicy("127.0.0.1"), "GET", "/api/workers", 421),
    ],
)
async def test_denials_carry_the_security_headers(
    tmp_path: Path, policy: AccessPolicy, method: str, path: str, status: int
) -> None:
    manager = TaskManager("manager", store=str(tmp_path / "tasks.db"))
    transport = httpx.ASGITransport(app=create_app(Dashboard(manager), policy))
    async with httpx.AsyncClient(transport=transport, base_url="http://203.0.113.5") as client:
        denied = await client.request(method, path)

    assert denied.status_code == status
    assert denied.headers["x-content-type-options"] == "nosniff"
    assert denied.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert denied.headers["referrer-policy"] == "no-referrer"
    assert denied.json()["error"]


async def test_a_query_token_is_taken_off_before_the_routes_see_it(tmp_path: Path) -> None:
    async with (
        running_system(tmp_path / "tasks.db", token="s3cret") as system,
        system.client() as anonymous,
    ):
        # The task listing refuses unknown query parameters: ``token`` is not one of them.
        page = await anonymous.get("/api/tasks", params={"token": "s3cret", "limit": 1})
        unknown = await anonymous.get("/api/tasks", params={"token": "s3cret", "x": "1"})

    assert page.status_code == 200, page.text
    assert page.json() == {"tasks": [], "next_cursor": None, "truncated": False}
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "invalid x: Extra inputs are not permitted"

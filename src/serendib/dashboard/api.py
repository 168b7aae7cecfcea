"""The JSON HTTP API under ``/api/``, the event stream and ``/metrics``, as FastAPI routes.

FastAPI parses each request into the pydantic models of :mod:`serendib.dashboard.schemas`,
the endpoint calls :class:`Dashboard`, and FastAPI serialises the model it returns; the
OpenAPI document is generated from the same routes and models. Input problems are 4xx with
the reason in an :class:`ErrorBody` (400 not JSON or nested deeper than
:data:`MAX_BODY_DEPTH`, 413 larger than :data:`MAX_BODY_BYTES`, 415 not sent as JSON, 422
invalid with one detail per problem, 404 unknown task), found before anything reaches the
store; a store that cannot be read or a stopped manager is 503.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from loguru import logger
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from serendib.dashboard.access import AccessPolicy
from serendib.dashboard.core import Dashboard
from serendib.dashboard.metrics import CONTENT_TYPE
from serendib.dashboard.schemas import (
    AccessView,
    CancelResult,
    ErrorBody,
    PathTaskId,
    PathWorkerName,
    RetryResult,
    ScheduleView,
    StatsView,
    SubmitBody,
    SubmitResult,
    TaskDetail,
    TaskFilter,
    TaskPageView,
    WorkerDetail,
    WorkerView,
)
from serendib.errors import AgentNotRunning, StoreError, TaskNotFound, WorkerNotFound
from serendib.limits import check_json_depth

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "api_router", "exception_handlers"]

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BODY_DEPTH = 64
"""Nesting of a JSON body's lists and objects (a submission needs about 35: a payload 32)."""
_KEEPALIVE_S = 15.0
"""How long the event stream waits for an update before looking whether it has ended."""
_RETRY_MS = 2000
_TOO_DEEP = f"the body nests deeper than {MAX_BODY_DEPTH} levels"
_TOO_LARGE = f"the body is larger than {MAX_BODY_BYTES} bytes"
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})

Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def _error(
    status: int,
    reason: str,
    detail: list[dict[str, object]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = ErrorBody(error=reason, detail=detail or []).model_dump_json()
    return Response(body, status, headers=headers, media_type="application/json")


# --- request bodies ---------------------------------------------------------------------------


def parse_json_body(raw: bytes) -> object:
    """A request body as JSON, refused (400) when it is not JSON or nests too deep.

    Args:
        raw: The body as received (at most :data:`MAX_BODY_BYTES`).

    Returns:
        The parsed JSON value.

    Raises:
        HTTPException: 400 with the reason.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"the body is not valid JSON: {e}") from None
    except RecursionError:  # the parser's own bound, far deeper than ours
        raise HTTPException(400, _TOO_DEEP) from None
    try:
        # Checked once here (without recursion), so no validator or encoder meets it.
        return check_json_depth(body, MAX_BODY_DEPTH)
    except ValueError:
        raise HTTPException(400, _TOO_DEEP) from None


class _JsonRequest(Request):
    """A request whose body is read at most :data:`MAX_BODY_BYTES` (413 past it), and whose
    JSON is parsed by :func:`parse_json_body`.

    (Starlette's own body limit answers 413 in plain text, not as an :class:`ErrorBody`.)
    """

    async def body(self) -> bytes:
        """The body, refused (413) when it is, or says it is, larger than the limit."""
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise HTTPException(413, _TOO_LARGE)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise HTTPException(413, _TOO_LARGE)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body as JSON (400 with the reason when it is not, or nests too deep)."""
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class _JsonRoute(APIRoute):
    """A FastAPI route reading JSON bodies as :class:`_JsonRequest` does."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`_JsonRequest`."""
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(_JsonRequest(request.scope, request.receive))

        return handler


# --- routes -----------------------------------------------------------------------------------


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "The body is not JSON, or nests too deep",
        403: "Needs a token (non-loopback dashboard) or comes from another origin",
        404: "No task has this id (or no worker this name)",
        413: f"The body is larger than {MAX_BODY_BYTES} bytes",
        415: "The body is not sent as application/json",
        422: "The input is not valid: one detail entry per problem",
    }
    return {status: {"model": ErrorBody, "description": described[status]} for status in statuses}


_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "A token is required and was missing or wrong"},
    503: {
        "model": ErrorBody,
        "description": "The task store cannot be read, or the manager is not running",
    },
}
# For routes whose own answer is not JSON (FastAPI would list ErrorBody under their type).
_COMMON_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, response in _COMMON_ERRORS.items()
}
# Documents the token for clients (and Swagger UI's "Authorize"); AccessMiddleware checks it.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The dashboard's token, if it has one (or ?token= where headers cannot be set)",
)
TaskIdPath = Annotated[PathTaskId, Path()]
WorkerNamePath = Annotated[PathWorkerName, Path()]


def api_router(dashboard: Dashboard, policy: AccessPolicy) -> APIRouter:
    """The API routes of ``dashboard``, with their OpenAPI descriptions.

    Args:
        dashboard: What the routes show and change.
        policy: Who may see and change it (told to the page by ``/api/access``).

    Returns:
        A router to include in the dashboard's FastAPI application.
    """
    router = APIRouter(
        route_class=_JsonRoute,
        responses=_COMMON_ERRORS,
        dependencies=[Depends(_BEARER)],
        # Operation ids are the endpoints' names ("list_tasks"), not FastAPI's path mangling.
        generate_unique_id_function=lambda route: route.name,
    )

    @router.get("/api/workers", summary="Connected workers, then lost ones")
    async def workers() -> Sequence[WorkerView]:
        return dashboard.workers()

    @router.get(
        "/api/workers/{name}",
        summary="One worker: its skills, labels, kinds, load, current and recent tasks",
        responses=_responses(404, 422),
    )
    async def one_worker(name: WorkerNamePath) -> WorkerDetail:
        return await dashboard.worker(name)

    @router.get("/api/schedules", summary="Recurring work: each schedule, when it fires next")
    async def schedules() -> Sequence[ScheduleView]:
        return dashboard.schedules()

    @router.get("/api/access", summary="Whether this caller may submit and cancel")
    async def access() -> AccessView:
        refused = policy.read_only
        return AccessView(token=policy.token is not None, writable=refused is None, reason=refused)

    @router.get(
        "/api/stats",
        summary="Counts by state, success rate, counters, throughput, queue depth, latency",
    )
    async def stats() -> StatsView:
        return await dashboard.stats()

    @router.get(
        "/api/tasks",
        summary="One page of tasks: filtered, searched, sorted (keyset paging, bounded)",
        responses=_responses(422),
    )
    async def list_tasks(query: Annotated[TaskFilter, Query()]) -> TaskPageView:
        try:
            return await dashboard.tasks(query)
        except ValueError as e:  # a cursor of another order, or past any task's
            problem = {"loc": ("query", "after"), "msg": str(e), "type": "value_error"}
            raise RequestValidationError([problem]) from None

    @router.post(
        "/api/tasks",
        summary="Submit tasks (ids already known are ignored)",
        responses=_responses(400, 403, 413, 415, 422),
    )
    async def submit(body: SubmitBody) -> SubmitResult:
        return await dashboard.submit(body)

    @router.post(
        "/api/tasks/{task_id:path}/cancel",
        summary="Cancel a task that is not final",
        responses=_responses(403, 404, 422),
    )
    async def cancel(task_id: TaskIdPath) -> CancelResult:
        return await dashboard.cancel(task_id)

    @router.post(
        "/api/tasks/{task_id:path}/retry",
        summary="Run a failed or cancelled task again (its history kept)",
        responses=_responses(403, 404, 422),
    )
    async def retry(task_id: TaskIdPath) -> RetryResult:
        return await dashboard.retry(task_id)

    @router.get(
        "/api/tasks/{task_id:path}",
        summary="One task: its attempts, timings and why it waits",
        responses=_responses(404, 422),
    )
    async def one_task(task_id: TaskIdPath) -> TaskDetail:
        return await dashboard.task(task_id)

    @router.get(
        "/api/events",
        summary="Live updates as server-sent events (event 'update', JSON data)",
        response_class=EventSourceResponse,
        responses=_COMMON_JSON_ERRORS,
    )
    async def events() -> AsyncIterator[ServerSentEvent]:
        async for event in _stream(dashboard):
            yield event

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses=_COMMON_JSON_ERRORS,
    )
    async def metrics() -> Response:
        try:
            counts = await dashboard.counts()
        except StoreError:
            counts = dashboard.last_counts
        return Response(dashboard.metrics.render(counts), media_type=CONTENT_TYPE)

    return router


async def _stream(dashboard: Dashboard) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: an update made on connecting, then each newer one.

    FastAPI sends a keep-alive comment whenever the stream is silent for a while.
    """
    yield ServerSentEvent(retry=_RETRY_MS)
    seen = 0
    updates = dashboard.updates
    await dashboard.refresh()  # the latest published may predate what is true now
    while True:
        got = await updates.next(seen, _KEEPALIVE_S)
        if got is None:
            if updates.closed:
                return
            continue
        seen, payload = got
        yield ServerSentEvent(event="update", id=str(seen), raw_data=payload.decode())


# --- errors -----------------------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), headers=exc.headers)


def _where(loc: Sequence[int | str]) -> list[int | str]:
    """A problem's location without FastAPI's leading source (``body``, ``query``, ...)."""
    return list(loc[1:]) if loc and loc[0] in _SOURCES else list(loc)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if len(problems) == 1 and tuple(problems[0]["loc"]) == ("body",):
        if problems[0]["type"] == "missing":
            return _error(400, "the body is empty: expected JSON")
        if isinstance(exc.body, bytes):  # FastAPI parses JSON only when it is declared so
            return _error(415, "the body must be JSON: send Content-Type: application/json")
    detail: list[dict[str, object]] = [
        {"loc": _where(p["loc"]), "msg": p["msg"], "type": p["type"]} for p in problems
    ]
    first = detail[0]
    assert isinstance(first["loc"], list)
    where = ".".join(str(part) for part in first["loc"]) or "input"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return _error(422, f"invalid {where}: {first['msg']}{more}", detail)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("dashboard: {} {}: {}", request.method, request.url.path, exc)
    return _error(503, str(exc))


def exception_handlers() -> dict[int | type[Exception], Handler]:
    """How the API turns errors into :class:`ErrorBody` responses with their reason."""
    return {
        HTTPException: _http_error,
        RequestValidationError: _invalid,
        TaskNotFound: _not_found,
        WorkerNotFound: _not_found,
        StoreError: _unavailable,
        AgentNotRunning: _unavailable,
    }

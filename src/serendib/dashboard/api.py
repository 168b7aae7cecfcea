"""The JSON HTTP API under ``/api/``, the event stream and ``/metrics``, as Starlette routes.

Each endpoint parses its input into a pydantic model, calls :class:`Dashboard`, and returns
the model as JSON. Input problems are 4xx with the reason (400 not JSON or nested deeper than
:data:`MAX_BODY_DEPTH`, 413 too large, 422 invalid, 404 unknown task), found before anything
reaches the store; a store that cannot be read or a stopped manager is 503.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from loguru import logger
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from serendib.dashboard.core import Dashboard
from serendib.dashboard.metrics import CONTENT_TYPE
from serendib.dashboard.openapi import openapi_document
from serendib.dashboard.schemas import ErrorBody, SubmitBody, TaskFilter, TaskPath
from serendib.errors import AgentNotRunning, StoreError, TaskNotFound
from serendib.limits import check_json_depth

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "api_routes", "exception_handlers"]

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BODY_DEPTH = 64
"""Nesting of a JSON body's lists and objects (a submission needs about 35: a payload 32)."""
_KEEPALIVE_S = 15.0
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _error(
    status: int,
    reason: str,
    detail: list[dict[str, object]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = ErrorBody(error=reason, detail=detail or []).model_dump_json()
    return Response(body, status, headers=headers, media_type="application/json")


def _query(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    params.pop("token", None)
    return params


async def _body(request: Request) -> object:
    """The request's JSON body, read at most :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise HTTPException(400, "the body is empty: expected JSON")
    too_deep = f"the body nests deeper than {MAX_BODY_DEPTH} levels"
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"the body is not valid JSON: {e}") from None
    except RecursionError:  # the parser's own bound, far deeper than ours
        raise HTTPException(400, too_deep) from None
    try:
        # Checked once here (without recursion), so no validator or encoder meets it.
        return check_json_depth(body, MAX_BODY_DEPTH)
    except ValueError:
        raise HTTPException(400, too_deep) from None


def _task_id(request: Request) -> str:
    """The path's task id, validated: one that no task can have is 422, not a store query."""
    return TaskPath.model_validate({"task_id": request.path_params["task_id"]}).task_id


def api_routes(dashboard: Dashboard) -> list[BaseRoute]:
    """The API routes of ``dashboard``."""

    async def workers(request: Request) -> Response:
        body = "[" + ",".join(w.model_dump_json() for w in dashboard.workers()) + "]"
        return Response(body, media_type="application/json")

    async def stats(request: Request) -> Response:
        return _json(await dashboard.stats())

    async def list_tasks(request: Request) -> Response:
        query = TaskFilter.model_validate(_query(request))
        return _json(await dashboard.tasks(query))

    async def submit(request: Request) -> Response:
        body = SubmitBody.model_validate(await _body(request))
        return _json(await dashboard.submit(body))

    async def one_task(request: Request) -> Response:
        return _json(await dashboard.task(_task_id(request)))

    async def cancel(request: Request) -> Response:
        return _json(await dashboard.cancel(_task_id(request)))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def metrics(request: Request) -> Response:
        try:
            counts = await dashboard.counts()
        except StoreError:
            counts = dashboard.last_counts
        return Response(dashboard.metrics.render(counts), media_type=CONTENT_TYPE)

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(dashboard), media_type="text/event-stream", headers=_SSE_HEADERS
        )

    return [
        Route("/api/workers", workers, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/api/tasks", submit, methods=["POST"]),
        Route("/api/tasks/{task_id:path}/cancel", cancel, methods=["POST"]),
        Route("/api/tasks/{task_id:path}", one_task, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


async def _stream(dashboard: Dashboard) -> AsyncIterator[bytes]:
    """Server-sent events: an update made on connecting, then each newer one."""
    yield b"retry: 2000\n\n"
    seen = 0
    updates = dashboard.updates
    await dashboard.refresh()  # the latest published may predate what is true now
    while True:
        got = await updates.next(seen, _KEEPALIVE_S)
        if got is None:
            if updates.closed:
                return
            yield b": keep-alive\n\n"
            continue
        seen, payload = got
        yield b"event: update\nid: %d\ndata: %s\n\n" % (seen, payload)


# --- errors -----------------------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    detail: list[dict[str, object]] = [
        {"loc": list(p["loc"]), "msg": p["msg"], "type": p["type"]} for p in problems
    ]
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "input"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return _error(422, f"invalid {where}: {first['msg']}{more}", detail)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("dashboard: {} {}: {}", request.method, request.url.path, exc)
    return _error(503, str(exc))


def exception_handlers() -> dict[
    type[Exception], Callable[[Request, Exception], Awaitable[Response]]
]:
    """How the API turns errors into JSON responses with their reason."""
    return {
        HTTPException: _http_error,
        ValidationError: _invalid,
        TaskNotFound: _not_found,
        StoreError: _unavailable,
        AgentNotRunning: _unavailable,
    }

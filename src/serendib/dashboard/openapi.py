"""The OpenAPI 3.1 description of the dashboard's HTTP API, built from its pydantic models."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serendib import __version__
from serendib.dashboard.schemas import (
    MAX_PAGE,
    CancelResult,
    ErrorBody,
    StatsView,
    SubmitBody,
    SubmitResult,
    TaskDetail,
    TaskPageView,
    WorkerView,
)
from serendib.tasks.models import TaskState

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_MODELS: tuple[type[BaseModel], ...] = (
    CancelResult,
    ErrorBody,
    StatsView,
    SubmitBody,
    SubmitResult,
    TaskDetail,
    TaskPageView,
    WorkerView,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref(ErrorBody), description)


_AUTH_ERRORS = {
    "401": _error("A token is required and was missing or wrong"),
    "503": _error("The task store cannot be read, or the manager is not running"),
}
_INVALID = {
    "400": _error("The body is not JSON (or too large: 413)"),
    "422": _error("The input is not valid: one detail entry per problem"),
}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/api/openapi.json``."""
    _, definitions = models_json_schema(
        [(model, "validation" if model is SubmitBody else "serialization") for model in _MODELS],
        ref_template=_REF,
    )
    states = [state.value for state in TaskState]
    task_query = [
        _query("state", {"type": "string", "enum": states}, "Only tasks in this state"),
        _query("worker", {"type": "string", "maxLength": 200}, "Only tasks of this worker"),
        _query("after", {"type": "integer", "minimum": 0}, "next_cursor of the previous page"),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
            "Tasks per page",
        ),
    ]
    paths: dict[str, Any] = {
        "/api/workers": {
            "get": {
                "summary": "Connected workers, then lost ones",
                "responses": {
                    "200": _json({"type": "array", "items": _ref(WorkerView)}, "The workers"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "One page of tasks in submission order (keyset paging)",
                "parameters": task_query,
                "responses": {
                    "200": _json(_ref(TaskPageView), "The page and the next page's cursor"),
                    "422": _INVALID["422"],
                    **_AUTH_ERRORS,
                },
            },
            "post": {
                "summary": "Submit tasks (ids already known are ignored)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(SubmitBody)}},
                },
                "responses": {
                    "200": _json(_ref(SubmitResult), "Accepted and duplicate ids"),
                    **_INVALID,
                    "403": _error("Needs a token (non-loopback) or cross-origin"),
                    **_AUTH_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task: its attempts, timings and why it waits",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": _json(_ref(TaskDetail), "The task and its history"),
                    "404": _error("No task has this id"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/tasks/{task_id}/cancel": {
            "post": {
                "summary": "Cancel a task that is not final",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": _json(_ref(CancelResult), "The task after the request"),
                    "403": _error("Needs a token (non-loopback) or cross-origin"),
                    "404": _error("No task has this id"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/stats": {
            "get": {
                "summary": "Counts by state, success rate, counters, throughput",
                "responses": {"200": _json(_ref(StatsView), "The statistics"), **_AUTH_ERRORS},
            }
        },
        "/api/events": {
            "get": {
                "summary": "Live updates as server-sent events (event 'update', JSON data)",
                "responses": {
                    "200": {
                        "description": "An endless text/event-stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_AUTH_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {
                    "200": {
                        "description": "The metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_AUTH_ERRORS,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Serendib dashboard API",
            "version": __version__,
            "description": (
                "Workers, tasks and statistics of one Serendib task manager. With a token, "
                "send 'Authorization: Bearer <token>' (or ?token= where headers cannot be set)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }

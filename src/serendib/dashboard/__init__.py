"""The web dashboard: a live page, a JSON API and Prometheus metrics served by the admin.

Part of the default install (FastAPI, fastapi-offline for Swagger UI's files, uvicorn,
prometheus-client). Everything the page and the API's Swagger UI use ships in installed
packages, so they work offline.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import fastapi_offline  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        f"the Serendib dashboard needs the 'dashboard' extra ({e.name} is missing): "
        "pip install 'serendib[dashboard]'"
    ) from e

from serendib.dashboard.access import AccessPolicy
from serendib.dashboard.app import create_app
from serendib.dashboard.core import Dashboard
from serendib.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer, ServerStatus

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "AccessPolicy",
    "Dashboard",
    "DashboardServer",
    "ServerStatus",
    "create_app",
]

"""The web dashboard: a live page, a JSON API and Prometheus metrics served by the admin.

Needs the ``dashboard`` extra (Starlette, uvicorn, prometheus-client). Everything the page
uses ships in this package, so it works offline.
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
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

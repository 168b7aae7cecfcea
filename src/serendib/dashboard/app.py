"""The dashboard's Starlette application: the page, its static files, the API and metrics."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from serendib.dashboard.access import AccessMiddleware, AccessPolicy, SecurityHeadersMiddleware
from serendib.dashboard.api import api_routes, exception_handlers
from serendib.dashboard.core import Dashboard

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # Everything the page needs ships with the package: nothing may load from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}


def create_app(dashboard: Dashboard, policy: AccessPolicy) -> Starlette:
    """The ASGI application serving ``dashboard`` under ``policy``.

    Every response carries the security headers of
    :class:`~serendib.dashboard.access.SecurityHeadersMiddleware`; the page keeps its own
    ``Content-Security-Policy`` (its scripts and styles load from the dashboard itself).

    Args:
        dashboard: What to show (start and stop it around the app's life).
        policy: Who may see and change it.
    """

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    routes = [
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *api_routes(dashboard),
    ]
    return Starlette(
        routes=routes,
        # First is outermost: denials from the access check get the security headers too.
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(AccessMiddleware, policy=policy),
        ],
        exception_handlers=exception_handlers(),
    )

"""The dashboard's FastAPI application: the page, its static files, the API and metrics.

FastAPI generates the OpenAPI document (``/api/openapi.json``) from the API's routes and
models; Swagger UI (``/api/docs``) renders it from files that ship in packages on this
machine (the page's own, and Swagger UI's from ``fastapi-offline``), so it works offline.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.middleware import Middleware
from starlette.staticfiles import StaticFiles

from serendib import __version__
from serendib.dashboard.access import AccessMiddleware, AccessPolicy, SecurityHeadersMiddleware
from serendib.dashboard.api import api_router, exception_handlers
from serendib.dashboard.core import Dashboard

__all__ = ["DOCS_PATH", "OPENAPI_PATH", "STATIC_DIR", "SWAGGER_UI_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_DIR = Path(str(files("fastapi_offline") / "static"))
"""Swagger UI's script and style sheet, as the ``fastapi-offline`` package ships them."""
OPENAPI_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # Everything the page needs ships with the package: nothing may load from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}
_DESCRIPTION = (
    "Workers, tasks and statistics of one Serendib task manager. With a token, send "
    "'Authorization: Bearer <token>' (or ?token= where headers cannot be set). Errors are "
    "an ErrorBody: the reason, and for invalid input one detail entry per problem."
)


def create_app(dashboard: Dashboard, policy: AccessPolicy) -> FastAPI:
    """The ASGI application serving ``dashboard`` under ``policy``.

    Every response carries the security headers of
    :class:`~serendib.dashboard.access.SecurityHeadersMiddleware`; the page and the API's
    Swagger UI keep their own ``Content-Security-Policy`` (their scripts and styles load
    from the dashboard itself).

    Args:
        dashboard: What to show (start and stop it around the app's life).
        policy: Who may see and change it.

    Returns:
        The application.
    """
    app = FastAPI(
        title="Serendib dashboard API",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=OPENAPI_PATH,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: ours loads nothing else.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # First is outermost: denials from the access check get the security headers too.
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(AccessMiddleware, policy=policy),
        ],
        exception_handlers=exception_handlers(),
    )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", headers=_PAGE_HEADERS)

    app.include_router(api_router(dashboard, policy))
    # Mounted before /static, which would otherwise take its paths.
    app.mount("/static/swagger-ui", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

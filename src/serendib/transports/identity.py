"""Per-agent identity on the admin's embedded NATS server: nkeys, registration, permissions.

The workspace token (or, on loopback without one, nothing) is the right to *register*, not to
speak: it opens a connection that may only ask the admin for an identity. An agent makes an
nkey pair (ed25519; the seed never leaves the agent), sends its name, role and public key to
``serendib.<workspace>.register``, and the admin, if the name is free (or its holder is dead,
or is the same key restarted), adds a NATS user for that key to its server, allowed to
publish only on subjects that name it as the sender and to read only its own inbox and the
broadcasts. The agent then reconnects as that user. Every message it sends carries its name
in the subject, so receivers know who sent it, and the server refuses anything else.

Requires the ``nkeys`` package (a dependency of Serendib).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serendib.errors import AdminUnreachable, ConnectionFailed, DuplicateAgentName
from serendib.limits import Name, Note, Token, safe_text
from serendib.subjects import register_subject

try:
    import nkeys
    from nats.aio.client import Client
    from nats.errors import Error as NatsError
    from nats.errors import NoRespondersError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"per-agent identity needs {e.name}: pip install serendib") from e

__all__ = [
    "REGISTRAR_USER",
    "Identity",
    "Registrar",
    "Registration",
    "RegistrationRequest",
    "register",
]

REGISTRAR_USER = "serendib-register"
"""The NATS user a workspace token logs in as: it may only ask for an identity."""
PublicKey = Annotated[str, Field(pattern=r"^U[A-Z2-7]{55}$")]
"""A user nkey's public key."""


class Identity:
    """An agent's nkey pair: the public key names it to the server, the seed proves it.

    Args:
        seed: The nkey seed (``SU...``).

    Raises:
        ValueError: Not a user nkey seed.
    """

    def __init__(self, seed: str) -> None:
        try:
            pair = nkeys.from_seed(bytearray(seed.encode()))
            self.public_key: str = pair.public_key.decode()
        except (nkeys.NkeysError, ValueError, TypeError) as e:
            raise ValueError(f"not an nkey seed: {type(e).__name__}") from None
        if not self.public_key.startswith("U"):
            raise ValueError("not a user nkey seed")
        self.seed = seed

    def __repr__(self) -> str:
        return f"<Identity {self.public_key[:8]}...>"

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        return cls(seed.decode())

    @classmethod
    def load_or_create(cls, path: str | Path) -> Identity:
        """The identity kept in ``path``, created there (mode 0600) if the file is missing.

        A worker restarted with the same file is the same identity: the admin lets it take
        its own place at once.

        Raises:
            ValueError: The file holds something that is not an nkey seed.
            OSError: The file cannot be read or written.
        """
        path = Path(path).expanduser()
        if path.exists():
            return cls(path.read_text().strip())
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = cls.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as file:
            file.write(identity.seed + "\n")
        return identity


class RegistrationRequest(BaseModel):
    """An agent asks for an identity: its name, role and public key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Name
    role: Token
    key: PublicKey


class Registration(BaseModel):
    """The admin's answer: accepted (the agent may reconnect with its key) or why not."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    accepted: bool
    admin: Name
    reason: Note = ""


Decide = Callable[[RegistrationRequest], Awaitable[str | None]]
"""The admin's decision on a request: None to accept, or the reason to refuse."""
Authorize = Callable[[RegistrationRequest], Awaitable[None]]
"""Adds the request's key as a user with its name's permissions (the embedded server)."""


class Registrar:
    """The admin's side: answers registration requests on its own NATS connection.

    Args:
        url: The embedded server's URL.
        seed: The admin's own nkey seed (its user may read the register subject).
        workspace: The workspace registered into.
        admin: The admin's name, sent back so agents trust only it.
        decide: Whether a request may be granted.
        authorize: Grants it on the server (before the answer is sent).
        tls: TLS context to connect with, if the server serves TLS.
    """

    def __init__(
        self,
        url: str,
        seed: str,
        workspace: str,
        admin: str,
        decide: Decide,
        authorize: Authorize,
        *,
        tls: Any = None,
    ) -> None:
        self._tls = tls
        self._url = url
        self._seed = seed
        self._subject = register_subject(workspace)
        self._admin = admin
        self._decide = decide
        self._authorize = authorize
        self._client = Client()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect and serve registrations.

        Raises:
            ConnectionFailed: The server refused or did not answer.
        """
        try:
            options: dict[str, Any] = {"tls": self._tls} if self._tls is not None else {}
            await self._client.connect(
                servers=[self._url],
                nkeys_seed_str=self._seed,
                name=f"{self._admin}-registrar",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=_quiet,
                **options,
            )
            await self._client.subscribe(self._subject, cb=self._on_request)
            await self._client.flush()
        except (NatsError, OSError) as e:
            await self.stop()
            raise ConnectionFailed(self._url, f"registrar: {e}") from e

    async def stop(self) -> None:
        """Stop serving. Idempotent."""
        with contextlib.suppress(Exception):
            await self._client.close()

    async def _on_request(self, msg: Any) -> None:
        if not msg.reply:
            return
        try:
            request = RegistrationRequest.model_validate_json(msg.data)
        except (ValidationError, ValueError) as e:
            logger.warning("{}: bad registration request: {}", self._admin, safe_text(e, 200))
            await self._answer(msg, False, "malformed registration request")
            return
        # One at a time: two runs asking for one name must not both be granted it.
        async with self._lock:
            try:
                refusal = await self._decide(request)
                if refusal is None:
                    await self._authorize(request)
            except Exception as e:
                logger.opt(exception=e).error("{}: registration failed", self._admin)
                refusal = "the admin could not register it"
        await self._answer(msg, refusal is None, refusal or "")

    async def _answer(self, msg: Any, accepted: bool, reason: str) -> None:
        answer = Registration(accepted=accepted, admin=self._admin, reason=reason)
        with contextlib.suppress(Exception):
            await msg.respond(answer.model_dump_json().encode())


async def register(
    url: str,
    workspace: str,
    name: str,
    role: str,
    identity: Identity,
    *,
    user: str | None,
    password: str | None,
    timeout: float,
    connect_timeout: float = 3.0,
    tls: Any = None,
    optional: bool = False,
    patience: float = 0.0,
) -> str | None:
    """Ask the admin for an identity, as the registrar user; return the admin's name.

    Retries until ``timeout`` while no admin answers, or while the name's holder is being
    checked. With ``optional`` (a server that may be an admin's or one of its own), a server
    that refuses the registrar's login, or where nobody serves registrations for
    ``patience`` seconds (an admin that is starting may not serve them yet), is no error:
    None is returned and the agent connects as it is.

    Raises:
        ConnectionFailed: The server is unreachable or refused the token.
        DuplicateAgentName: The name belongs to a live agent with another identity.
        AdminUnreachable: No admin answered within ``timeout``.
    """
    client = Client()
    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "connect_timeout": connect_timeout,
        "allow_reconnect": False,
        "max_reconnect_attempts": 0,
        "error_cb": _quiet,
        "name": f"{workspace}/{name}-register",
    }
    if password:
        options.update(user=user or REGISTRAR_USER, password=password)
    if tls is not None:
        options["tls"] = tls
    if optional and tls is None and url.startswith("tls://"):
        return None  # nothing to verify the server with: it cannot be ours to trust
    try:
        await _bounded(client.connect(**options), connect_timeout + 1)
    except (TimeoutError, NatsError, OSError) as e:
        with contextlib.suppress(Exception):
            await client.close()
        if optional:
            return None
        reason = str(e) or type(e).__name__
        if "authorization" in reason.lower():
            reason = "authorization violation: wrong or missing token or credentials"
        raise ConnectionFailed(url, reason) from None
    request = RegistrationRequest(name=name, role=role, key=identity.public_key)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    refused: str | None = None
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if refused is not None:
                    raise DuplicateAgentName(name, workspace)
                raise AdminUnreachable(name, workspace, url, timeout)
            try:
                reply = await client.request(
                    register_subject(workspace),
                    request.model_dump_json().encode(),
                    timeout=min(1.0, remaining),
                )
            except (TimeoutError, NoRespondersError, NatsError):
                if optional and loop.time() > started + patience:
                    return None
                await asyncio.sleep(min(0.2, max(remaining, 0)))
                continue
            try:
                answer = Registration.model_validate_json(reply.data)
            except (ValidationError, ValueError):
                continue
            if answer.accepted:
                return answer.admin
            refused = answer.reason
            logger.debug("{}: registration refused for now: {}", name, safe_text(refused))
            await asyncio.sleep(min(0.5, max(remaining, 0)))
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _bounded(connecting: Awaitable[None], timeout: float) -> None:
    """Await ``connecting`` for at most ``timeout`` seconds.

    Not ``asyncio.wait_for``: that waits for the cancelled connect to finish, and nats-py can
    hang closing a TLS handshake that went wrong.
    """
    task = asyncio.ensure_future(connecting)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError(f"no connection within {timeout:g}s")
    task.result()


async def _quiet(error: Exception) -> None:
    logger.trace("NATS: {}", error)

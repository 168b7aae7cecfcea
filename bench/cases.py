"""The round-trip cases both messaging benchmarks run, whatever the transport.

``bench.inproc`` runs them on the memory transport, ``bench.nats_roundtrip`` over NATS with
the agents in other processes; each says only how its agents are started, what its bare
ceiling is and how it times a run. The cases: an admin and W :class:`Echo` agents;
*pipelined*, the admin keeps a window of :class:`Ping` in flight, sent round-robin from its
:class:`Pong` handler, each agent answering with ``send(sender, Pong)``; *sequential*, one
``admin.request(agent, Probe)`` at a time, round-robin, the handler's return value the reply.
Each framework run follows its bare twin, ``repeats`` times; the best of each case is kept.

A helper module, not a benchmark (it has no ``run``).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bench._util import percentile
from serendib import Admin, Agent, AgentDetail, current_message, on_message

__all__ = [
    "ADMIN",
    "COLUMNS",
    "DEADLINE",
    "Driver",
    "Echo",
    "Ping",
    "Pong",
    "Probe",
    "Run",
    "Sizes",
    "Window",
    "interleaved",
    "notes",
    "progress",
    "serendib_pipelined",
    "serendib_sequential",
]

ADMIN = "admin"
DEADLINE = 600.0
"""No single measurement may take longer than this (seconds): a hang fails, not stalls."""


@dataclass(frozen=True)
class Sizes:
    """How big one benchmark's cases are (the transport decides what is sensible).

    Attributes:
        round_trips: Round trips of a pipelined run.
        sequential: Round trips of a sequential run.
        workers: The W agents of each round of cases.
        repeats: Runs of each case; the best is kept.
        window: Round trips the admin keeps in flight in a pipelined run.
    """

    round_trips: int
    sequential: int
    workers: tuple[int, ...]
    repeats: int
    window: int


class Ping(BaseModel):
    """Pipelined: the agent answers with a direct ``send`` of :class:`Pong`.

    ``t`` is the admin's ``perf_counter_ns()`` when it sent the ping, echoed in the Pong.
    """

    n: int
    t: int


class Probe(BaseModel):
    """Sequential: the agent's handler returns :class:`Pong` as the reply to a ``request``."""

    n: int


class Pong(BaseModel):
    n: int
    t: int


class Echo(Agent):
    """The agent under test: answers every Ping and Probe."""

    @on_message
    async def on_ping(self, ping: Ping) -> None:
        envelope = current_message()
        assert envelope is not None
        await self.send(envelope.sender, Pong(n=ping.n, t=ping.t))

    @on_message
    async def on_probe(self, probe: Probe) -> Pong:
        return Pong(n=probe.n, t=0)


class Window:
    """Bookkeeping of a pipelined run (framework or bare); latency from the send time."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.received = 0
        self.latency = [0] * total
        self.done = asyncio.Event()

    def next(self) -> int | None:
        """Number of the next round trip to start, or None."""
        n = self.sent
        if n >= self.total:
            return None
        self.sent = n + 1
        return n

    def reply(self, n: int, sent_ns: int) -> None:
        """Round trip ``n``, sent at ``sent_ns``, is back."""
        self.latency[n] = time.perf_counter_ns() - sent_ns
        self.received += 1
        if self.received == self.total:
            self.done.set()


class Driver(Admin):
    """The admin under test: counts connections, keeps the pipelined window full."""

    def __init__(self, expect: int, workspace: str, **options: Any) -> None:
        super().__init__(ADMIN, workspace_id=workspace, **options)
        self.expect = expect
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.window: Window | None = None
        self.targets: Sequence[str] = ()

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        self.connected += 1
        if self.connected >= self.expect:
            self.all_connected.set()

    @on_message
    async def on_pong(self, pong: Pong) -> None:
        window = self.window
        assert window is not None
        window.reply(pong.n, pong.t)
        n = window.next()
        if n is not None:
            target = self.targets[n % len(self.targets)]
            await self.send(target, Ping(n=n, t=time.perf_counter_ns()))


@dataclass
class Run:
    """One messaging measurement; the CPU figures a benchmark does not take stay NaN."""

    case: str
    round_trips: int
    seconds: float
    latency_ns: list[int]
    cpu_here: float = math.nan
    """CPU seconds of this process (the admin, or the bare ceiling) during the run."""
    cpu_children: float = math.nan
    """CPU seconds of the agents' processes, when they run in others."""
    cpu_server: float = math.nan
    """CPU seconds of the message server, when there is one."""

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds

    def figures(self) -> dict[str, float | int | str | None]:
        """The columns every round-trip table starts with."""
        return {
            "case": self.case,
            "round trips": self.round_trips,
            "round trips/s": self.rate,
            "p50 us": percentile(self.latency_ns, 50) / 1e3,
            "p99 us": percentile(self.latency_ns, 99) / 1e3,
        }


COLUMNS = ["case", "round trips", "round trips/s", "p50 us", "p99 us"]
"""The columns of :meth:`Run.figures`."""


async def serendib_pipelined(driver: Driver, names: Sequence[str], total: int, window: int) -> Run:
    """Admin sends Ping round-robin, ``window`` in flight; agents ``send`` Pong back."""
    workers = len(names)
    state = Window(total)
    driver.window, driver.targets = state, names
    started = time.perf_counter()
    for _ in range(min(window, total)):
        n = state.next()
        assert n is not None
        await driver.send(names[n % workers], Ping(n=n, t=time.perf_counter_ns()))
    await state.done.wait()
    seconds = time.perf_counter() - started
    driver.window = None
    return Run(f"serendib pipelined W={workers:,}", total, seconds, state.latency)


async def serendib_sequential(driver: Driver, names: Sequence[str], total: int) -> Run:
    """Admin ``request``s Probe of each agent in turn, one at a time."""
    workers = len(names)
    latency = [0] * total
    started = time.perf_counter()
    for n in range(total):
        sent = time.perf_counter_ns()
        await driver.request(names[n % workers], Probe(n=n))
        latency[n] = time.perf_counter_ns() - sent
    seconds = time.perf_counter() - started
    return Run(f"serendib sequential W={workers:,}", total, seconds, latency)


async def interleaved(
    repeats: int, rounds: Callable[[], Sequence[Awaitable[Run]]]
) -> list[tuple[Run, Run]]:
    """(bare, serendib) best runs of each case, in the order ``rounds`` gives them.

    ``rounds()`` makes one round of measurements, each taking its own CPU figures: bare
    pipelined, serendib pipelined, bare sequential, serendib sequential (each framework run
    right after its bare twin, so both see the same machine). Best: by rate, since other load
    on the machine only ever slows a run down.
    """
    runs: dict[str, list[Run]] = {}
    for _ in range(repeats):
        for measurement in rounds():
            result = await measurement
            runs.setdefault(result.case, []).append(result)
    best = [max(r, key=lambda run: run.rate) for r in runs.values()]
    return list(zip(best[0::2], best[1::2], strict=True))


def notes(window: int) -> list[str]:
    """What the pipelined and sequential cases are, for a table's notes."""
    return [
        f"pipelined: the admin keeps {window:,} round trips in flight, sending Ping(n, t) to "
        "the agents round-robin from its Pong handler; each agent answers with "
        "send(sender, Pong); latency = admin's clock at the Pong minus t (queueing included)",
        "sequential: one admin.request(agent, Probe) at a time, agents round-robin; the "
        "handler's return value is the reply",
    ]


def progress(text: str) -> None:
    """A line on stderr while a benchmark runs."""
    print(f"  .. {text}", file=sys.stderr, flush=True)

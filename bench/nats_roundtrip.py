"""NATS round trips: admin -> agent -> admin, the agents in two other processes.

An embedded ``nats-server`` and the admin run in this process; AGENT_PROCESSES child
processes each host K agents (one NATS connection per agent, as every agent has). Round
trips go admin -> agent -> admin. In the same run, a bare nats-py ping-pong with the same
shape (this process publishes, the children's plain nats-py subscribers answer, one
connection and one subject per "agent") is the ceiling the framework is compared to.

Run alone: ``python -m bench.nats_roundtrip [--quick] [--json] [--profile]``.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import math
import os
import pstats
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
from pydantic import BaseModel

from bench._util import Table, module_main, percentile, quiet_logs
from serendib import Admin, Agent, AgentDetail, current_message, on_message
from serendib.transports.embedded import EmbeddedBroker

__all__ = ["run"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin"
AGENT_PROCESSES = 2
WINDOW = 10_000
"""Round trips the admin keeps in flight in the pipelined runs."""
DEADLINE = 600.0
"""No single measurement may take longer than this (seconds): a hang fails, not stalls."""
BARE_PONG = "bare.pong"
TICK = os.sysconf("SC_CLK_TCK")
PING = struct.Struct("<qq")
"""Bare payload: the round trip's number and its send time (perf_counter_ns)."""


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


class _Window:
    """Bookkeeping of a pipelined run; latency comes from the send time in the message."""

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

    def __init__(self, expect: int, workspace: str, url: str) -> None:
        super().__init__(ADMIN, workspace_id=workspace, transport=url)
        self.expect = expect
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.window: _Window | None = None
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


def _names(processes: int, per_process: int) -> list[str]:
    # Round-robin alternates the processes: p0a0, p1a0, p0a1, p1a1, ...
    return [f"p{p}a{i}" for i in range(per_process) for p in range(processes)]


async def _guard(awaitable: Awaitable[T], alive: Callable[[], None] | None = None) -> T:
    """Await ``awaitable`` within DEADLINE, failing at once if ``alive`` raises."""
    main = asyncio.ensure_future(awaitable)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        done, _ = await asyncio.wait({main}, timeout=0.5)
        if main in done:
            return main.result()
        if alive is not None:
            try:
                alive()
            except BaseException:
                main.cancel()
                raise
    main.cancel()
    raise TimeoutError(f"measurement took more than {DEADLINE}s")


# --- child processes -------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Children:
    """The child processes of one kind (agents or bare subscribers)."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *args: str) -> None:
        command = [sys.executable, "-m", "bench.nats_roundtrip", *args]
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        )

    def alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a child process exited ({process.returncode})")

    def wait_ready(self) -> None:
        """Block until every child printed its ready line."""
        for process in self.processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"a child process failed to start ({process.poll()})")

    def cpu(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.processes)

    def end(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()  # end of input: the child stops and exits
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


async def agent_process(
    url: str, workspace: str, prefix: str, count: int, profile_to: str | None
) -> None:
    """The body of an agent process: ``count`` Echo agents on ``url`` until stdin closes."""
    quiet_logs()
    crew = [
        Echo(f"{prefix}{i}", workspace, transport=url, join_timeout=120.0) for i in range(count)
    ]
    await asyncio.gather(*(agent.start() for agent in crew))
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    await _until_stdin_closes()
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    await asyncio.gather(*(agent.stop() for agent in crew), return_exceptions=True)


async def bare_process(url: str, prefix: str, count: int) -> None:
    """The body of a bare process: ``count`` nats-py connections, each echoing one subject.

    A message with a reply subject (``request``) is answered there, any other on BARE_PONG.
    """
    clients = []
    for i in range(count):
        nc = await nats.connect(url)

        async def echo(msg: Any, nc: Any = nc) -> None:
            await nc.publish(msg.reply or BARE_PONG, msg.data)

        await nc.subscribe(f"bare.{prefix}{i}", cb=echo)
        await nc.flush()
        clients.append(nc)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    await _until_stdin_closes()
    for nc in clients:
        await nc.close()


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Run:
    """One messaging measurement."""

    case: str
    round_trips: int
    seconds: float
    latency_ns: list[int]
    cpu_here: float = math.nan
    """CPU seconds of this process (the admin, or the bare publisher) during the run."""
    cpu_children: float = math.nan
    """CPU seconds of the child processes (agents, or bare subscribers) during the run."""
    cpu_server: float = math.nan
    """CPU seconds of nats-server during the run."""

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds

    def row(self, ceiling: Run | None) -> dict[str, float | int | str | None]:
        per = 1e6 / self.round_trips
        return {
            "case": self.case,
            "round trips": self.round_trips,
            "round trips/s": self.rate,
            "p50 us": percentile(self.latency_ns, 50) / 1e3,
            "p99 us": percentile(self.latency_ns, 99) / 1e3,
            "admin CPU us/rt": self.cpu_here * per,
            "agents CPU us/rt": self.cpu_children * per,
            "server CPU us/rt": self.cpu_server * per,
            "this/bare": None if ceiling is None else self.rate / ceiling.rate,
        }


async def serendib_pipelined(
    driver: Driver, names: Sequence[str], total: int, window: int = WINDOW
) -> Run:
    """Admin sends Ping round-robin, ``window`` in flight; agents ``send`` Pong back."""
    workers = len(names)
    state = _Window(total)
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


async def bare_pipelined(nc: Any, names: Sequence[str], total: int, window: int = WINDOW) -> Run:
    """The ceiling: the same traffic as plain nats-py publishes and subscriptions."""
    workers = len(names)
    subjects = [f"bare.{name}" for name in names]
    state = _Window(total)
    unpack, pack = PING.unpack, PING.pack

    async def on_pong(msg: Any) -> None:
        state.reply(*unpack(msg.data))
        n = state.next()
        if n is not None:
            await nc.publish(subjects[n % workers], pack(n, time.perf_counter_ns()))

    sub = await nc.subscribe(BARE_PONG, cb=on_pong, pending_msgs_limit=4 * window)
    await nc.flush()
    started = time.perf_counter()
    for _ in range(min(window, total)):
        n = state.next()
        assert n is not None
        await nc.publish(subjects[n % workers], pack(n, time.perf_counter_ns()))
    await state.done.wait()
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    return Run(f"bare nats-py pipelined W={workers:,}", total, seconds, state.latency)


async def bare_sequential(nc: Any, names: Sequence[str], total: int) -> Run:
    """The ceiling: nats-py ``request`` of each subscriber in turn, one at a time."""
    workers = len(names)
    subjects = [f"bare.{name}" for name in names]
    latency = [0] * total
    started = time.perf_counter()
    for n in range(total):
        sent = time.perf_counter_ns()
        await nc.request(subjects[n % workers], PING.pack(n, sent), timeout=5)
        latency[n] = time.perf_counter_ns() - sent
    seconds = time.perf_counter() - started
    return Run(f"bare nats-py sequential W={workers:,}", total, seconds, latency)


def _best(runs: Sequence[Run]) -> Run:
    # Other load on the machine only ever slows a run down: the fastest is the least disturbed.
    return max(runs, key=lambda r: r.rate)


async def _timed(
    measurement: Awaitable[Run],
    children: Children,
    server_pid: int,
    runs: dict[str, list[Run]],
    alive: Callable[[], None],
) -> None:
    gc.collect()
    here, there, server = time.process_time(), children.cpu(), _cpu_seconds(server_pid)
    result = await _guard(measurement, alive)
    result.cpu_here = time.process_time() - here
    result.cpu_children = children.cpu() - there
    result.cpu_server = _cpu_seconds(server_pid) - server
    runs.setdefault(result.case, []).append(result)
    _progress(f"{result.case}: {result.rate:,.0f}/s")


@dataclass
class Setup:
    """A running admin with its agent processes, and the bare subscribers beside them."""

    driver: Driver
    names: list[str]
    agents: Children
    bare: Children
    nc: Any
    server_pid: int

    def alive(self) -> None:
        self.agents.alive()
        self.bare.alive()


async def _with_setup(
    broker: EmbeddedBroker,
    per_process: int,
    body: Callable[[Setup], Awaitable[T]],
    profile_dir: str | None = None,
) -> T:
    """Run ``body`` with the admin, AGENT_PROCESSES agent processes and the bare ones up."""
    workers = AGENT_PROCESSES * per_process
    workspace = f"bench{workers}"
    driver = Driver(workers, workspace, broker.url)
    agents, bare = Children(), Children()
    nc: Any = None
    await driver.start()
    try:
        for p in range(AGENT_PROCESSES):
            args = ["--agent-process", broker.url, workspace, f"p{p}a", str(per_process)]
            if profile_dir is not None:
                args.append(str(Path(profile_dir) / f"agent{p}.prof"))
            agents.spawn(*args)
            bare.spawn("--bare-process", broker.url, f"p{p}a", str(per_process))
        await _guard(asyncio.to_thread(bare.wait_ready), bare.alive)
        await _guard(driver.all_connected.wait(), agents.alive)
        nc = await nats.connect(broker.url)
        process = broker._process  # the server's pid, for its CPU time
        assert process is not None
        setup = Setup(driver, _names(AGENT_PROCESSES, per_process), agents, bare, nc, process.pid)
        return await body(setup)
    finally:
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(agents.end)
        await asyncio.to_thread(bare.end)
        await driver.stop()


async def messaging_for(
    broker: EmbeddedBroker, per_process: int, total: int, sequential_total: int, repeats: int
) -> list[tuple[Run, Run]]:
    """(bare, serendib) best runs, pipelined then sequential."""

    async def body(s: Setup) -> list[tuple[Run, Run]]:
        runs: dict[str, list[Run]] = {}
        for _ in range(repeats):
            # Each framework run right after its bare twin, so both see the same machine.
            for measurement, children in (
                (bare_pipelined(s.nc, s.names, total), s.bare),
                (serendib_pipelined(s.driver, s.names, total), s.agents),
                (bare_sequential(s.nc, s.names, sequential_total), s.bare),
                (serendib_sequential(s.driver, s.names, sequential_total), s.agents),
            ):
                await _timed(measurement, children, s.server_pid, runs, s.alive)
        best = [_best(r) for r in runs.values()]
        return [(best[0], best[1]), (best[2], best[3])]

    return await _with_setup(broker, per_process, body)


async def messaging(
    total: int, sequential_total: int, per_process: Sequence[int], repeats: int
) -> Table:
    table = Table(
        f"NATS messaging: admin -> agent -> admin round trips, agents in {AGENT_PROCESSES} "
        "other processes",
        [
            "case",
            "round trips",
            "round trips/s",
            "p50 us",
            "p99 us",
            "admin CPU us/rt",
            "agents CPU us/rt",
            "server CPU us/rt",
            "this/bare",
        ],
    )
    load_before = os.getloadavg()[0]
    broker = EmbeddedBroker(0)
    await broker.start()
    try:
        for k in per_process:
            for ceiling, measured in await messaging_for(
                broker, k, total, sequential_total, repeats
            ):
                table.rows += [ceiling.row(None), measured.row(ceiling)]
    finally:
        await broker.stop()
    table.notes += [
        f"best of {repeats} runs each (by rate; its latencies and CPU shown); every framework "
        "run follows its bare twin on the same machine state; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        f"embedded nats-server and the admin in this process; {AGENT_PROCESSES} child "
        f"processes with W/{AGENT_PROCESSES} agents each, one NATS connection per agent",
        f"pipelined: the admin keeps {WINDOW:,} round trips in flight, sending Ping(n, t) to "
        "the agents round-robin from its Pong handler; each agent answers with "
        "send(sender, Pong); latency = admin's clock at the Pong minus t (queueing included)",
        "sequential: one admin.request(agent, Probe) at a time, agents round-robin; bare: "
        "nats-py request() to the subscribers in turn",
        "bare nats-py: the same shape without the framework: one connection and subject per "
        "'agent' in the child processes, echoing a 16-byte payload (n, t) to one reply "
        "subject this process subscribes to; this/bare = framework rate / bare rate",
        "CPU us/rt: CPU time per round trip of this process (admin or bare publisher), of the "
        "child processes together, and of nats-server (from /proc)",
    ]
    return table


# --- entry points ----------------------------------------------------------------------------


def _progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


async def _all(quick: bool) -> list[Table]:
    total = 20_000 if quick else 100_000
    sequential_total = 500 if quick else 2_000
    repeats = 1 if quick else 3
    return [await messaging(total, sequential_total, (5, 50), repeats)]


def run(quick: bool = False) -> list[Table]:
    """Run the NATS round-trip benchmarks; ``quick`` uses smaller sizes."""
    quiet_logs()
    return asyncio.run(_all(quick))


async def _profiled(per_process: int, total: int, directory: str) -> Run:
    broker = EmbeddedBroker(0)
    await broker.start()
    profiler = cProfile.Profile()

    async def body(s: Setup) -> Run:
        profiler.enable()
        try:
            return await serendib_pipelined(s.driver, s.names, total)
        finally:
            profiler.disable()

    try:
        result = await _with_setup(broker, per_process, body, directory)
    finally:
        await broker.stop()
    profiler.dump_stats(str(Path(directory) / "admin.prof"))
    return result


def profile(per_process: int = 5, total: int = 100_000, top: int = 25) -> None:
    """Profile one pipelined run (admin and agent processes) with cProfile; print the tops."""
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="serendib-nats-prof-") as directory:
        result = asyncio.run(_profiled(per_process, total, directory))
        print(f"{result.case}: {result.rate:,.0f} round trips/s under cProfile")
        for name in ("admin", "agent0"):
            print(f"\n--- {name} process, by own time ---")
            pstats.Stats(str(Path(directory) / f"{name}.prof")).sort_stats("tottime").print_stats(
                top
            )


def _child(argv: Sequence[str]) -> int:
    if argv[0] == "--agent-process":
        url, workspace, prefix, count, *rest = argv[1:]
        asyncio.run(agent_process(url, workspace, prefix, int(count), rest[0] if rest else None))
    else:
        url, prefix, count = argv[1:]
        asyncio.run(bare_process(url, prefix, int(count)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] in (["--agent-process"], ["--bare-process"]):
        raise SystemExit(_child(sys.argv[1:]))
    if "--profile" in sys.argv[1:]:
        profile()
        raise SystemExit(0)
    raise SystemExit(module_main(run, __doc__))

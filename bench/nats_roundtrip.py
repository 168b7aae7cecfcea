"""NATS round trips: admin -> agent -> admin, the agents in two other processes.

An embedded ``nats-server`` and the admin run in this process; AGENT_PROCESSES child
processes each host K agents (one NATS connection per agent, as every agent has). Round
trips go admin -> agent -> admin. In the same run, a bare nats-py ping-pong with the same
shape (this process publishes, the children's plain nats-py subscribers answer, one
connection and one subject per "agent") is the ceiling the framework is compared to.
The cases themselves (messages, agent, admin, pipelined and sequential runs) are
:mod:`bench.cases`', shared with ``bench.inproc``.

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

from bench._util import Table, module_main, quiet_logs
from bench.cases import (
    COLUMNS,
    DEADLINE,
    Driver,
    Echo,
    Run,
    Sizes,
    Window,
    interleaved,
    notes,
    progress,
    serendib_pipelined,
    serendib_sequential,
)
from serendib.transports.embedded import EmbeddedBroker

__all__ = ["run"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
AGENT_PROCESSES = 2
SIZES = {
    False: Sizes(
        round_trips=100_000, sequential=2_000, workers=(10, 100), repeats=3, window=10_000
    ),
    True: Sizes(round_trips=20_000, sequential=500, workers=(10, 100), repeats=1, window=10_000),
}
"""The messaging cases' sizes, by ``quick``; W agents split over AGENT_PROCESSES."""
BARE_PONG = "bare.pong"
TICK = os.sysconf("SC_CLK_TCK")
PING = struct.Struct("<qq")
"""Bare payload: the round trip's number and its send time (perf_counter_ns)."""


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


def _row(run: Run, ceiling: Run | None) -> dict[str, float | int | str | None]:
    per = 1e6 / run.round_trips
    return {
        **run.figures(),
        "admin CPU us/rt": run.cpu_here * per,
        "agents CPU us/rt": run.cpu_children * per,
        "server CPU us/rt": run.cpu_server * per,
        "this/bare": None if ceiling is None else run.rate / ceiling.rate,
    }


async def bare_pipelined(nc: Any, names: Sequence[str], total: int, window: int) -> Run:
    """The ceiling: the same traffic as plain nats-py publishes and subscriptions."""
    workers = len(names)
    subjects = [f"bare.{name}" for name in names]
    state = Window(total)
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


async def _timed(measurement: Awaitable[Run], children: Children, setup: Setup) -> Run:
    """Run ``measurement``, taking the CPU time of this process, ``children`` and the server."""
    gc.collect()
    server_pid = setup.server_pid
    here, there, server = time.process_time(), children.cpu(), _cpu_seconds(server_pid)
    result = await _guard(measurement, setup.alive)
    result.cpu_here = time.process_time() - here
    result.cpu_children = children.cpu() - there
    result.cpu_server = _cpu_seconds(server_pid) - server
    progress(f"{result.case}: {result.rate:,.0f}/s")
    return result


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
    driver = Driver(workers, workspace, transport=broker.url)
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
    broker: EmbeddedBroker, per_process: int, sizes: Sizes
) -> list[tuple[Run, Run]]:
    """(bare, serendib) best runs, pipelined then sequential."""

    async def body(s: Setup) -> list[tuple[Run, Run]]:
        total, window, sequential = sizes.round_trips, sizes.window, sizes.sequential

        def rounds() -> list[Awaitable[Run]]:
            return [
                _timed(bare_pipelined(s.nc, s.names, total, window), s.bare, s),
                _timed(serendib_pipelined(s.driver, s.names, total, window), s.agents, s),
                _timed(bare_sequential(s.nc, s.names, sequential), s.bare, s),
                _timed(serendib_sequential(s.driver, s.names, sequential), s.agents, s),
            ]

        return await interleaved(sizes.repeats, rounds)

    return await _with_setup(broker, per_process, body)


async def messaging(sizes: Sizes) -> Table:
    table = Table(
        f"NATS messaging: admin -> agent -> admin round trips, agents in {AGENT_PROCESSES} "
        "other processes",
        [*COLUMNS, "admin CPU us/rt", "agents CPU us/rt", "server CPU us/rt", "this/bare"],
    )
    load_before = os.getloadavg()[0]
    broker = EmbeddedBroker(0)
    await broker.start()
    try:
        for workers in sizes.workers:
            per_process = workers // AGENT_PROCESSES
            for ceiling, measured in await messaging_for(broker, per_process, sizes):
                table.rows += [_row(ceiling, None), _row(measured, ceiling)]
    finally:
        await broker.stop()
    table.notes += [
        f"best of {sizes.repeats} runs each (by rate; its latencies and CPU shown); every "
        "framework run follows its bare twin on the same machine state; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        f"embedded nats-server and the admin in this process; {AGENT_PROCESSES} child "
        f"processes with W/{AGENT_PROCESSES} agents each, one NATS connection per agent",
        *notes(sizes.window),
        "bare nats-py: the same shape without the framework: one connection and subject per "
        "'agent' in the child processes, echoing a 16-byte payload (n, t) to one reply "
        "subject this process subscribes to, or nats-py request() to them in turn "
        "(sequential); this/bare = framework rate / bare rate",
        "CPU us/rt: CPU time per round trip of this process (admin or bare publisher), of the "
        "child processes together, and of nats-server (from /proc)",
    ]
    return table


# --- entry points ----------------------------------------------------------------------------


async def _all(quick: bool) -> list[Table]:
    return [await messaging(SIZES[quick])]


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
            return await serendib_pipelined(s.driver, s.names, total, SIZES[False].window)
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

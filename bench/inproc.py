"""In-process benchmarks: messaging round trips and agent start-up, memory and idle CPU.

One admin and W agents in one process on the memory transport. Round trips go admin ->
agent -> admin; a bare ``asyncio.Queue`` ping-pong with the same shape (one task and one
queue per agent, one reply queue for the admin) runs in the same process as the ceiling.
The cases themselves (messages, agent, admin, pipelined and sequential runs) are
:mod:`bench.cases`', shared with ``bench.nats_roundtrip``.

Run alone: ``python -m bench.inproc [--quick] [--json]``; one framework case, for a profiler:
``python -m bench.inproc --one pipelined --workers 10 --round-trips 300000 [--profile]``.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bench._util import Table, guard, module_main, parser, quiet_logs, rss_bytes
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
from serendib import Agent

__all__ = ["run"]

T = TypeVar("T")

WORKSPACE = "bench"
SIZES = {
    False: Sizes(
        round_trips=100_000, sequential=100_000, workers=(10, 1_000), repeats=3, window=1_000
    ),
    True: Sizes(
        round_trips=10_000, sequential=10_000, workers=(10, 1_000), repeats=1, window=1_000
    ),
}
"""The messaging cases' sizes, by ``quick``."""


def _names(count: int) -> list[str]:
    return [f"w{i}" for i in range(count)]


def _crew(count: int, **options: Any) -> list[Agent]:
    return [Echo(name, WORKSPACE, **options) for name in _names(count)]


async def _with_crew(
    count: int, body: Callable[[Driver, list[str]], Awaitable[T]], **options: Any
) -> T:
    """Run ``body`` while an admin and ``count`` Echo agents (given ``options``) run (arun)."""
    driver = Driver(count, WORKSPACE)
    running = asyncio.create_task(driver.arun(_crew(count, **options)))
    try:
        await guard(driver.all_connected.wait(), DEADLINE, running, who="the admin")
        return await guard(body(driver, _names(count)), DEADLINE, running, who="the admin")
    finally:
        await driver.stop()
        await running


# --- messaging -------------------------------------------------------------------------------


def _row(run: Run, ceiling: Run | None) -> dict[str, float | int | str | None]:
    return {
        **run.figures(),
        "CPU us/rt": run.cpu_here / run.round_trips * 1e6,
        "bare/this": None if ceiling is None else ceiling.rate / run.rate,
    }


async def bare_pipelined(workers: int, total: int, window: int) -> Run:
    """The ceiling: the same traffic over bare queues, one task per 'agent'."""
    state = Window(total)
    sent_at = [0] * total
    replies: asyncio.Queue[int] = asyncio.Queue()
    inboxes: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(workers)]

    async def worker(inbox: asyncio.Queue[int]) -> None:
        while True:
            replies.put_nowait(await inbox.get())

    tasks = [asyncio.create_task(worker(q)) for q in inboxes]
    started = time.perf_counter()
    for _ in range(min(window, total)):
        n = state.next()
        assert n is not None
        sent_at[n] = time.perf_counter_ns()
        inboxes[n % workers].put_nowait(n)
    while state.received < total:
        n = await replies.get()
        state.reply(n, sent_at[n])
        n = state.next()
        if n is not None:
            sent_at[n] = time.perf_counter_ns()
            inboxes[n % workers].put_nowait(n)
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Run(f"bare queue pipelined W={workers:,}", total, seconds, state.latency)


async def bare_sequential(workers: int, total: int) -> Run:
    """The ceiling: put on a task's queue, await its answer on the reply queue."""
    replies: asyncio.Queue[int] = asyncio.Queue()
    inboxes: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(workers)]

    async def worker(inbox: asyncio.Queue[int]) -> None:
        while True:
            replies.put_nowait(await inbox.get())

    tasks = [asyncio.create_task(worker(q)) for q in inboxes]
    latency = [0] * total
    started = time.perf_counter()
    for n in range(total):
        sent = time.perf_counter_ns()
        inboxes[n % workers].put_nowait(n)
        await replies.get()
        latency[n] = time.perf_counter_ns() - sent
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Run(f"bare queue sequential W={workers:,}", total, seconds, latency)


async def _timed(measurement: Awaitable[Run]) -> Run:
    gc.collect()
    cpu = time.process_time()
    result = await measurement
    result.cpu_here = time.process_time() - cpu
    return result


async def messaging_for(workers: int, sizes: Sizes) -> list[tuple[Run, Run]]:
    """(bare, serendib) best runs, pipelined then sequential, for ``workers`` agents."""

    async def body(driver: Driver, names: list[str]) -> list[tuple[Run, Run]]:
        def rounds() -> list[Awaitable[Run]]:
            return [
                _timed(bare_pipelined(workers, sizes.round_trips, sizes.window)),
                _timed(serendib_pipelined(driver, names, sizes.round_trips, sizes.window)),
                _timed(bare_sequential(workers, sizes.sequential)),
                _timed(serendib_sequential(driver, names, sizes.sequential)),
            ]

        return await interleaved(sizes.repeats, rounds)

    return await _with_crew(workers, body)


async def messaging(sizes: Sizes) -> Table:
    table = Table(
        "In-process messaging: admin -> agent -> admin round trips (memory transport)",
        [*COLUMNS, "CPU us/rt", "bare/this"],
    )
    for workers in sizes.workers:
        for ceiling, measured in await messaging_for(workers, sizes):
            table.rows += [_row(ceiling, None), _row(measured, ceiling)]
            progress(f"{measured.case}: {measured.rate:,.0f}/s (bare {ceiling.rate:,.0f}/s)")
    table.notes += [
        f"best of {sizes.repeats} runs each (by rate; its latencies shown); every framework run "
        "follows its bare twin, with the W agents started and connected (Admin.arun)",
        *notes(sizes.window),
        "bare queue: the same shape with asyncio.Queue and ints (one task and queue per agent, "
        "one reply queue), no framework; bare/this = how many times faster the bare queue is",
        "CPU us/rt: process CPU time per round trip (the whole process: heartbeats included); "
        "on a busy machine it is steadier than the rate",
    ]
    return table


# --- agents: start-up, memory, idle CPU ------------------------------------------------------


async def _stop(driver: Driver, running: asyncio.Task[None] | None, crew: list[Agent]) -> float:
    started = time.perf_counter()
    await driver.stop()
    if running is not None:
        await running
    else:
        await asyncio.gather(*(a.stop() for a in crew))
    return time.perf_counter() - started


async def _idle_cpu(seconds: float) -> float:
    """Share of one core this process uses over ``seconds`` of doing nothing itself."""
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def startup_arun(count: int, idle_seconds: float) -> dict[str, float | None]:
    """Admin.arun(workers=[...]): time to all connected, RSS growth, idle CPU, stop time."""
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    crew = _crew(count)
    built = time.perf_counter()
    driver = Driver(count, WORKSPACE)
    running = asyncio.create_task(driver.arun(crew))
    await guard(driver.all_connected.wait(), DEADLINE, running, who="the admin")
    connected = time.perf_counter()
    gc.collect()
    rss_after = rss_bytes()
    # Idle: the agents heartbeat at their default interval; nothing else runs.
    await asyncio.sleep(min(1.0, idle_seconds))
    idle_cpu = await _idle_cpu(idle_seconds)
    stop_seconds = await _stop(driver, running, crew)
    return {
        "construct_s": built - started,
        "connect_s": connected - built,
        "rss_per_agent": None
        if rss_before is None or rss_after is None
        else (rss_after - rss_before) / count,
        "idle_cpu": idle_cpu,
        "heartbeat_s": crew[0].heartbeat_interval if crew else None,
        "stop_s": stop_seconds,
    }


async def idle_with_heartbeat(count: int, interval: float, idle_seconds: float) -> float:
    """Idle CPU of an admin and ``count`` agents given ``heartbeat_interval=interval``."""

    async def body(driver: Driver, names: list[str]) -> float:
        await asyncio.sleep(min(1.5 * interval, idle_seconds))  # first beats under way
        return await _idle_cpu(idle_seconds)

    return await _with_crew(count, body, heartbeat_interval=interval)


async def startup_shared_url(count: int) -> float:
    """Admin started alone on memory://NAME, then every agent's start() on that URL at once."""
    url = f"memory://bench-{uuid.uuid4().hex[:8]}"
    driver = Driver(count, WORKSPACE, transport=url)
    await driver.start()
    crew = _crew(count, transport=url)
    started = time.perf_counter()
    await guard(asyncio.gather(*(a.start() for a in crew)), DEADLINE, who="the admin")
    await guard(driver.all_connected.wait(), DEADLINE, who="the admin")
    seconds = time.perf_counter() - started
    await asyncio.gather(*(a.stop() for a in crew))
    await driver.stop()
    return seconds


async def traced_memory(count: int) -> float:
    """Bytes Python allocated per connected agent (tracemalloc), the admin's records included."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        crew = _crew(count)
        driver = Driver(count, WORKSPACE)
        running = asyncio.create_task(driver.arun(crew))
        await guard(driver.all_connected.wait(), DEADLINE, running, who="the admin")
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    await _stop(driver, running, crew)
    return (after - before) / count


async def agents(count: int, idle_seconds: float) -> Table:
    lifecycle = await startup_arun(count, idle_seconds)
    shared = await startup_shared_url(count)
    per_agent = await traced_memory(count)
    idle = lifecycle["idle_cpu"]
    assert idle is not None
    busy = await idle_with_heartbeat(count, 1.0, idle_seconds)
    rss = lifecycle["rss_per_agent"]
    return Table(
        f"Agents: start-up, memory, idle CPU ({count:,} agents, memory transport)",
        ["figure", "value", "unit", "target"],
        [
            {
                "figure": f"construct {count:,} Agent objects",
                "value": (lifecycle["construct_s"] or 0) * 1e3,
                "unit": "ms",
            },
            {
                "figure": "Admin.arun(workers) -> all on_agent_connected",
                "value": (lifecycle["connect_s"] or 0) * 1e3,
                "unit": "ms",
                "target": "< 1,000",
            },
            {
                "figure": "shared memory:// URL, gather(start()) -> all connected",
                "value": shared * 1e3,
                "unit": "ms",
                "target": "< 1,000",
            },
            {
                "figure": "memory per agent (tracemalloc)",
                "value": per_agent / 1024,
                "unit": "KiB",
            },
            {
                "figure": "memory per agent (RSS growth)",
                "value": None if rss is None else rss / 1024,
                "unit": "KiB",
            },
            {
                "figure": f"CPU while idle, default heartbeat ({lifecycle['heartbeat_s']:g} s)",
                "value": idle * 100,
                "unit": "% of a core",
                "target": "~0",
            },
            {
                "figure": "CPU while idle, heartbeat_interval=1 s",
                "value": busy * 100,
                "unit": "% of a core",
                "target": "~0",
            },
            {
                "figure": "  = CPU per heartbeat (sent + tracked)",
                "value": busy / count * 1e6,
                "unit": "us",
            },
            {
                "figure": f"stop admin + {count:,} agents",
                "value": (lifecycle["stop_s"] or 0) * 1e3,
                "unit": "ms",
            },
        ],
        [
            f"idle CPU: process CPU time over {idle_seconds:g} s of wall time after start-up "
            "settled, as % of one core",
            "memory: tracemalloc counts Python allocations from before the agents were built "
            "until all were connected; RSS growth over the same span is coarser",
        ],
    )


# --- entry points ----------------------------------------------------------------------------


async def _all(quick: bool) -> list[Table]:
    count = 1_000
    idle_seconds = 2.0 if quick else 5.0
    # Agents first, while the heap is fresh: RSS growth means most then.
    tables = [await agents(count, idle_seconds)]
    progress("agents done")
    tables.insert(0, await messaging(SIZES[quick]))
    return tables


def run(quick: bool = False) -> list[Table]:
    """Run every in-process benchmark; ``quick`` uses smaller sizes."""
    quiet_logs()
    return asyncio.run(_all(quick))


def one(case: str, workers: int, total: int, profile: bool = False) -> Run:
    """Run one framework case alone (for an outside profiler); ``profile`` wraps it in cProfile.

    Args:
        case: ``pipelined`` or ``sequential``.
        workers: Agents (W).
        total: Round trips.
        profile: Print cProfile's top 25 functions by own time afterwards.
    """
    import cProfile
    import pstats

    async def body(driver: Driver, names: list[str]) -> Run:
        cpu = time.process_time()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        if case == "pipelined":
            result = await serendib_pipelined(driver, names, total, SIZES[False].window)
        else:
            result = await serendib_sequential(driver, names, total)
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        result.cpu_here = time.process_time() - cpu
        return result

    quiet_logs()
    return asyncio.run(_with_crew(workers, body))


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__, prog="python -m bench.inproc")
    p.add_argument(
        "--one",
        choices=("pipelined", "sequential"),
        help="run only this framework case (for a profiler such as py-spy)",
    )
    p.add_argument("--workers", type=int, default=10, help="agents, with --one (default 10)")
    p.add_argument("--round-trips", type=int, default=100_000, help="with --one (default 100,000)")
    p.add_argument("--profile", action="store_true", help="with --one: cProfile it")
    args = p.parse_args(argv)
    if args.one is None:
        flags = ["--quick"] * args.quick + ["--json"] * args.json
        return module_main(run, __doc__, flags)
    result = one(args.one, args.workers, args.round_trips, args.profile)
    print(
        f"{result.case}: {result.round_trips:,} round trips, {result.rate:,.0f}/s, "
        f"{result.cpu_here / result.round_trips * 1e6:.1f} CPU us each"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

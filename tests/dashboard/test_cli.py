"""``serendib demo --dashboard`` and ``serendib admin --dashboard``, as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from tests.dashboard.conftest import DEADLINE
from tests.processes import free_port


async def serendib(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "serendib",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


async def test_the_demo_reports_then_serves_its_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    demo = await serendib(
        "demo", "--time-scale", "0.01", "--dashboard", f"127.0.0.1:{port}", cwd=tmp_path
    )
    assert demo.stderr is not None
    try:
        async with asyncio.timeout(DEADLINE):
            while b"Dashboard: http://127.0.0.1" not in (line := await demo.stderr.readline()):
                assert line, "the demo ended before serving its dashboard"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                stats = (await client.get("/api/stats")).json()
                workers = (await client.get("/api/workers")).json()
            demo.send_signal(signal.SIGINT)
            out, _ = await demo.communicate()
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()

    assert stats["counts"]["succeeded"] == 3
    assert [w["name"] for w in workers] == ["Junior", "Intermediate", "Senior"]
    assert b"Success rate: 100.00% (3 of 3 tasks)" in out
    assert demo.returncode == 0


async def test_an_admin_whose_dashboard_port_is_taken_exits_with_the_reason(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = await serendib(
            "admin",
            "--port",
            str(free_port()),
            "--store",
            str(tmp_path / "tasks.db"),
            "--dashboard",
            f"127.0.0.1:{port}",
            cwd=tmp_path,
        )
        async with asyncio.timeout(DEADLINE):
            _, err = await admin.communicate()

    assert admin.returncode == 3  # like a broker port taken
    assert f"cannot serve the dashboard on 127.0.0.1:{port}".encode() in err

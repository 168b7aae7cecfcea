"""The seed tutorial runs with only its import line changed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "tutorial.md"


def test_tutorial_differs_from_the_seed_only_in_its_imports() -> None:
    ours = (EXAMPLES / "tutorial.py").read_text()
    code = [line for line in ours.splitlines() if line.strip() and not line.startswith("#")]
    if SEED.exists():
        blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), re.S)
        seed = [line for block in blocks for line in block.splitlines() if line.strip()]
        different = [(a, b) for a, b in zip(seed, code, strict=True) if a != b]
        assert [a for a, _ in different] == [
            "from ceylon import Agent, on_message",
            "from ceylon import CoreAdmin",
        ]
        assert [b.split("#")[0].strip() for _, b in different] == [
            "from serendib import Agent, on_message",
            "from serendib import CoreAdmin, AgentDetail",
        ]


def test_tutorial_runs_to_completion_and_reports_its_success_rate() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "tutorial.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = proc.stderr
    assert proc.returncode == 0, log
    for name in ("Junior", "Intermediate", "Senior"):
        assert f"Worker name='{name}'" in log
        assert f"{name} received task: Simple calculation" in log
    # Its manager broadcasts every task to every worker and stops at the first three
    # results: those of the easiest task, which every worker passes.
    results = re.findall(r"Received result for task (\d) from (\w+): (\w+)", log)
    assert sorted(results) == [
        ("1", "Intermediate", "Success"),
        ("1", "Junior", "Success"),
        ("1", "Senior", "Success"),
    ]
    assert "All tasks completed. Success rate: 100.00%" in log
    assert "Traceback" not in log
    assert "memory://" in log.splitlines()[0]

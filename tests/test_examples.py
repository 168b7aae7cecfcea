"""The examples in examples/ run to completion and say what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_seed_scenario_with_the_task_manager_succeeds_everywhere() -> None:
    done = run_example("seed_task_manager.py", "--time-scale", "0.01")
    assert done.returncode == 0, done.stderr
    assert "Success rate: 100.00% (3 of 3 tasks)" in done.stdout
    for name in ("Junior", "Intermediate", "Senior"):
        assert name in done.stdout


def test_primes_across_workers_of_different_skills_adds_up() -> None:
    done = run_example("primes.py", "--tasks", "20")
    assert done.returncode == 0, done.stderr
    assert "Success rate: 100.00% (20 of 20 tasks)" in done.stdout
    counted = done.stdout.split("Primes counted by the workers: ")[1].split(";")[0]
    assert f"by a direct count: {counted}" in done.stdout


def test_the_diamond_pipeline_hands_each_step_its_parents_outputs() -> None:
    done = run_example("pipeline.py", "--chunks", "3")
    assert done.returncode == 0, done.stderr
    assert "across 3 chunks" in done.stdout
    assert "the pipeline's counts match a direct count" in done.stdout

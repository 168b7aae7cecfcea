"""The holds on pending tasks, alone: limits per key, time, and the dependency graph."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serendib.tasks.engine.graph import dependency_faults, parents_first
from serendib.tasks.engine.holds import Dependencies, KeyLimits, Timeline
from serendib.tasks.models import Backoff, Task


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 5),
    rate=st.one_of(st.none(), st.floats(0.5, 20)),
    steps=st.lists(
        st.tuples(st.sampled_from(["submit", "start", "end", "tick"]), st.floats(0, 0.5)),
        max_size=120,
    ),
)
def test_a_key_never_runs_more_than_its_limit_nor_starts_faster_than_its_rate(
    limit: int, rate: float | None, steps: list[tuple[str, float]]
) -> None:
    limits = KeyLimits({"k": limit}, {"k": rate} if rate else {})
    now = 0.0
    admitted: list[str] = []  # in the scheduler, not started
    running: list[str] = []
    starts: list[float] = []
    submitted = 0
    for action, wait in steps:
        now += wait
        if action == "submit":
            submitted += 1
            if limits.admit("k", f"t{submitted}", 0, now):
                admitted.append(f"t{submitted}")
        elif action == "start" and admitted:
            task_id = admitted.pop(0)
            limits.started("k", task_id, now)
            running.append(task_id)
            starts.append(now)
        elif action == "end" and running:
            limits.release("k", running.pop(0))
        admitted += limits.ready(now)
        assert len(admitted) + len(running) <= limit
    if rate:
        permits = max(1, math.floor(rate))
        window = permits / rate
        for i in range(len(starts) - permits):
            # permits + 1 starts never fit in one window.
            assert starts[i + permits] - starts[i] >= window - 1e-9


def test_a_key_lets_queued_tasks_go_first_in_line_as_permits_come_back() -> None:
    limits = KeyLimits({"db": 2})
    assert limits.admit("db", "a", 0, 0.0)
    assert limits.admit("db", "b", 0, 0.0)
    assert not limits.admit("db", "low", -1, 0.0)
    assert not limits.admit("db", "high", 5, 0.0)
    assert limits.reason("db", 0.0) == "held by the limit of 'db': 2 of 2 running or about to"
    assert limits.ready(0.0) == []
    limits.release("db", "a")
    assert limits.ready(0.0) == ["high"]
    assert limits.withdraw("db", "low")
    limits.release("db", "b")
    assert limits.ready(0.0) == []
    assert limits.counts("db") == (1, 0)


def test_a_rate_gives_a_start_permit_back_one_window_after_its_start() -> None:
    limits = KeyLimits(rates={"api": 2})
    assert limits.admit("api", "a", 0, 0.0)
    assert limits.admit("api", "b", 0, 0.0)
    assert not limits.admit("api", "c", 0, 0.0)
    assert limits.next_at() is None  # nothing started: no permit on its way back
    limits.started("api", "a", 0.25)
    assert limits.next_at() == 1.25
    assert limits.ready(1.0) == []
    assert limits.ready(1.25) == ["c"]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyLimits({"k": 0})
    with pytest.raises(ValueError, match="above 0"):
        KeyLimits(rates={"k": 0.0})


def test_the_timeline_gives_back_what_is_due_earliest_first() -> None:
    timeline = Timeline()
    timeline.hold("late", 5.0)
    timeline.hold("soon", 1.0)
    timeline.hold("gone", 2.0)
    assert timeline.withdraw("gone")
    timeline.hold("moved", 9.0)
    timeline.hold("moved", 3.0)
    assert timeline.next_at() == 1.0
    assert timeline.due(3.0) == ["soon", "moved"]
    assert timeline.until("late") == 5.0
    assert len(timeline) == 1


def test_backoff_grows_by_its_factor_within_its_jitter_and_is_the_same_each_time() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, jitter=0.1, max_s=5.0)
    waits = [backoff.delay("t", n) for n in range(1, 6)]
    for wait, plain in zip(waits, [1, 2, 4, 5, 5], strict=True):
        assert plain * 0.9 <= wait <= plain * 1.1
    assert waits == [backoff.delay("t", n) for n in range(1, 6)]
    assert backoff.delay("other", 1) != waits[0]  # tasks failing together spread out
    assert Backoff(base_s=0).delay("t", 3) == 0.0


def _task(task_id: str, *parents: str) -> Task:
    return Task(id=task_id, difficulty=1, depends_on=parents)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_refusals_leave_an_acyclic_batch_and_parents_first_orders_it(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 12))
    ids = [f"t{i}" for i in range(size)]
    batch = {
        task_id: _task(
            task_id,
            *data.draw(
                st.lists(st.sampled_from([x for x in ids if x != task_id] or ["none"]), unique=True)
            ),
        )
        for task_id in ids
    }
    unknown = {t for t, r in batch.items() if "none" in r.depends_on}
    refused = dict.fromkeys(unknown, "unknown parent none")
    faults = dependency_faults(batch, refused)
    kept = {t: r for t, r in batch.items() if t not in refused and t not in faults}
    # What is kept has no refused parent and no cycle: it can be ordered parents first.
    order = parents_first(kept)
    assert sorted(order) == sorted(kept)
    position = {t: i for i, t in enumerate(order)}
    for task_id, record in kept.items():
        for parent in record.depends_on:
            assert parent in kept
            assert position[parent] < position[task_id]

    # And nothing was refused that could have been kept: each refusal is true.
    def reaches(start: str, goal: set[str]) -> bool:
        seen, stack = set(), [p for p in batch[start].depends_on if p in batch]
        while stack:
            node = stack.pop()
            if node in goal:
                return True
            if node not in seen:
                seen.add(node)
                stack += [p for p in batch[node].depends_on if p in batch]
        return False

    cyclic = {t for t, why in faults.items() if why.startswith("in a dependency cycle")}
    for task_id, why in faults.items():
        if task_id in cyclic:
            assert reaches(task_id, {task_id})
        elif why == "depends on a dependency cycle":
            assert reaches(task_id, cyclic)
        else:
            parent = why.removeprefix("parent ").removesuffix(" was refused")
            assert parent in batch[task_id].depends_on
            assert parent in refused or parent in faults


def test_a_child_learns_each_parents_end_and_is_doomed_by_a_failure() -> None:
    graph = Dependencies()
    graph.add("c", ["a", "b"], {}, run_anyway=False)
    graph.add("anyway", ["a", "b"], {}, run_anyway=True)
    first = graph.ended("a", True, 1, "succeeded")
    assert (first.ready, first.doomed) == ([], [])
    second = graph.ended("b", False, None, "failed")
    assert second.doomed == [("c", "b", "failed")]
    assert second.ready == ["anyway"]
    assert graph.inputs("anyway") == {"a": 1}
    assert "c" not in graph
    assert not graph.has_children("b")


def test_a_long_chain_of_refused_parents_is_judged_without_recursion() -> None:
    size = 20_000
    batch = {"t0": _task("t0", "missing")}
    for i in range(1, size):
        batch[f"t{i}"] = _task(f"t{i}", f"t{i - 1}")
    faults = dependency_faults(batch, {"t0": "unknown parent missing"})
    assert len(faults) == size - 1
    ring = {f"r{i}": _task(f"r{i}", f"r{(i + 1) % size}") for i in range(size)}
    assert set(dependency_faults(ring, {})) == set(ring)
    assert len(parents_first(batch)) == size

"""Routing beyond skill: a task goes only to a worker that runs its kind and has its labels.

Pure, like the scheduler's other tests: no server, no event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from serendib.tasks.scheduling import Assignment, Scheduler

GENERAL = "general"


def placed(assignments: Sequence[Assignment]) -> dict[str, str]:
    return {a.task_id: a.worker for a in assignments}


def test_a_task_goes_only_to_a_worker_that_runs_its_kind() -> None:
    s = Scheduler()
    s.add_worker("plain", {GENERAL: 9}, 4, kinds=["simulate"])
    s.add_worker("primer", {GENERAL: 9}, 4, kinds=["simulate", "primes"])
    s.add_task("p", GENERAL, 5, kind="primes")
    s.add_task("s", GENERAL, 5, kind="simulate")
    made = placed(s.assign())
    assert made["p"] == "primer"
    assert made["s"] in ("plain", "primer")


def test_a_worker_without_kinds_runs_every_kind() -> None:
    s = Scheduler()
    s.add_worker("any", {GENERAL: 5}, 1)
    s.add_task("p", GENERAL, 5, kind="primes")
    assert placed(s.assign()) == {"p": "any"}


def test_a_task_without_a_kind_goes_to_any_worker() -> None:
    s = Scheduler()
    s.add_worker("narrow", {GENERAL: 5}, 1, kinds=["primes"])
    s.add_task("t", GENERAL, 5)
    assert placed(s.assign()) == {"t": "narrow"}


def test_a_waiting_task_says_no_worker_runs_its_kind() -> None:
    s = Scheduler()
    s.add_worker("Junior", {GENERAL: 3}, 1, kinds=["simulate"])
    s.add_task("t2", "python", 7, kind="primes")
    assert s.assign() == []
    assert s.waiting_reason("t2") == (
        "waiting for a worker with python >= 7, kind primes "
        "(no connected worker handles kind 'primes' or has python)"
    )
    s.add_worker("Senior", {"python": 9}, 1, kinds=["simulate", "primes"])
    assert placed(s.assign()) == {"t2": "Senior"}


def test_required_labels_must_all_be_on_the_worker() -> None:
    s = Scheduler()
    s.add_worker("cpu-eu", {GENERAL: 9}, 2, labels=["region=eu"])
    s.add_worker("gpu-us", {GENERAL: 9}, 2, labels=["gpu", "region=us"])
    s.add_worker("gpu-eu", {GENERAL: 9}, 2, labels=["gpu", "region=eu"])
    s.add_task("train", GENERAL, 5, labels=["gpu", "region=eu"])
    s.add_task("render", GENERAL, 5, labels=["gpu"])
    s.add_task("plain", GENERAL, 5)
    made = s.assign()
    by_task = placed(made)
    assert by_task["train"] == "gpu-eu"
    assert by_task["render"] in ("gpu-us", "gpu-eu")
    [train] = [a for a in made if a.task_id == "train"]
    assert "labels gpu,region=eu" in train.reason


def test_a_waiting_task_names_the_label_no_worker_has() -> None:
    s = Scheduler()
    s.add_worker("cpu", {GENERAL: 9}, 1, labels=["region=eu"])
    s.add_task("train", GENERAL, 5, labels=["gpu", "region=eu"])
    s.assign()
    assert s.waiting_reason("train") == (
        "waiting for a worker with general >= 5, labels gpu,region=eu "
        "(no connected worker has label 'gpu')"
    )


def test_labels_and_kind_each_present_but_never_together() -> None:
    s = Scheduler()
    s.add_worker("gpu", {GENERAL: 9}, 1, kinds=["simulate"], labels=["gpu"])
    s.add_worker("primer", {GENERAL: 9}, 1, kinds=["primes"])
    s.add_task("t", GENERAL, 5, kind="primes", labels=["gpu"])
    s.assign()
    reason = s.waiting_reason("t")
    assert reason is not None
    assert reason.endswith("(no connected worker has all of them together)")


def test_reconfiguring_a_worker_replaces_pending_work_and_keeps_its_load() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 3}, 1)
    s.add_task("easy", GENERAL, 2)
    s.add_task("hard", GENERAL, 8)
    s.add_task("gpu", GENERAL, 2, labels=["gpu"])
    assert placed(s.assign()) == {"easy": "w"}
    # More skill, a label and a slot more: the two waiting tasks are placed, the one
    # running still counts.
    s.add_worker("w", {GENERAL: 9}, 3, load=1, labels=["gpu"])
    assert placed(s.assign()) == {"hard": "w", "gpu": "w"}
    assert s.load("w") == 3
    # Down to one slot: nothing new until two attempts end.
    s.add_worker("w", {GENERAL: 9}, 1, load=3, labels=["gpu"])
    s.add_task("later", GENERAL, 1)
    assert s.assign() == []
    s.release("w")
    s.release("w")
    assert s.assign() == []
    s.release("w")
    assert placed(s.assign()) == {"later": "w"}


def test_pools_of_label_sets_that_came_and_went_are_forgotten() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 9}, 1, labels=[f"l{i}" for i in range(8)])
    for i in range(1_000):
        s.add_task(f"t{i}", GENERAL, 1, labels=[f"l{i % 8}", f"x{i}"])  # never placed
        s.remove_task(f"t{i}")
    s.add_task("kept", GENERAL, 1, labels=["l1"])
    assert s.pool_count < 200  # bounded, not one per label set ever seen
    assert placed(s.assign()) == {"kept": "w"}


# --- properties --------------------------------------------------------------------------------


@dataclass
class _World:
    """What the scheduler should know: workers and pending tasks, by hand."""

    workers: dict[str, tuple[dict[str, int], int, frozenset[str] | None, frozenset[str]]] = field(
        default_factory=dict
    )
    load: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, tuple[str, int, str, frozenset[str]]] = field(default_factory=dict)

    def fits(self, worker: str, task: str) -> bool:
        skills, _, kinds, labels = self.workers[worker]
        skill, level, kind, needs = self.tasks[task]
        return (
            skills.get(skill, 0) >= level and (kinds is None or kind in kinds) and needs <= labels
        )

    def free(self, worker: str) -> bool:
        return self.load[worker] < self.workers[worker][1]

    def check(self, made: list[Assignment]) -> None:
        for a in made:
            assert a.task_id in self.tasks, f"{a.task_id} was not pending"
            assert self.fits(a.worker, a.task_id), a
            assert self.free(a.worker), f"{a.worker} is full"
            self.load[a.worker] += 1
            del self.tasks[a.task_id]
        for task in self.tasks:  # maximal: nothing left waiting that a free worker fits
            assert not any(self.fits(w, task) and self.free(w) for w in self.workers), task


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    names = st.sampled_from(["w0", "w1", "w2"])
    ids = st.sampled_from([f"t{i}" for i in range(8)])
    skills = st.sampled_from(["a", "b"])
    kinds = st.sampled_from(["simulate", "primes"])
    labels = st.frozensets(st.sampled_from(["gpu", "region=eu", "ssd"]), max_size=2)
    ops: list[tuple[Any, ...]] = []
    choices = ["add_worker", "reconfigure", "add_task", "add_task", "release", "assign"]
    choices += ["assign", "remove_worker", "remove_task"]
    for op in draw(st.lists(st.sampled_from(choices), min_size=5, max_size=40)):
        if op in ("add_worker", "reconfigure"):
            levels = draw(st.dictionaries(skills, st.integers(0, 5), min_size=1))
            runs = draw(st.none() | st.frozensets(kinds, min_size=1))
            ops.append((op, draw(names), levels, draw(st.integers(1, 2)), runs, draw(labels)))
        elif op == "add_task":
            task = (draw(skills), draw(st.integers(1, 5)), draw(kinds), draw(labels))
            ops.append((op, draw(ids), *task))
        elif op in ("release", "remove_worker"):
            ops.append((op, draw(names)))
        elif op == "remove_task":
            ops.append((op, draw(ids)))
        else:
            ops.append((op,))
    return ops


@settings(max_examples=400, deadline=None)
@given(ops=operations())
def test_kinds_labels_and_reconfiguration_never_misplace_or_strand_a_task(
    ops: list[tuple[Any, ...]],
) -> None:
    s = Scheduler()
    world = _World()
    for op, *args in ops:
        if op in ("add_worker", "reconfigure"):
            name, skills, capacity, kinds, labels = args
            if op == "reconfigure" and name not in world.workers:
                continue
            load = world.load.get(name, 0) if op == "reconfigure" else 0
            s.add_worker(name, skills, capacity, load, kinds=kinds, labels=labels)
            world.workers[name] = (skills, capacity, kinds, labels)
            world.load[name] = load
        elif op == "add_task":
            task_id, skill, level, kind, labels = args
            if task_id in world.tasks:
                continue
            s.add_task(task_id, skill, level, kind=kind, labels=labels)
            world.tasks[task_id] = (skill, level, kind, labels)
        elif op == "release":
            s.release(args[0])
            if world.load.get(args[0]):
                world.load[args[0]] -= 1
        elif op == "remove_worker":
            s.remove_worker(args[0])
            world.workers.pop(args[0], None)
            world.load.pop(args[0], None)
        elif op == "remove_task":
            assert s.remove_task(args[0]) == (world.tasks.pop(args[0], None) is not None)
        else:
            world.check(s.assign())
        assert s.pending_count == len(world.tasks)
        for task in world.tasks:
            assert s.waiting_reason(task)

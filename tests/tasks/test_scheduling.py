"""The scheduler: pure assignment of tasks to workers by skill, no server and no event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serendib.tasks import _scheduling_index, scheduling
from serendib.tasks.scheduling import MAX_LEVEL, Assignment, Scheduler

GENERAL = "general"


def placed(assignments: Sequence[Assignment]) -> dict[str, str]:
    """Task id → worker name."""
    return {a.task_id: a.worker for a in assignments}


def seed_team(scheduler: Scheduler, capacity: int = 1) -> None:
    """The seed tutorial's three workers."""
    scheduler.add_worker("Junior", {GENERAL: 3}, capacity)
    scheduler.add_worker("Intermediate", {GENERAL: 6}, capacity)
    scheduler.add_worker("Senior", {GENERAL: 9}, capacity)


# --- who gets a task -------------------------------------------------------------------------


def test_task_goes_to_least_skilled_eligible_worker() -> None:
    s = Scheduler()
    seed_team(s)
    s.add_task("analysis", GENERAL, 5)
    assert placed(s.assign()) == {"analysis": "Intermediate"}


def test_easy_task_leaves_experts_free() -> None:
    s = Scheduler()
    seed_team(s)
    s.add_task("sum", GENERAL, 1)
    assert placed(s.assign()) == {"sum": "Junior"}


def test_ties_in_level_go_to_least_loaded_worker_then_by_name() -> None:
    s = Scheduler()
    s.add_worker("b", {GENERAL: 5}, 3)
    s.add_worker("a", {GENERAL: 5}, 3, load=1)
    s.add_worker("c", {GENERAL: 5}, 3)
    s.add_task("t1", GENERAL, 5)
    s.add_task("t2", GENERAL, 5)
    s.add_task("t3", GENERAL, 5)
    # b and c are idle (b first by name), then a, b and c all have one.
    assert [a.worker for a in s.assign()] == ["b", "c", "a"]
    assert [s.load(w) for w in "abc"] == [2, 1, 1]


def test_task_never_goes_to_ineligible_worker() -> None:
    s = Scheduler()
    s.add_worker("Junior", {GENERAL: 3}, 5)
    s.add_task("training", GENERAL, 8)
    assert s.assign() == []
    assert s.pending_ids() == ["training"]
    assert s.load("Junior") == 0


def test_hardest_task_goes_first_among_equal_priority() -> None:
    s = Scheduler()
    s.add_worker("Senior", {GENERAL: 9}, 1)
    s.add_task("easy", GENERAL, 2)
    s.add_task("hard", GENERAL, 8)
    assert placed(s.assign()) == {"hard": "Senior"}
    assert s.pending_ids() == ["easy"]


def test_higher_priority_goes_first_even_when_easier() -> None:
    s = Scheduler()
    s.add_worker("Senior", {GENERAL: 9}, 1)
    s.add_task("hard", GENERAL, 8)
    s.add_task("urgent", GENERAL, 2, priority=5)
    assert placed(s.assign()) == {"urgent": "Senior"}


def test_equal_tasks_go_in_submission_order() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 5}, 2)
    for name in ["first", "second", "third"]:
        s.add_task(name, GENERAL, 4)
    assert [a.task_id for a in s.assign()] == ["first", "second"]


def test_capacity_is_respected() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 5}, 2)
    for i in range(5):
        s.add_task(f"t{i}", GENERAL, 1)
    assert len(s.assign()) == 2
    assert s.load("w") == s.capacity("w") == 2
    assert s.assign() == []
    assert s.pending_count == 3


def test_initial_load_counts_against_capacity() -> None:
    s = Scheduler()
    s.add_worker("resumed", {GENERAL: 5}, 3, load=2)
    s.add_task("a", GENERAL, 1)
    s.add_task("b", GENERAL, 1)
    assert placed(s.assign()) == {"a": "resumed"}
    assert s.load("resumed") == 3


def test_task_that_cannot_be_placed_never_blocks_easier_tasks() -> None:
    s = Scheduler()
    s.add_worker("Junior", {GENERAL: 3}, 1)
    s.add_task("impossible", GENERAL, 10, priority=9)
    s.add_task("busy-only", GENERAL, 3, priority=5)
    s.add_task("easy", GENERAL, 2)
    assert placed(s.assign()) == {"busy-only": "Junior"}
    s.release("Junior")
    assert placed(s.assign()) == {"easy": "Junior"}
    assert s.pending_ids() == ["impossible"]


# --- named skills ----------------------------------------------------------------------------


def test_python_task_never_goes_to_worker_without_python_at_its_level() -> None:
    s = Scheduler()
    s.add_worker("generalist", {GENERAL: 10}, 4)
    s.add_worker("learner", {"python": 2, GENERAL: 1}, 4)
    s.add_task("script", "python", 3)
    assert s.assign() == []
    s.add_worker("pythonista", {"python": 7}, 1)
    assert placed(s.assign()) == {"script": "pythonista"}


def test_workers_with_several_skills_share_one_capacity() -> None:
    s = Scheduler()
    s.add_worker("both", {"python": 5, "sql": 5}, 2)
    s.add_task("p1", "python", 1)
    s.add_task("s1", "sql", 1)
    s.add_task("p2", "python", 1)
    assert [a.task_id for a in s.assign()] == ["p1", "s1"]
    assert s.load("both") == 2
    s.release("both")
    assert placed(s.assign()) == {"p2": "both"}


def test_priority_holds_across_skills() -> None:
    s = Scheduler()
    s.add_worker("both", {"python": 5, "sql": 5}, 1)
    s.add_task("report", "sql", 5)
    s.add_task("hotfix", "python", 1, priority=3)
    assert placed(s.assign()) == {"hotfix": "both"}


def test_least_skilled_is_measured_in_the_task_skill() -> None:
    s = Scheduler()
    s.add_worker("dba", {"sql": 9, "python": 2}, 1)
    s.add_worker("dev", {"sql": 3, "python": 9}, 1)
    s.add_task("query", "sql", 3)
    assert placed(s.assign()) == {"query": "dev"}


# --- changes over time -----------------------------------------------------------------------


def test_release_frees_a_slot_and_assign_then_places_a_waiting_task() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 5}, 1)
    s.add_task("a", GENERAL, 3)
    s.add_task("b", GENERAL, 3)
    assert placed(s.assign()) == {"a": "w"}
    assert s.assign() == []
    s.release("w")
    assert s.load("w") == 0
    assert placed(s.assign()) == {"b": "w"}


def test_release_never_goes_below_zero_and_ignores_unknown_workers() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 5}, 1)
    s.release("w")
    s.release("ghost")
    assert s.load("w") == 0
    s.add_task("a", GENERAL, 1)
    s.add_task("b", GENERAL, 1)
    assert len(s.assign()) == 1


def test_new_worker_takes_a_task_that_waited_for_its_level() -> None:
    s = Scheduler()
    s.add_worker("Junior", {GENERAL: 3}, 1)
    s.add_task("training", GENERAL, 8)
    assert s.assign() == []
    s.add_worker("Senior", {GENERAL: 9}, 1)
    assert placed(s.assign()) == {"training": "Senior"}


def test_removed_worker_gets_no_more_tasks() -> None:
    s = Scheduler()
    seed_team(s, capacity=2)
    s.remove_worker("Intermediate")
    s.remove_worker("nobody")
    s.add_task("analysis", GENERAL, 5)
    assert placed(s.assign()) == {"analysis": "Senior"}
    assert s.worker_count == 2
    assert s.max_level(GENERAL) == 9
    s.remove_worker("Senior")
    assert s.max_level(GENERAL) == 3
    with pytest.raises(KeyError):
        s.load("Senior")


def test_readding_a_worker_replaces_its_skills_capacity_and_load() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 9}, 1)
    s.add_task("a", GENERAL, 9)
    s.assign()
    s.add_worker("w", {"python": 4}, 3)
    assert (s.load("w"), s.capacity("w"), s.max_level(GENERAL), s.max_level("python")) == (
        0,
        3,
        0,
        4,
    )
    s.add_task("g", GENERAL, 1)
    s.add_task("p", "python", 4)
    assert placed(s.assign()) == {"p": "w"}


def test_removed_task_is_never_assigned() -> None:
    s = Scheduler()
    s.add_task("a", GENERAL, 1)
    s.add_task("b", GENERAL, 1)
    assert s.remove_task("a") is True
    assert s.remove_task("a") is False
    assert s.remove_task("never") is False
    s.add_worker("w", {GENERAL: 1}, 5)
    assert placed(s.assign()) == {"b": "w"}
    assert s.remove_task("b") is False


def test_removed_task_id_can_be_submitted_again() -> None:
    s = Scheduler()
    s.add_task("a", GENERAL, 9)
    s.remove_task("a")
    s.add_task("a", GENERAL, 2)
    s.add_worker("w", {GENERAL: 2}, 1)
    assert placed(s.assign()) == {"a": "w"}


def test_escalated_task_above_every_level_waits() -> None:
    s = Scheduler()
    s.add_worker("top", {GENERAL: MAX_LEVEL}, 1)
    s.add_task("escalated", GENERAL, MAX_LEVEL + 5)
    assert s.assign() == []
    assert s.waiting_reason("escalated") == (
        f"waiting for a worker with general >= {MAX_LEVEL + 5} "
        f"(most skilled connected: general {MAX_LEVEL})"
    )


def test_max_level_follows_workers_joining_and_leaving() -> None:
    s = Scheduler()
    assert s.max_level(GENERAL) == 0
    s.add_worker("a", {GENERAL: 4}, 1)
    s.add_worker("b", {GENERAL: 7, "python": 0}, 1)
    s.add_worker("c", {GENERAL: 7}, 1)
    assert (s.max_level(GENERAL), s.max_level("python")) == (7, 0)
    s.remove_worker("b")
    assert s.max_level(GENERAL) == 7
    s.remove_worker("c")
    assert s.max_level(GENERAL) == 4


# --- reasons ---------------------------------------------------------------------------------


def test_reason_names_the_worker_skill_levels_and_slots() -> None:
    s = Scheduler()
    s.add_worker("Intermediate", {GENERAL: 6}, 4)
    s.add_task("analysis", GENERAL, 5)
    [made] = s.assign()
    assert made == Assignment(
        "analysis",
        "Intermediate",
        "Intermediate: least skilled eligible (general 6 >= 5), 1/4 slots in use",
    )
    assert made.qualified


def test_waiting_reason_names_the_level_no_worker_has() -> None:
    s = Scheduler()
    s.add_task("training", GENERAL, 8)
    assert (
        s.waiting_reason("training")
        == "waiting for a worker with general >= 8 (no connected worker has general)"
    )
    s.add_worker("Intermediate", {GENERAL: 6}, 1)
    s.assign()
    assert s.waiting_reason("training") == (
        "waiting for a worker with general >= 8 (most skilled connected: general 6)"
    )


def test_waiting_reason_counts_the_busy_eligible_workers() -> None:
    s = Scheduler()
    s.add_worker("a", {GENERAL: 6}, 1)
    s.add_worker("b", {GENERAL: 9}, 1)
    s.add_worker("junior", {GENERAL: 2}, 1)
    for i in range(3):
        s.add_task(f"t{i}", GENERAL, 5)
    s.assign()
    assert s.waiting_reason("t2") == "waiting for a free slot: 2 eligible workers busy"
    s.remove_worker("b")
    assert s.waiting_reason("t2") == "waiting for a free slot: 1 eligible worker busy"


def test_waiting_reason_before_assign_says_a_worker_is_free() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 6}, 1)
    s.add_task("t", GENERAL, 5)
    assert s.waiting_reason("t") == (
        "waiting for the next assignment round: a worker for it has a free slot"
    )


def test_waiting_reason_is_none_for_a_task_not_pending() -> None:
    s = Scheduler()
    s.add_worker("w", {GENERAL: 6}, 1)
    s.add_task("t", GENERAL, 5)
    s.assign()
    assert s.waiting_reason("t") is None
    assert s.waiting_reason("never") is None


# --- attempting anyway -----------------------------------------------------------------------


def test_attempt_unqualified_gives_a_too_hard_task_to_the_most_skilled_worker() -> None:
    s = Scheduler(attempt_unqualified=True)
    seed_team(s)
    s.add_task("proof", GENERAL, 10)
    [made] = s.assign()
    assert made == Assignment(
        "proof",
        "Senior",
        "Senior: most skilled available (general 9 < 10), attempting anyway, 1/1 slots in use",
        qualified=False,
    )


def test_attempt_unqualified_places_qualified_tasks_first() -> None:
    s = Scheduler(attempt_unqualified=True)
    s.add_worker("Senior", {GENERAL: 9}, 1)
    s.add_worker("Junior", {GENERAL: 3}, 1)
    s.add_task("proof", GENERAL, 10, priority=5)
    s.add_task("training", GENERAL, 8)
    made = s.assign()
    assert [(a.task_id, a.worker, a.qualified) for a in made] == [
        ("training", "Senior", True),
        ("proof", "Junior", False),
    ]


def test_attempt_unqualified_never_uses_a_worker_without_the_skill() -> None:
    s = Scheduler(attempt_unqualified=True)
    s.add_worker("generalist", {GENERAL: 9, "python": 0}, 1)
    s.add_task("script", "python", 1)
    assert s.assign() == []
    assert s.waiting_reason("script") == (
        "waiting for a worker with python >= 1 (no connected worker has python)"
    )


def test_attempt_unqualified_waits_for_a_free_slot_and_says_so() -> None:
    s = Scheduler(attempt_unqualified=True)
    s.add_worker("Senior", {GENERAL: 9}, 1)
    s.add_task("training", GENERAL, 8)
    s.add_task("proof", GENERAL, 10)
    assert placed(s.assign()) == {"training": "Senior"}
    assert s.waiting_reason("proof") == (
        "waiting for a free slot to attempt anyway: 1 worker with general busy "
        "(most skilled: general 9 < 10)"
    )
    s.release("Senior")
    assert placed(s.assign()) == {"proof": "Senior"}


def test_attempt_unqualified_starts_when_the_best_worker_leaves() -> None:
    s = Scheduler(attempt_unqualified=True)
    s.add_worker("Senior", {GENERAL: 9}, 1, load=1)
    s.add_worker("Junior", {GENERAL: 3}, 1)
    s.add_task("training", GENERAL, 8)
    assert s.assign() == []
    s.remove_worker("Senior")
    assert [(a.worker, a.qualified) for a in s.assign()] == [("Junior", False)]


def test_without_attempt_unqualified_a_too_hard_task_waits() -> None:
    s = Scheduler()
    seed_team(s)
    s.add_task("proof", GENERAL, 10)
    assert s.assign() == []


# --- validation ------------------------------------------------------------------------------


def test_duplicate_pending_task_id_is_rejected() -> None:
    s = Scheduler()
    s.add_task("a", GENERAL, 1)
    with pytest.raises(ValueError, match="already pending"):
        s.add_task("a", GENERAL, 2)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.add_task("t", GENERAL, 0), ValueError),
        (lambda s: s.add_task("t", "", 1), ValueError),
        (lambda s: s.add_task("t", GENERAL, True), TypeError),
        (lambda s: s.add_worker("w", {GENERAL: MAX_LEVEL + 1}, 1), ValueError),
        (lambda s: s.add_worker("w", {GENERAL: -1}, 1), ValueError),
        (lambda s: s.add_worker("w", {GENERAL: 1}, 0), ValueError),
        (lambda s: s.add_worker("w", {GENERAL: 1}, 1, load=-1), ValueError),
        (lambda s: s.add_worker("", {GENERAL: 1}, 1), ValueError),
        (lambda s: s.add_worker("w", {"": 1}, 1), ValueError),
    ],
)
def test_bad_input_is_rejected(call: Callable[[Scheduler], None], error: type[Exception]) -> None:
    s = Scheduler()
    with pytest.raises(error):
        call(s)
    assert (s.pending_count, s.worker_count) == (0, 0)


# --- properties ------------------------------------------------------------------------------


@dataclass
class _Model:
    """What the scheduler should know, kept the obvious way."""

    skills: dict[str, dict[str, int]] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    load: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add_worker(self, name: str, skills: Mapping[str, int], capacity: int, load: int) -> None:
        self.skills[name], self.capacity[name], self.load[name] = dict(skills), capacity, load

    def remove_worker(self, name: str) -> None:
        for table in (self.skills, self.capacity, self.load):
            table.pop(name, None)

    def level(self, worker: str, skill: str) -> int:
        return self.skills[worker].get(skill, 0)

    def free(self) -> Iterator[str]:
        return (w for w in self.skills if self.load[w] < self.capacity[w])

    def best(self, skill: str) -> int:
        return max((self.level(w, skill) for w in self.skills), default=0)

    def check(self, made: Sequence[Assignment], attempt_unqualified: bool) -> None:
        """Each assignment is allowed; afterwards nothing more could be placed."""
        for a in made:
            skill, level = self.tasks.pop(a.task_id)  # KeyError: not pending
            assert self.load[a.worker] < self.capacity[a.worker]
            have = self.level(a.worker, skill)
            if a.qualified:
                assert have >= level
            else:
                assert attempt_unqualified
                assert 0 < have < level
                assert self.best(skill) < level
            self.load[a.worker] += 1
        for skill, level in self.tasks.values():
            able = [w for w in self.free() if self.level(w, skill) >= level]
            if attempt_unqualified and self.best(skill) < level:
                able = [w for w in self.free() if self.level(w, skill) > 0]
            assert not able


def max_placed(
    tasks: Sequence[tuple[str, int]], workers: Sequence[tuple[Mapping[str, int], int]]
) -> int:
    """The most of ``tasks`` (skill, level) placeable on ``workers`` (skills, free slots)."""
    slots = [skills for skills, free in workers for _ in range(free)]
    owner: list[int | None] = [None] * len(slots)

    def augment(t: int, seen: set[int]) -> bool:
        skill, level = tasks[t]
        for i, skills in enumerate(slots):
            if i not in seen and skills.get(skill, 0) >= level:
                seen.add(i)
                held = owner[i]
                if held is None or augment(held, seen):
                    owner[i] = t
                    return True
        return False

    return sum(augment(t, set()) for t in range(len(tasks)))


single_workers = st.lists(
    st.tuples(st.integers(1, 6), st.integers(1, 3), st.integers(0, 3)), max_size=4
)
single_tasks = st.lists(st.tuples(st.integers(1, 7), st.integers(0, 2)), max_size=7)


@settings(max_examples=500, deadline=None)
@given(workers=single_workers, tasks=single_tasks)
def test_one_skill_places_as_many_tasks_as_possible_in_priority_order(
    workers: list[tuple[int, int, int]], tasks: list[tuple[int, int]]
) -> None:
    s = Scheduler()
    free: list[tuple[Mapping[str, int], int]] = []
    for i, (level, capacity, load) in enumerate(workers):
        load = min(load, capacity)
        s.add_worker(f"w{i}", {GENERAL: level}, capacity, load)
        free.append(({GENERAL: level}, capacity - load))
    for i, (level, priority) in enumerate(tasks):
        s.add_task(f"t{i}", GENERAL, level, priority)
    made = s.assign()

    assert len(made) == max_placed([(GENERAL, level) for level, _ in tasks], free)
    # A waiting task could only take the place of a placed task ahead of it in line.
    taken = {int(a.task_id[1:]) for a in made}

    def ahead(a: int, b: int) -> bool:
        return (-tasks[a][1], -tasks[a][0], a) < (-tasks[b][1], -tasks[b][0], b)

    for waiting in set(range(len(tasks))) - taken:
        for behind in (t for t in taken if ahead(waiting, t)):
            swapped = [(GENERAL, tasks[t][0]) for t in (taken - {behind}) | {waiting}]
            assert max_placed(swapped, free) < len(swapped)


skill_names = st.sampled_from(["a", "b", "c"])
multi_workers = st.lists(
    st.tuples(st.dictionaries(skill_names, st.integers(0, 5), min_size=1), st.integers(1, 3)),
    max_size=4,
)
multi_tasks = st.lists(st.tuples(skill_names, st.integers(1, 6), st.integers(0, 2)), max_size=7)


@settings(max_examples=500, deadline=None)
@given(workers=multi_workers, tasks=multi_tasks, attempt_unqualified=st.booleans())
def test_named_skills_never_go_to_an_ineligible_or_full_worker(
    workers: list[tuple[dict[str, int], int]],
    tasks: list[tuple[str, int, int]],
    attempt_unqualified: bool,
) -> None:
    s = Scheduler(attempt_unqualified=attempt_unqualified)
    model = _Model()
    for i, (skills, capacity) in enumerate(workers):
        s.add_worker(f"w{i}", skills, capacity)
        model.add_worker(f"w{i}", skills, capacity, 0)
    for i, (skill, level, priority) in enumerate(tasks):
        s.add_task(f"t{i}", skill, level, priority)
        model.tasks[f"t{i}"] = (skill, level)
    made = s.assign()
    model.check(made, attempt_unqualified)
    if not attempt_unqualified:
        best = max_placed([(skill, level) for skill, level, _ in tasks], workers)
        assert 2 * len(made) >= best


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    # Few names, so that operations keep meeting the same workers, tasks and skills; the
    # common operations (submit, finish, assign) are drawn more often.
    names = st.sampled_from(["w0", "w1", "w2"])
    ids = st.sampled_from([f"t{i}" for i in range(8)])
    skills = st.sampled_from(["a", "b"])
    kinds = ["add_worker", "add_task", "add_task", "release", "release", "assign", "assign"]
    kinds += ["remove_worker", "remove_task"]
    ops: list[tuple[Any, ...]] = []
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=5, max_size=40)):
        if kind == "add_worker":
            levels = st.dictionaries(skills, st.integers(0, 5), min_size=1)
            ops.append((kind, draw(names), draw(levels), draw(st.integers(1, 2))))
        elif kind == "add_task":
            level, priority = draw(st.integers(1, 5)), draw(st.integers(0, 2))
            ops.append((kind, draw(ids), draw(skills), level, priority))
        elif kind in ("release", "remove_worker"):
            ops.append((kind, draw(names)))
        elif kind == "remove_task":
            ops.append((kind, draw(ids)))
        else:
            ops.append((kind,))
    return ops


@settings(max_examples=300, deadline=None)
@given(ops=operations(), attempt_unqualified=st.booleans())
def test_interleaved_use_keeps_loads_within_capacity_and_assigns_each_task_once(
    ops: list[tuple[Any, ...]], attempt_unqualified: bool
) -> None:
    s = Scheduler(attempt_unqualified=attempt_unqualified)
    model = _Model()
    for name, *args in ops:
        if name == "add_worker":
            worker, skills, capacity = args
            s.add_worker(worker, skills, capacity)
            model.add_worker(worker, skills, capacity, 0)
        elif name == "add_task":
            task_id, skill, level, priority = args
            if task_id in model.tasks:
                continue
            # An id assigned before comes back as a retry.
            s.add_task(task_id, skill, level, priority)
            model.tasks[task_id] = (skill, level)
        elif name == "release":
            s.release(args[0])
            if args[0] in model.load:
                model.load[args[0]] = max(0, model.load[args[0]] - 1)
        elif name == "remove_worker":
            s.remove_worker(args[0])
            model.remove_worker(args[0])
        elif name == "remove_task":
            assert s.remove_task(args[0]) == (model.tasks.pop(args[0], None) is not None)
        else:
            # check() takes each assigned task out of the model's pending ones: a task assigned
            # twice, or never pending, fails there.
            model.check(s.assign(), attempt_unqualified)
        assert s.pending_ids() == [t for t in s.pending_ids() if t in model.tasks]
        assert s.pending_count == len(model.tasks)
        assert {w: s.load(w) for w in model.load} == model.load
        assert s.worker_count == len(model.skills)
        for skill in ["a", "b"]:
            assert s.max_level(skill) == model.best(skill)


# --- cost ------------------------------------------------------------------------------------


def heap_operations_per_assignment(
    monkeypatch: pytest.MonkeyPatch, workers: int, pending: int, rounds: int = 150
) -> float:
    """Heap and sorted-list calls, and heap entries looked at, per assignment.

    ``workers`` and ``pending`` tasks are set up first; then each round frees one slot and
    assigns one task, the steady state of a busy manager.
    """
    s = Scheduler()
    # Every worker (levels 8 to 10) can do every task (1 to 8), so each round places one.
    for i in range(workers):
        s.add_worker(f"w{i}", {GENERAL: 10 - i % 3}, 2)
    for i in range(pending + 2 * workers):
        s.add_task(f"t{i}", GENERAL, 1 + (i * 7) % 8, priority=i % 3)
    busy = [a.worker for a in s.assign()]
    assert s.pending_count == pending

    calls = 0

    def counted(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            return function(*args)

        return call

    # The scheduler and its indexes each import the heap functions they use.
    for module in (scheduling, _scheduling_index):
        for name in ["heappush", "heappop", "heapreplace", "heapify", "insort", "bisect_left"]:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted(getattr(module, name)))
    # Every heap entry looked at is checked for staleness: this counts the entries touched.
    monkeypatch.setattr(
        _scheduling_index._Queue, "_alive", counted(_scheduling_index._Queue._alive)
    )
    monkeypatch.setattr(
        _scheduling_index._Workers, "_alive", counted(_scheduling_index._Workers._alive)
    )
    for i in range(rounds):
        s.release(busy[i])
        [made] = s.assign()
        busy.append(made.worker)
    monkeypatch.undo()
    return calls / rounds


def test_cost_of_an_assignment_does_not_grow_with_workers_or_pending_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = heap_operations_per_assignment(monkeypatch, workers=10, pending=200)
    many_workers = heap_operations_per_assignment(monkeypatch, workers=10_000, pending=200)
    many_tasks = heap_operations_per_assignment(monkeypatch, workers=10, pending=20_000)
    assert small < 30
    assert many_workers < small + 5
    assert many_tasks < small + 5

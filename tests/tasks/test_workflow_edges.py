"""Edge cases of workflows found in review: each failed before its fix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from serendib.tasks.engine.book import TaskBook
from serendib.tasks.engine.entries import Entry, Lease
from serendib.tasks.engine.holds import KeyLimits
from serendib.tasks.events import EventKind, TaskEvent
from serendib.tasks.manager import TaskManager
from serendib.tasks.messages import TaskAssignment, TaskResult
from serendib.tasks.models import AttemptRecord, Schedule, Task, TaskRecord, TaskState, WorkerInfo
from serendib.tasks.recurring import Calendar
from serendib.tasks.scheduling import Scheduler
from serendib.tasks.store import TaskStore, open_store
from tests.helpers import DEADLINE


class FakeLedger:
    """Stages nothing for real: records what the book would send, and 'delivers' each
    assignment at once (numbering it as the real ledger does)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, object]] = []
        self._unsaved: dict[str, Entry] = {}
        self._seq = 0
        self._posted = asyncio.Event()

    def record(self, entry: Entry) -> None:
        self._unsaved[entry.id] = entry

    def attempt(self, lease: Lease) -> None:
        pass

    def unsaved(self, task_id: str) -> Entry | None:
        return self._unsaved.get(task_id)

    def stale(self, key: object) -> None:
        pass

    def post(self, worker: str, message: object, lease: Lease | None = None) -> None:
        self.posts.append((worker, message))
        self._posted.set()
        if lease is not None:
            self._seq += 1
            lease.seq, lease.sent_at = self._seq, time.time() - 100

    def ack(self, worker: str, key: object) -> None:
        pass

    def notify(self, client: str, outcome: object) -> None:
        pass

    async def assigned(self, task_id: str) -> list[TaskAssignment]:
        """Wait until ``task_id`` is given out (bounded by the test deadline)."""

        async def given() -> list[TaskAssignment]:
            while not (found := self.assignments(task_id)):
                self._posted.clear()
                await self._posted.wait()
            return found

        return await asyncio.wait_for(given(), DEADLINE)

    def assignments(self, task_id: str) -> list[TaskAssignment]:
        return [m for _, m in self.posts if isinstance(m, TaskAssignment) and m.task.id == task_id]


def make_book(**options: Any) -> tuple[TaskBook, FakeLedger]:
    ledger = FakeLedger()

    def call_soon(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.get_running_loop().create_task(fn())

    return TaskBook(Scheduler(), ledger, call_soon, "m", **options), ledger  # type: ignore[arg-type]


def worker(name: str, level: int = 5, capacity: int = 4) -> WorkerInfo:
    return WorkerInfo(name=name, skills={"general": level}, capacity=capacity)


async def test_a_resent_assignment_still_carries_the_parents_outputs() -> None:
    book, ledger = make_book()
    book.worker_joined(worker("w"))
    book.submitted(
        [Task(id="p", difficulty=1), Task(id="c", difficulty=1, depends_on=["p"])], time.time()
    )
    book.take_result(
        TaskResult(task_id="p", attempt=1, worker="w", success=True, output={"v": 42}), "w"
    )
    book.pump()
    # The worker has not handled the message that carried it: it is sent again.
    book.reconcile("w", holding=set(), seen=0, grace_s=1.0)
    sent = ledger.assignments("c")
    assert len(sent) == 2
    assert [a.inputs for a in sent] == [{"p": {"v": 42}}, {"p": {"v": 42}}]
    book.close()


async def test_a_restart_gives_the_running_task_its_permit_before_a_pending_one() -> None:
    now = time.time()
    pending = TaskRecord(
        task=Task(id="a", difficulty=1, concurrency_key="db"), submitted_at=now, updated_at=now
    )
    running = TaskRecord(
        task=Task(id="b", difficulty=1, concurrency_key="db"),
        submitted_at=now,
        updated_at=now,
        state=TaskState.RUNNING,
        attempt=1,
        worker="w",
    )
    held = AttemptRecord(task_id="b", attempt=1, worker="w", reason="x", assigned_at=now)
    book, ledger = make_book(limits=KeyLimits({"db": 1}))
    book.resume([pending, running], {"b": held}, grace_s=30)  # in the store's order
    book.worker_joined(worker("w"))
    assert ledger.assignments("a") == []  # b holds the only permit
    assert book.limits.counts("db") == (1, 1)
    book.close()


async def test_a_held_task_that_times_out_waiting_hands_on_what_it_held() -> None:
    book, ledger = make_book()
    book.submitted(
        [
            Task(id="p", difficulty=9, wait_timeout_s=0.05),
            Task(id="c", difficulty=1, depends_on=["p"], run_anyway=True),
        ],
        time.time(),
    )
    book.worker_joined(worker("w", level=3))  # nobody can do p: it fails when its wait ends
    assert [a.task.id for a in await ledger.assigned("c")] == ["c"]
    book.close()


async def test_a_wait_deadline_counts_from_when_the_task_may_be_assigned() -> None:
    book, _ = make_book()
    failed: asyncio.Future[TaskEvent] = asyncio.get_running_loop().create_future()

    def on_event(event: TaskEvent) -> None:
        if event.kind is EventKind.FAILED and not failed.done():
            failed.set_result(event)

    book.events.add(on_event)
    book.worker_joined(worker("w", level=3))  # nobody can do it: it fails when its wait ends
    submitted = time.time()
    book.submitted([Task(id="later", difficulty=9, delay_s=0.3, wait_timeout_s=0.05)], submitted)
    event = await asyncio.wait_for(failed, DEADLINE)
    assert event.task_id == "later"
    assert event.at >= submitted + 0.3 + 0.05  # its delay, then its wait: not 0.05 after all
    book.close()


async def test_a_parent_submitted_again_with_its_child_is_found_ended(tmp_path: Path) -> None:
    manager = TaskManager("m", store=str(tmp_path / "t.db"))
    await manager.store.open()
    try:
        await manager.submit([Task(id="a", difficulty=1)])
        manager.book.cancel("a")
        await manager.flush()
        reply = await manager.submit(
            [
                Task(id="a", difficulty=1),
                Task(id="b", difficulty=1, depends_on=["a"], run_anyway=True),
                Task(id="c", difficulty=1, depends_on=["a"]),
            ]
        )
        assert (reply.accepted, reply.duplicates) == (["b", "c"], ["a"])
        b, c = manager.book.get("b"), await manager.get_task("c")
        assert b is not None
        assert "waiting for parent" not in b.reason  # a ended: b runs anyway
        assert c is not None
        assert (c.state, c.error) == (TaskState.CANCELLED, "parent a cancelled")
    finally:
        manager.book.close()
        await manager.store.close()


async def test_a_refusal_with_long_ids_is_told_within_the_bounds(tmp_path: Path) -> None:
    manager = TaskManager("m", store=str(tmp_path / "t.db"))
    await manager.store.open()
    try:
        ghosts = [str(i) * 200 for i in range(5)]
        reply = await manager.submit(
            [Task(id="ok", difficulty=1), Task(id="child", difficulty=1, depends_on=ghosts)]
        )
        assert reply.accepted == ["ok"]
        assert reply.rejected["child"].startswith("unknown parents 000")
        assert len(reply.rejected["child"]) <= 1_000
    finally:
        manager.book.close()
        await manager.store.close()


async def _calendar(store: TaskStore, submit: Callable[[list[Task]], Awaitable[None]]) -> Calendar:
    return Calendar(store, submit, "m")


async def test_a_cron_that_ends_does_not_stop_the_others(tmp_path: Path) -> None:
    now = 1_798_761_600.0  # 2027-01-01T00:00:00Z
    fired: list[str] = []

    async def submit(tasks: list[Task]) -> None:
        fired.extend(t.id for t in tasks)

    async with open_store(str(tmp_path / "t.db")) as store:
        calendar = await _calendar(store, submit)
        last_year = Schedule.model_construct(
            name="once", cron="0 0 1 1 * 0 2027", task={"difficulty": 1}, catch_up=True
        )  # valid until 2027 began (a schedule made then)
        hourly = Schedule(name="hourly", cron="0 * * * *", task={"difficulty": 1})
        await calendar.load([last_year, hourly], now=now - 7_200)
        await calendar.fire(now=now + 3_600)
        await calendar.fire(now=now + 7_300)
    assert fired == [
        "once@2027-01-01T00:00:00Z",
        "hourly@2027-01-01T01:00:00Z",
        "hourly@2027-01-01T02:00:00Z",
    ]


async def test_a_schedule_removed_while_its_run_is_submitted_stays_removed(
    tmp_path: Path,
) -> None:
    async with open_store(str(tmp_path / "t.db")) as store:
        calendar: Calendar | None = None

        async def submit(tasks: list[Task]) -> None:
            assert calendar is not None
            await calendar.remove("nightly")  # a client removes it meanwhile

        calendar = await _calendar(store, submit)
        schedule = Schedule(name="nightly", cron="* * * * *", task={"difficulty": 1})
        await calendar.load([schedule], now=time.time() - 120)
        await calendar.fire()
        assert calendar.listing() == []
        assert await store.schedules() == []


def test_once_groups_are_in_use_tasks_without_one_take_turns_too() -> None:
    scheduler = Scheduler()
    for i in range(6):
        scheduler.add_task(f"u{i}", "general", 1)
        if i == 0:
            scheduler.add_task("g1", "general", 1, group="g")
    scheduler.add_worker("w", {"general": 5}, capacity=1)
    order = []
    for _ in range(7):
        [made] = scheduler.assign()
        order.append(made.task_id)
        scheduler.release("w")
    assert order.index("g1") <= 1  # not after every task without a group


def test_a_key_with_many_withdrawn_tasks_still_admits_the_next_in_line() -> None:
    limits = KeyLimits({"k": 1})
    assert limits.admit("k", "holder", 0, 0.0)
    for i in range(10_000):
        assert not limits.admit("k", f"t{i}", 0, 0.0)
        assert limits.withdraw("k", f"t{i}")
    assert not limits.admit("k", "next", 0, 0.0)
    assert limits.counts("k") == (1, 1)
    limits.release("k", "holder")
    assert limits.ready(0.0) == ["next"]

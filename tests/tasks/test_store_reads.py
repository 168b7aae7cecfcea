"""Reading many tasks by id at once (the client's watch of tasks that ended already)."""

from __future__ import annotations

from serendib.tasks.store import TaskStore
from tests.tasks.test_store import store, store_url, task

__all__ = ["store", "store_url"]  # the fixtures, on SQLite and PostgreSQL


async def test_get_many_reads_the_stored_ones_in_chunks_and_skips_the_rest(
    store: TaskStore,
) -> None:
    records = [task(n) for n in range(1_234)]  # more ids than one query takes
    await store.add(records)
    wanted = [r.id for r in records[::2]] + ["nosuch", records[0].id]
    found = await store.get_many(wanted)
    assert set(found) == {r.id for r in records[::2]}
    assert found[records[2].id] == records[2]
    assert await store.get_many([]) == {}

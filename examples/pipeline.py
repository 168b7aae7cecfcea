"""A diamond-shaped pipeline: work that depends on work, each step given its parents' outputs.

::

               ┌── count:0 ──┐
    split ─────┼── count:1 ──┼──── merge ──── report
               └── count:N ──┘

``split`` cuts a text into chunks, one ``count`` task per chunk counts its words (in
parallel, on whichever workers are free), ``merge`` adds the counts up, and ``report`` names
the most common words. Every task is submitted at once: each waits for its parents and gets
their outputs as ``context.inputs``. The counts are checked against a direct count.

    python examples/pipeline.py [--chunks 4]

The same handlers serve ``serendib worker`` processes (``--handler
examples.pipeline:split`` ...; see the README's "Work that depends on work").
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from serendib.tasks import Task, TaskContext, TaskManager, TaskState, WorkerAgent, open_store

WORD = re.compile(r"[a-z']+")


def corpus() -> str:
    """The text to count: Serendib's own documentation, as it is on disk."""
    root = Path(__file__).resolve().parent.parent
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.glob("docs/*.md")))


async def split(task: Task, context: TaskContext) -> list[str]:
    """Cut the corpus into ``chunks`` pieces at line ends."""
    lines = corpus().splitlines()
    size = -(-len(lines) // int(task.payload["chunks"]))
    return ["\n".join(lines[i : i + size]) for i in range(0, len(lines), size)]


async def count(task: Task, context: TaskContext) -> dict[str, int]:
    """Count the words of one chunk of what ``split`` gave."""
    [chunks] = context.inputs.values()
    index = int(task.payload["chunk"])
    text = chunks[index] if index < len(chunks) else ""
    return dict(Counter(WORD.findall(text.lower())))


async def merge(task: Task, context: TaskContext) -> dict[str, int]:
    """Add up the counts of every chunk."""
    total: Counter[str] = Counter()
    for counts in context.inputs.values():
        total.update(counts)
    return dict(total)


async def report(task: Task, context: TaskContext) -> dict[str, object]:
    """The most common words of the merged counts."""
    [total] = context.inputs.values()
    top = Counter(total).most_common(int(task.payload.get("top", 5)))
    return {"words": sum(total.values()), "distinct": len(total), "top": top}


HANDLERS = {"split": split, "count": count, "merge": merge, "report": report}


def pipeline(chunks: int) -> list[Task]:
    """The tasks of the diamond, parents first (any order would do in one submission)."""
    counts = [
        Task(
            id=f"count:{i}",
            difficulty=1,
            kind="count",
            depends_on=["split"],
            payload={"chunk": i},
        )
        for i in range(chunks)
    ]
    return [
        Task(id="split", difficulty=1, kind="split", payload={"chunks": chunks}),
        *counts,
        Task(id="merge", difficulty=2, kind="merge", depends_on=[t.id for t in counts]),
        Task(id="report", difficulty=1, kind="report", depends_on=["merge"], payload={"top": 5}),
    ]


async def outputs(store_url: str) -> dict[str, object]:
    """The outputs of the succeeded tasks in a store, by id."""
    async with open_store(store_url) as store:
        return {r.id: r.output for r in await store.all_records() if r.state is TaskState.SUCCEEDED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="count tasks run in parallel")
    args = parser.parse_args()
    store = str(Path(tempfile.mkdtemp(prefix="serendib-pipeline-")) / "tasks.db")
    workers = [
        WorkerAgent(name, skill_level=level, capacity=2, workspace_id="pipeline", handlers=HANDLERS)
        for name, level in [("left", 3), ("right", 5)]
    ]
    manager = TaskManager(
        workspace_id="pipeline", store=store, tasks=pipeline(args.chunks), stop_when_done=True
    )
    manager.run(workers=workers)

    found = asyncio.run(outputs(store))
    result = found.get("report")
    if not isinstance(result, dict):
        print("the pipeline did not finish", file=sys.stderr)
        return 1
    expected = Counter(WORD.findall(corpus().lower()))
    print(f"{result['words']} words, {result['distinct']} distinct, across {args.chunks} chunks")
    print("most common: " + ", ".join(f"{word} {n}" for word, n in result["top"]))
    if result["words"] != sum(expected.values()) or found["merge"] != dict(expected):
        print("the pipeline's counts differ from a direct count", file=sys.stderr)
        return 1
    print("the pipeline's counts match a direct count")
    return 0


if __name__ == "__main__":
    sys.exit(main())

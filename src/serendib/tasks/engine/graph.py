"""Checks of a submission's dependencies: cycles, refused parents, and parents-first order.

Pure functions over the tasks of one submission (or one replay), O(tasks + edges). Only the
tasks of one submission can form a cycle: a task may only name parents that are stored or
submitted with it, so a stored task's parents were all stored before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from serendib.tasks.models import Task

__all__ = ["dependency_faults", "parents_first"]


def dependency_faults(batch: Mapping[str, Task], rejected: Mapping[str, str]) -> dict[str, str]:
    """The tasks of ``batch`` to refuse beyond ``rejected`` (already refused), with why.

    A task is refused when a parent of it in the batch is refused, when it is in a
    dependency cycle ("a -> b -> a": a depends on b, which depends on a), or when it depends
    on a cycle.
    """
    children: dict[str, list[str]] = {}
    for task_id, task in batch.items():
        for parent in task.depends_on:
            if parent in batch:
                children.setdefault(parent, []).append(task_id)
    faults: dict[str, str] = {}
    # Refusal runs down to children, grandchildren...
    queue = deque(rejected)
    while queue:
        parent = queue.popleft()
        for child in children.get(parent, ()):
            if child not in rejected and child not in faults:
                faults[child] = f"parent {parent} was refused"
                queue.append(child)
    # Kahn's order over the rest: what it cannot reach is in a cycle, or below one.
    refused = rejected.keys() | faults.keys()
    indegree = {
        task_id: sum(1 for p in task.depends_on if p in batch)
        for task_id, task in batch.items()
        if task_id not in refused
    }
    ready = deque(task_id for task_id, n in indegree.items() if n == 0)
    while ready:
        parent = ready.popleft()
        for child in children.get(parent, ()):
            if child in indegree:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
    left = {task_id for task_id, n in indegree.items() if n > 0}
    for start in sorted(left):
        if start in faults:
            continue
        # Walk up through parents that are left too (each has one) until a task repeats
        # (a cycle) or one already judged is reached.
        path: list[str] = []
        at: dict[str, int] = {}
        node = start
        while node not in at and node not in faults:
            at[node] = len(path)
            path.append(node)
            node = next(p for p in batch[node].depends_on if p in left)
        if node in at:
            cycle = path[at[node] :]
            shown = " -> ".join([*cycle, node]) if len(cycle) <= 8 else f"{len(cycle)} tasks"
            for task_id in cycle:
                faults[task_id] = f"in a dependency cycle: {shown}"
            below = path[: at[node]]
        else:
            below = path
        for task_id in below:
            faults[task_id] = "depends on a dependency cycle"
    return faults


def parents_first(tasks: Mapping[str, Task]) -> list[str]:
    """The ids of ``tasks``, each after those of its parents among them (else in order)."""
    order: list[str] = []
    placed: set[str] = set()
    opened: set[str] = set()  # a cycle (which a submission never lets in) is cut here
    for root in tasks:
        if root in placed:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in placed:
                continue
            if expanded:
                placed.add(node)
                order.append(node)
                continue
            if node in opened:
                continue
            opened.add(node)
            stack.append((node, True))
            for parent in reversed(tasks[node].depends_on):
                if parent in tasks and parent not in placed:
                    stack.append((parent, False))
    return order

"""Task files: a YAML or JSON list of tasks, validated whole before anything is submitted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serendib.errors import InvalidTaskFile
from serendib.tasks.models import Task

__all__ = ["load_task_file", "parse_tasks"]


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "task"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _lines_of_items(text: str) -> list[int]:
    """1-based line of each top-level list item, for error messages (YAML and JSON alike)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if node is None:
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "tasks" and isinstance(value, yaml.SequenceNode):
                items = value.value
    return [item.start_mark.line + 1 for item in items]


def parse_tasks(text: str, source: str = "<tasks>") -> list[Task]:
    """Parse and validate every task of a YAML or JSON document.

    The document is a list of tasks, or a mapping with a ``tasks`` list.

    Args:
        text: The document.
        source: Its name, for error messages.

    Returns:
        The tasks, in order.

    Raises:
        InvalidTaskFile: The document or one of its entries is invalid; the error names the
            entry (index and line) and the reason.
    """
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidTaskFile(source, "document", f"not valid {_kind(source)}: {e}") from None
    if isinstance(data, dict) and "tasks" in data:
        data = data["tasks"]
    if not isinstance(data, list):
        raise InvalidTaskFile(source, "document", "expected a list of tasks (or a 'tasks' list)")
    lines = _lines_of_items(text)
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        where = f"entry {index}" + (f" (line {lines[index]})" if index < len(lines) else "")
        if not isinstance(entry, dict):
            raise InvalidTaskFile(source, where, f"expected a mapping, got {type(entry).__name__}")
        try:
            task = Task.model_validate(entry)
        except ValidationError as e:
            raise InvalidTaskFile(source, where, _reason(e)) from None
        if task.id in seen:
            raise InvalidTaskFile(source, where, f"id {task.id!r} repeats entry {seen[task.id]}")
        seen[task.id] = index
        tasks.append(task)
    return tasks


def _kind(source: str) -> str:
    return "JSON" if source.endswith(".json") else "YAML"


def load_task_file(path: str | Path) -> list[Task]:
    """Read and validate a task file (``.yaml``, ``.yml`` or ``.json``).

    Raises:
        InvalidTaskFile: The file cannot be read, or an entry is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidTaskFile(str(path), "file", str(e)) from None
    return parse_tasks(text, str(path))

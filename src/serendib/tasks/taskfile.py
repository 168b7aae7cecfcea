"""Task files: a YAML or JSON list of tasks, validated whole before anything is submitted.

A task file comes from a user's disk, maybe from someone else: it is read with bounds. It
may be at most :data:`MAX_TASK_FILE_BYTES`, nest at most :data:`MAX_TASK_FILE_DEPTH` deep,
and use no YAML aliases (``*name``), so a small "billion laughs" document cannot expand to
gigabytes while it is parsed, validated or encoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.error import MarkedYAMLError
from yaml.nodes import Node

from serendib.errors import InvalidTaskFile
from serendib.messages import summarise
from serendib.tasks.models import Task

__all__ = ["MAX_TASK_FILE_BYTES", "MAX_TASK_FILE_DEPTH", "load_task_file", "parse_tasks"]

MAX_TASK_FILE_BYTES = 64 * 1024 * 1024
"""The largest task file read (a document given as text: this many characters)."""
MAX_TASK_FILE_DEPTH = 64
"""Nesting of lists and mappings in a task file (a payload may nest 32 deep in a task)."""

_ALIASES_REFUSED = "YAML aliases (*name) are not allowed in task files"


class _TaskFileLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases and nesting deeper than :data:`MAX_TASK_FILE_DEPTH`.

    An alias repeats a node without copying it, so nested aliases describe a structure
    exponentially larger than the document; everything after the parser (validation, the
    message's encoding) would expand it. Task files have no need for them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose one node, refusing an alias or a node nested too deep."""
        if self.check_event(yaml.AliasEvent):
            raise ComposerError(None, None, _ALIASES_REFUSED, self._here())
        if self._depth >= MAX_TASK_FILE_DEPTH:
            reason = f"nests deeper than {MAX_TASK_FILE_DEPTH} levels"
            raise ComposerError(None, None, reason, self._here())
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _here(self) -> Any:
        """Where the next event starts (``check_event`` has peeked it)."""
        self.check_event()
        return self.current_event.start_mark


def _yaml_reason(error: yaml.YAMLError) -> str:
    """One line saying what is wrong, and where, for the CLI's one-line error."""
    if not isinstance(error, MarkedYAMLError):
        return " ".join(str(error).split())
    what = ": ".join(part for part in (error.context, error.problem) if part) or "invalid"
    mark = error.problem_mark or error.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(what.split()) + where


def _lines_of_items(text: str) -> list[int]:
    """1-based line of each top-level list item, for error messages (YAML and JSON alike)."""
    loader = _TaskFileLoader(text)
    try:
        node = loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        return []
    finally:
        loader.dispose()
    if node is None:
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "tasks" and isinstance(value, yaml.SequenceNode):
                items = value.value
    return [item.start_mark.line + 1 for item in items]


def _load(text: str, source: str) -> Any:
    """The document's data, refusing what :class:`_TaskFileLoader` refuses."""
    try:
        if source.endswith(".json"):
            # JSON has no aliases; its parser stops deep nesting with a RecursionError.
            return json.loads(text)
        return yaml.load(text, Loader=_TaskFileLoader)  # a SafeLoader: plain data only
    except json.JSONDecodeError as e:
        raise InvalidTaskFile(source, "document", f"not valid JSON: {e}") from None
    except MarkedYAMLError as e:
        if e.problem == _ALIASES_REFUSED and e.problem_mark is not None:
            raise InvalidTaskFile(
                source, f"line {e.problem_mark.line + 1}", _ALIASES_REFUSED
            ) from None
        raise InvalidTaskFile(source, "document", f"not valid YAML: {_yaml_reason(e)}") from None
    except yaml.YAMLError as e:
        raise InvalidTaskFile(source, "document", f"not valid YAML: {_yaml_reason(e)}") from None
    except RecursionError:
        raise InvalidTaskFile(source, "document", "not valid JSON: nests too deep") from None


def parse_tasks(text: str, source: str = "<tasks>") -> list[Task]:
    """Parse and validate every task of a YAML or JSON document.

    The document is a list of tasks, or a mapping with a ``tasks`` list.

    Args:
        text: The document, at most :data:`MAX_TASK_FILE_BYTES` characters.
        source: Its name, for error messages.

    Returns:
        The tasks, in order.

    Raises:
        InvalidTaskFile: The document or one of its entries is invalid; the error names the
            entry (index and line) and the reason. YAML aliases, nesting deeper than
            :data:`MAX_TASK_FILE_DEPTH` and a document over the size limit are invalid.
    """
    if len(text) > MAX_TASK_FILE_BYTES:
        raise InvalidTaskFile(source, "document", _too_large("characters"))
    data = _load(text, source)
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
            raise InvalidTaskFile(source, where, summarise(e, limit=3, what="task")) from None
        if task.id in seen:
            raise InvalidTaskFile(source, where, f"id {task.id!r} repeats entry {seen[task.id]}")
        seen[task.id] = index
        tasks.append(task)
    return tasks


def _too_large(unit: str) -> str:
    limit_mib = MAX_TASK_FILE_BYTES // (1024 * 1024)
    return (
        f"larger than the limit of {limit_mib} MiB ({MAX_TASK_FILE_BYTES} {unit}): "
        "split it into smaller files"
    )


def load_task_file(path: str | Path) -> list[Task]:
    """Read and validate a task file (``.yaml``, ``.yml`` or ``.json``).

    At most :data:`MAX_TASK_FILE_BYTES` are read: a larger file is refused unread.

    Raises:
        InvalidTaskFile: The file cannot be read, is too large, or an entry is invalid.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            # Read one byte past the limit rather than trust the size on disk: a pipe or a
            # device has none, and a file may grow between a stat and the read.
            raw = file.read(MAX_TASK_FILE_BYTES + 1)
        if len(raw) > MAX_TASK_FILE_BYTES:
            raise InvalidTaskFile(str(path), "file", _too_large("bytes"))
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidTaskFile(str(path), "file", str(e)) from None
    return parse_tasks(text, str(path))

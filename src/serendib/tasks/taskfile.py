"""Task files: a YAML, JSON or JSON Lines list of tasks.

A task file comes from a user's disk, maybe from someone else: it is read with bounds. A
YAML document, or a JSON one that is not a plain list, is read whole: it may be at most
:data:`MAX_TASK_FILE_BYTES`, nest at most :data:`MAX_TASK_FILE_DEPTH` deep, and use no YAML
aliases (``*name``), so a small "billion laughs" document cannot expand to gigabytes while it
is parsed, validated or encoded. A JSON list and JSON Lines (``.jsonl``, one task per line)
are *streamed* (:func:`iter_task_file`): any number of tasks in bounded memory, each entry at
most :data:`MAX_ENTRY_BYTES`.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.error import MarkedYAMLError
from yaml.nodes import Node

from serendib.errors import InvalidTaskFile
from serendib.messages import summarise
from serendib.tasks.models import Task

__all__ = [
    "MAX_ENTRY_BYTES",
    "MAX_TASK_FILE_BYTES",
    "MAX_TASK_FILE_DEPTH",
    "iter_task_file",
    "load_task_file",
    "parse_tasks",
]

MAX_TASK_FILE_BYTES = 64 * 1024 * 1024
"""The largest task file read (a document given as text: this many characters)."""
MAX_TASK_FILE_DEPTH = 64
"""Nesting of lists and mappings in a task file (a payload may nest 32 deep in a task)."""

MAX_ENTRY_BYTES = 4 * 1024 * 1024
"""The largest entry of a streamed file (one task of a JSON list or one JSON line)."""
_READ = 1 << 20
_STREAMED = (".json", ".jsonl", ".ndjson")

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
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    lines: list[int] | None = None

    def where_is(index: int) -> str:
        # Lines only for an error: finding them parses the document again.
        nonlocal lines
        if lines is None:
            lines = _lines_of_items(text)
        return f"entry {index}" + (f" (line {lines[index]})" if index < len(lines) else "")

    for index, entry in enumerate(data):
        if isinstance(entry, dict):
            try:
                task = Task.model_validate(entry)
            except ValidationError:
                pass
            else:
                if task.id not in seen:
                    seen[task.id] = index
                    tasks.append(task)
                    continue
        where = where_is(index)
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
    """Read and validate a whole task file (``.yaml``, ``.yml``, ``.json``, ``.jsonl``).

    A YAML file (or a JSON mapping) is at most :data:`MAX_TASK_FILE_BYTES`: a larger one is
    refused unread. An id may appear once.

    Raises:
        InvalidTaskFile: The file cannot be read, is too large, or an entry is invalid.
    """
    path = Path(path)
    if path.suffix.lower() not in _STREAMED:
        return _read_whole(path)
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for index, task in enumerate(iter_task_file(path)):
        if task.id in seen:
            raise InvalidTaskFile(
                str(path), f"entry {index}", f"id {task.id!r} repeats entry {seen[task.id]}"
            )
        seen[task.id] = index
        tasks.append(task)
    return tasks


def _read_whole(path: Path) -> list[Task]:
    """A task file parsed as one document (YAML, or JSON that is not a plain list)."""
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


def iter_task_file(path: str | Path) -> Iterator[Task]:
    """The tasks of a task file, one by one: in bounded memory for a JSON list or JSON
    Lines (any size), whole for YAML or a JSON mapping (as :func:`load_task_file`).

    Raises:
        InvalidTaskFile: The file cannot be read, or an entry is invalid (its index, line
            and reason); the tasks before it have been yielded.
    """
    path = Path(path)
    source = str(path)
    if path.suffix.lower() not in _STREAMED:
        yield from _read_whole(path)
        return
    try:
        file = path.open("rb")
    except OSError as e:
        raise InvalidTaskFile(source, "file", str(e)) from None
    with file:
        lines = path.suffix.lower() != ".json"
        entries = _json_lines(file, source) if lines else _json_list(file, source)
        if entries is None:  # a JSON document that is not a list: read it whole
            yield from _read_whole(path)
            return
        for index, (line, entry) in enumerate(entries):
            yield _entry(entry, index, line, source)


def _entry(entry: Any, index: int, line: int, source: str) -> Task:
    where = f"entry {index} (line {line})"
    if not isinstance(entry, dict):
        raise InvalidTaskFile(source, where, f"expected a mapping, got {type(entry).__name__}")
    try:
        return Task.model_validate(entry)
    except ValidationError as e:
        raise InvalidTaskFile(source, where, summarise(e, limit=3, what="task")) from None


def _json_lines(file: BinaryIO, source: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of each non-blank line."""
    for number, raw in enumerate(_bounded_lines(file, source), 1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidTaskFile(source, f"line {number}", f"not valid JSON: {e}") from None
        except RecursionError:
            raise InvalidTaskFile(source, f"line {number}", "nests too deep") from None


def _bounded_lines(file: BinaryIO, source: str) -> Iterator[bytes]:
    number = 0
    while True:
        raw = file.readline(MAX_ENTRY_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_ENTRY_BYTES and not raw.endswith(b"\n"):
            raise InvalidTaskFile(source, f"line {number}", f"longer than {MAX_ENTRY_BYTES} bytes")
        yield raw


def _json_list(file: BinaryIO, source: str) -> Iterator[tuple[int, Any]] | None:
    """(line, value) of each element of a top-level JSON list, parsed one at a time by the
    standard library's decoder over a sliding window of the file; None if the document is
    not a list."""
    reader = _Window(file, source)
    if reader.next_char() != "[":
        return None
    return reader.elements()


class _Window:
    """A JSON list read element by element: what is parsed is dropped from the window."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        self._file = file
        self._source = source
        self._text = ""
        self._at = 0
        self._line = 1  # line at self._counted in the window
        self._counted = 0
        self._eof = False
        self._decoder = json.JSONDecoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def _more(self) -> bool:
        if self._eof:
            return False
        raw = self._file.read(_READ)
        try:
            chunk = self._utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            raise InvalidTaskFile(self._source, f"line {self._line}", str(e)) from None
        if not raw:
            self._eof = True
        self.line()  # counted up to what is dropped
        self._text = self._text[self._at :] + chunk
        self._at = self._counted = 0
        return bool(raw) or bool(chunk)

    def next_char(self) -> str:
        """Skip whitespace; the next character ("" at the end), not consumed."""
        while True:
            text, at = self._text, self._at
            while at < len(text) and text[at] in " \t\r\n":
                at += 1
            self._at = at
            if at < len(text):
                return text[at]
            if not self._more():
                return ""

    def line(self) -> int:
        """The line of the next character (counting only what was not counted before)."""
        if self._at > self._counted:
            self._line += self._text.count("\n", self._counted, self._at)
            self._counted = self._at
        return self._line

    def elements(self) -> Iterator[tuple[int, Any]]:
        self._at += 1  # the "["
        first = True
        while True:
            char = self.next_char()
            if not char:
                self._fail("the file ends before the list is closed")
            if char == "]":
                self._at += 1
                if self.next_char():
                    self._fail("content after the list")
                return
            if not first:
                if char != ",":
                    self._fail("expected ',' or ']' between entries")
                self._at += 1
                self.next_char()
            first = False
            line = self.line()
            yield line, self._value()

    def _value(self) -> Any:
        while True:
            try:
                value, end = self._decoder.raw_decode(self._text, self._at)
            except json.JSONDecodeError as e:
                # Incomplete in the window: read on (up to an entry's limit), else invalid.
                if len(self._text) - self._at <= MAX_ENTRY_BYTES and self._more():
                    continue
                if len(self._text) - self._at > MAX_ENTRY_BYTES:
                    self._fail(f"an entry longer than {MAX_ENTRY_BYTES} bytes")
                self._fail(f"not valid JSON: {e.msg}")
            except RecursionError:
                self._fail("nests too deep")
            if end == len(self._text) and not self._eof and self._more():
                continue  # a number may go on in the next read: parse it again whole
            if end - self._at > MAX_ENTRY_BYTES:
                self._fail(f"an entry longer than {MAX_ENTRY_BYTES} bytes")
            self._at = end
            return value

    def _fail(self, reason: str) -> NoReturn:
        raise InvalidTaskFile(self._source, f"line {self.line()}", reason)

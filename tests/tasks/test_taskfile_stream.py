"""Task files streamed: a JSON list or JSON Lines of any size, in bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from serendib.errors import InvalidTaskFile
from serendib.tasks.models import Task
from serendib.tasks.taskfile import MAX_ENTRY_BYTES, iter_task_file, load_task_file


def entries(n: int) -> list[dict[str, object]]:
    return [
        {"id": f"t{i}", "difficulty": 1 + i % 10, "payload": {"n": i, "s": "x" * (i % 7)}}
        for i in range(n)
    ]


def test_a_json_list_streams_the_same_tasks_as_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(entries(3_000), indent=1))  # many lines, many reads
    assert list(iter_task_file(path)) == load_task_file(path)


def test_json_lines_stream_skipping_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries(50)) + "\n\n")
    assert [t.id for t in iter_task_file(path)] == [f"t{i}" for i in range(50)]


def test_a_mapping_or_yaml_is_read_whole(tmp_path: Path) -> None:
    doc = tmp_path / "tasks.json"
    doc.write_text(json.dumps({"tasks": entries(3)}))
    assert [t.id for t in iter_task_file(doc)] == ["t0", "t1", "t2"]
    yaml = tmp_path / "tasks.yaml"
    yaml.write_text("- {id: a, difficulty: 2}\n")
    assert [t.id for t in iter_task_file(yaml)] == ["a"]


@pytest.mark.parametrize(
    ("name", "text", "where", "reason"),
    [
        (
            "t.jsonl",
            '{"id": "a", "difficulty": 1}\n{"id": "b", "difficulty": 99}\n',
            "line 2",
            "difficulty",
        ),
        ("t.jsonl", '{"id": "a", "difficulty": 1}\n\n{oops\n', "line 3", "not valid JSON"),
        ("t.json", '[\n {"id": "a", "difficulty": 1},\n {"id": "b"}\n]', "line 3", "difficulty"),
        ("t.json", '[{"id": "a", "difficulty": 1} {"id": "b"}]', "line 1", "expected ','"),
        ("t.json", '[{"id": "a", "difficulty": 1},\n\n [1]]', "line 3", "expected a mapping"),
        ("t.json", '[{"id": "a", "difficulty": 1}', "line 1", "ends before the list is closed"),
        ("t.json", '[{"id": "a", "difficulty": 1}] trailing', "line 1", "content after"),
    ],
)
def test_a_bad_entry_names_its_line_and_reason_after_the_good_ones(
    tmp_path: Path, name: str, text: str, where: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    good: list[Task] = []
    with pytest.raises(InvalidTaskFile) as raised:
        good.extend(iter_task_file(path))
    assert where in str(raised.value)
    assert reason in str(raised.value)
    assert [t.id for t in good] == ["a"]


def test_an_entry_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        '[{"id": "a", "difficulty": 1, "description": "' + "x" * MAX_ENTRY_BYTES + '"}]'
    )
    with pytest.raises(InvalidTaskFile, match="longer than"):
        list(iter_task_file(path))


def test_memory_stays_bounded_however_many_tasks(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("w") as out:
        out.write("[")
        for i in range(60_000):
            out.write(("," if i else "") + json.dumps({"id": f"t{i}", "difficulty": 1}))
        out.write("]")
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_task_file(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60_000
    assert path.stat().st_size > 2_000_000
    assert peak < 8 * 1024 * 1024  # a read window and one task, not the file's tasks

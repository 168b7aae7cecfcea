"""Task files: validated whole, errors name the entry, the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from serendib.errors import InvalidTaskFile
from serendib.tasks.taskfile import load_task_file, parse_tasks


def test_yaml_list_of_tasks() -> None:
    tasks = parse_tasks(
        "- id: 1\n  difficulty: 2\n- id: two\n  difficulty: 9\n  required_skill: python\n",
        "t.yaml",
    )
    assert [(t.id, t.difficulty, t.required_skill) for t in tasks] == [
        ("1", 2, "general"),
        ("two", 9, "python"),
    ]


def test_json_with_a_tasks_key() -> None:
    tasks = parse_tasks('{"tasks": [{"id": "a", "difficulty": 3, "priority": 5}]}', "t.json")
    assert tasks[0].priority == 5


def test_bad_entry_is_reported_with_its_index_line_and_reason() -> None:
    text = "- id: 1\n  difficulty: 2\n- id: 2\n  difficulty: 11\n"
    with pytest.raises(InvalidTaskFile) as info:
        parse_tasks(text, "t.yaml")
    assert info.value.location == "entry 1 (line 3)"
    assert "difficulty" in info.value.reason
    assert "less than or equal to 10" in info.value.reason
    assert "nothing from this file was submitted" in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- id: 1\n  difficulty: 2\n  colour: red\n", "colour"),
        ("- id: 1\n", "difficulty"),
        ("- 42\n", "expected a mapping"),
        ("just: a mapping\n", "expected a list"),
        ("- id: 1\n  difficulty: 2\n- id: 1\n  difficulty: 3\n", "repeats entry 0"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_documents_are_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidTaskFile, match=reason):
        parse_tasks(text, "t.yaml")


def test_missing_file_is_an_invalid_task_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidTaskFile, match="No such file"):
        load_task_file(tmp_path / "missing.yaml")

"""Task files: validated whole, errors name the entry, the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from serendib.errors import InvalidTaskFile
from serendib.tasks import taskfile
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


# --- hostile documents: refused quickly, with bounded memory ------------------------------


def _laughs(levels: int = 9, indent: str = "") -> str:
    """A "billion laughs" mapping: each level's anchor repeats the one below nine times."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"{indent}l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


TASK = "- id: a\n  difficulty: 1\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(_laughs() + "tasks:\n" + TASK, 2, id="start"),
        pytest.param(
            "tasks:\n" + TASK + "- id: b\n  difficulty: 1\n  payload:\n" + _laughs(indent="    "),
            8,
            id="inside-a-payload",
        ),
        pytest.param(
            TASK + "- id: b\n  difficulty: 1\n  payload: {x: &x [1, 2]}\n- id: c\n"
            "  difficulty: 1\n  payload: *x\n" + TASK,
            8,
            id="middle",
        ),
    ],
)
def test_yaml_aliases_are_refused_before_anything_expands(text: str, line: int) -> None:
    with pytest.raises(InvalidTaskFile) as info:
        parse_tasks(text, "bomb.yaml")

    assert info.value.reason == "YAML aliases (*name) are not allowed in task files"
    assert info.value.location == f"line {line}"
    assert "\n" not in str(info.value)


def test_a_billion_laughs_file_is_refused_by_load_task_file(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_laughs() + "tasks:\n  - id: a\n    difficulty: 1\n    payload: *l8\n")

    with pytest.raises(InvalidTaskFile, match=r"YAML aliases \(\*name\) are not allowed"):
        load_task_file(bomb)


def test_anchors_without_aliases_are_harmless() -> None:
    tasks = parse_tasks("- &first\n  id: a\n  difficulty: 1\n", "t.yaml")

    assert [t.id for t in tasks] == ["a"]


@pytest.mark.parametrize(
    ("text", "source", "reason"),
    [
        ("- " + "[" * 100_000 + "]" * 100_000 + "\n", "deep.yaml", "nests deeper than 64"),
        ("[" * 100_000 + "]" * 100_000, "deep.json", "not valid JSON: nests too deep"),
    ],
)
def test_deep_nesting_is_refused_without_a_recursion_error(
    text: str, source: str, reason: str
) -> None:
    with pytest.raises(InvalidTaskFile, match=reason):
        parse_tasks(text, source)


def test_yaml_syntax_errors_are_one_line() -> None:
    with pytest.raises(InvalidTaskFile) as info:
        parse_tasks("- [unclosed\n", "t.yaml")

    assert "\n" not in str(info.value)
    assert "(line 2, column 1)" in info.value.reason


def test_a_file_over_the_size_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskfile, "MAX_TASK_FILE_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.write_text(TASK * 10)  # 250 bytes of valid tasks
    small = tmp_path / "small.yaml"
    small.write_text(TASK)

    with pytest.raises(InvalidTaskFile) as info:
        load_task_file(big)
    with pytest.raises(InvalidTaskFile, match="larger than the limit"):
        parse_tasks(TASK * 10, "t.yaml")

    assert info.value.location == "file"
    assert "larger than the limit" in info.value.reason
    assert "split it into smaller files" in info.value.reason
    assert [t.id for t in load_task_file(small)] == ["a"]


def test_a_file_one_byte_over_64_mib_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:  # sparse: nothing is written but its length
        file.truncate(64 * 1024 * 1024 + 1)

    with pytest.raises(InvalidTaskFile, match=r"larger than the limit of 64 MiB"):
        load_task_file(huge)

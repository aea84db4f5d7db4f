"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python example after {heading!r}"
    return match.group(1)


def test_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]


@pytest.mark.parametrize("heading", ["## Quick start", "## Simulation subscribers"])
def test_readme_example_runs(heading: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(python_block_after(heading), str(README), "exec"), {})
    assert capsys.readouterr().out


def test_readme_journal_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Journal.**") : text.index("**Replay**")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert capsys.readouterr().out.split("\n") == ["True sealed 3 True", "3 2", "4", ""]

"""The README's concurrency examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_readme_concurrency_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Concurrency") : text.index("## Backends")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        "[(1, 'JOB_DONE', 'worker-0/1.0'), (2, 'JOB_DONE', 'worker-0/1.1'), "
        "(3, 'JOB_DONE', 'worker-1/1.0')]",
        "12 12",
        "streamed 1 depot-7",
        "streamed 2 depot-8",
        "[('audit', 1), ('count', 1), ('audit', 2), ('count', 2)]",
    ]

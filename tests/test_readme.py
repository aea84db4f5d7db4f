"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _redis_cluster import cluster_url, redis_cluster  # noqa: F401  (fixtures)
from _redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

#: The Redis URL the README's examples are written for; the test's own
#: server (on a free port) stands in for it.
README_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The same for the README's Redis Cluster example: the test's own cluster.
README_CLUSTER_URL = "redis://127.0.0.1:7000/0"

README = Path(__file__).resolve().parent.parent / "README.md"


#: First line of a block that goes on from the block before it (same names).
CONTINUES = "# continues the example above"


def python_blocks() -> list[tuple[int, str]]:
    """Every ```python block of the README, with the line it starts on."""
    text = README.read_text(encoding="utf-8")
    return [
        (text[: match.start()].count("\n") + 2, match.group(1))
        for match in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


def test_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]


def test_readme_journal_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Journal.**") : text.index("**Replay**")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert capsys.readouterr().out.split("\n") == ["True sealed 3 True", "3 2", "4", ""]


def _block_chains() -> list[list[tuple[int, str]]]:
    """The README's python blocks, each with the blocks that continue it."""
    chains: list[list[tuple[int, str]]] = []
    for line, code in python_blocks():
        if code.startswith(CONTINUES):
            assert chains, f"README line {line}: nothing before it to continue"
            chains[-1].append((line, code))
        else:
            chains.append([(line, code)])
    return chains


@pytest.mark.parametrize("chain", _block_chains(), ids=lambda chain: f"line{chain[0][0]}")
def test_every_python_block_runs_as_written(
    chain: list[tuple[int, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """Each block runs in a fresh namespace (in an empty folder) and prints.

    A block that talks to Redis at ``README_REDIS_URL`` (or a cluster at
    ``README_CLUSTER_URL``) talks to the test's own server (or cluster) instead.
    """
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for line, code in chain:
        if README_REDIS_URL in code:
            code = code.replace(README_REDIS_URL, request.getfixturevalue("redis_url"))
        if README_CLUSTER_URL in code:
            code = code.replace(README_CLUSTER_URL, request.getfixturevalue("cluster_url"))
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)
    assert capsys.readouterr().out, "a README example should show what it does"


def test_signature_blocks_are_not_marked_python() -> None:
    """Every block marked python compiles (a bare signature is ``text``)."""
    for line, code in python_blocks():
        compile("\n" * (line - 1) + code, str(README), "exec")

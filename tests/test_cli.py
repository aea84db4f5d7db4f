"""The command line as a user meets it: a user error is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ringbus


def ringbus_cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ringbus ARGV`` in a new process, as a shell would run it."""
    return subprocess.run(
        [sys.executable, "-m", "ringbus", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
    )


def test_version() -> None:
    result = ringbus_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"ringbus {ringbus.__version__}\n"


USER_ERRORS = [
    (("nosuch",), "invalid choice: 'nosuch'"),
    (("demo", "--days", "-1"), "--days: must be >= 0, got -1"),
    (("demo", "--days", "lots"), "--days: not an integer: 'lots'"),
    (("demo", "--polities", "0"), "--polities: must be >= 1, got 0"),
    (("demo", "--tick-delay", "nan"), "--tick-delay: must be a finite number >= 0"),
    (
        ("demo", "--snapshot", "/nonexistent/dir/x.json"),
        "--snapshot: folder '/nonexistent/dir' does not exist",
    ),
    (("demo", "--snapshot", "/"), "--snapshot: / is a directory"),
    (("demo", "--journal", "/nonexistent/x.jsonl"), "--journal: folder '/nonexistent' does not"),
    (
        ("demo", "--resume", "{snap}", "--seed", "99", "--polities", "7"),
        "--seed, --polities cannot be given with --resume",
    ),
    (("demo", "--resume", "{missing}"), "cannot read snapshot"),
    (("journal", "verify", "x.jsonl", "--max-problems", "-1"), "--max-problems: must be >= 0"),
    (("journal", "verify", "x.jsonl", "--expect-head", "abc"), "64 lowercase hex digits"),
    (("feed", "127.0.0.1:1", "--limit", "-1"), "--limit: must be >= 1, got -1"),
    (("feed", "127.0.0.1:1", "--limit", "0"), "--limit: must be >= 1, got 0"),
    (("feed", "127.0.0.1:1", "--timeout", "-2"), "--timeout: must be a finite number >= 0"),
    (("feed", "nowhere"), "address must be HOST:PORT"),
    (("redis-demo", "aggregate", "world-1", "--wait-for", "0"), "--wait-for: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("argv", "message"), USER_ERRORS, ids=lambda value: str(value)[:40])
def test_a_user_error_is_one_line_and_exit_2(
    argv: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    snap = tmp_path / "snap.json"
    if "{snap}" in argv:
        made = ringbus_cli("demo", "--days", "1", "--quiet", "--snapshot", str(snap))
        assert made.returncode == 0, made.stderr
    argv = tuple(
        arg.format(snap=snap, missing=tmp_path / "missing.json") if "{" in arg else arg
        for arg in argv
    )
    result = ringbus_cli(*argv)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


def test_the_snapshot_path_is_checked_before_the_run() -> None:
    result = ringbus_cli("demo", "--days", "100000", "--snapshot", "/nonexistent/dir/x.json")
    assert result.returncode == 2  # at once: a 100,000-day run would take minutes


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_a_closed_pipe_ends_quietly(extra: tuple[str, ...]) -> None:
    """``ringbus demo | head -1``: no BrokenPipeError traceback."""
    command = [sys.executable, "-m", "ringbus", "demo", "--days", "30", "--quiet", *extra]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # the reader goes away, as `head -1` does
        err = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code in (0, 141)


def test_the_report_says_what_is_still_pending() -> None:
    """The last drain's handlers may publish events that no drain dispatched yet."""
    # Seed 4 over 7 days ends with evidence raised by the last drain's handlers.
    result = ringbus_cli("demo", "--days", "7", "--seed", "4", "--stream-hash", "--quiet")
    assert result.returncode == 0
    published = next(line for line in result.stdout.splitlines() if "events published" in line)
    hashed = next(line for line in result.stdout.splitlines() if "stream sha256" in line)
    total = int(published.split(":")[1].split()[0])
    dispatched = int(hashed.rsplit("(", 1)[1].split()[0])
    assert dispatched < total
    assert f"({total - dispatched} published by the last drain's handlers" in published


def test_help_is_not_an_error() -> None:
    result = ringbus_cli("--help")
    assert result.returncode == 0 and "demo" in result.stdout
    bare = ringbus_cli()
    assert bare.returncode == 2 and "demo" in bare.stderr


def test_redis_demo_without_redis_py_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--spawn-redis`` without the redis package: one line, no server, no folder."""
    import importlib.util
    import tempfile

    from ringbus.cli import main

    real_find_spec = importlib.util.find_spec

    def without_redis(name: str, *args: object) -> object:
        return None if name == "redis" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_redis)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["redis-demo", "--spawn-redis", "--workers", "1", "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "redis-demo: needs redis-py: pip install 'ringbus[redis]'\n"
    assert list(tmp_path.iterdir()) == []  # no server folder was made

"""``ringbus demo --serve`` and ``ringbus viewer`` as an admin runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import ringbus
from ringbus.cli import main as cli_main


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(ringbus.__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    return env


@contextmanager
def running(*argv: str) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "ringbus", *argv]
    process = subprocess.Popen(
        command,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def read_until(process: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert process.stderr is not None
    seen = []
    for _ in range(200):
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no {pattern!r} in {seen}")


def get_json(url: str, **headers: str) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_demo_serve_keeps_serving_the_finished_run_until_ctrl_c() -> None:
    argv = ["demo", "--days", "1", "--ticks-per-day", "4", "--events-per-tick", "2"]
    with running(*argv, "--serve", "0", "--tick-delay", "0", "--quiet") as process:
        url = read_until(process, r"viewer at (http://127\.0\.0\.1:\d+/)").group(1)
        read_until(process, r"run finished; the viewer stays at")
        body = get_json(url + "api/events?limit=3")
        assert body["finished"] is True and len(body["events"]) == 3
        assert get_json(url + "api/kpis")["kpis"]["totals"]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "viewer stopped" in err and "Traceback" not in err
        assert "events published:" in out  # the report came out when the run ended


def test_demo_serve_port_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--days", "1", "--serve", "70000"]) == 2
    err = capsys.readouterr().err
    assert err == "ringbus demo: --serve port must be from 0 to 65535, got 70000\n"
    assert cli_main(["demo", "--days", "1", "--exit-when-done"]) == 2
    assert capsys.readouterr().err == "ringbus demo: --exit-when-done needs --serve\n"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli_main(["demo", "--days", "1", "--serve", str(port), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"ringbus demo: cannot serve the viewer on 127.0.0.1:{port}: ")
    assert "in use" in err


def test_viewer_off_loopback_needs_allow_host_and_prints_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["viewer", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "binding 0.0.0.0 (not loopback) needs --allow-host NAME" in err
    assert cli_main(["viewer", "--port", "70000"]) == 2
    assert "--port must be from 0 to 65535" in capsys.readouterr().err
    argv = ["viewer", "--host", "0.0.0.0", "--allow-host", "localhost", "--port", "0"]
    with running(*argv, "--tick-delay", "0.01") as process:
        found = read_until(
            process, r"access token (\S+) .*open (http://localhost:(\d+)/\?login=\S+)"
        )
        token, login, port = found.groups()
        base = f"http://localhost:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(base + "api/events?limit=1")
        assert refused.value.code == 401
        refused.value.close()
        body = get_json(base + "api/events?limit=1", **{"X-Ringbus-Token": token})
        assert isinstance(body["run_id"], str)
        with pytest.raises(urllib.error.HTTPError) as foreign:
            get_json(f"http://127.0.0.1:{port}/api/events", **{"X-Ringbus-Token": token})
        assert foreign.value.code == 403  # a Host not named by --allow-host
        foreign.value.close()
        assert login.startswith(base)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0 and "stopped" in err


def test_viewer_days_then_serves_the_finished_run() -> None:
    argv = ["viewer", "--port", "0", "--days", "1", "--tick-delay", "0"]
    with running(*argv) as process:
        url = read_until(process, r"(http://127\.0\.0\.1:\d+/)").group(1)
        read_until(process, "run finished; still serving")
        assert get_json(url + "api/events?limit=1")["finished"] is True
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
        assert process.returncode == 0
    assert cli_main(["viewer", "--port", "0", "--days", "0", "--exit-when-done"]) == 0

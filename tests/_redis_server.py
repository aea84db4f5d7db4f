"""A real ``redis-server`` on 127.0.0.1 and a free port, for the bridge tests.

Import the fixtures from a test module (``from _redis_server import
redis_server``). A missing server fails the run: it never skips.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process that a test may stop and start again on the same port."""

    port: int
    workdir: Path
    appendonly: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"redis-{self.port}.pid"

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def ping(self) -> bool:
        return self._cli("ping").stdout.strip() == "PONG"

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail(
                f"redis-server not found at {REDIS_SERVER}: install it "
                "(apt-get install -y redis-server); the Redis bridge tests need a real server"
            )
        subprocess.run(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--dir",
                str(self.workdir),
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} did not answer PING within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self._cli("shutdown", "nosave")
        deadline = time.monotonic() + 10
        while self.ping():
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} did not stop within 10 s")
            time.sleep(0.02)
        # The port must be free before a restart on it.
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"port {self.port} still accepts connections after shutdown")
            time.sleep(0.02)

    def flush(self) -> None:
        self._cli("flushall")

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save) and wait until its port is free."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server {pid} survived SIGKILL for 10 s")
            time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections open and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole test run; stopped when the run ends."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        if server.ping():
            server.stop()


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect each test's cycles (buses and their sources) at its end, so an unclosed
    connection shows up in the test that left it, not in a later one."""
    yield
    gc.collect()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (no persistence), for tests that kill or freeze it."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError, ValueError):
            server.thaw()
        if server.ping():
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The server's URL, emptied before each test."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    yield redis_server.url

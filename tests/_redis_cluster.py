"""A real 3-node Redis Cluster on 127.0.0.1 and free ports, for the bridge tests.

Plain ``redis-server --cluster-enabled yes`` nodes in a temporary folder,
joined by ``redis-cli --cluster create`` (no replicas). Import the fixtures
from a test module (``from _redis_cluster import redis_cluster``). A missing
server fails the run: it never skips.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _redis_server import REDIS_CLI, REDIS_SERVER


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20_000, 45_000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisCluster:
    """Three cluster nodes (one master each) and the folder they live in."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL of one node: a cluster client finds the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def cli(self, port: int, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REDIS_CLI, "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, nodes: int = 3) -> None:
        for missing in (REDIS_SERVER, REDIS_CLI):
            if not os.path.exists(missing):
                pytest.fail(
                    f"{missing} not found: install it (apt-get install -y redis-server); "
                    "the Redis Cluster tests need real servers"
                )
        for _ in range(nodes):
            port = free_cluster_port()
            folder = self.workdir / str(port)
            folder.mkdir()
            process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(folder / "nodes.conf"),
                    "--cluster-node-timeout", "5000",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(folder),
                    "--logfile", str(folder / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.ports.append(port)
            self.processes.append(process)
        deadline = time.monotonic() + 10
        for port in self.ports:
            while self.cli(port, "ping").stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    pytest.fail(f"cluster node on port {port} did not answer PING within 10 s")
                time.sleep(0.02)
        created = self.cli(
            self.ports[0],
            "--cluster", "create",
            *[f"127.0.0.1:{port}" for port in self.ports],
            "--cluster-replicas", "0",
            "--cluster-yes",
            timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        deadline = time.monotonic() + 30
        for port in self.ports:
            while "cluster_state:ok" not in self.cli(port, "cluster", "info").stdout:
                if time.monotonic() > deadline:
                    pytest.fail(f"cluster node on port {port} not cluster_state:ok within 30 s")
                time.sleep(0.05)

    def flush(self) -> None:
        for port in self.ports:
            self.cli(port, "flushall")

    def stop(self) -> None:
        """Stop every node (SIGKILL after 10 s) and wait until each process is gone."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes = []


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One 3-node cluster for the whole test run; stopped and its folder removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="ringbus-cluster-"))
    cluster = RedisCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> Iterator[str]:
    """The URL of a node of the cluster, emptied before each test."""
    redis_cluster.flush()
    yield redis_cluster.url

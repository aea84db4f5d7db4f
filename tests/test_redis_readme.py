"""The README's transport and Redis examples run as written, against the tests' own servers.

The addresses in the README (Redis on 127.0.0.1:6379, an HTTP collector on
127.0.0.1:8080, a feed on port 7070) are replaced by a test redis-server, a
local HTTP server and a free port; nothing else is changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _http_collector import Collector, collecting_server
from _redis_server import collect_garbage, free_port, redis_server, redis_url
from ringbus.transports.redis_streams import connect

__all__ = ["collect_garbage", "redis_server", "redis_url"]  # fixtures used by the tests below

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Telemetry transports and Redis Streams"


def section_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    with collecting_server() as served:
        yield served


def test_readme_transport_and_redis_examples_run(
    redis_url: str, collector: tuple[str, Collector], capsys: pytest.CaptureFixture[str]
) -> None:
    http_url, received = collector
    bodies = received.bodies
    blocks = section_blocks()
    assert len(blocks) == 3
    replacements = {
        "redis://127.0.0.1:6379/0": redis_url,
        "http://127.0.0.1:8080/events": http_url,
        "port=7070": f"port={free_port()}",
    }
    namespace: dict[str, Any] = {}
    try:
        for block in blocks:
            for written, here in replacements.items():
                block = block.replace(written, here)
            exec(compile(block, str(README), "exec"), namespace)
        lines = capsys.readouterr().out.splitlines()
        assert "True ok" in lines and lines[-1] == "1 ok"
        assert json.loads(lines[0])["kind"] == "DELIVERY_COMPLETED"  # the console transport
        assert [event["seq"] for body in bodies for event in body["events"]] == [1]

        # the outbox pattern: the effect is written with the commit, once
        sink = namespace["RedisStreamSink"](url=redis_url, stream="world:events", partitions=4)
        sink.attach(namespace["bus"])
        namespace["bus"].publish("DELIVERY_COMPLETED", polity_id="south", payload={"cargo": 3})
        namespace["bus"].drain()
        assert sink.close(timeout=10)
        source = namespace["source"]
        source.run(idle_exit=1.0)
        assert connect(redis_url).lrange("alerts:outbox", 0, -1) == [b'{"polity": "south"}']
        assert namespace["kpi"].summary()["totals"]["deliveries_completed"] == 2
        assert source.status()["duplicates"] == 0 and source.status()["state"] == "ok"
    finally:
        for name in ("feed", "http", "sink"):
            transport = namespace.get(name)
            if transport is not None:
                (transport.close if hasattr(transport, "close") else transport.detach)()

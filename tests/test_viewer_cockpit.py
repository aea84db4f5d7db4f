"""The viewer page as an admin uses it, in headless Chromium: speed under load, charts,
history, URL state, export, runs, the token flow and text direction controls.

Same browser rules as ``test_viewer_browser``: Debian's chromium, never skipped.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ringbus import EventBus, EventBusConfig, kinds
from ringbus.demo import DemoWorld
from ringbus.sim.health import HealthReporter
from ringbus.sim.kpi import KpiSubscriber
from ringbus.viewer import ViewerServer, serve
from test_viewer_browser import browser, publish, rows, shown_seqs
from test_viewer_cli import get_json, read_until, running

__all__ = ["browser"]  # the module's browser fixture, shared


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    response = page.goto(url)
    assert response is not None and response.status == 200
    return page, problems


def new_bus(**options: Any) -> Any:
    """A bus on the core in use: the page does not depend on the core, and the API
    tests run every read on both cores, so the browser runs once per environment."""
    return EventBus(EventBusConfig(**options))


@pytest.fixture
def bus() -> Any:
    bus = new_bus(max_events=1000)
    publish(bus, 30)
    return bus


@pytest.fixture
def server(bus: Any) -> Iterator[ViewerServer]:
    with serve(bus) as viewer:
        yield viewer


# -- honest text --------------------------------------------------------------------


def test_text_direction_controls_are_shown_not_obeyed(
    context: BrowserContext, server: ViewerServer, bus: Any
) -> None:
    page, problems = open_page(context, server.url)
    expect(rows(page)).to_have_count(30)
    bus.publish(
        kinds.DEPOT_BUILT,
        tick=30,
        subject_id="invoice\u202etxt.exe",
        payload={"file": "report\u2067gpj.exe\u2069", "plain": "ok"},
    )
    row = page.locator("#rows tr[data-seq='31']")
    expect(row.locator("td").nth(7)).to_have_text("invoice\u27e6U+202E\u27e7txt.exe")
    row.locator("button.payload-toggle").click()
    expect(page.locator("#rows tr.detail dd").first).to_have_text(
        "report\u27e6U+2067\u27e7gpj.exe\u27e6U+2069\u27e7"
    )
    text = page.locator("#rows").text_content() or ""
    assert "\u202e" not in text and "\u2067" not in text
    assert problems == []


# -- history ------------------------------------------------------------------------


def test_range_filters_and_the_url_round_trip(
    context: BrowserContext, server: ViewerServer, bus: Any
) -> None:
    page, problems = open_page(context, server.url)
    expect(rows(page)).to_have_count(30)
    page.fill("#f-from_seq", "5")
    page.fill("#f-to_seq", "12")
    page.click("#apply")
    expect(rows(page)).to_have_count(8)
    assert shown_seqs(page) == list(range(12, 4, -1))
    expect(page.locator("#status")).to_have_text("history")  # a closed range does not follow
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert query == {"from_seq": ["5"], "to_seq": ["12"], "follow": ["0"]}
    publish(bus, 3)
    page.reload()
    expect(page.locator("#f-from_seq")).to_have_value("5")
    expect(page.locator("#f-to_seq")).to_have_value("12")
    expect(rows(page)).to_have_count(8)
    # a deep link with tick and day ranges, kinds and a limit
    link = server.url + "?kinds=TICK,DEPOT_*&from_day=1&to_day=2&limit=3"
    other, more = open_page(context, link)
    expect(rows(other)).to_have_count(3)
    expect(other.locator("#f-kinds")).to_have_value("TICK,DEPOT_*")
    expect(other.locator("#f-limit")).to_have_value("3")
    days = other.eval_on_selector_all(
        "#rows tr[data-seq]", "r => r.map(x => x.cells[2].textContent)"
    )
    assert set(days) <= {"1", "2"}
    assert shown_seqs(other) == [29, 28, 25]
    expect(other.locator("#status")).to_have_text("live")
    other.fill("#f-from_tick", "20")
    other.fill("#f-to_tick", "23")
    other.click("#apply")
    expect(rows(other)).to_have_count(2)
    assert shown_seqs(other) == [24, 21]
    assert "from_tick=20" in other.url and "to_tick=23" in other.url
    assert problems == [] and more == []


def test_load_older_pages_back_and_says_when_the_ring_ends(
    context: BrowserContext, server: ViewerServer
) -> None:
    page, problems = open_page(context, server.url + "?limit=10")
    expect(rows(page)).to_have_count(10)
    assert shown_seqs(page)[-1] == 21
    page.click("#older")
    expect(rows(page).first).to_have_attribute("data-seq", "20")
    assert shown_seqs(page) == list(range(20, 10, -1))  # at most ``limit`` rows are kept
    expect(page.locator("#follow")).to_have_text("paused")
    page.click("#older")
    expect(rows(page).first).to_have_attribute("data-seq", "10")
    page.click("#older")
    expect(page.locator("#older-note")).to_contain_text("no older matching events in the ring")
    assert problems == []


def test_skipped_events_can_be_viewed_and_jumped_to(
    context: BrowserContext, server: ViewerServer, bus: Any
) -> None:
    page, problems = open_page(context, server.url + "?limit=5")
    expect(rows(page)).to_have_count(5)
    expect(page.locator("#status")).to_have_text("live")
    publish(bus, 50)
    skip = page.locator("#rows tr.skip")
    expect(skip).to_have_count(1)
    expect(skip).to_contain_text("skipped: seq 31\u201375")
    skip.locator("button.view-range").click()
    expect(page.locator("#f-from_seq")).to_have_value("31")
    expect(page.locator("#f-to_seq")).to_have_value("75")
    expect(rows(page).first).to_have_attribute("data-seq", "75")
    assert shown_seqs(page) == [75, 74, 73, 72, 71]
    page.click("#older")
    expect(rows(page).first).to_have_attribute("data-seq", "70")
    # jump to one seq: it is shown on top and marked
    page.click("#clear")
    expect(page.locator("#status")).to_have_text("live")
    page.fill("#f-jump", "17")
    page.click("#jump")
    expect(page.locator("#rows tr.target")).to_have_attribute("data-seq", "17")
    assert shown_seqs(page) == [17, 16, 15, 14, 13]
    expect(page.locator("#status")).to_have_text("paused")
    assert problems == []


def test_export_downloads_the_filters_events_as_json_lines(
    context: BrowserContext, server: ViewerServer
) -> None:
    page, problems = open_page(context, server.url + "?kinds=TICK&from_seq=3")
    expect(rows(page)).to_have_count(7)
    expect(page.locator("#export")).to_have_attribute("href", "/api/export?kinds=TICK&from_seq=3")
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    path = download.path()
    lines = path.read_text().splitlines()
    exported = [json.loads(line) for line in lines]
    assert [event["seq"] for event in exported] == [5, 9, 13, 17, 21, 25, 29]
    assert {event["kind"] for event in exported} == {kinds.TICK}
    assert problems == []


def test_copy_one_event_as_json(browser: Browser, server: ViewerServer, bus: Any) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page, problems = open_page(context, server.url)
        expect(rows(page)).to_have_count(30)
        page.locator("#rows tr[data-seq='7'] button.payload-toggle").click()
        page.locator("#rows tr.detail button.copy").click()
        expect(page.locator("#rows tr.detail button.copy")).to_have_text("copied")
        copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
        assert copied == bus.get_since(6, limit=1)[0].to_dict()
        assert problems == []
    finally:
        context.close()


# -- charts and panels ----------------------------------------------------------------


def series(page: Page, chart: str, name: str) -> list[float | None]:
    text = page.locator(f"#{chart} g[data-series='{name}']").get_attribute("data-values")
    assert text is not None
    return [float(item) if item else None for item in text.split(",")]


def test_kpi_table_and_charts_follow_the_world(context: BrowserContext) -> None:
    bus = EventBus(EventBusConfig(name="demo", max_events=20_000))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    world = DemoWorld(bus, seed=3, events_per_tick=6, ticks_per_day=8)
    for _ in range(8 * 3):
        world.step()
    with serve(bus, kpis=lambda: kpi.summary(last_days=30)) as viewer:
        page, problems = open_page(context, viewer.url)
        expect(page.locator("#kpi-table")).to_be_visible()
        expect(page.locator("#kpis")).to_be_hidden()
        summary = kpi.summary(last_days=30)
        row = page.locator("#kpi-rows tr[data-kpi='deliveries_completed'] td")
        expect(row).to_have_text(
            [
                "deliveries completed",
                str(summary["current_day"]["deliveries_completed"]),
                str(summary["totals"]["deliveries_completed"]),
            ]
        )
        expect(page.locator("#chart-deliveries g[data-series='completed'] circle")).to_have_count(
            len(summary["days"])
        )
        days = summary["days"]
        assert series(page, "chart-deliveries", "completed") == [
            d["deliveries_completed"] for d in days
        ]
        assert series(page, "chart-deliveries", "failed") == [d["deliveries_failed"] for d in days]
        rates = series(page, "chart-success", "success rate")
        assert rates == [d["delivery_success_rate"] for d in days]
        incidents = page.locator("#chart-incidents g[data-series]")
        assert incidents.count() >= 1
        # the events-per-tick chart sums to the counts panel
        counts = page.eval_on_selector_all(
            "#count-rows tr[data-kind]",
            "r => Object.fromEntries(r.map(x => [x.dataset.kind, +x.cells[1].textContent]))",
        )
        kind = max(counts, key=counts.get)
        assert sum(v or 0 for v in series(page, "chart-rates", kind)) == counts[kind]
        # live: two more days add two points
        for _ in range(8 * 2):
            world.step()
        expect(page.locator("#chart-deliveries g[data-series='completed'] circle")).to_have_count(
            len(days) + 2
        )
        later = kpi.summary(last_days=30)["days"]
        assert series(page, "chart-deliveries", "completed") == [
            d["deliveries_completed"] for d in later
        ]
        assert problems == []


class Transport:
    name = "redis"

    def status(self) -> dict[str, Any]:
        return {"state": "backoff", "sent": 0, "failed": 1, "dropped": 0, "buffered": 1}


def test_health_and_dead_letter_panels_label_their_fields(context: BrowserContext) -> None:
    bus = new_bus(max_events=1000, error_policy="dead_letter", max_retries=0)

    def broken(event: Any) -> None:
        raise ValueError("no room in depot")

    bus.subscribe(broken, kinds=kinds.DEPOT_BUILT, name="stocker")
    HealthReporter(every_ticks=1, transports=[Transport()], timer=None).attach(bus)
    bus.publish(kinds.DEPOT_BUILT, tick=1)
    bus.drain()
    bus.drain()
    with serve(bus) as viewer:
        page, problems = open_page(context, viewer.url)
        cells = page.locator("#transports tr").nth(1).locator("td")
        expect(cells).to_have_text(["redis", "backoff", "0", "1", "0", "1"])
        expect(page.locator("#transports th")).to_have_text(
            ["transport", "state", "sent", "failed", "dropped", "buffered"]
        )
        expect(page.locator("#health dl.fields dt").first).to_have_text("pending")
        letters = page.locator("#dead-letters table tr").nth(1).locator("td")
        expect(letters).to_have_text(
            ["1", kinds.DEPOT_BUILT, "stocker", "1", "ValueError: no room in depot"]
        )
        # in the table, a health event's transport reads with labels too
        health = page.locator("#rows tr", has_text="BUS_HEALTH").first
        health.locator("button.payload-toggle").click()
        expect(page.locator("#rows tr.detail")).to_contain_text(
            "state backoff, sent 0, failed 1, dropped 0, buffered 1"
        )
        assert problems == []


# -- runs ------------------------------------------------------------------------------


def test_a_restarted_sim_is_noticed_and_shown_from_its_start(context: BrowserContext) -> None:
    first = new_bus(max_events=1000)
    publish(first, 40)
    viewer = serve(first)
    port = viewer.port
    try:
        page, problems = open_page(context, viewer.url)
        expect(rows(page)).to_have_count(40)
        expect(page.locator("#status")).to_have_text("live")
        run = page.locator("#run").text_content()
    finally:
        viewer.close()
    second = new_bus(max_events=1000)
    publish(second, 3)
    with serve(second, port=port) as again:
        expect(page.locator("#notice")).to_contain_text("The sim started over")
        expect(rows(page)).to_have_count(3)
        assert shown_seqs(page) == [3, 2, 1]
        expect(page.locator("#run")).to_have_text(again.run_id)
        assert run != again.run_id
        expect(page.locator("#status")).to_have_text("live")
        publish(second, 1)
        expect(rows(page).first).to_have_attribute("data-seq", "4")
        assert problems == []


def test_a_finished_run_says_so_even_after_the_server_goes(context: BrowserContext) -> None:
    bus = new_bus(max_events=1000)
    publish(bus, 5)
    viewer = serve(bus)
    try:
        page, problems = open_page(context, viewer.url)
        expect(page.locator("#status")).to_have_text("live")
        publish(bus, 2)
        viewer.finish()
        expect(page.locator("#status")).to_have_text("run finished")
        expect(rows(page).first).to_have_attribute("data-seq", "7")
        expect(page.locator("#notice")).to_contain_text("The run finished")
    finally:
        viewer.close()
    page.wait_for_timeout(1500)  # past the stream's retry delay
    expect(page.locator("#status")).to_have_text("run finished")
    assert problems == []


# -- off loopback --------------------------------------------------------------------------


def test_token_flow_off_loopback(context: BrowserContext, bus: Any) -> None:
    with serve(bus, host="127.0.0.2", allow_hosts=["viewer.test"], token=True) as viewer:
        assert viewer.url.startswith("http://127.0.0.2:")
        page = context.new_page()
        response = page.goto(viewer.url + "?kinds=TICK")
        assert response is not None and response.status == 401
        assert "needs its access token" in (page.text_content("body") or "")
        assert viewer.login_url is not None
        page.goto(viewer.login_url.replace("?", "?kinds=TICK&"))
        assert page.url == viewer.url + "?kinds=TICK"  # the link is gone from the address bar
        expect(rows(page)).to_have_count(8)
        expect(page.locator("#status")).to_have_text("live")
        publish(bus, 4)
        expect(rows(page).first).to_have_attribute("data-seq", "33")
        expect(page.locator("#count-rows tr[data-kind]").first).to_be_visible()
        # the link works once only: another browser must bring the token itself
        other = context.browser.new_context() if context.browser else None
        assert other is not None
        try:
            stranger = other.new_page()
            response = stranger.goto(viewer.login_url)
            assert response is not None and response.status == 401
        finally:
            other.close()


# -- speed under load ------------------------------------------------------------------------


def test_page_keeps_up_with_a_fast_sim(context: BrowserContext) -> None:
    # the demo in its own process, as an admin runs it: the browser's driver here
    # does not compete with the sim for one interpreter
    argv = ["demo", "--days", "100000", "--events-per-tick", "30", "--tick-delay", "0.008"]
    with running(*argv, "--serve", "0", "--quiet") as process:
        url = read_until(process, r"viewer at (http://127\.0\.0\.1:\d+/)").group(1)
        page, problems = open_page(context, url)
        expect(page.locator("#status")).to_have_text("live")
        first_seq, started = get_json(url + "api/events?limit=1")["latest_seq"], time.monotonic()
        page.wait_for_timeout(1000)
        behind = []
        for _ in range(6):
            behind.append(
                page.evaluate(
                    """async () => {
                        const reply = await fetch("/api/events?limit=1");
                        const latest = (await reply.json()).latest_seq;
                        return latest - +document.querySelector("#rows tr[data-seq]").dataset.seq;
                    }"""
                )
            )
            page.wait_for_timeout(250)
        delays = [
            page.evaluate(
                """async (kind) => {
                    const t0 = performance.now();
                    document.getElementById("f-kinds").value = kind;
                    document.getElementById("apply").click();
                    for (;;) {
                      await new Promise((done) => requestAnimationFrame(done));
                      const rows = Array.from(document.querySelectorAll("#rows tr[data-seq]"));
                      if (rows.length && rows.every((r) => r.cells[3].textContent === kind))
                        return performance.now() - t0;
                      if (performance.now() - t0 > 10000) return -1;
                    }
                }""",
                kind,
            )
            for kind in (
                kinds.DELIVERY_FAILED,
                kinds.DELIVERY_COMPLETED,
                kinds.INCIDENT_RECORDED,
                kinds.PROTOCOL_VIOLATION,
                kinds.DELIVERY_FAILED,
            )
        ]
        page.click("#clear")
        page.wait_for_timeout(1000)
        nodes = page.evaluate("document.getElementsByTagName('*').length")
        rate = (get_json(url + "api/events?limit=1")["latest_seq"] - first_seq) / (
            time.monotonic() - started
        )
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    assert rate >= 2000, f"the demo published only {rate:.0f} events/s"
    assert max(behind) < 1000, behind
    # A loaded machine can starve the browser for a moment: the typical change
    # (the median of five) keeps the promise, and none may be slow by far.
    assert statistics.median(delays) < 500, delays
    assert all(0 <= delay < 2000 for delay in delays), delays
    assert nodes < 5000, nodes
    assert problems == []


def test_load_older_goes_on_into_the_journal(context: BrowserContext, tmp_path: Any) -> None:
    from ringbus.journal import Journal

    path = tmp_path / "run.jsonl"
    bus = new_bus(max_events=20)
    journal = Journal(path)
    journal.attach(bus)
    publish(bus, 60)
    bus.drain()
    try:
        with serve(bus, journal=path) as viewer:
            page, problems = open_page(context, viewer.url + "?limit=10")
            expect(rows(page)).to_have_count(10)
            page.click("#older")
            expect(rows(page).first).to_have_attribute("data-seq", "50")
            page.click("#older")  # past the ring's oldest (41): from the journal
            expect(rows(page).first).to_have_attribute("data-seq", "40")
            assert shown_seqs(page) == list(range(40, 30, -1))
            expect(page.locator("#rows tr.from-journal")).to_have_count(10)
            expect(page.locator("#rows tr.from-journal span.source").first).to_have_text("journal")
            for top in (30, 20, 10):
                page.click("#older")
                expect(rows(page).first).to_have_attribute("data-seq", str(top))
            assert shown_seqs(page) == list(range(10, 0, -1))
            page.click("#older")
            expect(page.locator("#older-note")).to_contain_text("or the journal")
            assert problems == []
    finally:
        journal.close()

"""The viewer page end to end in headless Chromium, over a real server and bus, on both cores.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python
package (its bundled driver only; no browser download). A missing browser
fails these tests: it is never a reason to skip them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from _chromium import launch
from ringbus import kinds
from ringbus.viewer import ViewerServer, serve

POLITIES = ("north", "south", "east")
KINDS = (kinds.TICK, kinds.DELIVERY_COMPLETED, kinds.DELIVERY_FAILED, kinds.DEPOT_BUILT)
XSS_IMG = '<img src=x onerror="window.__pwned=1">'
XSS_SCRIPT = "<script>window.__pwned=2</script>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def bus(backend: Any) -> Any:
    bus = backend.bus(max_events=1000)
    publish(bus, 30)
    return bus


@pytest.fixture
def server(bus: Any) -> Iterator[ViewerServer]:
    with serve(bus, kpis=lambda: {"deliveries_completed": 7, "polities": ["north"]}) as viewer:
        yield viewer


@pytest.fixture
def page(browser: Browser, server: ViewerServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" and "400" not in message.text
            else None
        ),
    )
    try:
        response = page.goto(server.url)
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        yield page
        assert problems == []
    finally:
        context.close()


def publish(bus: Any, count: int, start: int | None = None) -> None:
    first = bus.latest_seq() if start is None else start
    for i in range(first, first + count):
        bus.publish(
            KINDS[i % len(KINDS)],
            tick=i,
            day=i // 10,
            polity_id=POLITIES[i % 3],
            ward_id=f"w{i % 2}",
            actor_id=f"actor-{i % 5}",
            subject_id=f"depot-{i % 7}",
            payload={"index": i, "note": f"event number {i}"},
        )


def rows(page: Page) -> Any:
    return page.locator("#rows tr[data-seq]")


def shown_seqs(page: Page) -> list[int]:
    return [
        int(seq)
        for seq in page.eval_on_selector_all(
            "#rows tr[data-seq]", "rows => rows.map(r => r.dataset.seq)"
        )
    ]


def column(page: Page, index: int) -> list[str]:
    cells = page.eval_on_selector_all(
        "#rows tr[data-seq]", f"rows => rows.map(r => r.cells[{index}].textContent)"
    )
    return [str(cell) for cell in cells]


def test_page_shows_latest_events_counts_and_kpis(page: Page) -> None:
    expect(rows(page)).to_have_count(30)
    assert shown_seqs(page) == list(range(30, 0, -1))  # newest on top
    first = rows(page).first
    expect(first.locator("td")).to_have_text(
        ["30", "29", "2", kinds.DELIVERY_COMPLETED, "east", "w1", "actor-4", "depot-1", "show (2)"]
    )
    headers = page.locator("#events thead th")
    expect(headers).to_have_text(
        ["seq", "tick", "day", "kind", "polity", "ward", "actor", "subject_id", "payload"]
    )
    expect(page.locator("#status")).to_have_text("live")
    counts = page.locator("#count-rows tr")
    expect(counts).to_have_count(5)
    expect(counts.nth(0)).to_have_text(re.compile(r"DELIVERY_COMPLETED\s*8"))
    expect(counts.nth(4)).to_have_text(re.compile(r"retained\s*30"))
    expect(page.locator("#kpis")).to_contain_text('"deliveries_completed": 7')
    expect(page.locator("#latest")).to_have_text("30")
    expect(page.locator("#gaps")).to_be_hidden()


def test_new_events_appear_live(page: Page, bus: Any) -> None:
    expect(rows(page)).to_have_count(30)
    expect(page.locator("#status")).to_have_text("live")
    publish(bus, 3)
    expect(rows(page).first).to_have_attribute("data-seq", "33")
    assert shown_seqs(page)[:4] == [33, 32, 31, 30]
    publish(bus, 2)
    expect(rows(page).first).to_have_attribute("data-seq", "35")
    expect(page.locator("#latest")).to_have_text("35")


def test_kind_filter_narrows_the_table(page: Page, bus: Any) -> None:
    expect(rows(page)).to_have_count(30)
    page.fill("#f-kinds", f"{kinds.TICK}, DEPOT_*")
    page.click("#apply")
    expect(rows(page)).to_have_count(15)
    assert set(column(page, 3)) == {kinds.TICK, kinds.DEPOT_BUILT}
    publish(bus, 4)  # one of each kind: only TICK and DEPOT_BUILT come in live
    expect(rows(page).first).to_have_attribute("data-seq", "33")
    expect(rows(page)).to_have_count(17)
    assert set(column(page, 3)) == {kinds.TICK, kinds.DEPOT_BUILT}
    # clicking a count toggles that kind in the filter
    page.click("#clear")
    expect(rows(page)).to_have_count(34)
    page.click("#count-rows tr[data-kind='TICK']")
    expect(page.locator("#f-kinds")).to_have_value(kinds.TICK)
    expect(rows(page)).to_have_count(9)
    assert set(column(page, 3)) == {kinds.TICK}
    expect(page.locator("#count-rows tr.active")).to_have_count(1)
    page.click("#count-rows tr[data-kind='DEPOT_BUILT']")
    expect(page.locator("#f-kinds")).to_have_value(f"{kinds.TICK}, {kinds.DEPOT_BUILT}")
    expect(rows(page)).to_have_count(17)
    page.click("#count-rows tr[data-kind='TICK']")
    expect(page.locator("#f-kinds")).to_have_value(kinds.DEPOT_BUILT)
    expect(rows(page)).to_have_count(8)
    assert set(column(page, 3)) == {kinds.DEPOT_BUILT}


def test_field_and_payload_filters(page: Page) -> None:
    expect(rows(page)).to_have_count(30)
    page.fill("#f-polity", "south")
    page.fill("#f-ward", "w0")
    page.click("#apply")
    expect(rows(page)).to_have_count(5)
    assert set(column(page, 4)) == {"south"} and set(column(page, 5)) == {"w0"}
    page.click("#clear")
    page.fill("#f-key", "index")
    page.fill("#f-value", "12")
    page.click("#apply")
    expect(rows(page)).to_have_count(1)
    assert shown_seqs(page) == [13]


def test_bad_filter_shows_the_servers_message(page: Page) -> None:
    expect(rows(page)).to_have_count(30)
    page.fill("#f-kinds", "TICK,,DAY")
    page.click("#apply")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("parameter 'kinds' holds an empty kind")
    page.click("#clear")
    expect(page.locator("#error")).to_be_hidden()


def test_payload_view_opens_and_closes(page: Page) -> None:
    expect(rows(page)).to_have_count(30)
    row = page.locator("#rows tr[data-seq='5']")
    button = row.locator("button.payload-toggle")
    button.click()
    detail = page.locator("#rows tr.detail")
    expect(detail).to_have_count(1)
    expect(detail.locator("dt")).to_have_text(["index", "note"])
    expect(detail.locator("dd")).to_have_text(["4", "event number 4"])
    expect(button).to_have_attribute("aria-expanded", "true")
    button.click()
    expect(detail).to_have_count(0)


def test_markup_in_events_renders_as_text(page: Page, bus: Any) -> None:
    expect(rows(page)).to_have_count(30)
    bus.publish(
        "<b>BOLD</b>",
        tick=30,
        polity_id=XSS_IMG,
        subject_id="<i>x</i>",
        payload={"html": XSS_IMG, "script": XSS_SCRIPT, XSS_IMG: "key too"},
        tags=(XSS_SCRIPT,),
    )
    row = page.locator("#rows tr[data-seq='31']")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(3)).to_have_text("<b>BOLD</b>")
    expect(row.locator("td").nth(4)).to_have_text(XSS_IMG)
    row.locator("button.payload-toggle").click()
    detail = page.locator("#rows tr.detail")
    expect(detail.locator("dd")).to_have_text([XSS_IMG, XSS_SCRIPT, "key too", XSS_SCRIPT])
    expect(detail.locator("dt").nth(2)).to_have_text(XSS_IMG)
    # the same after a full reload (first load path, not the stream)
    page.reload()
    expect(page.locator("#rows tr[data-seq='31'] td").nth(3)).to_have_text("<b>BOLD</b>")
    page.locator("#rows tr[data-seq='31'] button.payload-toggle").click()
    expect(page.locator("#rows tr.detail dd").first).to_have_text(XSS_IMG)
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#rows img, #rows script, #rows b, #rows i").count() == 0
    assert page.get_by_text(XSS_SCRIPT).first.is_visible()


def test_gap_is_shown(browser: Browser, backend: Any) -> None:
    bus = backend.bus(max_events=20)
    publish(bus, 10)
    with serve(bus) as viewer:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.goto(viewer.url)
            expect(rows(page)).to_have_count(10)
            expect(page.locator("#status")).to_have_text("live")
            # The ring wraps past the page in one burst that no poll can split:
            # the server's thread gets no turn until it is over, however slow
            # a loaded machine makes the publishing.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(30.0)
            try:
                publish(bus, 200)
            finally:
                sys.setswitchinterval(interval)
            expect(page.locator("#gaps")).to_be_visible()
            expect(page.locator("#gaps")).to_contain_text("overwritten in the ring")
            gap = page.locator("#rows tr.gap")
            expect(gap).to_have_count(1)
            text = gap.text_content() or ""
            match = re.search(r"seq (\d+)\u2013(\d+) \((\d+) events\)", text)
            assert match, text
            first, last, missing = map(int, match.groups())
            assert first >= 11 and last == 190 and missing == last - first + 1
            expect(rows(page).first).to_have_attribute("data-seq", "210")
        finally:
            context.close()


def test_pause_stops_following_and_resume_catches_up(page: Page, bus: Any) -> None:
    expect(rows(page)).to_have_count(30)
    expect(page.locator("#status")).to_have_text("live")
    page.click("#follow")
    expect(page.locator("#status")).to_have_text("paused")
    publish(bus, 2)
    page.wait_for_timeout(400)
    assert shown_seqs(page)[0] == 30
    page.click("#follow")
    expect(rows(page).first).to_have_attribute("data-seq", "32")
    expect(page.locator("#status")).to_have_text("live")


def test_a_burst_larger_than_the_table_is_skipped_visibly(page: Page, bus: Any) -> None:
    expect(rows(page)).to_have_count(30)
    page.fill("#f-limit", "5")
    page.click("#apply")
    expect(rows(page)).to_have_count(5)
    expect(page.locator("#status")).to_have_text("live")
    publish(bus, 50)
    expect(rows(page).first).to_have_attribute("data-seq", "80")
    expect(rows(page)).to_have_count(5)
    assert shown_seqs(page) == [80, 79, 78, 77, 76]
    expect(page.locator("#gaps")).to_contain_text("skipped to keep up")
    expect(page.locator("#gaps")).to_contain_text("seq 31\u201375")

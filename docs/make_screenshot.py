"""Take docs/viewer.png: the event viewer over a running demo world.

Run from the repository root (needs ``playwright`` and Debian's ``chromium``)::

    python docs/make_screenshot.py [--out docs/viewer.png]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from ringbus import EventBus, EventBusConfig
from ringbus.demo import DemoWorld
from ringbus.sim.health import HealthReporter
from ringbus.sim.kpi import KpiSubscriber
from ringbus.viewer import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _chromium import launch  # how the browser tests start Chromium


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("viewer.png"))
    args = parser.parse_args()

    bus = EventBus(EventBusConfig(name="demo"))
    kpi = KpiSubscriber()
    kpi.attach(bus)
    HealthReporter(every_ticks=12, timer=None).attach(bus)
    world = DemoWorld(bus, seed=3, events_per_tick=4, ticks_per_day=12)
    world.run(days=12)  # some history for the KPI charts
    stop = threading.Event()

    def loop() -> None:  # the sim keeps running while the page is open
        bus.transfer_to_current_thread()  # this thread publishes from now on
        while not stop.is_set():
            world.step()
            stop.wait(0.05)

    with serve(bus, kpis=lambda: kpi.summary(last_days=30)) as viewer:
        sim = threading.Thread(target=loop, daemon=True)
        sim.start()
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(viewer.url)
                    page.fill("#f-limit", "40")
                    page.click("#apply")
                    expect(page.locator("#status")).to_have_text("live")
                    expect(page.locator("#chart-deliveries")).to_be_visible()
                    time.sleep(1.5)  # a few live batches arrive
                    stop.set()
                    sim.join()
                    time.sleep(0.5)
                    rows = page.locator("#rows tr[data-seq]")
                    target = rows.nth(3)
                    for index in range(12):  # prefer an incident near the top
                        if "INCIDENT_RECORDED" in (rows.nth(index).text_content() or ""):
                            target = rows.nth(index)
                            break
                    target.locator("button.payload-toggle").click()
                    expect(page.locator("#rows tr.detail")).to_have_count(1)
                    page.evaluate("window.scrollTo(0, 0)")
                    page.screenshot(path=str(args.out))
                finally:
                    browser.close()
        finally:
            stop.set()
            sim.join()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

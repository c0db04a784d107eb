"""End to end in a real headless Chromium: start the app, train on digits from the Train page, then visit every
explorer page. Screenshots land in test-artifacts/ for a person to look at."""
from __future__ import annotations

from urllib.parse import urlparse

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HANG_GUARD_S, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
# a hang guard for each wait in the page, far above the seconds it takes on an idle machine
WAIT_MS = 600_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium: install Debian's chromium package (.ci/run does)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    port = free_port()
    env = {**os.environ, "DCE_RUNS_DIR": str(tmp_path / "runs")}
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(10)
    log.close()


def no_exception(page, name: str) -> None:
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0, f"exception box on {name}"


def test_train_a_digits_run_then_explore_it_in_chromium(app_url):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # the app must work offline: nothing (icon fonts, usage stats) may come from another host
        foreign = []
        own_host = urlparse(app_url).hostname
        page.on("request", lambda request: urlparse(request.url).hostname in (own_host, None)
                or foreign.append(request.url))
        page.goto(app_url)
        page.get_by_role("heading", name="Train").wait_for(timeout=WAIT_MS)
        page.locator("[data-testid='stSelectbox']").filter(has_text="Method").click()
        page.get_by_role("option", name="kmeans", exact=True).click()
        page.get_by_role("button", name="Start").click()
        page.get_by_text("status finished").wait_for(timeout=WAIT_MS)
        page.get_by_text("ACC", exact=True).wait_for(timeout=WAIT_MS)
        no_exception(page, "1-train-finished")

        for title in ("Map", "Neighbours", "Clusters", "Compare", "Export"):
            page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).click()
            page.get_by_role("heading", name=title).wait_for(timeout=WAIT_MS)
            if title == "Map":
                page.locator(".js-plotly-plot").first.wait_for(timeout=WAIT_MS)
            no_exception(page, f"2-{title.lower()}")
            if title == "Neighbours":
                step_through_neighbours(page)
        page.get_by_role("button", name="Export").click()
        page.get_by_text("Written to").wait_for(timeout=WAIT_MS)
        no_exception(page, "3-exported")
        browser.close()
    assert foreign == [], f"requests to other hosts than the app's: {foreign}"


def settle(page) -> None:
    """Wait until the app has no script run in progress (its status widget hides)."""
    status = page.locator("[data-testid='stStatusWidget']")
    deadline = time.monotonic() + HANG_GUARD_S
    page.wait_for_timeout(500)
    while status.count() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)


def step_through_neighbours(page) -> None:
    """Six quick clicks on "+" move exactly six images on, and the position input never shows twice."""
    position = page.locator("[data-testid='stNumberInput']").filter(has_text="Position in this order")
    step_up = position.locator("[data-testid='stNumberInputStepUp']")
    counts = []
    for _ in range(6):
        step_up.click()
        counts.append(position.count())
        page.wait_for_timeout(150)
        counts.append(position.count())
    settle(page)
    assert position.locator("input").input_value() == "6"
    assert page.locator("h3").filter(has_text="Image #").first.inner_text().startswith("Image #6 ")
    assert set(counts) == {1}, f"position inputs shown while stepping: {counts}"

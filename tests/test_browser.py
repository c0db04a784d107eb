"""End to end in a real headless Chromium: open the app's Home page at 1440 and 1024 px, train on digits from the
Train page, then visit every explorer page; a tag set on the Neighbours page filters the Clusters page and the
export. Screenshots land in test-artifacts/ for a person to look at."""
from __future__ import annotations

from urllib.parse import urlparse

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG_GUARD_S, REPO
from engine.bench_pages import MAP_CANVAS, map_point_xy

# where the Map's box tool is drawn, from the chart's top right corner (ECharts draws its toolbox on the canvas)
BOX_TOOL_FROM_RIGHT_PX, BOX_TOOL_FROM_TOP_PX = 93, 28

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
# every wait in the page (Playwright counts in milliseconds) is the suite's hang guard, set as each page's default
WAIT_MS = HANG_GUARD_S * 1000
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
    server.wait(HANG_GUARD_S)
    log.close()


# the metrics' labels and values that do not fit their column: Streamlit cuts them to "low confid…", "1 mi…"
CUT_METRICS = """() => [...document.querySelectorAll("[data-testid='stMetricLabel'], [data-testid='stMetricValue']")]
    .flatMap(metric => [metric, ...metric.querySelectorAll('*')])
    .filter(element => element.scrollWidth > element.clientWidth + 1).map(element => element.textContent)"""


# how many pixels the first table runs past its frame (glide-data-grid's scroller); the first gallery's image width
# and how far the gallery runs past its column
TABLE_OVERFLOW = """() => {
    const scroller = document.querySelector("[data-testid='stDataFrame'] .dvn-scroller");
    return scroller.scrollWidth - scroller.clientWidth;
}"""
GALLERY_FIT = """() => {
    const gallery = document.querySelector(".dce-gallery");
    return [gallery.querySelector("img").offsetWidth, gallery.scrollWidth - gallery.clientWidth];
}"""


def check_page(page, name: str) -> None:
    """Screenshot the page as ``name``; it shows no exception box and no metric cut short."""
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0, f"exception box on {name}"
    assert page.evaluate(CUT_METRICS) == [], f"metrics cut short on {name}"


WIDE, NARROW = {"width": 1440, "height": 900}, {"width": 1024, "height": 768}


def test_home_then_train_a_digits_run_then_explore_it_in_chromium(app_url, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport=WIDE)
        page.set_default_timeout(WAIT_MS)  # Playwright's own default (30 s) would bound every click and fill
        # the app must work offline: nothing (icon fonts, usage stats) may come from another host
        foreign = []
        own_host = urlparse(app_url).hostname
        page.on("request", lambda request: urlparse(request.url).hostname in (own_host, None)
                or foreign.append(request.url))
        page.goto(app_url)
        page.get_by_role("heading", name="Deep Clustering Explorer").wait_for(timeout=WAIT_MS)
        page.get_by_role("button", name="Try it: K-means on digits").wait_for(timeout=WAIT_MS)
        check_page(page, "0-home-1440")
        page.set_viewport_size(NARROW)
        check_page(page, "0-home-1024")
        assert above_the_fold(page.get_by_role("button", name="Try it: K-means on digits"))

        page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Train").click()
        page.get_by_role("heading", name="Train").wait_for(timeout=WAIT_MS)
        choose(page, "Method", "kmeans")
        page.get_by_role("button", name="Start").click()
        page.get_by_text("status finished").wait_for(timeout=WAIT_MS)
        page.get_by_text("ACC", exact=True).wait_for(timeout=WAIT_MS)
        check_page(page, "1-train-finished-1024")
        assert above_the_fold(page.get_by_text("status finished")), "the live view is below the fold at 1024 px"
        assert wholly_above_the_fold(page.get_by_text("ACC", exact=True)), "the run's scores are below the fold"
        choose(page, "Method", "scan")  # a method with more choices in the form (its pretext, pretrained features)
        page.get_by_text("Reuse pretext from run").wait_for(timeout=WAIT_MS)
        check_page(page, "1-train-scan-form-1024")
        assert wholly_above_the_fold(page.get_by_text("ACC", exact=True)), "scan's form pushes the live view down"

        for title in ("Map", "Neighbours", "Clusters", "Suspects", "Compare", "Export"):
            page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).click()
            page.get_by_role("heading", name=title, exact=True).wait_for(timeout=WAIT_MS)
            if title == "Map":
                page.locator(MAP_CANVAS).first.wait_for(timeout=WAIT_MS)
                (coords_file,) = (tmp_path / "runs").rglob("map_pacmap.npy")
                coords = np.load(coords_file)
                hover_shows_the_image(page, coords)
                a_drawn_box_lists_the_images_inside(page, coords)
                page.set_viewport_size(WIDE)
                check_page(page, "2-map-1440")
                page.set_viewport_size(NARROW)
            check_page(page, f"2-{title.lower()}-1024")
            if title == "Compare":
                assert page.evaluate(TABLE_OVERFLOW) <= 0, "the runs table scrolls sideways at 1024 px"
            if title == "Neighbours":
                # the gallery flows with the column: its 96-px images are not shrunk, and no row runs past it
                assert page.evaluate(GALLERY_FIT) == [96, 0], "the neighbour gallery is shrunk or runs past its column"
                random_image = page.get_by_role("button", name="Random image")
                assert random_image.evaluate("b => b.scrollWidth <= b.clientWidth"), "the button's label is cut"
                step_through_neighbours(page)
                tagged = tag_the_shown_image(page, "mislabelled")
            if title == "Clusters":
                see_the_tag_through_the_shared_filter(page, "mislabelled", tagged)
                check_page(page, "2-clusters-filtered-by-tag-1024")
        page.get_by_text("Only the 1 of 1797 images the filter keeps").wait_for(timeout=WAIT_MS)  # it still holds
        page.get_by_role("button", name="Export").click()
        page.get_by_text("download them below").wait_for(timeout=WAIT_MS)
        check_page(page, "3-exported-1024")

        page.set_viewport_size(WIDE)
        page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Home").click()
        page.get_by_role("heading", name="Runs so far").wait_for(timeout=WAIT_MS)
        check_page(page, "4-home-with-a-run-1440")
        browser.close()
    assert foreign == [], f"requests to other hosts than the app's: {foreign}"


def above_the_fold(locator) -> bool:
    """Whether the element's top lies inside the first screenful of the page."""
    locator.wait_for(timeout=WAIT_MS)
    top = locator.evaluate("e => e.getBoundingClientRect().top + window.scrollY")
    return top < locator.page.viewport_size["height"]


def wholly_above_the_fold(locator) -> bool:
    """Whether the whole element lies inside the first screenful of the page."""
    locator.wait_for(timeout=WAIT_MS)
    bottom = locator.evaluate("e => e.getBoundingClientRect().bottom + window.scrollY")
    return bottom <= locator.page.viewport_size["height"]


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
    position = page.locator("[data-testid='stNumberInput']").filter(has_text="Position (")
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


def tag_the_shown_image(page, tag: str) -> str:
    """Press the tag's button under the Neighbours query; the panel then lists the tag. Returns the image's name."""
    shown = page.locator("h3").filter(has_text="Image #").first.inner_text().split(" · ")[0].removeprefix("Image ")
    page.get_by_role("button", name=tag, exact=True).click()
    page.get_by_text(f"Tag image {shown} · tagged: {tag}").wait_for(timeout=WAIT_MS)
    return shown


def see_the_tag_through_the_shared_filter(page, tag: str, image: str) -> None:
    """On another page, the sidebar's tag filter offers the tag, and choosing it leaves only the tagged image."""
    # a click only focuses the box when it is first shown; the arrow key opens its options (or moves within them)
    page.locator("[data-testid='stSidebar'] [data-testid='stMultiSelect']").filter(has_text="Tags").locator(
        "input").click()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=tag, exact=True).click()
    page.keyboard.press("Escape")
    settle(page)
    page.get_by_text(f"Tagged here: {image} ({tag})").wait_for(timeout=WAIT_MS)
    assert page.get_by_text("images 1–1 of 1 passing the filter").count() == 1


def isolated_point(coords: np.ndarray) -> int:
    """The point farthest from any other: the pointer on it hovers that point, a small box holds it alone."""
    from scipy.spatial import cKDTree

    return int(np.argmax(cKDTree(coords).query(coords, k=2)[0][:, 1]))


def hover_shows_the_image(page, coords: np.ndarray) -> None:
    """Resting the pointer on a map point shows that image (an inline PNG, nothing fetched) above the pointer."""
    page.locator(MAP_CANVAS).first.scroll_into_view_if_needed()
    settle(page)
    index = isolated_point(coords)
    x, y = map_point_xy(page, coords, index)
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    preview = page.locator("[data-testid='map-hover-preview'] img")
    preview.wait_for(state="visible", timeout=WAIT_MS)
    assert preview.get_attribute("src").startswith("data:image/png;base64,")
    assert preview.evaluate("image => image.complete && image.naturalWidth > 0")
    page.locator("[data-testid='map-hover-preview']").get_by_text(f"#{index} · cluster ").wait_for(timeout=WAIT_MS)
    # above the pointer, or beside it near the map's top edge: never over the controls above the map
    box, canvas = (page.locator(where).first.bounding_box() for where in ("[data-testid='map-hover-preview']",
                                                                          MAP_CANVAS))
    assert box["y"] >= canvas["y"] - 1, "the hover preview covers the controls above the map"
    page.screenshot(path=str(ARTIFACTS / "2-map-hover-1024.png"))
    page.mouse.move(5, 5)


def a_drawn_box_lists_the_images_inside(page, coords: np.ndarray) -> None:
    """The box tool (the first of the brush tools above the plot's right corner, drawn on the canvas: found by its
    place) and a box drawn around one point list that image under the map."""
    index = isolated_point(coords)
    canvas = page.locator(MAP_CANVAS).first.bounding_box()
    page.mouse.click(canvas["x"] + canvas["width"] - BOX_TOOL_FROM_RIGHT_PX, canvas["y"] + BOX_TOOL_FROM_TOP_PX)
    x, y = map_point_xy(page, coords, index)
    page.mouse.move(x - 4, y - 4)
    page.mouse.down()
    page.mouse.move(x + 4, y + 4, steps=4)
    page.mouse.up()
    page.get_by_role("heading", name="1 selected").wait_for(timeout=WAIT_MS)
    settle(page)
    assert page.locator("[data-testid='stImageCaption']").first.text_content().startswith(f"#{index} · cluster ")
    page.mouse.dblclick(x, y)  # clears the selection


def test_a_pretrained_kmeans_run_from_a_weights_file_finishes_from_the_train_page_in_chromium(
        app_url, resnet18_weights, two_kinds_folder, tmp_path):
    """Issue 16: a folder clustered on frozen ResNet-18 features read from a weights file the user names (here one
    with random weights, which cost what published ones do), all chosen with the Train page's widgets."""
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport=NARROW)
        # the fresh server's first visit is a bookmark's deep link: it shows the page inside the app (its own
        # navigation), not the page alone with every file of pages/ listed as Streamlit's old multipage mode would
        page.goto(f"{app_url}/train")
        page.get_by_role("heading", name="Train").wait_for(timeout=WAIT_MS)
        links = page.locator("[data-testid='stSidebarNav'] a")
        links.filter(has_text="Neighbours").wait_for(timeout=WAIT_MS)
        assert [text.split()[-1] for text in links.all_inner_texts()] == [
            "Home", "Train", "Map", "Neighbours", "Clusters", "Suspects", "Compare", "Export"]
        choose(page, "Dataset", "folder:…")
        fill(page, "stTextInput", "Image folder or archive", str(two_kinds_folder))
        choose(page, "Method", "kmeans")
        fill(page, "stNumberInput", "Clusters K", "2")
        choose(page, "Frozen pretrained features", "resnet18-imagenet")
        fill(page, "stTextInput", "Backbone weights file", str(resnet18_weights))
        check_page(page, "5-train-pretrained-form-1024")
        page.get_by_role("button", name="Start").click()
        page.get_by_text("status finished").wait_for(timeout=WAIT_MS)
        page.get_by_text("ACC", exact=True).wait_for(timeout=WAIT_MS)
        page.set_viewport_size(WIDE)
        check_page(page, "5-train-pretrained-finished-1440")
        browser.close()
    from engine.runs import RunStore

    (run,) = RunStore(tmp_path / "runs").list()  # the app's store (see app_url)
    assert run.status == "finished"
    assert run.config["pretext_from"] == "pretrained:resnet18-imagenet"
    assert run.config["pretrained_weights"] == str(resnet18_weights)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label`` and wait for the rerun."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def fill(page, testid: str, label: str, value: str) -> None:
    """Type ``value`` into the input labelled ``label`` and commit it (Enter), then wait for the rerun."""
    box = page.locator(f"[data-testid='{testid}']").filter(has_text=label).locator("input")
    box.fill(value)
    box.press("Enter")
    settle(page)

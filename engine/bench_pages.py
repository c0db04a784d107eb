"""``python -m engine bench --pages``: how long each page of the app takes to become interactive in a fresh
browser session (headless Chromium driven by Playwright), once the run's 2-D map and neighbours are cached.

Two runs folders are served in turn by ``streamlit run app.py``: digits (1,797 images, a K-means run) and a run of
generated features over a larger dataset (CIFAR-10 from ``--data-root``: 60,000 images), whose assignments are the
labels with 30 % changed and whose features are 64-d class centres plus noise. Before any timing each run gets its
PaCMAP map, its neighbours and its purity computed, as a run the app has shown once has them.

A page counts as interactive when its own content is drawn (Home: the runs table; Train: the Start button; Map: the
scatter, which ECharts draws in one pass; Neighbours: the query's image sheet; Clusters: the first gallery), every
image on it has loaded and Streamlit reports no script running. After the server starts, each page is visited once
untimed as far as the targets go (``first_visit_s``: the server's per-process caches fill, the browser's are empty).
Then each page is timed ``repeats`` times two ways: in a new tab of a browser that has shown the app before
(``seconds``: a new Streamlit session, the browser's caches warm, as for a returning user; the targets apply to it)
and in a new browser context (``new_context_s``: Streamlit's and its charts' scripts fetched and compiled again).
Beside the wall times the rows give the CPU seconds the server and the browser used (figures other work on a shared
machine inflates far less) and each page's time as a ratio to Home's in the same serving. The Map rows add the hover
preview: the first hover (a round trip to the server) and the next hover of a point whose picture came with it, and
a zoom (a wheel step's redraw).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import UserError
from .npy import load_npy

REPO = Path(__file__).resolve().parent.parent
PAGES = ("home", "train", "map", "neighbours", "clusters")
TARGETS_S = {"small": 2.0, "large": 4.0}  # the targets: under 2 s at 1.8k points, under 4 s at 60k
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
HANG_GUARD_MS = 1_800_000  # a hang guard, far above any page time
VIEWPORT = {"width": 1440, "height": 900}
GENERATED_DIM = 64

# JavaScript predicates: the page's own content is drawn (given the number of points the map must hold)
_SETTLED = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    const images = [...document.querySelectorAll("img")];
    return app && app.getAttribute("data-test-script-state") === "notRunning"
        && images.every(image => image.complete && image.naturalWidth > 0);
}"""
_DRAWN = {
    "home": """() => [...document.querySelectorAll("h3")].some(h => h.textContent.includes("Runs so far"))
        && document.querySelector("[data-testid='stDataFrame'] canvas") !== null""",
    "train": """() => [...document.querySelectorAll("button")].some(b => b.textContent.trim() === "Start")""",
    # ECharts draws on a canvas (every point in one pass: the Map turns progressive drawing off): drawn once the
    # plot area holds coloured pixels (the blank chart is white and grey)
    "map": """() => {
        const canvas = document.querySelector("[class*='st-key-map-'] canvas");
        if (!canvas || !canvas.width) return false;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let coloured = 0;
        for (let i = 0; i < pixels.length; i += 4 * 7) {
            const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
            if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
        }
        return coloured > 50;
    }""",
    "neighbours": """() => [...document.querySelectorAll("h3")].some(h => h.textContent.startsWith("Image #"))
        && document.querySelector("[data-testid='stImage'] img") !== null""",
    "clusters": """() => [...document.querySelectorAll("strong")].some(s => s.textContent.startsWith("Cluster 0 "))
        && document.querySelector("[data-testid='stImage'] img") !== null""",
}


def _browser_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise UserError("bench --pages needs the playwright package (pip install playwright; not its browsers)") from exc
    chromium = os.environ.get("DCE_CHROMIUM") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise UserError(f"bench --pages needs Chromium at {chromium} (apt-get install chromium, or set DCE_CHROMIUM)")
    return sync_playwright, chromium


def prepare_run(store, run_id: str) -> None:
    """Compute what a page's first visit would: the PaCMAP map, the neighbours and their purity."""
    from .analysis.maps import compute_map
    from .analysis.results import load_results, run_neighbor_purity, view_neighbors

    results = load_results(store, run_id)
    compute_map(results, "pacmap")
    view_neighbors(results)
    run_neighbor_purity(store, run_id)


def digits_run(folder: Path) -> str:
    """A runs folder with one finished K-means run on digits, its caches computed."""
    from .runs import JobManager, RunRequest

    manager = JobManager(folder)
    try:
        run_id = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
        record = manager.wait(run_id, timeout=HANG_GUARD_MS / 1000)
    finally:
        manager.shutdown()
    if record.status != "finished":
        raise RuntimeError(f"the digits run {run_id} {record.status}: {record.error}")
    prepare_run(manager.store, run_id)
    return run_id


def generated_run(folder: Path, dataset: str, data_root: str | None = None, seed: int = 0,
                  noise: float = 0.3) -> str:
    """A finished run over ``dataset``'s images whose results are generated, not trained: each image's cluster is
    its label (a random one for a share ``noise`` of them), its features its cluster's 64-d centre plus unit noise,
    its probabilities a softmax of minus the distances to the centres. The map and neighbours are computed."""
    from .clustering.metrics import clustering_scores
    from .data import load_dataset
    from .runs import RunStore

    images = load_dataset(dataset, data_root=data_root)
    if images.labels is None:
        raise UserError(f"{dataset} has no labels to generate clusters from")
    labels = np.asarray(images.labels, dtype=np.int64)
    n_clusters = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    assign = np.where(rng.random(len(labels)) < noise, rng.integers(0, n_clusters, len(labels)), labels)
    centres = 3 * rng.normal(size=(n_clusters, GENERATED_DIM)).astype(np.float32)
    features = centres[assign] + rng.normal(size=(len(labels), GENERATED_DIM)).astype(np.float32)
    distances = ((features[:, None, :] - centres[None]) ** 2).sum(-1) / GENERATED_DIM
    logits = -(distances - distances.min(axis=1, keepdims=True))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    store = RunStore(folder)
    run_id = store.create_run("kmeans", dataset, {"n_clusters": n_clusters}, preset="generated",
                              options={"data_root": data_root} if data_root else {})
    for name, array in (("assign", assign), ("probs", probs.astype(np.float32)),
                        ("features", features.astype(np.float16)), ("labels", labels)):
        store.save_array(run_id, name, array)
    store.update(run_id, status="finished", summary={"n_images": len(labels), "n_skipped": 0, "generated": True,
                                                       **clustering_scores(labels, assign)})
    prepare_run(store, run_id)
    return run_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(runs_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``streamlit run app.py`` on a free local port over ``runs_dir``; yields its URL and process id."""
    port = _free_port()
    env = {**os.environ, "DCE_RUNS_DIR": str(runs_dir)}
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.address", "127.0.0.1", "--server.headless", "true",
                                   "--browser.gatherUsageStats", "false"],
                                  cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + HANG_GUARD_MS / 1000
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the app did not start; see {log}")
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}", server.pid
        finally:
            server.terminate()
            server.wait(30)


def _cpu_seconds(pids: set[int]) -> dict[int, float]:
    """User + system CPU seconds each of the processes ``pids`` that is still alive has used so far."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return seconds


def _cpu_used(before: dict[int, float], pids: set[int]) -> float:
    """CPU seconds ``pids`` used since ``before`` was read; a process that ended meanwhile (a closed session's
    renderer) is left out, one that started counts from zero."""
    return sum(now - before.get(pid, 0.0) for pid, now in _cpu_seconds(pids).items())


def _descendants(root: int, exclude: int) -> set[int]:
    """The processes below ``root`` (Playwright's driver and Chromium's), leaving out ``exclude`` and its own."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid != exclude} - found
        found |= frontier
    return found


def visit(open_page, url: str, page_name: str, n_points: int, server_pid: int | None = None
          ) -> tuple[dict[str, float], Any]:
    """Open ``page_name`` in a new page from ``open_page()`` (a new Streamlit session) and wait until it is
    interactive. Returns the wall seconds that took and the CPU seconds the server and the browser used meanwhile
    (figures the other work on a shared machine inflates far less), and the open page; the caller closes it."""
    page = open_page()
    server = {server_pid} if server_pid else set()
    server_before = _cpu_seconds(server)
    browser_before = _cpu_seconds(_descendants(os.getpid(), exclude=server_pid or -1))
    start = time.perf_counter()
    page.goto(f"{url}/{'' if page_name == 'home' else page_name}")
    page.wait_for_function(_DRAWN[page_name], arg=n_points, timeout=HANG_GUARD_MS, polling=50)
    page.wait_for_function(_SETTLED, timeout=HANG_GUARD_MS, polling=50)
    wall = time.perf_counter() - start
    return {"wall": wall, "server_cpu": _cpu_used(server_before, server),
            "browser_cpu": _cpu_used(browser_before, _descendants(os.getpid(), exclude=server_pid or -1))}, page


MAP_CANVAS = "[class*='st-key-map-'] canvas"


def map_point_xy(page, coords: np.ndarray, index: int) -> tuple[float, float]:
    """Where image ``index`` is drawn on the open Map page (the whole map shown, no image found), in viewport
    pixels: the chart's axes span :func:`map_extent` inside fixed margins."""
    from .analysis.map_view import map_extent, point_on_chart

    box = page.locator(MAP_CANVAS).first.bounding_box()
    x, y = point_on_chart(coords, index, map_extent(coords), box["width"], box["height"])
    return box["x"] + x, box["y"] + y


def hover_seconds(page, coords: np.ndarray, n_points: int) -> tuple[float, float]:
    """Seconds from resting the pointer on a point to its picture in the preview: the first hover (a round trip to
    the server) and then a point whose picture came with the first."""
    from .analysis.map_view import hover_batch

    # the whole scatter on screen, so that every point can be hovered
    page.set_viewport_size({"width": 1440, "height": 1400})
    page.locator(MAP_CANVAS).first.scroll_into_view_if_needed()
    page.wait_for_function(_SETTLED, timeout=HANG_GUARD_MS, polling=50)
    from scipy.spatial import cKDTree

    # points well apart from the others, so the pointer hovers that point and not one drawn on top of it: the
    # most isolated one, then the most isolated of the neighbours whose pictures came with it
    isolation = cKDTree(coords).query(coords, k=2)[0][:, 1]
    first = int(np.argmax(isolation))
    sent = hover_batch(coords, np.arange(n_points), first)[1:]
    second = int(sent[np.argmax(isolation[sent])])
    times = []
    for index in (first, second):
        x, y = map_point_xy(page, coords, index)
        page.mouse.move(5, 5)  # off the plot: the preview hides
        before = page.evaluate("""() => {
            const image = document.querySelector("[data-testid='map-hover-preview'] img");
            return image ? image.getAttribute("src") || "" : "";
        }""")
        start = time.perf_counter()
        page.mouse.move(x, y)
        page.wait_for_function("""before => {
            const image = document.querySelector("[data-testid='map-hover-preview'] img");
            return image && image.style.display !== "none" && image.complete && image.naturalWidth > 0
                && image.getAttribute("src") !== before;
        }""", arg=before, timeout=HANG_GUARD_MS, polling=10)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


_CANVAS_PRINT = """() => {
    const canvas = document.querySelector("[class*='st-key-map-'] canvas");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let print = 0;
    for (let i = 0; i < pixels.length; i += 4 * 13) print = (print * 31 + pixels[i] + 7 * pixels[i + 1]) % 1000000007;
    return print;
}"""
ZOOM_REST_MS = 1500  # Streamlit's ECharts lets the wheel zoom only once the pointer has rested on the chart


def zoom_seconds(page) -> float:
    """Seconds from a wheel step over the map's centre (the pointer rested there first) to a canvas that shows the
    zoomed view (polled every 10 ms); an error if the view does not change."""
    box = page.locator(MAP_CANVAS).first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(ZOOM_REST_MS)
    before = page.evaluate(_CANVAS_PRINT)
    start = time.perf_counter()
    page.mouse.wheel(0, -240)
    page.wait_for_function(f"before => ({_CANVAS_PRINT})() !== before", arg=before, timeout=60_000, polling=10)
    return time.perf_counter() - start


def serve_and_time(runs_dir: Path, label: str, n_points: int, target_s: float, repeats: int = 3,
                   pages: tuple[str, ...] = PAGES) -> list[dict[str, Any]]:
    """Serve ``runs_dir`` (holding one finished run of ``n_points`` images) and time each page; see the module.

    Each page is timed two ways per repeat: in a new browser context (nothing cached in the browser: Streamlit's
    and its charts' scripts are fetched and compiled again) and in a new tab of a context that has shown every page
    once (a new Streamlit session, the browser's caches warm, as for a returning user)."""
    from .runs import RunStore

    sync_playwright, chromium = _browser_api()
    store = RunStore(runs_dir)
    (record,) = store.list("finished")
    coords = load_npy(store.run_dir(record.id) / "map_pacmap.npy")
    first: dict[str, float] = {}
    cold: dict[str, list[dict[str, float]]] = {name: [] for name in pages}
    warm: dict[str, list[dict[str, float]]] = {name: [] for name in pages}
    hovers: list[tuple[float, float, float]] = []
    loads = []
    with serve(runs_dir, runs_dir / "streamlit.log") as (url, server_pid), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=LAUNCH_ARGS)
        returning = browser.new_context(viewport=VIEWPORT)
        for page_name in pages:
            times, page = visit(returning.new_page, url, page_name, n_points, server_pid)
            first[page_name] = times["wall"]
            page.close()
        for _ in range(repeats):
            for page_name in pages:
                loads.append(os.getloadavg()[0])
                times, page = visit(lambda: browser.new_page(viewport=VIEWPORT), url, page_name, n_points,
                                    server_pid)
                cold[page_name].append(times)
                page.close()
                times, page = visit(returning.new_page, url, page_name, n_points, server_pid)
                warm[page_name].append(times)
                if page_name == "map":
                    hovers.append((*hover_seconds(page, coords, n_points), zoom_seconds(page)))
                page.close()
        browser.close()

    def median(visits: dict[str, list[dict[str, float]]], page_name: str, what: str) -> float:
        return statistics.median(times[what] for times in visits[page_name])

    home = median(warm, "home", "wall") if "home" in pages else None
    common = {"dataset": label, "n_points": n_points, "repeats": repeats,
              "load_avg_1m": round(statistics.median(loads), 1)}
    rows = []
    for page_name in pages:
        seconds = median(warm, page_name, "wall")
        rows.append({"piece": f"page {page_name}", **common, "first_visit_s": first[page_name],
                     "new_context_s": median(cold, page_name, "wall"), "seconds": seconds,
                     "server_cpu_s": median(warm, page_name, "server_cpu"),
                     "browser_cpu_s": median(warm, page_name, "browser_cpu"),
                     "new_context_browser_cpu_s": median(cold, page_name, "browser_cpu"), "target_s": target_s,
                     "meets_target": seconds < target_s, "ratio_to_home": seconds / home if home else None})
    for at, what in enumerate(("hover preview, first hover (asks the server)",
                               "hover preview, next hover (a prefetched neighbour)", "zoom: a wheel step's redraw")):
        if hovers:
            rows.append({"piece": f"map {what}", **common,
                         "seconds": statistics.median(pair[at] for pair in hovers)})
    return rows


def page_rows(data_root: str | None, large_dataset: str = "cifar10", repeats: int = 3,
              workdir: Path | None = None) -> list[dict[str, Any]]:
    """Every row of ``bench --pages``: digits, then ``large_dataset`` with generated features (skipped with a note
    when its files are not found). A ``workdir`` that already holds the runs (from an earlier bench) is served as it
    is, without computing them again."""
    from .runs import RunStore

    workdir = Path(workdir or tempfile.mkdtemp(prefix="dce-page-times-"))
    small, large = workdir / "digits", workdir / large_dataset
    if not (small.exists() and RunStore(small).list("finished")):
        digits_run(small)
    rows = serve_and_time(small, "digits", 1797, TARGETS_S["small"], repeats)
    try:
        if not (large.exists() and RunStore(large).list("finished")):
            generated_run(large, large_dataset, data_root)
    except UserError as exc:
        print(f"bench --pages: skipping {large_dataset}: {exc}", file=sys.stderr)
    else:
        (record,) = RunStore(large).list("finished")
        n_points = len(RunStore(large).load_array(record.id, "assign"))
        rows += serve_and_time(large, f"{large_dataset} (generated features)", n_points, TARGETS_S["large"], repeats)
    return rows

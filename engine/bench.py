"""``python -m engine bench``: speed and quality figures written as ``results.json`` and ``RESULTS.md``.

Modes:
* default — train each chosen method's preset on a dataset end to end (data loading included) and record
  epochs, wall time, pretext throughput, peak GPU memory and ACC/NMI/ARI next to the paper's numbers. A run
  that would outlast ``--budget-minutes`` is stopped there and recorded as incomplete, never extrapolated.
* ``--micro`` — time the pieces of a training step: the SimCLR augmentation alone and a full SimCLR step
  (augment, forward, backward, optimiser) at a given batch, with warm-up and the median of many repeats (CUDA
  events on a GPU), in float32 and with the GPU speed-ups (bf16 autocast, channels-last, fused optimiser, and
  torch.compile with ``--compile``); figures are also given as ratios to the float32 step of the same run. With
  ``--methods`` it also times one step of every stage of each method (:func:`method_step_times`).
* ``--map N`` — compute a PaCMAP map of N×512 features once, then time reading it back from the cache and
  building the Map page's WebGL figure from it (what a page re-render costs).
* ``--kmeans N`` — K-means (k-means++, ``n_init`` restarts) on the pixels of the first N images of a dataset:
  ours and scikit-learn's reference implementation on the same data in the same run, wall and CPU seconds,
  ACC, and our time as a ratio to scikit-learn's.
* ``--knn N`` — k-NN mining (k=20) of N synthetic clustered features: the exact search and the approximate one
  used above ``APPROXIMATE_MIN_SAMPLES``, their times, and the approximate search's recall@20 against the exact.
* ``--decode N`` — decode a folder of N synthetic 512×512 JPEGs at ``--image-size`` (64) into the memory-mapped
  cache in a fresh process, and record its peak resident memory beyond what it held before, as a ratio to the
  decoded array (the bound is 1.5), with the time of that load and of the cached one after it.
* ``--smoke`` — one short compiled epoch of every stage of every method on 192 digits (:func:`smoke`): finite
  losses, graphs compiled per trained stage, seconds per step and host syncs inside steps (counted on the GPU,
  or on the CPU against the ``meta`` stand-in of ``engine.methods.host_sync``), in ``--out/smoke-DEVICE/``; the
  command fails when a check does. It imports no UI or index package and runs on a CI CPU in minutes.
* ``--collect`` — gather the rows of every ``--out/*/results.json`` (one folder per benchmark run) into
  ``--out/results.json`` and ``--out/RESULTS.md``, each row tagged with the folder it came from.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import threading
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data.imageset import ImageSet
from .errors import UserError
from .methods.context import device_name
from .methods.speedups import CompileFallbackWarning, Speedups

PAPER_CIFAR10 = {  # DESIGN.md §3: reported CIFAR-10 ACC/NMI/ARI (%), for the table beside ours
    "scan": (88.3, 79.7, 77.2), "dec": (30.1, 25.7, 16.1), "jule": (27.2, 19.2, 13.8),
    "pica": (69.6, 59.1, 51.2), "cc": (79.0, 70.5, 63.7), "spice": (92.6, 86.5, 85.2),
    "digpro": (94.3, 88.6, 88.4),  # DigPro reports no CIFAR-10: these are its base ProPos' figures
}


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def micro(device: torch.device, batch_size: int = 512, image_size: int = 32, repeats: int = 20,
          warmup: int = 3, backbone: str = "resnet18", compile: bool = False,
          compile_backend: str = "inductor", compile_mode: str | None = None) -> list[dict[str, Any]]:
    """Median time of the SimCLR augmentation and of a whole SimCLR step on random CIFAR-sized uint8 images.

    The step is timed as training runs it on ``device`` (its :class:`Speedups`, with ``compile`` through
    ``compile_backend`` and ``compile_mode``, on a GPU or the CPU) and, where those differ from plain float32, in
    plain float32 too: ``ratio_to_float32_step`` compares the two; each row's ``speedups`` names what it ran with.
    A last row times the fast step with both views in one forward pass of twice the batch (what SCAN's own
    SimCLR code does; its batch norm then sees both views): fewer, larger kernels, which a GPU may run faster.
    """
    from .data.augment import build_augment
    from .methods.simclr import ContrastiveModel
    from .methods.training import make_optimizer
    from .nn import build_backbone, nt_xent_loss

    images = torch.randint(0, 256, (batch_size, image_size, image_size, 3), dtype=torch.uint8, device=device)
    augment = build_augment("simclr", image_size, 3)

    def step_with(speedups: Speedups, one_forward: bool = False) -> Callable[[], None]:
        torch.manual_seed(0)
        model = speedups.prepare(ContrastiveModel(build_backbone(backbone, image_size, 3), 128).to(device))
        forward = speedups.compiled(model)
        optimizer = make_optimizer("sgd", model.parameters(), 0.1, 1e-4, fused=speedups.fused_optimizer)

        def views() -> tuple[torch.Tensor, torch.Tensor]:
            if one_forward:
                return forward(torch.cat([augment(images), augment(images)])).chunk(2)
            return forward(augment(images)), forward(augment(images))

        def step() -> None:
            if speedups.compile:
                torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs (reduce-overhead): a new step begins
            with speedups.autocast(device):
                loss = nt_xent_loss(*views(), 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    fast = dataclasses.replace(Speedups.for_device(device, compile=compile), compile_backend=compile_backend,
                               compile_mode=compile_mode)
    variants = [("float32", Speedups(), False)]
    if fast != variants[0][1]:
        variants.append((_speedups_label(fast), fast, False))
    variants.append((_speedups_label(fast), fast, True))
    aug = statistics.median(_timed(lambda: augment(images), device, repeats, warmup))
    rows = [{"piece": "simclr augmentation (one view)", "seconds": aug, "views_per_s": batch_size / aug,
             "speedups": "float32"}]
    for label, speedups, one_forward in variants:
        full = statistics.median(_timed(step_with(speedups, one_forward), device, max(3, repeats // 4),
                                        warmup + (5 if speedups.compile else 0)))
        views = "two views, one forward" if one_forward else "two views"
        rows.append({"piece": f"simclr step {backbone} ({views})", "seconds": full,
                     "views_per_s": 2 * batch_size / full, "speedups": label})
    float32_step = rows[1]["seconds"]
    for row in rows:
        row.update(device=device_name(device), batch_size=batch_size, image_size=image_size,
                   ratio_to_augmentation=row["seconds"] / aug, ratio_to_float32_step=row["seconds"] / float32_step)
    return rows


def _speedups_label(speedups: Speedups) -> str:
    parts = [str(speedups.autocast_dtype).removeprefix("torch.")] if speedups.autocast_dtype else ["float32"]
    parts += [name for name in ("channels_last", "fused_optimizer", "tuned_kernels") if getattr(speedups, name)]
    if speedups.compile:
        mode = f",{speedups.compile_mode}" if speedups.compile_mode else ""
        parts.append(f"compile[{speedups.compile_backend}{mode}]")
    return "+".join(parts)


def method_step_times(method: str, images: ImageSet, device: torch.device, preset: str = "fast",
                      speedups: Speedups | None = None, warmup: int = 2,
                      observe: Callable[[Any], None] | None = None, **settings: Any) -> list[dict[str, Any]]:
    """One row per stage of ``method``: the median wall time of one training step, measured in a real fit.

    Every stage is cut to one epoch (warm-ups to none, SPICE-Semi to 30 steps, run on any reliable set) so each
    runs a few dozen steps of the ``preset``'s batch, model and augmentations on ``images``. The device is
    synchronised at every step event (a measurement-only host sync) and the first ``warmup`` steps of each stage
    are not counted. A stage without steps (neighbour mining, K-means) gets its wall time only. On a GPU each row
    also has the stage's peak allocated memory (``peak_gpu_gb``: the step's batch, plus the images where the method
    keeps them on the GPU). A fit that ends in collapse after one epoch is expected and noted in ``fit_outcome``.
    ``settings`` override the method's settings after the cuts; ``observe`` also receives every event of the fit.
    """
    from .errors import TrainingError
    from .methods import FitContext, get_method

    cls = get_method(method)
    preset_config = dataclasses.asdict(cls.from_preset(preset).config)
    shortened: dict[str, Any] = {}
    for name, value in preset_config.items():
        if name.endswith("epochs") and isinstance(value, int) and not isinstance(value, bool):
            shortened[name] = 0 if name.startswith("warmup") else min(value, 1)
    if "semi_steps" in preset_config:
        shortened["semi_steps"] = min(preset_config["semi_steps"], 30)
        # one epoch of SPICE-Self leaves few reliable images: SPICE-Semi's steps are timed on however many there are
        shortened["min_reliable_per_cluster"] = 0
    fit = cls.from_preset(preset, **{**shortened, **settings})
    config = dataclasses.asdict(fit.config)
    speedups = speedups or Speedups.for_device(device)
    steps: dict[str, list[tuple[int, float]]] = defaultdict(list)
    began: dict[str, float] = {}
    walls: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def on_event(event: Any) -> None:
        if observe is not None:
            observe(event)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        if event.kind == "stage":
            began[event.stage] = now
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        elif event.kind == "stage_done" and event.stage in began:
            walls[event.stage] = now - began[event.stage]
            if device.type == "cuda":
                peaks[event.stage] = torch.cuda.max_memory_allocated(device) / 2**30
        elif event.kind == "step" and (not steps[event.stage] or steps[event.stage][-1][0] != event.step):
            steps[event.stage].append((event.step, now))

    outcome = "finished"
    try:
        fit.fit(images, FitContext(device, on_event, speedups=speedups))
    except TrainingError as error:
        outcome = str(error)
    rows = []
    for stage in [s.name for s in cls.stages if s.name in began]:
        marks = steps[stage]
        times = [t2 - t1 for (s1, t1), (s2, t2) in zip(marks, marks[1:]) if s2 == s1 + 1][warmup:]
        batch_name = next((n for n in (f"{stage}_batch_size", "batch_size") if n in config), None)
        rows.append({"method": method, "stage": stage, "preset": preset, "dataset": images.source,
                     "device": device_name(device), "speedups": _speedups_label(speedups),
                     "batch_setting": f"{batch_name}={config[batch_name]}" if batch_name else None,
                     "seconds_per_step": statistics.median(times) if times else None, "steps_timed": len(times),
                     "stage_seconds": walls.get(stage), "peak_gpu_gb": peaks.get(stage), "fit_outcome": outcome})
    return rows


def map_rerender(n_points: int, dim: int = 512, seed: int = 0, workdir: Path | None = None) -> dict[str, Any]:
    """Compute (once) and re-read a PaCMAP map of n_points×dim clustered features; time the page's work."""
    import tempfile

    from .analysis.maps import compute_map
    from .analysis.results import RunResults
    from .runs import RunStore

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)).astype(np.float32)
    assign = rng.integers(0, 10, n_points)
    features = (centres[assign] + 0.5 * rng.normal(size=(n_points, dim))).astype(np.float16)
    probs = np.eye(10, dtype=np.float32)[assign]
    store = RunStore(workdir or tempfile.mkdtemp(prefix="dce-bench-"))
    run_id = store.create_run("kmeans", f"bench:{n_points}", {})
    store.update(run_id, status="finished")
    results = RunResults(store.get(run_id), store, assign, probs, features, None, None)
    t0 = time.perf_counter()
    compute_map(results, "pacmap")
    first = time.perf_counter() - t0

    def rerender() -> None:
        from .analysis.map_view import map_extent, scatter_spec

        coords = compute_map(results, "pacmap")
        spec = scatter_spec(coords, [(f"cluster {c}", np.flatnonzero(assign == c), None) for c in range(10)],
                            map_extent(coords))
        json.dumps(spec, allow_nan=False)  # what Streamlit serialises for the browser

    times = _timed(rerender, torch.device("cpu"), repeats=5, warmup=1)
    return {"piece": f"map page re-render from cache, {n_points} points", "seconds": statistics.median(times),
            "first_compute_seconds": first, "device": "cpu", "n_points": n_points}


def make_jpeg_folder(root: Path, n_images: int, side: int, seed: int = 0) -> Path:
    """``root`` filled with ``n_images`` distinct ``side``×``side`` colour JPEGs (gradients shifted and tinted
    per image, like smooth photos); files already there are kept, so a second benchmark reuses them."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:side, 0:side] * 200 // side
    base = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    offsets = np.random.default_rng(seed).integers(0, 256, (n_images, 3), dtype=np.uint8)

    def write(i: int) -> None:
        path = root / f"{i:06d}.jpg"
        if not path.exists():
            Image.fromarray(np.roll(base + offsets[i], i % side, axis=1)).save(path, quality=90)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(n_images)))
    return root


def _resident_bytes() -> int:
    """The resident memory of this process now (Linux); its peak so far elsewhere."""
    import resource

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    """Start the peak over from the present (Linux 4.0+): else it still holds the import's transient peak,
    which a small load never reaches, and the load's growth would be overstated."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass  # elsewhere the figure is only an upper bound


def _peak_resident_bytes() -> int:
    """The peak resident memory since :func:`_reset_peak`: Linux's VmHWM. ``getrusage`` is no substitute there:
    its maximum also keeps the RSS of the process this one was forked from before its exec (a pytest worker's
    hundreds of MB), which no reset clears."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux, bytes on macOS


def measure_folder_load(folder: str, image_size: int) -> dict[str, Any]:
    """In this (fresh) process: load ``folder`` at ``image_size`` twice (decoding, then from the cache) and
    return the times, the peak resident memory the first load added and the memory the cached load added
    (about none: it maps the file). Imports and a warm-up load of four images come first, so only what grows
    with the folder is counted."""
    import tempfile

    from PIL import Image

    from .data import load_folder

    with tempfile.TemporaryDirectory() as warm:  # large enough to take the same path as the folder's images
        for i in range(4):
            Image.new("RGB", (320, 320), (60 * i, 0, 0)).save(Path(warm) / f"{i}.jpg")
        load_folder(warm, image_size=image_size)
    _reset_peak()
    baseline = _resident_bytes()
    started = time.perf_counter()
    images = load_folder(folder, image_size=image_size)
    decoded_s = time.perf_counter() - started
    peak = _peak_resident_bytes()
    before_cached = _resident_bytes()
    started = time.perf_counter()
    again = load_folder(folder, image_size=image_size)
    cached_s = time.perf_counter() - started
    cached_growth = _resident_bytes() - before_cached
    decoded = images.images.numel()
    return {"images": len(images), "shape": list(images.image_shape), "decoded_mb": decoded / 1e6,
            "peak_rss_growth_mb": (peak - baseline) / 1e6, "ratio": (peak - baseline) / decoded,
            "first_load_s": decoded_s, "cached_load_s": cached_s, "cached_load_rss_growth_mb": cached_growth / 1e6,
            "cached_same": len(again) == len(images)}


def folder_load_memory(folder: Path, image_size: int, cache_dir: Path) -> dict[str, Any]:
    """:func:`measure_folder_load` in a fresh Python process whose decode cache is ``cache_dir``."""
    import os
    import subprocess
    import sys

    code = ("import json, sys; from engine.bench import measure_folder_load; "
            "print(json.dumps(measure_folder_load(sys.argv[1], int(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(image_size)], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "DCE_CACHE_DIR": str(cache_dir)})
    if done.returncode != 0:
        raise RuntimeError(f"the folder-load measurement failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_rows(n_images: int, image_size: int = 64, side: int = 512, workdir: Path | None = None
                ) -> list[dict[str, Any]]:
    """Peak memory and time of decoding ``n_images`` synthetic ``side`` px JPEGs at ``image_size`` into the
    memory-mapped cache (a fresh cache, a fresh process), and of the cached load after it."""
    import shutil
    import tempfile

    work = workdir or Path(tempfile.mkdtemp(prefix="dce-decode-"))
    folder = make_jpeg_folder(work / f"jpeg-{side}px-{n_images}", n_images, side)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    measured = folder_load_memory(folder, image_size, cache)
    return [{"piece": f"decode {n_images} JPEGs of {side} px at {image_size} px into the memory-mapped cache",
             "source_side": side, "image_size": image_size, **measured, "bound": 1.5}]


def kmeans_rows(images: ImageSet, n_images: int, n_init: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Time our K-means (:func:`fit_kmeans`) and scikit-learn's on the pixels of the first ``n_images`` images,
    both with k-means++ seeding, ``n_init`` restarts and Lloyd iterations on the CPU."""
    from sklearn.cluster import KMeans as SklearnKMeans

    from .clustering.metrics import cluster_accuracy
    from .clustering.kmeans import fit_kmeans

    pixels = images.images[:n_images].reshape(min(n_images, len(images)), -1).float() / 255
    labels = images.labels[:n_images] if images.labels is not None else None
    k = images.n_classes or 10

    def ours() -> np.ndarray:
        return fit_kmeans(pixels, k, n_init, seed)[1].numpy()

    def sklearn() -> np.ndarray:
        return SklearnKMeans(k, init="k-means++", n_init=n_init, algorithm="lloyd",
                             random_state=seed).fit_predict(pixels.numpy())

    rows = []
    for name, fit in (("engine fit_kmeans", ours), ("scikit-learn KMeans", sklearn)):
        wall, cpu = time.perf_counter(), time.process_time()
        assign = fit()
        rows.append({"piece": f"kmeans {name}", "n_images": len(pixels), "dim": pixels.shape[1], "k": k,
                     "n_init": n_init, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
                     "acc": cluster_accuracy(labels, assign) if labels is not None else None,
                     "threads": torch.get_num_threads(), "device": "cpu"})
    for row in rows:
        row["ratio_to_sklearn"] = row["seconds"] / rows[1]["seconds"]
    return rows


def clustered_features(n_points: int, dim: int = 128, n_clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Synthetic embeddings shaped like a backbone's: unit-norm points around ``n_clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, n_clusters, n_points)] + 0.6 * rng.normal(size=(n_points, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def neighbor_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true k neighbours that ``found`` also lists (recall@k)."""
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
    return hits / truth.size


def knn_rows(n_points: int, dim: int = 128, k: int = 20) -> list[dict[str, Any]]:
    """Time exact and approximate k-NN mining on ``n_points`` clustered features; recall of the approximate."""
    from .clustering.neighbors import mine_neighbors

    features = clustered_features(n_points, dim)
    rows, found = [], {}
    for label, exact in (("exact (faiss IndexFlatIP)", True), ("approximate (faiss HNSW)", False)):
        wall, cpu = time.perf_counter(), time.process_time()
        found[exact] = mine_neighbors(features, k, use_faiss=True, exact=exact)
        rows.append({"piece": f"knn {label}", "n_points": n_points, "dim": dim, "k": k,
                     "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
                     "threads": torch.get_num_threads(), "device": "cpu"})
    rows[0]["recall_at_k"] = 1.0
    rows[1]["recall_at_k"] = neighbor_recall(found[False], found[True])
    for row in rows:
        row["ratio_to_exact"] = row["seconds"] / rows[0]["seconds"]
    return rows


def train_rows(methods: list[str], dataset: str, preset: str, device: str, budget_minutes: float | None,
               data_root: str | None, runs_dir: Path, subset: int | None = None,
               scale_to_budget: bool = False, seeds: Sequence[int] = (0,),
               on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Train each method end to end through the run store, once per seed in ``seeds``; one result row each (no
    budget: to the end), on a class-balanced ``subset`` of the dataset when one is given (the subset is the same
    for every seed: the seed is the method's). Each row's ``acc_over_kmeans`` is its ACC minus that of the
    ``kmeans`` row of the same call and seed (see :func:`add_kmeans_margins`); ``on_row`` is called with the rows
    so far after each run, so a long benchmark that is stopped keeps what it measured. With ``scale_to_budget`` the
    budget scales every stage's epochs so the run's estimate fits it (``train --budget-minutes``; the row's
    ``epochs`` and ``budget_factor`` say what ran) instead of stopping the run there; it is then stopped only at
    twice the budget, for an estimate that was far off.

    A benchmark longer than one job: a run of the same method, dataset and preset that an earlier ``bench`` left
    stopped in ``runs_dir`` (over budget, cancelled, interrupted) is resumed from its stage checkpoints instead of
    started again, and ``seconds`` adds up every session's wall time (recorded as ``bench`` messages of the run).
    """
    from .runs import RunRequest, RunStore, create_run, execute_run
    from .runs.budget import estimate_request, fit_to_budget

    store = RunStore(runs_dir)
    rows = []
    for method, seed in itertools.product(methods, seeds):
        run_id = _stopped_run(store, method, dataset, preset, subset, seed)
        if run_id is None:
            request = RunRequest(method, dataset, preset, overrides={"seed": seed}, device=device,
                                 data_root=data_root, subset=subset)
            if scale_to_budget and budget_minutes is not None:
                request = fit_to_budget(request, budget_minutes, estimate_request(request, runs_root=runs_dir))
            run_id = create_run(store, request)
        else:
            store.requeue(run_id)
        cancel = threading.Event()
        limit = None if budget_minutes is None else budget_minutes * 60 * (2 if scale_to_budget else 1)
        timer = threading.Timer(limit, cancel.set) if limit is not None else None
        if timer is not None:
            timer.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        session_start, t0 = time.time(), time.perf_counter()
        try:
            execute_run(store, run_id, cancel)
        except Exception:  # noqa: BLE001 — the outcome is in the store and goes into the row
            pass
        finally:
            if timer is not None:
                timer.cancel()
        store.add_message(run_id, "bench", f"bench session {time.perf_counter() - t0:.3f} s")
        rows.append(_train_row(store, run_id, dataset, preset, session_start))
        if on_row is not None:
            on_row(add_kmeans_margins(rows))
    return add_kmeans_margins(rows)


def add_kmeans_margins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``acc_over_kmeans``: each row's ACC minus the ACC of the ``kmeans`` row on the same dataset
    and subset among them, of the same seed (None without such a row or an ACC). Issue 16's rule for a preset is
    a margin of at least 0.03 on every image set."""
    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return row["dataset"], row.get("subset"), row.get("seed", 0)

    kmeans = {key(r): r.get("acc") for r in rows if r.get("method") == "kmeans"}
    out = []
    for row in rows:
        base = kmeans.get(key(row))
        margin = row["acc"] - base if row.get("acc") is not None and base is not None else None
        out.append({**row, "acc_over_kmeans": margin})
    return out


RULE_MARGIN = 0.03  # issue 16: a fast preset beats pixel K-means by at least this much ACC on every image set


def seed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method, dataset and subset over the seeds of ``rows`` (each with ``acc_over_kmeans``): the
    mean, lowest and highest ACC and the mean and lowest margin over K-means, and whether the mean margin meets
    :data:`RULE_MARGIN` (a single run moves by a few hundredths from seed to seed)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("acc") is not None:
            groups[row["method"], row["dataset"], row.get("subset")].append(row)
    summary = []
    for (method, dataset, subset), group in groups.items():
        accs = [r["acc"] for r in group]
        margins = [r["acc_over_kmeans"] for r in group if r.get("acc_over_kmeans") is not None]
        mean_margin = statistics.fmean(margins) if margins else None
        summary.append({
            "method": method, "dataset": dataset, "subset": subset, "seeds": len(group),
            "acc_mean": statistics.fmean(accs), "acc_min": min(accs), "acc_max": max(accs),
            "margin_mean": mean_margin, "margin_min": min(margins) if margins else None,
            "meets_rule": None if mean_margin is None or method == "kmeans" else mean_margin >= RULE_MARGIN,
        })
    return summary


_SESSION_PREFIX = "bench session "


def _stopped_run(store: Any, method: str, dataset: str, preset: str, subset: int | None = None,
                 seed: int = 0) -> str | None:
    """The newest run of this benchmark (same subset and seed) that stopped before finishing, if any."""
    stopped = [r for r in store.list() if (r.method, r.dataset, r.preset) == (method, dataset, preset)
               and r.options.get("subset") == subset and r.config.get("seed", 0) == seed
               and r.status in ("cancelled", "interrupted")]
    return max(stopped, key=lambda r: r.created).id if stopped else None


def _train_row(store: Any, run_id: str, dataset: str, preset: str, session_start: float) -> dict[str, Any]:
    """A run's result row. Pretext speed comes from this session's epochs only: the time between its first and
    last recorded epoch (from the session start when it recorded one epoch), so data loading and a resumed
    run's earlier sessions do not blur it."""
    record = store.get(run_id)
    sessions = [float(m["message"][len(_SESSION_PREFIX):-2]) for m in store.messages(run_id)
                if m["stage"] == "bench" and m["message"].startswith(_SESSION_PREFIX)]
    pretext_epochs: dict[int, float] = {}  # step at the end of each recorded epoch → when it was recorded
    for metric in store.metrics(run_id):
        if metric["stage"] == "pretext":
            pretext_epochs.setdefault(metric["step"], metric["time"])
    epoch_times = sorted(t for t in pretext_epochs.values() if t >= session_start)
    if len(epoch_times) >= 2:
        s_per_epoch = (epoch_times[-1] - epoch_times[0]) / (len(epoch_times) - 1)
    elif epoch_times:
        s_per_epoch = epoch_times[0] - session_start
    else:
        s_per_epoch = None
    n_images = record.summary.get("n_images") or _known_images(dataset)
    paper = PAPER_CIFAR10.get(record.method) if dataset.startswith("cifar10") else None
    return {
        "method": record.method, "dataset": dataset, "subset": record.options.get("subset"), "preset": preset,
        "seed": record.config.get("seed", 0), "run_id": run_id,
        "protocol": "train+test" if ":" not in dataset else dataset.split(":")[1],
        "device": record.summary.get("device", record.device), "status": record.status,
        "complete": record.status == "finished", "error": record.error,
        "epochs": {k: v for k, v in record.config.items() if k.endswith("epochs")},
        "budget_factor": (record.options.get("budget") or {}).get("factor"),
        "pretext_epochs_done": len(pretext_epochs) if "pretext_epochs" in record.config else None,
        "pretext_s_per_epoch": s_per_epoch,
        "views_per_s": 2 * n_images / s_per_epoch if n_images and s_per_epoch else None,
        "seconds": sum(sessions), "sessions": len(sessions),
        "estimated_seconds": record.summary.get("estimated_seconds"),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "acc": record.summary.get("acc"), "nmi": record.summary.get("nmi"), "ari": record.summary.get("ari"),
        "paper_acc_nmi_ari": paper,
    }


def _known_images(dataset: str) -> int | None:
    from .data import DATASETS

    info = DATASETS.get(dataset.strip().lower())
    return info.n_images if info is not None else None


def write_results(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``results.json`` (the rows) and ``RESULTS.md`` in ``out``: one table per kind of row (rows with the same
    columns), in the order the kinds first appear."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    tables: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        tables.setdefault(frozenset(row), []).append(row)
    blocks = []
    for keys, table in tables.items():
        columns = sorted(keys, key=lambda k: (k != "run", k not in ("method", "piece"), k != "stage", k))
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in table:
            cells = []
            for column in columns:
                value = row.get(column)
                cells.append(f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    (out / "RESULTS.md").write_text("\n\n".join(blocks) + "\n")
    return out / "results.json", out / "RESULTS.md"


def collect_results(root: Path) -> list[dict[str, Any]]:
    """The rows of every ``root/*/results.json``, in folder-name order, each with ``run`` set to its folder."""
    rows = []
    for results in sorted(root.glob("*/results.json")):
        rows += [{"run": results.parent.name, **row} for row in json.loads(results.read_text())]
    if not rows:
        raise UserError(f"no */results.json under {root}: run a benchmark with --out {root}/NAME first")
    return rows


SMOKE_IMAGES = 192  # digits, in batches of SMOKE_BATCH: one epoch of a stage is six steps
SMOKE_BATCH = 32


def smoke(device: torch.device, methods: list[str], n_images: int = SMOKE_IMAGES,
          compile_backend: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One short epoch of every stage of each method on ``n_images`` digits (every batch setting ``SMOKE_BATCH``),
    compile on; returns (rows, failures).

    Each method is fitted twice. The first fit runs as training does on ``device``, compiled (``inductor`` on a
    GPU; ``aot_eager`` on the CPU, where generating kernels would take minutes, unless ``compile_backend`` says
    otherwise): its row per stage gives the graphs compiled during the stage and the median seconds per step. The
    second runs eagerly under :func:`~engine.methods.host_sync.count_host_syncs` (on a CPU the ``meta`` stand-in
    of :func:`~engine.methods.host_sync.simulated_accelerator` plays the GPU) and counts what crossed between host
    and device inside steps: between two step events that report no losses (epoch ends, loss logging and
    K-means are outside them). A failure is a fit that ended in error (a NaN loss included) other than a
    collapse after one epoch, a trained stage that compiled no graph, or a read or device→host copy inside a step.
    """
    from .data import load_dataset
    from .methods import get_method
    from .methods.host_sync import STAND_IN, count_host_syncs

    digits = load_dataset("digits")
    images = dataclasses.replace(digits, images=digits.images[:n_images], labels=digits.labels[:n_images])
    backend = compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    speedups = dataclasses.replace(Speedups.for_device(device, compile=True), compile_backend=backend)
    rows, failures = [], []
    for method in methods:
        batches = {name: SMOKE_BATCH for name in dataclasses.asdict(get_method(method).Config())
                   if name.endswith("batch_size")}
        graphs = _GraphsPerStage(backend)
        torch._dynamo.reset()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CompileFallbackWarning)
            timed = method_step_times(method, images, device, observe=graphs, warmup=1, **batches,
                                      speedups=dataclasses.replace(speedups, compile_backend=graphs.name))
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, CompileFallbackWarning)]
        if fallbacks:
            failures.append(f"{method}: {fallbacks[0]}")
        # the count runs eagerly: on a GPU with its other speed-ups, on the stand-in in float32
        sync_device, sync_speedups = ((device, dataclasses.replace(speedups, compile=False)) if device.type == "cuda"
                                      else (STAND_IN, Speedups()))
        windows = _StepWindows()
        with count_host_syncs(sync_device) as syncs:
            windows.syncs = syncs
            method_step_times(method, images, sync_device, speedups=sync_speedups, observe=windows, **batches)
        for row in timed:
            stage = row["stage"]
            trained = row["seconds_per_step"] is not None and stage not in _UNTRAINED_STAGES
            in_steps = windows.per_stage.get(stage, Counter())
            row.update(speedups=_speedups_label(speedups), graphs=graphs.graphs.get(stage, 0),
                       steps_checked_for_syncs=windows.windows.get(stage, 0),
                       reads_in_steps=sum(n for op, n in in_steps.items() if op.startswith("reads")),
                       device_to_host_in_steps=sum(n for op, n in in_steps.items() if op.startswith("device_to")),
                       host_to_device_in_steps=sum(n for op, n in in_steps.items() if op.startswith("host_to")),
                       sync_device="stand-in (meta)" if sync_device == STAND_IN else device_name(device),
                       compile_fallbacks=len(fallbacks))
            if row["fit_outcome"] != "finished" and "collapsed" not in row["fit_outcome"]:
                failures.append(f"{method} {stage}: {row['fit_outcome']}")
            if trained and method not in _NOT_COMPILED and not row["graphs"]:
                failures.append(f"{method} {stage}: compiled no graph")
            if row["reads_in_steps"] or row["device_to_host_in_steps"]:
                failures.append(f"{method} {stage}: host syncs inside steps: "
                                f"{ {op: n for op, n in in_steps.items() if not op.startswith('host_to')} }")
        rows += timed
        if get_method(method).stages and not timed:
            failures.append(f"{method}: no stage ran")
    return rows, failures


def smoke_in_processes(device: torch.device, methods: list[str], jobs: int,
                       compile_backend: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`smoke` with each method in a process of its own, ``jobs`` at a time, each compiling on one thread
    (``TORCHINDUCTOR_COMPILE_THREADS=1``), so that the methods' compiles run side by side: on a 16-core H200
    machine all eleven took 130 s together. Returns the rows in the order of ``methods`` and every failure."""
    import os
    import subprocess
    import sys
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    repo = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1"}

    def one(method: str, folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
        command = [sys.executable, "-m", "engine", "bench", "--smoke", "--methods", method, "--device", str(device),
                   "--out", str(folder / method)] + (["--compile-backend", compile_backend] if compile_backend else [])
        done = subprocess.run(command, cwd=repo, env=environment, capture_output=True, text=True)
        written = sorted((folder / method).glob("smoke-*/results.json"))
        rows = json.loads(written[0].read_text()) if written else []
        failures = [line.removeprefix("smoke: ") for line in done.stderr.splitlines() if line.startswith("smoke: ")]
        if done.returncode and not failures:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            failures.append(f"{method}: its process ended with exit status {done.returncode} ({last})")
        return rows, failures

    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(max(1, jobs)) as pool:
        outcomes = list(pool.map(lambda method: one(method, Path(folder)), methods))
    return [row for rows, _ in outcomes for row in rows], [failure for _, failures in outcomes for failure in failures]


_NOT_COMPILED = ("kmeans", "dec")  # K-means trains no network; DEC's small MLP steps use none of the speed-ups
_UNTRAINED_STAGES = ("mine", "init")  # neighbour mining and JULE's first clusters: steps, but no network trained


class _GraphsPerStage:
    """A ``torch.compile`` backend wrapping ``backend`` that counts the graphs compiled in each stage; as an
    ``observe`` callback it follows the stages."""

    current: "_GraphsPerStage | None" = None  # the registered backend counts into the latest instance

    def __init__(self, backend: str) -> None:
        from torch._dynamo import list_backends, register_backend
        from torch._dynamo.backends.registry import lookup_backend

        self.graphs: dict[str, int] = defaultdict(int)
        self.stage = "outside stages"
        self.name = f"dce_smoke_{backend}"
        inner = lookup_backend(backend)
        _GraphsPerStage.current = self
        if self.name not in list_backends(exclude_tags=()):
            register_backend(lambda gm, example_inputs: _GraphsPerStage.current._compile(gm, example_inputs),
                             name=self.name)
        self._inner = inner

    def _compile(self, gm: Any, example_inputs: Any) -> Any:
        self.graphs[self.stage] += 1
        return self._inner(gm, example_inputs)

    def __call__(self, event: Any) -> None:
        if event.kind == "stage":
            self.stage = event.stage
        elif event.kind == "stage_done":
            self.stage = f"after {event.stage}"


class _StepWindows:
    """As an ``observe`` callback: the host syncs counted between consecutive loss-free step events of a stage."""

    def __init__(self) -> None:
        self.syncs: Any = None
        self.per_stage: dict[str, Counter] = defaultdict(Counter)
        self.windows: dict[str, int] = defaultdict(int)
        self._last: tuple[str, Counter] | None = None

    def __call__(self, event: Any) -> None:
        now = Counter(self.syncs.ops)
        if event.kind == "step" and not event.losses and self._last and self._last[0] == event.stage:
            self.windows[event.stage] += 1
            self.per_stage[event.stage] += Counter({op: n for op, n in (now - self._last[1]).items()
                                                    if "kmeans.py" not in op})
        clean_step = event.kind == "step" and not event.losses
        self._last = (event.stage, now) if clean_step else None

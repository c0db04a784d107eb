"""Shared fixtures: every test gets its own runs folder and dataset cache, so nothing touches ~ or ./runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A wait in a test is a hang guard, never a speed target: a loaded 2-core CI machine runs several times slower
# than an idle one, so work is bounded by steps and epochs and a wait gives up only far above any expected time.
HANG_GUARD_S = 1800
# Child processes run on one thread, like the in-process fits: pytest-xdist already keeps every core busy, and
# an oversubscribed OpenMP pool is what turns "slower" into "many times slower".
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# The same for this process: pytest-xdist runs one test process per core (tests/ is imported before torch or
# numpy start their thread pools), and every process starting a pool of one thread per core would put twice as
# many threads as cores to work; untouched with one process, or where the caller set a thread count.
_CORES_PER_WORKER = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _CORES_PER_WORKER < (os.cpu_count() or 1):
    for _name in ONE_THREAD:
        os.environ.setdefault(_name, str(max(1, _CORES_PER_WORKER)))


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DCE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def run_cli(*args: str, env: dict | None = None, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` in a fresh process from the repository root, on one thread."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ONE_THREAD, **(env or {})})


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits as an ImageSet (1,797 gray 8×8 images, 10 classes)."""
    from engine.data import load_dataset

    return load_dataset("digits")


def wait_for(condition, timeout: float = HANG_GUARD_S, poll: float = 0.1):
    """Poll ``condition`` until it returns something truthy (returned); a hang guard, not a time limit."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("condition not met in time")


@pytest.fixture
def one_torch_thread():
    """Train on one thread: the machine running the tests is small and shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def kmeans_digits_acc(digits) -> float:
    """ACC of K-means (k-means++, 10 restarts) on digits pixels: the baseline every method must beat."""
    from engine.clustering.metrics import cluster_accuracy
    from engine.methods import create_method

    return cluster_accuracy(digits.labels, create_method("kmeans", "fast").fit(digits).labels_)


def fit_on_digits(method_name: str, digits, **overrides):
    """Fit a method's ``fast`` preset on digits on the CPU; returns (method, events) with every event recorded.

    The fit runs on one thread: that is how the presets' figures were measured (the thread count changes the
    order of float sums, and a short end-to-end clustering run is sensitive to it), and it keeps a small shared
    CPU from being oversubscribed.
    """
    import torch

    from engine.methods import FitContext, create_method

    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method = create_method(method_name, "fast", **overrides).fit(digits, FitContext("cpu", events.append))
    finally:
        torch.set_num_threads(threads)
    return method, events


def recorded_losses(events) -> dict[str, set[str]]:
    """stage → names of the loss values recorded in it (the accuracy after each epoch, recorded beside them when
    the images have labels, is no loss: tests/test_epoch_accuracy.py covers it)."""
    from engine.methods.training import TRAIN_ACC

    losses: dict[str, set[str]] = {}
    for event in events:
        if event.kind == "step" and event.losses:
            losses.setdefault(event.stage, set()).update(set(event.losses) - {TRAIN_ACC})
    return losses


def open_page(path: str = "pages/train.py"):
    """An AppTest of the app showing ``path`` (the app opens on its Home page)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S).run()
    at.switch_page(path)
    return at.run()


@pytest.fixture
def resnet18_weights(tmp_path):
    """A randomly initialised torchvision ResNet-18 state dict, classifier included, as torch.save writes it."""
    import torch
    import torchvision

    path = tmp_path / "resnet18-random.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture
def two_kinds_folder(tmp_path):
    """A labelled folder of 16 tiny images: dark noisy squares and bright striped ones."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for kind, base in (("dark", 30), ("bright", 220)):
        (root / kind).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(base + rng.normal(0, 15, (16, 16, 3)), 0, 255).astype(np.uint8)
            if kind == "bright":
                pixels[::4] = 0
            Image.fromarray(pixels).save(root / kind / f"{i}.png")
    return root

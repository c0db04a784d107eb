"""Benchmarks of the pretrained path: feature extraction speed per backbone, and clustering a dataset end to end
on a frozen backbone's features (data loading, extraction and fit). Random weights cost the same as published
ones, so these run offline: each backbone is built with random weights, written to a file and loaded like a
user's ``--weights`` file."""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .methods.context import device_name
from .errors import TrainingError
from .methods.speedups import native_bf16
from .nn.pretrained import PRETRAINED_BACKBONES, PretrainedBackbone, get_pretrained


def _variants(device: torch.device) -> list[tuple[str, bool, bool]]:
    """(label, channels_last, bf16) of each way extraction is timed; the first is the baseline."""
    variants = [("float32", False, False), ("float32 channels-last", True, False)]
    if native_bf16(device):
        variants.append(("bf16 channels-last", True, True))
    return variants


def extraction_rows(names: list[str] | None = None, device: torch.device = torch.device("cpu"),
                    batch_size: int = 16, batches: int = 3) -> list[dict[str, Any]]:
    """Images/s of every backbone at its input size, in inference mode, one row per variant (float32 first, then
    channels-last, then bf16 where the hardware has it), with the ratio to float32 measured in the same run."""
    rows = []
    for name in names or list(PRETRAINED_BACKBONES):
        entry = get_pretrained(name)
        model = entry.build().eval().requires_grad_(False).to(device)
        x = torch.randn(batch_size, 3, entry.input_size, entry.input_size, device=device)
        baseline = None
        for label, channels_last, bf16 in _variants(device):
            net = model.to(memory_format=torch.channels_last) if channels_last else model
            batch = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            seconds = _time_batches(net, batch, device, bf16, batches)
            rate = batch_size / seconds
            baseline = baseline or rate
            rows.append({"backbone": name, "variant": label, "input_size": entry.input_size,
                         "batch_size": batch_size, "images_per_s": round(rate, 2),
                         "ratio_to_float32": round(rate / baseline, 2), "device": device_name(device),
                         "threads": torch.get_num_threads()})
        del model
    return rows


@torch.inference_mode()
def _time_batches(model: torch.nn.Module, batch: torch.Tensor, device: torch.device, bf16: bool,
                  batches: int) -> float:
    """Median seconds per batch after one warm-up batch."""
    times = []
    for i in range(batches + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


@contextlib.contextmanager
def random_weights_file(entry: PretrainedBackbone) -> Iterator[Path]:
    """A state dict of ``entry``'s architecture with random weights, as a user's ``--weights`` file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{entry.name}-random.pt"
        torch.save(entry.build().state_dict(), path)
        yield path


def end_to_end_rows(dataset: str, data_root: str | None, n_images: int, backbone: str, methods: list[str],
                    device: torch.device) -> list[dict[str, Any]]:
    """Wall time of clustering ``n_images`` of ``dataset`` (every class equally, a fixed subset) on ``backbone``'s
    features: loading, then extraction (timed once, into a fresh feature cache), then each method's fit on the
    cached features. ``end_to_end_s`` = load + extraction + that method's fit: what a first run costs. A fit that
    fails (random features can collapse a clustering) is timed to its failure, its message in ``error``."""
    from .clustering.metrics import cluster_accuracy
    from .data import load_dataset
    from .methods import FitContext, create_method

    started = time.perf_counter()
    images = load_dataset(dataset, data_root=data_root, subset=n_images)
    load_s = time.perf_counter() - started
    rows = []
    entry = get_pretrained(backbone)
    with random_weights_file(entry) as weights, tempfile.TemporaryDirectory() as cache, \
            _env("DCE_CACHE_DIR", cache):
        extract_s = None
        for method in methods:
            settings = {"pretext_from": f"pretrained:{backbone}", "pretrained_weights": str(weights),
                        "n_clusters": len(images.class_names) or 10}
            events: list[Any] = []
            started = time.perf_counter()
            fitted, error = create_method(method, "fast", **settings), None
            try:
                fitted.fit(images, FitContext(str(device), events.append))
            except TrainingError as exc:  # random features may collapse a clustering: the time is still real
                error = str(exc)
            seconds = time.perf_counter() - started
            extracting = _stage_seconds(events, "features")
            if extract_s is None:
                extract_s = extracting
            fit_s = seconds - (extracting or 0.0)
            rows.append({"method": method, "backbone": backbone, "weights": "random (same cost as published)",
                         "dataset": dataset, "n_images": len(images), "device": device_name(device),
                         "load_s": round(load_s, 1), "extract_s": round(extract_s or 0.0, 1),
                         "fit_s": round(fit_s, 1), "end_to_end_s": round(load_s + (extract_s or 0.0) + fit_s, 1),
                         "acc_random_weights": round(cluster_accuracy(images.labels, fitted.labels_), 4)
                         if images.labels is not None and error is None else None, "error": error})
    return rows


def _stage_seconds(events: list[Any], stage: str) -> float | None:
    """Seconds between a stage's start and end events (None when the stage did not run: the cache answered)."""
    times = [e.time for e in events if e.stage == stage and e.kind in ("stage", "stage_done")]
    return times[-1] - times[0] if len(times) >= 2 else None


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    import os

    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

"""Where a feature-based method gets its N×D features: a frozen pretrained backbone, another run, or the pixels.

``pretext_from=pretrained:NAME`` embeds the dataset once with the frozen backbone NAME (``engine.nn.pretrained``)
and keeps the result as float16 under the cache folder (``$DCE_CACHE_DIR/features``), keyed by the images' bytes,
the backbone, its input size and the identity of its weights (the file's SHA-256, or the library's published
tag). A later run on the same data with the same backbone and weights reads the file and never builds the
backbone. ``features_from=RUN_ID`` reads the features another run stored.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..data.cache import default_cache_dir
from ..data.imageset import ImageSet
from ..errors import ConfigError, UserError
from ..npy import load_npy
from ..nn.pretrained import PretrainedBackbone, check_weights_source, get_pretrained, load_pretrained, weights_identity
from .context import FitContext
from .speedups import native_bf16

PRETRAINED_PREFIX = "pretrained:"
FEATURES_STAGE = "features"  # the stage name extraction progress is reported under
ESTIMATE_BATCH = 4  # images per batch when an estimate times the extraction on a CPU (a GPU keeps its batch)


def pretrained_name(pretext_from: str | None) -> str | None:
    """``pretrained:NAME`` → NAME; anything else (a run id, None) → None."""
    if pretext_from and pretext_from.startswith(PRETRAINED_PREFIX):
        return pretext_from[len(PRETRAINED_PREFIX):]
    return None


def check_feature_source(pretext_from: str | None, weights: str | None, download: bool) -> None:
    """Refuse, before a run is queued, a pretrained source that cannot get its weights, and weights without one."""
    name = pretrained_name(pretext_from)
    if name is None:
        if weights or download:
            raise ConfigError("--weights and --download-weights are for a pretrained backbone: add "
                              "--set pretext_from=pretrained:NAME (python -m engine list names them)")
        return
    check_weights_source(name, weights, download)


def check_frozen_features_settings(method: str, pretext_from: str | None, features_from: str | None,
                                   weights: str | None, download: bool) -> None:
    """The feature-source settings of a method that only clusters frozen features (kmeans): ``pretext_from``
    may name a pretrained backbone only, ``features_from`` and ``pretext_from`` exclude each other, and the
    backbone must be able to get its weights (:func:`check_feature_source`)."""
    if pretext_from is not None and pretrained_name(pretext_from) is None:
        raise ConfigError(f"{method} clusters frozen features and has no pretext of its own to reuse: "
                          f"pretext_from must be pretrained:NAME, got {pretext_from!r}")
    check_one_feature_source(pretext_from, features_from, weights, download)


def check_one_feature_source(pretext_from: str | None, features_from: str | None, weights: str | None,
                             download: bool) -> None:
    """``features_from`` (another run's stored features) and ``pretext_from`` exclude each other, and a pretrained
    backbone must be able to get its weights (:func:`check_feature_source`)."""
    if pretext_from and features_from:
        raise ConfigError("set features_from or pretext_from, not both")
    check_feature_source(pretext_from, weights, download)


def features_of_run(context: FitContext, run_id: str, n_images: int) -> torch.Tensor:
    """The float32 features run ``run_id`` stored, on the context's device."""
    if context.runs_root is None:
        raise UserError("features_from needs a runs folder to read the other run's features from")
    path = context.runs_root / run_id / "features.npy"
    if not path.exists():
        raise UserError(f"run {run_id} has no stored features to cluster")
    features = load_npy(path)
    if len(features) != n_images:
        raise UserError(f"run {run_id} has features for {len(features)} images, this dataset has {n_images}")
    return torch.from_numpy(features.astype(np.float32)).to(context.device)


def feature_cache_path(images: ImageSet, name: str, weights: str | None) -> Path:
    """``$DCE_CACHE_DIR/features/<dataset>-<backbone>-<key>.npy``; the key hashes every input of the features."""
    entry = get_pretrained(name)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(images.images.shape), entry.name, entry.input_size,
                        weights_identity(name, weights))).encode())
    digest.update(images.images.contiguous().numpy().data)
    dataset = "".join(c if c.isalnum() else "_" for c in images.source.split(":")[0])
    return default_cache_dir() / "features" / f"{dataset}-{entry.name}-{digest.hexdigest()}.npy"


def preprocess(batch_u8: torch.Tensor, entry: PretrainedBackbone) -> torch.Tensor:
    """uint8 N×H×W×C → N×3×S×S float, resized (bilinear, antialiased) and normalised as the backbone expects;
    gray images are repeated over three channels."""
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(entry.input_size, entry.input_size), mode="bilinear", antialias=True,
                      align_corners=False)
    mean = torch.tensor(entry.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(entry.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def extract_features(model: torch.nn.Module, images: ImageSet, entry: PretrainedBackbone, context: FitContext,
                     batch_size: int = 128) -> torch.Tensor:
    """N×D float32 features of every image, in batches, in channels-last layout (never slower, up to 1.5× faster
    for the ResNets on a CPU: benchmarks/extract-cpu) and under bf16 autocast where the device computes bf16 in
    hardware and the backbone gains from it (``entry.cpu_bf16`` on a CPU: 1.2–2.5× there, CLIP 0.5×).
    Reports a ``features`` stage: one step per batch (the run store turns them into progress and an ETA).

    Under the context's ``step_limit`` (an estimate) only that many batches are embedded, on a CPU of
    ``ESTIMATE_BATCH`` images (its cost is per image), and their rows repeat to N for the later stages."""
    device = context.device
    model = model.to(device).to(memory_format=torch.channels_last)
    on_gpu = device.type == "cuda"
    bf16 = native_bf16(device) and (on_gpu or entry.cpu_bf16)
    limit = context.step_limit
    if limit is not None and not on_gpu:
        batch_size = min(batch_size, ESTIMATE_BATCH)
    n_batches = -(-len(images) // batch_size)
    context.start_stage(FEATURES_STAGE, n_batches)
    started = time.monotonic()
    chunks = []
    for i, start in enumerate(range(0, len(images), batch_size)):
        if limit is not None and i == limit:
            context.end_stage(FEATURES_STAGE)
            return torch.cat(chunks).repeat(n_batches, 1)[:len(images)]
        x = preprocess(images.images[start:start + batch_size].to(device), entry)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            chunks.append(model(x).float().cpu())
        context.step(FEATURES_STAGE, i + 1, n_batches)
    context.info(FEATURES_STAGE, f"embedded {len(images)} images with {entry.name} in "
                                 f"{time.monotonic() - started:.1f} s")
    context.end_stage(FEATURES_STAGE)
    return torch.cat(chunks)


def pretrained_features(images: ImageSet, name: str, weights: str | None, download: bool,
                        context: FitContext) -> torch.Tensor:
    """The frozen backbone ``name``'s features of ``images`` (float32 on the context's device), from the cache
    when an earlier run computed them with the same weights, else computed and cached as float16."""
    path = feature_cache_path(images, name, weights)
    if path.exists():
        context.info(FEATURES_STAGE, f"reusing cached {name} features ({path.name})")
        return torch.from_numpy(load_npy(path).astype(np.float32)).to(context.device)
    entry = get_pretrained(name)
    features = extract_features(load_pretrained(name, weights, download), images, entry, context)
    if context.step_limit is not None:
        return features.to(context.device)  # an estimate's few embedded rows, repeated: never cached
    stored = features.half()
    if not torch.isfinite(stored).all():
        raise UserError(f"the {name} backbone produced NaN, infinite or float16-overflowing features; check the "
                        "weights file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, stored.numpy())
    # the first run clusters the same float16-rounded features every later run reads from the cache
    return stored.float().to(context.device)

"""K-means: the baseline every deep method must beat.

Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii 2007) and several restarts, keeping the restart
with the lowest inertia Σ_i ‖x_i − μ_{c(i)}‖². Written in torch so it runs on the GPU when the data is there.
Input is raw pixels (scaled to [0, 1]), the stored features of an earlier run (``features_from``) or the cached
features of a frozen pretrained backbone (``pretext_from=pretrained:NAME``, see ``feature_source``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data.imageset import ImageSet
from .base import Method, MethodConfig, Stage, register_method
from .context import FitContext
from .feature_source import check_frozen_features_settings, features_of_run, pretrained_features, pretrained_name
from .settings import bounded


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_i‖² of every row, without the N×D temporary that ``x.pow(2).sum(1)`` allocates."""
    return torch.linalg.vector_norm(x, dim=1).square()


def _squared_distances(x: torch.Tensor, centres: torch.Tensor, x_norms: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """N×K squared distances ‖x_i‖² − 2 x_i·μ_k + ‖μ_k‖²; pass ``x_norms`` (:func:`squared_norms`) when calling
    it repeatedly on the same rows."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    # addmm scales the N×K product; ``2 * x @ …`` would first build 2x, a second N×D array
    return torch.addmm(squared_norms(centres), x, centres.t(), alpha=-2).add_(x_norms[:, None]).clamp_min_(0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator,
                     x_norms: torch.Tensor | None = None) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability ∝ D(x)², the squared distance to the nearest
    centre so far."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    first = torch.randint(len(x), (1,), generator=generator).item()
    centres = [x[first]]
    nearest = _squared_distances(x, x[first:first + 1], x_norms).squeeze(1)
    for _ in range(1, k):
        weights = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1 / len(x))
        index = torch.multinomial(weights.cpu(), 1, generator=generator).item()
        centres.append(x[index])
        torch.minimum(nearest, _squared_distances(x, x[index:index + 1], x_norms).squeeze(1), out=nearest)
    return torch.stack(centres)


def lloyd(x: torch.Tensor, centres: torch.Tensor, max_iter: int = 300, tol: float = 1e-4,
          x_norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Alternate assignment and mean updates until the centres move less than ``tol`` times the data's mean
    per-feature variance (scikit-learn's rule). Returns (centres, assignments, inertia).

    Each iteration allocates only N×K and K×D arrays: the row norms are computed once, and the assignment needs
    only ‖μ_k‖² − 2 x_i·μ_k (‖x_i‖² is the same for every k)."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    mean_variance = (x_norms.mean() - x.mean(0).pow(2).sum()).item() / x.shape[1]
    threshold = tol * mean_variance
    sums = torch.empty_like(centres)
    for _ in range(max_iter):
        assign = torch.addmm(squared_norms(centres), x, centres.t(), alpha=-2).argmin(1)
        sums.zero_().index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=len(centres)).unsqueeze(1)
        # an emptied cluster keeps its old centre rather than becoming NaN
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        shift = (updated - centres).pow(2).sum().item()
        centres = updated
        if shift <= threshold:
            break
    distances = _squared_distances(x, centres, x_norms)
    assign = distances.argmin(1)
    return centres, assign, distances.gather(1, assign[:, None]).sum().item()


def fit_kmeans(x: torch.Tensor, k: int, n_init: int = 10, seed: int = 0, max_iter: int = 300,
               on_restart: Callable[[int, float], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of ``n_init`` k-means++ restarts on the rows of ``x``; returns (centres K×D, assignments N).

    ``on_restart(i, inertia)`` is called after each restart (progress, cancellation)."""
    generator = torch.Generator().manual_seed(seed)
    x_norms = squared_norms(x)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for restart in range(n_init):
        seeds = kmeans_plus_plus(x, k, generator, x_norms)
        centres, assign, inertia = lloyd(x, seeds, max_iter, x_norms=x_norms)
        if best is None or inertia < best[0]:
            best = (inertia, centres, assign)
        if on_restart is not None:
            on_restart(restart, inertia)
    assert best is not None
    return best[1], best[2]


def soft_assignments(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Softmax over negative squared distances scaled by the mean distance: a confidence for the maps and
    galleries, not part of K-means itself."""
    distances = _squared_distances(x, centres)
    return torch.softmax(-distances / distances.mean().clamp_min(1e-12) * 10, dim=1)


@dataclass
class KMeansConfig(MethodConfig):
    n_init: int = 10
    max_iter: int = bounded(300, low=1)
    features_from: str | None = None  # run id whose stored features to cluster; None → raw pixels
    pretext_from: str | None = None  # pretrained:NAME → the frozen backbone NAME's features
    pretrained_weights: str | None = None  # state dict file for that backbone (train --weights)
    download_weights: bool = False  # let the backbone's library download its weights (train --download-weights)

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        check_frozen_features_settings("kmeans", self.pretext_from, self.features_from, self.pretrained_weights,
                                       self.download_weights)


@register_method
class KMeans(Method):
    """K-means with k-means++ and restarts, on raw pixels or on another run's features."""

    name = "kmeans"
    paper = "Lloyd 1982; k-means++: Arthur & Vassilvitskii 2007"
    Config = KMeansConfig
    stages = (Stage("cluster", ("inertia",), "k-means++ seeding, Lloyd iterations, best of n_init restarts",
                    r"\min_{\mu_1..\mu_K} \sum_i \min_k \lVert x_i - \mu_k \rVert^2",
                    step_unit="restart"),)
    key_settings = ("n_init", "max_iter", "features_from")
    presets = {"paper": {}, "fast": {"n_init": 10}}

    @classmethod
    def light_on_cpu(cls, config: KMeansConfig) -> bool:
        """On pixels or on another run's stored features, yes; a pretrained backbone's features take a network's
        forward pass over every image first (minutes per thousand at 224 px on a CPU)."""
        return config.pretext_from is None

    def _inputs(self, images: ImageSet, context: FitContext) -> torch.Tensor:
        cfg = self.config
        if cfg.features_from is not None:
            return features_of_run(context, cfg.features_from, len(images))
        backbone = pretrained_name(cfg.pretext_from)
        if backbone is not None:
            return pretrained_features(images, backbone, cfg.pretrained_weights, cfg.download_weights, context)
        return images.images.reshape(len(images), -1).to(context.device).float() / 255

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        x = self._inputs(images, context)
        context.start_stage("cluster", self.config.n_init)
        centres, assign = fit_kmeans(
            x, self.config.n_clusters, self.config.n_init, self.config.seed, self.config.max_iter,
            on_restart=lambda i, inertia: context.step("cluster", i + 1, self.config.n_init,
                                                       {"inertia": inertia / len(x)}))
        context.end_stage("cluster")
        self.cluster_centers_ = centres
        self.labels_ = assign.cpu().numpy()
        self.probs_ = soft_assignments(x, centres).cpu().numpy()
        self.features_ = x.cpu().numpy().astype(np.float16)

    def predict_proba(self, images: ImageSet) -> np.ndarray:
        if self.config.features_from or self.config.pretext_from:
            raise NotImplementedError("kmeans on stored or pretrained features assigns only the images it was fit on")
        x = images.images.reshape(len(images), -1).float().to(self.cluster_centers_.device) / 255
        return soft_assignments(x, self.cluster_centers_).cpu().numpy()

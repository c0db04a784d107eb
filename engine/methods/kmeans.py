"""K-means: the baseline every deep method must beat.

Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii 2007) and several restarts, keeping the restart
with the lowest inertia Σ_i ‖x_i − μ_{c(i)}‖². Written in torch so it runs on the GPU when the data is there.
Input is raw pixels (scaled to [0, 1]), the stored features of an earlier run (``features_from``) or the cached
features of a frozen pretrained backbone (``pretext_from=pretrained:NAME``, see ``feature_source``). New images
are assigned in the space the centres live in: their pixels, or their features from the same backbone; another
run's stored features exist only for that run's images, so such a model assigns no new ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..clustering.kmeans import fit_kmeans, soft_assignments
from ..data.imageset import ImageSet
from .base import Method, MethodConfig, Stage, register_method
from .context import FitContext
from .feature_source import check_frozen_features_settings, features_of_run, pretrained_features, pretrained_name
from .settings import bounded


@dataclass
class KMeansConfig(MethodConfig):
    n_init: int = 10
    max_iter: int = bounded(300, low=1, help="the most Lloyd iterations of one K-means start")
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
    fitted_attributes = Method.fitted_attributes + ("cluster_centers_",)
    can_collapse = False

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

    def _assign(self, images: ImageSet) -> torch.Tensor:
        if self.config.features_from is not None:
            raise NotImplementedError(f"kmeans on run {self.config.features_from}'s stored features assigns only "
                                      "the images it was fit on: that run's features exist for its images alone")
        return soft_assignments(self._inputs(images, FitContext(self.cluster_centers_.device)),
                                self.cluster_centers_)

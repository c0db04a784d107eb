"""SCAN: Learning to Classify Images without Labels (Van Gansbeke et al., ECCV 2020).

Stages:
1. ``pretext`` — SimCLR (NT-Xent, τ=0.1, 128-d projection) learns features without labels.
2. ``mine`` — each image's k=20 nearest neighbours in the pretext embedding (cosine); their label purity is the
   figure SCAN reports to justify mining.
3. ``cluster`` — the SCAN loss (eq. 2): −log⟨Φ(X), Φ(N)⟩ for an image X and a random mined neighbour N, plus
   λ=5 times minus the entropy of the mean assignment; ``n_heads`` heads train at once and the one with the lowest
   loss is kept.
4. ``selflabel`` — self-labelling (§2.3): images whose weak-view prediction is more confident than 0.99 become
   pseudo-labels for their strongly augmented view, trained with class-balanced cross-entropy.

With ``pretext_from=pretrained:NAME`` the pretext stage is replaced by a frozen pretrained backbone's cached
features (``feature_source``): neighbours are mined in that space and the heads (and self-labelling) train on the
features themselves, without image augmentations.

Defaults (``paper`` preset) follow the paper and its official configs for CIFAR-10: SimCLR SGD lr 0.4, wd 1e-4,
cosine schedule, 500 epochs, batch 512; SCAN step Adam 1e-4, wd 1e-4, batch 128, 10 heads, 100 epochs; self-label
Adam 1e-4, batch 1000, 200 epochs. Reading we had to make: the self-label stage here trains without the EMA copy
of the weights that the official code can add.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from ..nn import ClusterModel, build_backbone, class_balanced_cross_entropy, resolve_backbone
from .base import MethodConfig, Stage, register_method
from .context import FitContext
from .feature_source import check_feature_source, pretrained_features, pretrained_name
from .scan_heads import (SCAN_LOSS_EQUATION, FeatureGeometry, FrozenFeatures, ScanHeadSettings, ScanHeadsMethod,
                         train_scan_heads)
from .simclr import ContrastiveModel, SimCLRSettings, load_reused_pretext, pretext_identity, train_simclr
from .training import ImageGeometry, Position, embed, make_optimizer, mine_stage, seed_everything, train_epochs


@dataclass
class ScanConfig(MethodConfig):
    backbone: str = "auto"
    image_size: int | None = None  # None → the dataset's own size
    flip: bool | None = None  # horizontal flips in augmentations; None → by content (gray: off)
    pretext_from: str | None = None  # run id whose finished pretext to reuse, or pretrained:NAME
    pretrained_weights: str | None = None  # state dict file for pretext_from=pretrained:NAME (train --weights)
    download_weights: bool = False  # let the backbone's library download its weights (train --download-weights)
    pretext_epochs: int = 500
    pretext_batch_size: int = 512
    pretext_optimizer: str = "sgd"
    pretext_lr: float = 0.4
    pretext_weight_decay: float = 1e-4
    temperature: float = 0.1
    projection_dim: int = 128
    crop_min_scale: float = 0.2
    n_neighbors: int = 20
    cluster_epochs: int = 100
    cluster_batch_size: int = 128
    cluster_lr: float = 1e-4
    cluster_weight_decay: float = 1e-4
    entropy_weight: float = 5.0
    n_heads: int = 10
    selflabel_epochs: int = 200
    selflabel_batch_size: int = 1000
    selflabel_lr: float = 1e-4
    selflabel_weight_decay: float = 1e-4
    confidence_threshold: float = 0.99

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        check_feature_source(self.pretext_from, self.pretrained_weights, self.download_weights)


@register_method
class Scan(ScanHeadsMethod):
    """SCAN: SimCLR pretext, neighbour mining, the SCAN clustering loss, then self-labelling."""

    name = "scan"
    paper = "Van Gansbeke et al., SCAN: Learning to Classify Images without Labels, ECCV 2020"
    Config = ScanConfig
    stages = (
        Stage("pretext", ("nt_xent",), "SimCLR: two augmented views of an image should embed alike",
              r"\ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i,z_j)/\tau)}"
              r"{\sum_{k \ne i} \exp(\mathrm{sim}(z_i,z_k)/\tau)}"),
        Stage("mine", ("neighbor_purity",), "k nearest neighbours of every image in the pretext embedding",
              r"\mathcal{N}_X = \operatorname{top-}k_{Y \ne X}\ \cos(\Phi(X), \Phi(Y))"),
        Stage("cluster", ("total", "consistency", "entropy"),
              "an image and its neighbours should get the same cluster; all clusters should be used",
              SCAN_LOSS_EQUATION),
        Stage("selflabel", ("cross_entropy", "confident_share"),
              "confident predictions become labels for strongly augmented views",
              r"\mathcal{L} = -\sum_{i:\ \max p(x_i) > 0.99} w_{\hat y_i} \log p_{\hat y_i}"
              r"(\mathrm{strong}(x_i))"),
    )
    key_settings = ("pretext_epochs", "pretext_batch_size", "pretext_lr", "temperature", "n_neighbors",
                    "cluster_epochs", "entropy_weight", "n_heads", "selflabel_epochs", "confidence_threshold")
    presets = {
        "paper": {},
        # minutes on a CPU: Adam instead of SGD's long schedule, milder crops, a faster SCAN step
        "fast": {"pretext_epochs": 30, "pretext_batch_size": 256, "pretext_optimizer": "adam",
                 "pretext_lr": 1e-3, "pretext_weight_decay": 1e-5, "temperature": 0.2, "crop_min_scale": 0.5,
                 "cluster_epochs": 30, "cluster_lr": 1e-3, "n_heads": 3, "selflabel_epochs": 10,
                 "selflabel_batch_size": 500},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator = seed_everything(cfg.seed)
        if pretrained_name(cfg.pretext_from) is not None:
            self._fit_on_features(images, context, generator)
            return
        geometry = ImageGeometry.of(images, cfg.image_size, cfg.flip)
        backbone_name = resolve_backbone(cfg.backbone, geometry.size, geometry.channels)
        identity = pretext_identity(images.source, geometry, backbone_name)
        data = images.images.to(context.device)

        contrastive = ContrastiveModel(build_backbone(backbone_name, geometry.size, geometry.channels),
                                       cfg.projection_dim).to(context.device)
        if cfg.pretext_from:
            load_reused_pretext(contrastive, context, cfg.pretext_from, identity)
        else:
            train_simclr(contrastive, data, geometry, SimCLRSettings(
                cfg.pretext_epochs, cfg.pretext_batch_size, cfg.pretext_optimizer, cfg.pretext_lr,
                cfg.pretext_weight_decay, cfg.temperature, cfg.projection_dim, cfg.crop_min_scale), context, generator, identity)

        neighbors = mine_stage(context, lambda: embed(contrastive, data, geometry.augment("eval")),
                               self.config.n_neighbors, images.labels)
        model = ClusterModel(contrastive.backbone, cfg.n_clusters, cfg.n_heads).to(context.device)
        train_scan_heads(model, data, neighbors, geometry, ScanHeadSettings.of(cfg), context, generator)
        self._selflabel(model, data, geometry, context, generator)

        self._finish(model, geometry, data, embed(model.backbone, data, geometry.augment("eval")), neighbors)

    def _fit_on_features(self, images: ImageSet, context: FitContext, generator: torch.Generator) -> None:
        """The stages after the pretext, on a frozen pretrained backbone's features instead of a trained one."""
        cfg = self.config
        x = pretrained_features(images, pretrained_name(cfg.pretext_from), cfg.pretrained_weights,
                                cfg.download_weights, context)
        geometry = FeatureGeometry()
        neighbors = mine_stage(context, lambda: x, self.config.n_neighbors, images.labels)
        model = ClusterModel(FrozenFeatures(x.shape[1]), cfg.n_clusters, cfg.n_heads).to(context.device)
        train_scan_heads(model, x, neighbors, geometry, ScanHeadSettings.of(cfg), context, generator)
        self._selflabel(model, x, geometry, context, generator)
        self._finish(model, geometry, x, x, neighbors)

    def _selflabel(self, model: ClusterModel, data: torch.Tensor, geometry: ImageGeometry, context: FitContext,
                   generator: torch.Generator) -> None:
        """Self-labelling (§2.3): confident weak-view predictions train the strong views."""
        cfg = self.config
        weak, strong = geometry.augment("weak"), geometry.augment("strong")
        forward = context.speedups.compiled(model)  # one head left since the last stage: a graph of its own
        optimizer = make_optimizer("adam", model.parameters(), cfg.selflabel_lr, cfg.selflabel_weight_decay,
                                   fused=context.speedups.fused_optimizer)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            batch = data[indices]
            with torch.no_grad():
                confidence, pseudo = F.softmax(forward(weak(batch))[0], dim=1).max(dim=1)
            confident = confidence > cfg.confidence_threshold
            logits = forward(strong(batch))[0]
            return {"cross_entropy": class_balanced_cross_entropy(logits, pseudo, cfg.n_clusters, mask=confident),
                    "confident_share": confident.float().mean()}

        train_epochs(context, "selflabel", model, optimizer, step, epochs=cfg.selflabel_epochs,
                     n_samples=len(data), batch_size=cfg.selflabel_batch_size, generator=generator,
                     losses=("cross_entropy", "confident_share"), lr=cfg.selflabel_lr)


"""SCAN: Learning to Classify Images without Labels (Van Gansbeke et al., ECCV 2020).

Stages:
1. ``pretext`` — SimCLR (NT-Xent, τ=0.1, 128-d projection) learns features without labels.
2. ``mine`` — each image's k=20 nearest neighbours in the pretext embedding (cosine); their label purity is the
   figure SCAN reports to justify mining.
3. ``cluster`` — the SCAN loss (eq. 2): −log⟨Φ(X), Φ(N)⟩ for an image X and a random mined neighbour N, plus
   λ=5 times minus the entropy of the mean assignment; ``n_heads`` heads train at once on strongly augmented
   images and the one with the lowest loss over the last epoch is kept (see below for the official choice).
   ``head_views='simclr'`` trains this stage and the next on the pretext's crops instead; ``head_views='frozen'``
   (the fast preset) trains the heads alone on the frozen backbone's features of the un-augmented images.
4. ``selflabel`` — self-labelling (§2.3): images whose prediction on the un-augmented image (the official code's
   validation transform) is more confident than 0.99 become pseudo-labels for their strongly augmented view,
   trained with class-balanced cross-entropy.

With ``pretext_from=pretrained:NAME`` the pretext stage is replaced by a frozen pretrained backbone's cached
features (``feature_source``): neighbours are mined in that space and the heads (and self-labelling) train on the
features themselves, without image augmentations.

Defaults (``paper`` preset) follow the paper and its official configs for CIFAR-10: SimCLR SGD lr 0.4, wd 1e-4,
cosine schedule, 500 epochs, batch 512; SCAN step Adam 1e-4, wd 1e-4, batch 128, 10 heads, 100 epochs; self-label
Adam 1e-4, batch 1000, 200 epochs.

Where this departs from the official code:
- The head kept after the SCAN step is the one of the lowest training loss over the last epoch, on strongly
  augmented images and one random neighbour each, with the entropy at λ = 5. The official code evaluates every
  head after every epoch on un-augmented images: the binary cross-entropy of ⟨p_i, p_j⟩ against 1 over all mined
  pairs minus the entropy at weight 1, mined again in its validation split, and keeps the epoch and head of the
  lowest value. We keep the training loss because its λ = 5 entropy term guards short schedules: with the
  weight-1 criterion, a barely trained smc model (one epoch of each stage) kept a head that put 94 % of the images
  in one cluster.
- The network kept is the last epoch's, not the epoch of the lowest evaluation loss.
- The self-label stage trains without the EMA copy of the weights that the official code can add.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ClusterModel, class_balanced_cross_entropy
from .base import Stage, register_method
from .context import FitContext
from .scan_heads import (SCAN_LOSS_EQUATION, FeatureGeometry, ScanHeadSettings, ScanHeadsConfig,
                         ScanHeadsMethod)
from .settings import described
from .simclr import SIMCLR_STAGE, simclr_pretext
from .training import ImageGeometry, Position, make_optimizer, train_epochs


@dataclass
class ScanConfig(ScanHeadsConfig):
    selflabel_epochs: int = 200
    selflabel_batch_size: int = 1000
    selflabel_lr: float = 1e-4
    selflabel_weight_decay: float = 1e-4
    confidence_threshold: float = described(0.99, "self-labelling trains on the images whose cluster "
                                                  "probability is above this")


@register_method
class Scan(ScanHeadsMethod):
    """SCAN: SimCLR pretext, neighbour mining, the SCAN clustering loss, then self-labelling."""

    name = "scan"
    paper = "Van Gansbeke et al., SCAN: Learning to Classify Images without Labels, ECCV 2020"
    Config = ScanConfig
    stages = (
        SIMCLR_STAGE,
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
        # minutes on a CPU: the small ConvNet at any size and colour, Adam instead of SGD's long schedule, milder
        # crops, and a SCAN step (and self-labelling) whose heads train alone on the frozen backbone's features,
        # long and at a high learning rate since no image passes through the network. Mean ACC over seeds 0–2 on
        # digits, digits28 and 2k CIFAR-10 images (pixel K-means: 0.79, 0.58, 0.21): heads on the pretext's crops
        # through the whole network (30 epochs at 1e-3) 0.95, 0.58, 0.29; on the frozen features 0.95, 0.72, 0.30
        "fast": {"backbone": "convnet", "pretext_epochs": 30, "pretext_batch_size": 256,
                 "pretext_optimizer": "adam", "pretext_lr": 1e-3, "pretext_weight_decay": 1e-5, "temperature": 0.2,
                 "crop_min_scale": 0.5, "cluster_epochs": 200, "cluster_lr": 1e-2, "n_heads": 3,
                 "head_views": "frozen", "selflabel_epochs": 10, "selflabel_batch_size": 500},
    }

    def _pretext(self, data: torch.Tensor, geometry: ImageGeometry, backbone_name: str, source: str,
                 context: FitContext, generator: torch.Generator) -> tuple[nn.Module, nn.Module]:
        """SimCLR, or a reused run's: neighbours are mined in its projection, the heads sit on its backbone."""
        contrastive = simclr_pretext(self.config, data, geometry, backbone_name, source, context, generator)
        return contrastive, contrastive.backbone

    def _after_heads(self, model: ClusterModel, data: torch.Tensor, geometry: ImageGeometry | FeatureGeometry,
                     context: FitContext, generator: torch.Generator) -> None:
        """Self-labelling (§2.3): confident predictions on the un-augmented images (the official code's validation
        transform, in training mode like there) train their strong views."""
        cfg = self.config
        plain, strong = geometry.augment("eval"), ScanHeadSettings.of(cfg).augment(geometry)
        forward = context.speedups.compiled(model)  # one head left since the last stage: a graph of its own
        optimizer = make_optimizer("adam", model.parameters(), cfg.selflabel_lr, cfg.selflabel_weight_decay,
                                   fused=context.speedups.fused_optimizer)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            batch = data[indices]
            with torch.no_grad():
                confidence, pseudo = F.softmax(forward(plain(batch))[0], dim=1).max(dim=1)
            confident = confidence > cfg.confidence_threshold
            logits = forward(strong(batch))[0]
            return {"cross_entropy": class_balanced_cross_entropy(logits, pseudo, cfg.n_clusters, mask=confident),
                    "confident_share": confident.float().mean()}

        train_epochs(context, "selflabel", model, optimizer, step, epochs=cfg.selflabel_epochs,
                     n_samples=len(data), batch_size=cfg.selflabel_batch_size, generator=generator,
                     losses=("cross_entropy", "confident_share"), lr=cfg.selflabel_lr,
                     clusters_of=self._clusters_by(model, data, geometry))


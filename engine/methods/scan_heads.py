"""The SCAN step (Van Gansbeke et al. 2020, §2.2), shared by the methods that end with it (SCAN, smc): heads trained
with the SCAN loss on mined neighbours, and the part of a method that assigns images with those heads, on pixels or
on a frozen pretrained backbone's features (``pretext_from=pretrained:NAME``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.imageset import ImageSet
from ..nn import ClusterModel, scan_loss
from .base import DeepMethod, MethodConfig, Transform, start_fit
from .settings import one_of
from .context import FitContext
from .feature_source import check_feature_source, pretrained_features, pretrained_name
from .simclr import PretextConfig
from .training import (ImageGeometry, Position, embed, make_optimizer, mine_stage, seed_everything, to_device,
                       train_epochs)


class FrozenFeatures(nn.Module):
    """The "backbone" of heads trained on precomputed features: passes them through, ``out_dim`` wide."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FeatureGeometry:
    """Stands in for :class:`ImageGeometry` when the inputs are frozen features: every augmentation is the
    identity (there are no pixels to crop or colour)."""

    def augment(self, kind: str, **options) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: x


SCAN_LOSS_EQUATION = (r"\Lambda = -\frac{1}{|D|}\sum_{X}\sum_{k \in \mathcal{N}_X} \log \langle \Phi(X), "
                      r"\Phi(k) \rangle + \lambda \sum_c \Phi'_c \log \Phi'_c")


@dataclass
class ScanHeadsConfig(PretextConfig):
    """A pretext (or a frozen pretrained backbone: ``pretext_from=pretrained:NAME``), neighbour mining and the SCAN
    step, at the official SCAN configs' values for CIFAR-10."""

    pretrained_weights: str | None = None  # state dict file for pretext_from=pretrained:NAME (train --weights)
    download_weights: bool = False  # let the backbone's library download its weights (train --download-weights)
    n_neighbors: int = 20
    cluster_epochs: int = 100
    cluster_batch_size: int = 128
    cluster_lr: float = 1e-4
    cluster_weight_decay: float = 1e-4
    entropy_weight: float = 5.0
    n_heads: int = 10
    # what the heads (and self-labelling) train on: the paper's strong augmentation (RandAugment + Cutout) through
    # the whole network, the pretext's own crops (``simclr``, at ``crop_min_scale``) through the whole network, or
    # (``frozen``) the frozen pretext backbone's features of the un-augmented images, heads only
    head_views: str = one_of("strong", ("strong", "simclr", "frozen"), help=(
        "what the heads train on: strong (the paper's RandAugment + Cutout views, through the whole network), "
        "simclr (the pretext's crops, whole network), frozen (the frozen backbone's features, heads only)"))

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        check_feature_source(self.pretext_from, self.pretrained_weights, self.download_weights)


@dataclass(frozen=True)
class ScanHeadSettings:
    """The SCAN step's hyper-parameters; methods that run it name their config fields alike."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    entropy_weight: float
    views: str
    crop_min_scale: float

    @classmethod
    def of(cls, config: MethodConfig) -> "ScanHeadSettings":
        return cls(config.cluster_epochs, config.cluster_batch_size, config.cluster_lr, config.cluster_weight_decay,
                   config.entropy_weight, config.head_views, config.crop_min_scale)

    def augment(self, geometry: "ImageGeometry | FeatureGeometry") -> Callable[[torch.Tensor], torch.Tensor]:
        """The augmentation the heads train on (``views``); with ``frozen`` they see no image, and a method that
        still needs a strong view of the images (smc's mining) gets the pretext's crops."""
        if self.views in ("simclr", "frozen"):
            return geometry.augment("simclr", crop_scale=(self.crop_min_scale, 1.0))
        return geometry.augment("strong")


def train_scan_heads(model: ClusterModel, images_u8: torch.Tensor, neighbors: torch.Tensor, geometry: ImageGeometry,
                     settings: ScanHeadSettings, context: FitContext, generator: torch.Generator,
                     stage: str = "cluster") -> None:
    """The ``cluster`` stage: train every head of ``model`` with the SCAN loss (eq. 2) on augmented images (the
    strong augmentation by default: ``settings.views``) and a random one of their mined ``neighbors``, then keep
    the head with the lowest loss over the last epoch. Records ``total``, ``consistency`` and ``entropy`` (means
    over heads)."""
    augment = settings.augment(geometry)
    forward = context.speedups.compiled(model)
    optimizer = make_optimizer("adam", model.parameters(), settings.lr, settings.weight_decay,
                               fused=context.speedups.fused_optimizer)
    head_losses = torch.zeros(model.heads.n_heads, device=context.device)  # over the epoch so far

    def step(indices: torch.Tensor, at: Position) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pick = to_device(torch.randint(neighbors.shape[1], (len(indices),), generator=generator), context.device)
        anchor_logits = forward(augment(images_u8[indices]))
        neighbor_logits = forward(augment(images_u8[neighbors[indices, pick]]))
        terms = torch.stack([torch.stack(scan_loss(a, n, settings.entropy_weight))
                             for a, n in zip(anchor_logits, neighbor_logits)])  # heads × 3
        head_losses.add_(terms[:, 0].detach())
        # every head is trained on its own loss (their sum); the records are means over heads
        return terms[:, 0].sum(), dict(zip(("total", "consistency", "entropy"), terms.mean(0)))

    evaluate = geometry.augment("eval")

    def clusters_of(indices: torch.Tensor) -> torch.Tensor:  # by the head that would be kept now
        return embed(model, images_u8[indices], evaluate)[int(head_losses.argmin())].argmax(1)

    train_epochs(context, stage, model, optimizer, step, epochs=settings.epochs, n_samples=len(images_u8),
                 batch_size=settings.batch_size, generator=generator, losses=("total", "consistency", "entropy"),
                 lr=settings.lr, before_epoch=lambda epoch: head_losses.zero_(),
                 checkpointed={"head_losses": head_losses}, clusters_of=clusters_of)
    best_head = int(head_losses.argmin())
    model.heads.keep_only(best_head)
    context.info(stage, f"kept head {best_head} of {len(head_losses)} (lowest SCAN loss)")


class ScanHeadsMethod(DeepMethod):
    """A method whose network ends in SCAN heads (:class:`ClusterModel`): a pretext trained on the images
    (:meth:`_pretext`) or a frozen pretrained backbone's features, neighbours mined in that embedding
    (:meth:`_mine`), the SCAN step, and what the method does after it (:meth:`_after_heads`). The kept head's
    softmax is the assignment. On pretrained features the network reads those features, so new images are
    embedded by the same backbone (from the feature cache when they were embedded before)."""

    config: ScanHeadsConfig

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        pretrained = pretrained_name(cfg.pretext_from)
        if pretrained is None:
            generator, geometry, backbone_name, data = start_fit(images, cfg, context)
            encoder, backbone = self._pretext(data, geometry, backbone_name, images.source, context, generator)
        else:  # no pixels to augment: every view of a sample is its features
            generator = seed_everything(cfg.seed)
            data = pretrained_features(images, pretrained, cfg.pretrained_weights, cfg.download_weights, context)
            geometry, encoder, backbone = FeatureGeometry(), nn.Identity(), FrozenFeatures(data.shape[1])
        neighbors = self._mine(encoder, data, geometry, images, context)
        if cfg.head_views == "frozen" and pretrained is None:
            model, features = self._heads_on_frozen_backbone(backbone, data, geometry, neighbors, context,
                                                             generator)
        else:
            model = ClusterModel(backbone, cfg.n_clusters, cfg.n_heads).to(context.device)
            train_scan_heads(model, data, neighbors, geometry, ScanHeadSettings.of(cfg), context, generator)
            self._after_heads(model, data, geometry, context, generator)
            features = embed(model.backbone, data, geometry.augment("eval"))
        self._finish(model, geometry, data, features, neighbors)

    def _heads_on_frozen_backbone(self, backbone: nn.Module, data: torch.Tensor, geometry: ImageGeometry,
                                  neighbors: torch.Tensor, context: FitContext,
                                  generator: torch.Generator) -> tuple[ClusterModel, torch.Tensor]:
        """``head_views='frozen'``: the SCAN step and :meth:`_after_heads` train the heads alone on the frozen
        backbone's features of the un-augmented images, as on a pretrained backbone's; the heads are then put
        back on the backbone, so new images are assigned from their pixels; returns that model and the features.
        (The official configs freeze the backbone too, ``update_cluster_head_only``, for ImageNet, but still feed
        it augmented images.) Without image passes the step costs little, so it can run many more epochs at a
        higher learning rate."""
        cfg = self.config
        features = embed(backbone, data, geometry.augment("eval")).float()
        on_features = ClusterModel(FrozenFeatures(features.shape[1]), cfg.n_clusters, cfg.n_heads).to(context.device)
        train_scan_heads(on_features, features, neighbors, FeatureGeometry(), ScanHeadSettings.of(cfg), context,
                         generator)
        self._after_heads(on_features, features, FeatureGeometry(), context, generator)
        model = ClusterModel(backbone.requires_grad_(False), cfg.n_clusters).to(context.device)
        model.heads = on_features.heads
        return model, features

    def _pretext(self, data: torch.Tensor, geometry: ImageGeometry, backbone_name: str, source: str,
                 context: FitContext, generator: torch.Generator) -> tuple[nn.Module, nn.Module]:
        """Train (or reuse) the pretext on the uint8 images ``data``; returns the encoder neighbours are mined
        with and the backbone the heads are put on."""
        raise NotImplementedError

    def _mine(self, encoder: nn.Module, data: torch.Tensor, geometry: ImageGeometry | FeatureGeometry,
              images: ImageSet, context: FitContext) -> torch.Tensor:
        """The ``mine`` stage: each sample's nearest neighbours by cosine in the encoder's embedding (§2.2)."""
        return mine_stage(context, lambda: embed(encoder, data, geometry.augment("eval")), self.config.n_neighbors,
                          images.labels)

    def _after_heads(self, model: ClusterModel, data: torch.Tensor, geometry: ImageGeometry | FeatureGeometry,
                     context: FitContext, generator: torch.Generator) -> None:
        """A stage after the SCAN step, on the model with its kept head; none by default."""

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        return F.softmax(embed(model, inputs, evaluate)[0], dim=1)

    def _network_inputs(self, images: ImageSet) -> torch.Tensor:
        if not isinstance(self.geometry_, FeatureGeometry):
            return super()._network_inputs(images)
        cfg = self.config
        device = next(self.model_.parameters()).device
        return pretrained_features(images, pretrained_name(cfg.pretext_from), cfg.pretrained_weights,
                                   cfg.download_weights, FitContext(device))

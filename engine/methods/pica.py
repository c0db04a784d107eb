"""PICA: Deep Semantic Clustering by Partition Confidence Maximisation (Huang, Gong & Zhu, CVPR 2020; official code
Raymond-sci/PICA).

One network, one stage, trained end to end. The network ends in softmax heads; head h maps a batch of N images to
assignment probabilities Q (N×K). PICA looks at Q by *columns*: column q_k is cluster k's assignment vector over the
batch. For the same batch seen twice — an "original" view and a perturbed view Q' — it builds

- the partition uncertainty index (PUI), the K×K matrix of cosine similarities between the views' columns,
  PUI(i, j) = ⟨q_i, q'_j⟩ / (‖q_i‖ ‖q'_j‖): a confident partition has PUI ≈ identity (each cluster is the same set
  of images in both views and shares none with the others);
- the PUI loss, a cross-entropy that each row of PUI picks its own column, with a softmax over the K entries of the
  row:  L_PUI = −1/K Σ_k log( exp PUI(k,k) / Σ_j exp PUI(k,j) );
- a balance term against the trivial partition, the negative entropy of the cluster-size distribution shifted to be
  ≥ 0:  H_ne = log K + Σ_k P(q_k) log P(q_k),  P(q_k) = ‖q_k‖₁ / ‖Q‖₁ (on the original view, as the official
  code);
- objective L = L_PUI + λ·H_ne with λ = 2.
Equation numbers are left out: the terms are named as in the paper.

Over-clustering: a second head with more clusters (70 in the official configs) shares the backbone. As in the
official code the heads *alternate*: each epoch first runs one pass over the data training the over-clustering
head's loss, then one pass training the main head's; evaluation uses the main head.

Views, as in the official code: the "original" view is a mild random crop (the official resize-to-40-then-crop-32;
here the weak augmentation: a shift of up to 1/8 of the side, plus a flip where flips are allowed), and each
original is paired with ``n_repeats`` = 3 perturbed views (random resized crop of 20–100 % of the area, colour
jitter, random grayscale, flip); the original's probabilities are repeated to match.

Sobel (``sobel=True``, official): the network sees the two Sobel edge maps of the image's channel mean instead of
its colours, so colour cannot serve as a shortcut to a partition. We apply it as the official code does, after
normalisation, as a fixed (untrained) first layer. On gray images there is no colour shortcut to remove, so the
``fast`` preset for digits turns it off and feeds the gray digit itself; with it on, our short digits runs were no
better (ACC 0.75 / 0.92 / 0.70 for seeds 0 / 1 / 2 after 12 epochs, the same spread as without).

Recorded losses (stage ``train``): ``total`` (L of the main head), ``partition_uncertainty`` (its L_PUI),
``entropy`` (the entropy of its cluster-size distribution, log K − H_ne; larger is better) and
``overcluster_total`` (L of the over-clustering head).

Defaults (``paper`` preset): the official code's defaults and CIFAR configs — 200 epochs, batch 256, Adam lr 1e-4
held constant, no weight decay, λ = 2, 70-way over-clustering head, 3 perturbed views per image, Sobel input.
Train and evaluate on all images (CIFAR-10 train+test), as the paper does.

``fast`` preset (digits, about a CPU minute): 30 epochs (each two passes, one per head) of batch 64 at Adam lr 1e-3
decayed to 0 on a cosine (``lr_schedule="cosine"``, so the partition settles before a short run stops), a 20-way
over-clustering head and one perturbed view per image (1,797 images), crops of 50–100 %, no Sobel, and a random
stroke width in the views of gray images of 16 px or more (``stroke``, ours:
:func:`engine.data.augment.random_stroke_width`). Mean ACC over seeds 0–2 (one CPU thread each) against pixel
K-means of the same seeds: digits 0.836 (0.899 / 0.768 / 0.840; K-means 0.787), digits28 0.618 (0.564 / 0.609 /
0.682; K-means 0.577), 2,000 CIFAR-10 images 0.281 (0.280 / 0.277 / 0.285; K-means 0.211)
(``benchmarks/presets-cc-pica-*``, ``benchmarks/presets-pica-30-epochs-cifar10-2k``). The earlier preset, 14 epochs
without the stroke width, gave digits28 0.459; with the stroke width alone 0.522 / 0.551 (seeds 0 / 1); 30 epochs at
lr 3e-3 gave digits28 0.639 but digits only 0.799. On digits the 14-epoch preset reached ACC 0.863 / 0.814 / 0.816 /
0.693 / 0.774 / 0.782 / 0.833 / 0.740 for seeds 0–7 against K-means' 0.775. Short PICA runs from scratch are
seed-sensitive (the paper itself reports its best CIFAR-10 run, 69.6, beside a mean of 64.5): other schedules we
tried (10–28 epochs, batch 64–256, lr 5e-4–3e-3, 3 perturbed views, a 70-way head) each left some seeds between 0.65
and 0.78 on digits, with classes such as 3/5/9 or 1/8 mixed.

Readings and departures (ours):
- Backbone: the official network is a ResNet-34 (3×3 stem with a 2×2 max-pool) on Sobel input. ``backbone="auto"``
  gives ResNet-18 with the CIFAR stem for colour images and the small ConvNet for gray ones ≤ 28 px;
  ``backbone="resnet34"`` gives the paper's depth.
- Perturbation: the official colour jitter is (0.4, 0.4, 0.4, hue 0.4) always applied; ours is the shared SimCLR
  jitter at strength 0.5 — (0.4, 0.4, 0.4, hue 0.1) — applied always (``jitter_p`` 1). Evaluation uses the
  un-augmented image at its own size (official: resize to 40 and centre-crop 32).
- The two views go through the network in separate forward passes, as in the official code.
- Heads are Linear + softmax on the backbone features, as in the official code, but keep PyTorch's default
  initialisation: the official N(0, 0.01) weights start every image near the uniform assignment, which in our
  short digits runs only slowed convergence (seed 1: ACC 0.69 after 12 epochs). ``features_`` are the backbone
  features (after the Sobel layer when it is on).
- One Adam optimiser holds every parameter; a head that is not being trained gets no gradient and is not updated
  during the other head's pass.

Collapse: H_ne keeps the batch's cluster sizes near uniform, and L_PUI is lowest when the K columns are
orthogonal, which a partition that puts every image in one cluster cannot be; base.fit still refuses a result with
one cluster over 90 % of the data, and a NaN/Inf loss stops the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn import build_backbone, entropy
from .base import BackboneConfig, DeepMethod, Stage, Transform, register_method, start_fit
from .context import FitContext
from .settings import described
from .training import ImageGeometry, Position, embed, make_optimizer, train_epochs

STAGE = "train"
SOBEL_CHANNELS = 2


class SobelFilter(nn.Module):
    """Fixed first layer: the channel mean of the image, then its horizontal and vertical Sobel responses
    (N×C×H×W → N×2×H×W)."""

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("kernels", torch.stack([gx, gx.t()]).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.mean(dim=1, keepdim=True), self.kernels, padding=1)


class PicaNet(nn.Module):
    """(Sobel) → backbone → softmax heads; ``forward(x, head)`` gives head ``head``'s probabilities (default: the
    last, main head)."""

    def __init__(self, backbone: nn.Module, head_sizes: list[int], sobel: bool) -> None:
        super().__init__()
        self.sobel = SobelFilter() if sobel else nn.Identity()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(backbone.out_dim, k), nn.Softmax(dim=1))
                                   for k in head_sizes)

    def forward(self, x: torch.Tensor, head: int = -1) -> torch.Tensor:
        return self.heads[head](self.backbone(self.sobel(x)))

    def feature_extractor(self) -> nn.Module:
        """(Sobel) → backbone as one module (for ``embed``)."""
        return nn.Sequential(self.sobel, self.backbone)


def partition_uncertainty_index(probs_a: torch.Tensor, probs_b: torch.Tensor) -> torch.Tensor:
    """The K×K PUI matrix: cosine similarity between column i of ``probs_a`` and column j of ``probs_b``."""
    return F.normalize(probs_a.t(), dim=1) @ F.normalize(probs_b, dim=0)


def pica_loss(probs_a: torch.Tensor, probs_b: torch.Tensor, entropy_weight: float = 2.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PICA's objective for one head: (total, PUI cross-entropy, entropy of the cluster sizes).

    ``probs_a``: N×K probabilities of the original views (its cluster sizes feed the balance term); ``probs_b``:
    N×K probabilities of their perturbed views, row i pairing with row i. total = L_PUI + λ·(log K − entropy).

    Examples:
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two images, one per cluster: PUI = identity
        >>> [round(float(t), 4) for t in pica_loss(q, q)]  # CE = log(1 + e^-1); sizes balanced
        [0.3133, 0.3133, 0.6931]
        >>> round(float(pica_loss(q, q.flip(0))[1]), 4)  # the views swap clusters: CE = log(1 + e)
        1.3133
    """
    if probs_a.shape != probs_b.shape or probs_a.ndim != 2:
        raise ValueError(f"pica_loss expects two N×K probability tensors of one shape, got {tuple(probs_a.shape)} "
                         f"and {tuple(probs_b.shape)}")
    n_clusters = probs_a.shape[1]
    pui = partition_uncertainty_index(probs_a, probs_b)
    cross_entropy = F.cross_entropy(pui, torch.arange(n_clusters, device=pui.device))
    size_entropy = entropy(probs_a.sum(dim=0) / probs_a.sum())
    return cross_entropy + entropy_weight * (math.log(n_clusters) - size_entropy), cross_entropy, size_entropy


@dataclass
class PicaConfig(BackboneConfig):
    sobel: bool = True
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # the paper's; "cosine" decays it to 0 over the run
    n_overclusters: int = described(70, "clusters of the auxiliary over-clustering head (at least K)")
    entropy_weight: float = 2.0  # λ
    n_repeats: int = described(3, "perturbed views of each image in a batch")
    crop_min_scale: float = 0.2

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        if self.n_overclusters < self.n_clusters:
            raise ConfigError(f"the over-clustering head needs at least K={self.n_clusters} clusters, got "
                              f"n_overclusters={self.n_overclusters}")


@register_method
class Pica(DeepMethod):
    """PICA: maximise the confidence of the whole partition (columns of the assignment matrix agree across views)."""

    name = "pica"
    paper = "Huang, Gong & Zhu, Deep Semantic Clustering by Partition Confidence Maximisation, CVPR 2020"
    Config = PicaConfig
    stages = (
        Stage(STAGE, ("total", "partition_uncertainty", "entropy", "overcluster_total"),
              "each cluster should hold the same images in an image's original and perturbed views, with all "
              "clusters in use; an over-clustering head trains in alternate passes",
              r"\mathcal{L} = -\frac{1}{K}\sum_{k=1}^{K} \log \frac{\exp \mathrm{PUI}(k,k)}"
              r"{\sum_{j} \exp \mathrm{PUI}(k,j)} + \lambda \Big(\log K + \sum_k P(q_k) \log P(q_k)\Big),"
              r"\quad \mathrm{PUI}(i,j) = \frac{q_i^\top q'_j}{\lVert q_i \rVert \lVert q'_j \rVert}"),
    )
    key_settings = ("epochs", "batch_size", "lr", "entropy_weight", "n_overclusters", "n_repeats", "sobel",
                    "crop_min_scale", "backbone")
    presets = {
        "paper": {},
        # about a CPU minute on digits: a short schedule needs more, larger steps (batch 64, lr 1e-3) and a cosine
        # decay so the partition settles; gray digits have no colour for Sobel to hide and keep their identity only
        # under milder crops; one perturbed copy and a 20-way over-clustering head fit 1,797 images and the time.
        # Gray glyphs of 16 px+ get a random stroke width; with it 30 epochs rather than 14 (digits28 0.459 →
        # 0.618, digits 0.831 → 0.836, 3 seeds). The small ConvNet (what `auto` picks for gray images up to 28 px
        # anyway) also on colour images: cifar2k mean ACC 0.281 (3 seeds; pixel K-means 0.211) in about 4 min a
        # run on the 2-core CPU, where ResNet-18 takes hours
        "fast": {"epochs": 30, "batch_size": 64, "lr": 1e-3, "lr_schedule": "cosine", "sobel": False,
                 "n_overclusters": 20, "n_repeats": 1, "crop_min_scale": 0.5, "stroke": True, "backbone": "convnet"},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator, geometry, backbone_name, data = start_fit(images, cfg, context)
        channels = SOBEL_CHANNELS if cfg.sobel else geometry.channels
        model = PicaNet(build_backbone(backbone_name, geometry.size, channels),
                        [cfg.n_overclusters, cfg.n_clusters], cfg.sobel).to(context.device)
        self._train(model, data, geometry, context, generator)

        self._finish(model, geometry, data, embed(model.feature_extractor(), data, geometry.augment("eval")))

    def _train(self, model: PicaNet, data: torch.Tensor, geometry: ImageGeometry, context: FitContext,
               generator: torch.Generator) -> None:
        cfg = self.config
        forward = context.speedups.compiled(model)
        optimizer = make_optimizer("adam", model.parameters(), cfg.lr, cfg.weight_decay,
                                   fused=context.speedups.fused_optimizer)
        original = geometry.augment("weak")
        perturb = geometry.augment("simclr", crop_scale=(cfg.crop_min_scale, 1.0), jitter_p=1.0)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            # one pass per head: the over-clustering head first, then the main head (official order)
            batch = data[indices]
            probs_original = forward(original(batch), at.pass_)
            probs_perturbed = forward(perturb(batch.repeat(cfg.n_repeats, 1, 1, 1)), at.pass_)
            total, partition_uncertainty, size_entropy = pica_loss(probs_original.repeat(cfg.n_repeats, 1),
                                                                   probs_perturbed, cfg.entropy_weight)
            if at.pass_ < len(model.heads) - 1:
                return {"overcluster_total": total}
            return {"total": total, "partition_uncertainty": partition_uncertainty, "entropy": size_entropy}

        train_epochs(context, STAGE, model, optimizer, step, epochs=cfg.epochs, n_samples=len(data),
                     batch_size=cfg.batch_size, generator=generator, losses=self.stages[0].losses, lr=cfg.lr,
                     lr_schedule=cfg.lr_schedule, passes=len(model.heads),
                     clusters_of=self._clusters_by(model, data, geometry))

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        return embed(model, inputs, evaluate)

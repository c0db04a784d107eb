"""SPICE: Semantic Pseudo-labeling for Image Clustering (Niu, Shan, Wang; IEEE Transactions on Image Processing
2022; arXiv 2103.09382, 2021; official code niuchuangnn/SPICE).

Stages:
1. ``pretext`` — MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder (backbone + Linear–ReLU–Linear head)
   and a key encoder that is its EMA (m = 0.999); the InfoNCE loss of MoCo (eq. 1),
   −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_queue exp(q·k₋/τ)), τ = 0.2, negatives from a queue of past keys.
2. ``self`` — SPICE-Self (§3.2 of the paper, the prototype pseudo-labelling of ``sem_head.select_samples`` in the
   official code): the backbone is frozen; ``n_heads`` cluster heads (MLP D→D→K) are trained. For each batch of
   ``self_batch_size`` images, each head predicts cluster probabilities on weak views; for every cluster c the
   ``center_ratio``·B/K images with the highest p_c are averaged (in the L2-normalised pretext embedding) into a
   prototype; the B/K images most similar to prototype c are labelled c; the head is trained with cross-entropy
   on strongly augmented views of those images (``self_repeats`` passes over them in mini-batches of
   ``self_train_batch_size``). The head whose predictions agree best with its own prototype labels on the whole
   dataset (lowest cross-entropy) is kept.
3. ``semi`` — SPICE-Semi (§3.3): reliable pseudo-labels by local consistency — an image is reliable when at least
   ``reliable_consistency`` of its ``reliable_neighbors`` nearest neighbours (pretext embedding) share its
   predicted cluster and its confidence exceeds ``reliable_confidence``; the reliable set is balanced to the same
   count per cluster. A network is then trained FixMatch-style (Sohn et al. 2020): cross-entropy on weak views of
   the reliable images, plus, on unlabelled weak/strong pairs of all images, cross-entropy of the strong view
   towards the weak view's hard prediction where its confidence ≥ 0.95. An EMA of the weights (0.999) gives the
   final assignments, as in FixMatch.

Defaults (``paper`` preset) are the official CIFAR-10 settings: MoCo v2 SGD lr 0.015, momentum 0.9, wd 1e-4,
cosine, batch 128, 1000 epochs, 128-d head, queue 65 536, crops of 20–100 %; SPICE-Self: 10 heads, Adam lr 0.005,
no weight decay, 100 epochs, batches of 5000 images, training mini-batches of 128, 8 passes per batch, prototype
share 0.5, strong views = SCAN's RandAugment with 4 ops + Cutout; local consistency over 100 neighbours with
ratio 0.99 and confidence 0.99; SPICE-Semi: FixMatch with 64 labelled + 7×64 unlabelled images per step,
SGD lr 0.03 with FixMatch's cos(7πk/16K) decay, wd 5e-4, 2²⁰ steps, threshold 0.95, λ_u = 1, network trained
from scratch (the official code builds a fresh WideResNet; here the dataset's backbone).

Readings and assumptions:
- MoCo's shuffle-BN needs several GPUs; here the key encoder simply runs in train mode on its own batch.
- The official head ends in a softmax and its ``nn.CrossEntropyLoss`` is applied to those probabilities, so the
  loss is −log softmax(p)_y with p = softmax(z) (a softmax applied twice), not the plain cross-entropy the paper
  writes. We keep the official form (:func:`spice_self_loss`): it is bounded, which makes the heads far more
  robust to wrong pseudo-labels (on digits, fast preset, seed 2: heads at 0.79–0.92 ACC against 0.70–0.82 with
  the plain cross-entropy). Head selection uses the same loss, as the official code does.
- Prototype labels follow the official ``select_samples``: a sample may be picked by two prototypes (it then
  appears twice with two labels); the embedding is the frozen backbone's L2-normalised eval-view output.
- The official run keeps the (epoch, head) of lowest loss seen; we keep the lowest-loss head after the last epoch.
- Local consistency excludes the image itself from its neighbours (the official top-k includes it); within each
  cluster the most consistent, then most confident reliable images are kept (the official code draws them at
  random). A cluster with no reliable image contributes its most consistent members, so that no cluster vanishes
  from the labelled set (the official code would then keep no image at all).
- SGD here has no Nesterov momentum (FixMatch's has).
- A queue longer than the dataset minus one batch is shortened to that, since a longer one would hold old keys
  of the very images it is contrasted with (CIFAR-10: 60 000 images, batches of 128, 65 536 → 59 872 keys).
- ``semi_init='self'`` (used by the ``fast`` preset) starts SPICE-Semi from the pretext backbone and the kept
  SPICE-Self head instead of from scratch: minutes on a CPU cannot repeat 2²⁰ FixMatch steps.
- ``semi_steps=0`` stops after SPICE-Self and reports its assignments. So does a labelled set of fewer than
  ``min_reliable_per_cluster`` (2) images per cluster: the balancing above keeps as many images per cluster as
  the poorest cluster has, and one cluster with a single reliable image leaves 1 per cluster. On 2,000 CIFAR-10 images
  (``fast``, seed 2, one thread) SPICE-Semi trained on such a set of 10 images took ACC from SPICE-Self's 0.250
  to 0.204 (0.1845 in the two-thread bench).

Collapse: SPICE-Self cannot collapse by construction, since every cluster receives B/K pseudo-labels per batch;
SPICE-Semi's labelled set is balanced across clusters.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..clustering.neighbors import mine_neighbors
from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn import build_backbone, ema_update
from ..nn.memory_queue import queue_info_nce_loss
from ..nn.pseudo_labels import fixmatch_loss, prototype_pseudo_labels, reliable_pseudo_labels, spice_self_loss
from .base import DeepMethod, Stage, Transform, register_method, start_fit
from .context import FitContext
from .queue_pretext import QUEUE_INFO_NCE_EQUATION, QueueContrastModel, reuse_or_train_queue_pretext
from .settings import bounded, described, one_of
from .simclr import PretextConfig, pretext_identity
from .training import (BatchPlan, EndlessBatches, ImageGeometry, Position, embed, index_batches, make_optimizer,
                       steps_per_epoch, to_device, train_epochs)

SEMI_INITS = ("scratch", "self")


@dataclass
class SpiceConfig(PretextConfig):
    """MoCo v2's pretext schedule (the official SPICE configs), then SPICE-Self's and SPICE-Semi's settings."""

    not_step_batches: ClassVar[tuple[str, ...]] = ("self_batch_size",)  # images whose prototypes are made together

    pretext_epochs: int = 1000
    pretext_batch_size: int = 128
    pretext_lr: float = 0.015
    temperature: float = 0.2
    moco_momentum: float = bounded(0.999, low=0, high=1)
    queue_size: int = 65536
    n_heads: int = 10
    self_epochs: int = 100
    self_batch_size: int = described(5000, "images whose prototypes and pseudo-labels are computed together")
    self_train_batch_size: int = 128
    self_repeats: int = 8  # passes over a batch's pseudo-labelled images
    self_lr: float = 0.005
    center_ratio: float = bounded(0.5, low=0, high=1, help="the share of the B/K most confident images of a "
                                                             "cluster that make its prototype")
    n_strong_ops: int = 4  # RandAugment ops of the strong views SPICE-Self trains on
    reliable_neighbors: int = described(100, "an image is reliable when enough of this many of its nearest "
                                             "neighbours share its cluster (reliable_consistency)")
    reliable_consistency: float = bounded(0.99, low=0, high=1, help="the share of an image's reliable_neighbors "
                                                                     "that must share its cluster")
    reliable_confidence: float = bounded(0.99, low=0, high=1, help="a reliable image's cluster probability must "
                                                                    "be above this")
    # fewer reliable images per cluster than this after balancing: SPICE-Semi is skipped, SPICE-Self's clusters kept
    min_reliable_per_cluster: int = bounded(2, low=0)
    semi_init: str = one_of("scratch", SEMI_INITS, help=(  # official: scratch
        "where SPICE-Semi's network starts: scratch (new weights, as the official code), self (the pretext "
        "backbone with the kept SPICE-Self head)"))
    semi_steps: int = 2 ** 20
    semi_batch_size: int = described(64, "reliable (labelled) images per step of SPICE-Semi; it takes "
                                         "unlabeled_ratio times as many unlabelled ones")
    unlabeled_ratio: int = 7
    semi_lr: float = 0.03
    semi_weight_decay: float = 5e-4
    fixmatch_threshold: float = bounded(0.95, low=0, high=1, help="an unlabelled image trains SPICE-Semi when "
                                                                   "its weak view's confidence is above this")
    unlabeled_weight: float = 1.0
    semi_ema_momentum: float = bounded(0.999, low=0, high=1)

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        if self.semi_steps < 0:
            raise ConfigError(f"semi_steps must be ≥ 0, got {self.semi_steps}")
        for name in ("queue_size", "self_repeats", "unlabeled_ratio", "reliable_neighbors", "projection_dim",
                     "temperature"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if n_images is not None and self.reliable_neighbors >= n_images:
            raise ConfigError(f"reliable_neighbors={self.reliable_neighbors} needs more images than the "
                              f"dataset's {n_images}; lower it")


# -- networks ----------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Backbone + MoCo v2's MLP head (Linear–ReLU–Linear, no batch norm)."""

    def __init__(self, backbone: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class MoCo(QueueContrastModel):
    """The query encoder and its momentum (EMA) copy, the key encoder, which gets no gradients."""

    def __init__(self, backbone: nn.Module, projection_dim: int, momentum: float) -> None:
        super().__init__()
        self.query = Encoder(backbone, projection_dim)
        self.key = copy.deepcopy(self.query).requires_grad_(False)
        self.momentum = momentum

    def contrast(self, view_a: torch.Tensor, view_b: torch.Tensor, negatives: torch.Tensor, temperature: float,
                 step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MoCo's step: the key encoder moves towards the query encoder (constant m), encodes view b as the
        positive key of view a's query; InfoNCE against the queue (eq. 1)."""
        query = self.query(view_a)
        with torch.no_grad():
            ema_update(self.key, self.query, self.momentum)
            key = self.key(view_b)
        return queue_info_nce_loss(query, key, negatives, temperature), key


class ClusterMLPHeads(nn.Module):
    """``n_heads`` independent cluster heads, each SPICE's MLP Linear(D, D)–ReLU–Linear(D, K), held as stacked
    weights so that all heads run in one batched matrix product.

    ``forward`` takes features N×D (shared by the heads) or n_heads×N×D (one set per head) and gives
    n_heads×N×K logits.
    """

    def __init__(self, in_dim: int, n_clusters: int, n_heads: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_dim)  # nn.Linear's default initialisation range (fan-in D for both layers)

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.hidden_weight, self.hidden_bias = uniform(n_heads, in_dim, in_dim), uniform(n_heads, 1, in_dim)
        self.out_weight, self.out_bias = uniform(n_heads, in_dim, n_clusters), uniform(n_heads, 1, n_clusters)

    @property
    def n_heads(self) -> int:
        return self.hidden_weight.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 2:
            features = features.expand(self.n_heads, *features.shape)
        hidden = F.relu(torch.baddbmm(self.hidden_bias, features, self.hidden_weight))
        return torch.baddbmm(self.out_bias, hidden, self.out_weight)

    def keep_only(self, head_index: int) -> None:
        """Drop every head but one (SPICE keeps the head with the lowest loss)."""
        for name in ("hidden_weight", "hidden_bias", "out_weight", "out_bias"):
            kept = getattr(self, name).data[head_index:head_index + 1].clone()
            setattr(self, name, nn.Parameter(kept))


class Classifier(nn.Module):
    """Backbone + one cluster head: the network SPICE-Semi trains and predicts with (N×K logits)."""

    def __init__(self, backbone: nn.Module, head: ClusterMLPHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))[0]


# -- the method --------------------------------------------------------------------------------------------------

@register_method
class Spice(DeepMethod):
    """SPICE: MoCo v2 pretext, prototype pseudo-labels for frozen-backbone cluster heads, then FixMatch on the
    locally consistent labels."""

    name = "spice"
    paper = "Niu, Shan, Wang, SPICE: Semantic Pseudo-labeling for Image Clustering, IEEE TIP 2022"
    Config = SpiceConfig
    stages = (
        Stage("pretext", ("info_nce",), "MoCo v2: a query should match its momentum-encoded key among queued keys",
              QUEUE_INFO_NCE_EQUATION),
        Stage("self", ("cross_entropy",),
              "frozen backbone; cluster heads learn prototype pseudo-labels on strong views",
              r"\mathcal{L} = \frac{1}{|S|}\sum_{(i,c) \in S} \mathrm{CE}\big(h(\mathrm{strong}(x_i)), c\big),"
              r"\quad S = \{(i, c) : i \in \operatorname{top-}\tfrac{B}{K}\ \cos(f(x_i), \bar f_c)\}"),
        Stage("semi", ("total", "labeled_ce", "unlabeled_ce", "confident_share", "reliable_share"),
              "locally consistent labels train the whole network FixMatch-style",
              r"\mathcal{L} = \frac{1}{B}\sum_{x \in \mathrm{reliable}} \mathrm{CE}(p(\mathrm{weak}(x)), \hat y)"
              r" + \frac{\lambda_u}{\mu B}\sum_{u} \mathbb{1}[\max p(\mathrm{weak}(u)) \ge 0.95]\,"
              r"\mathrm{CE}\big(p(\mathrm{strong}(u)), \arg\max p(\mathrm{weak}(u))\big)"),
    )
    key_settings = ("pretext_epochs", "pretext_batch_size", "pretext_lr", "temperature", "self_epochs",
                    "self_batch_size", "center_ratio", "reliable_neighbors", "reliable_confidence", "semi_steps",
                    "fixmatch_threshold")
    presets = {
        "paper": {},
        # minutes on a CPU: the small ConvNet at any size and colour, Adam and milder crops for the pretext, a
        # small queue for a small dataset and a faster key encoder (at m = 0.999 it keeps ~80 % of its random
        # start after the ~240 steps of 30 epochs on 2k images), milder strong views, looser reliability
        # thresholds (a 20-epoch head is rarely 99 % sure), and SPICE-Semi started from SPICE-Self for 150 short
        # steps. Gray glyphs of 16 px+ get a random stroke width in the pretext's views (only digits28 of the three
        # sets changes; one thread, seeds 0–3: 0.614 / 0.589 / 0.598 / 0.565 without, 0.754 / 0.661 / 0.710 / 0.727
        # with, K-means 0.605 / 0.553 / 0.573 / 0.571; benchmarks/presets-spice-smc-stroke-digits28)
        "fast": {"backbone": "convnet", "stroke": True, "moco_momentum": 0.99, "pretext_epochs": 30,
                 "pretext_batch_size": 256, "pretext_optimizer": "adam", "pretext_lr": 1e-3,
                 "pretext_weight_decay": 1e-5, "queue_size": 1024, "crop_min_scale": 0.5, "self_epochs": 20,
                 "self_repeats": 4, "n_strong_ops": 2, "reliable_neighbors": 20, "reliable_consistency": 0.9,
                 "reliable_confidence": 0.9, "semi_init": "self", "semi_steps": 150, "semi_batch_size": 32,
                 "unlabeled_ratio": 3, "semi_ema_momentum": 0.9},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator, geometry, backbone_name, data = start_fit(images, cfg, context)
        identity = {**pretext_identity(images.source, geometry, backbone_name), "pretext": "moco_v2",
                    "projection_dim": cfg.projection_dim}
        moco = MoCo(build_backbone(backbone_name, geometry.size, geometry.channels), cfg.projection_dim,
                    cfg.moco_momentum).to(context.device)
        reuse_or_train_queue_pretext(moco, data, geometry, cfg, context, generator, identity)
        backbone = moco.query.backbone.requires_grad_(False).eval()

        evaluate = geometry.augment("eval")
        embeddings = F.normalize(embed(backbone, data, evaluate), dim=1)
        heads = self._self(backbone, embeddings, data, geometry, context, generator)
        model = Classifier(backbone, heads)
        if cfg.semi_steps > 0:
            model = self._semi(model, backbone_name, embeddings, data, geometry, context, generator)

        self._finish(model, geometry, data, embed(model.backbone, data, evaluate))

    # -- stage 2 -------------------------------------------------------------------------------------------------
    def _self(self, backbone: nn.Module, embeddings: torch.Tensor, data: torch.Tensor, geometry: ImageGeometry,
              context: FitContext, generator: torch.Generator) -> ClusterMLPHeads:
        cfg = self.config
        heads = ClusterMLPHeads(backbone.out_dim, cfg.n_clusters, cfg.n_heads).to(context.device)
        weak = geometry.augment("weak")
        strong = geometry.augment("strong", n_ops=cfg.n_strong_ops)
        optimizer = make_optimizer("adam", heads.parameters(), cfg.self_lr, 0.0, fused=context.speedups.fused_optimizer)
        train_heads = context.speedups.compiled(heads)
        n = len(data)
        batch = min(cfg.self_batch_size, n)
        n_labelled = cfg.n_clusters * (batch // cfg.n_clusters)
        train_batch = min(cfg.self_train_batch_size, n_labelled)

        def pseudo_labelled_batches(epoch: int):
            """Per batch of ``batch`` images: every head's prototype pseudo-labels (§3.2), then ``self_repeats``
            shuffled passes over them in mini-batches of (strong-view features, labels), heads × b each."""
            for idx in index_batches(n, batch, generator, context.device):
                with torch.no_grad():
                    probs = F.softmax(heads(embed(backbone, data[idx], weak)), dim=-1)  # heads×B×K
                    strong_features = embed(backbone, data[idx], strong)
                picked = [prototype_pseudo_labels(embeddings[idx], p, cfg.center_ratio) for p in probs]
                chosen = torch.stack([c for c, _ in picked])  # heads×M, positions within the batch
                targets = torch.stack([t for _, t in picked])
                for _ in range(cfg.self_repeats):
                    order = to_device(torch.randperm(n_labelled, generator=generator), context.device)
                    for start in range(0, n_labelled - train_batch + 1, train_batch):
                        rows = order[start:start + train_batch]
                        yield strong_features[chosen[:, rows]], targets[:, rows]

        def step(batch: tuple[torch.Tensor, torch.Tensor], at: Position) -> dict[str, torch.Tensor]:
            features, targets = batch
            return {"cross_entropy": spice_self_loss(train_heads(features).flatten(0, 1), targets.flatten())}

        plan = BatchPlan(steps_per_epoch(n, batch) * cfg.self_repeats * (n_labelled // train_batch),
                         pseudo_labelled_batches)
        train_epochs(context, "self", heads, optimizer, step, epochs=cfg.self_epochs, batches=plan,
                     generator=generator, losses=("cross_entropy",), lr=cfg.self_lr)

        with torch.no_grad():
            logits = heads(embed(backbone, data, geometry.augment("eval")))
            head_losses = []
            for head_logits in logits:
                rows, labels = prototype_pseudo_labels(embeddings, F.softmax(head_logits, dim=1), cfg.center_ratio)
                head_losses.append(float(spice_self_loss(head_logits[rows], labels)))
        best = int(np.argmin(head_losses))
        heads.keep_only(best)
        context.info("self", f"kept head {best} of {cfg.n_heads} (lowest loss against its prototype labels "
                             f"{head_losses[best]:.3f})")
        return heads

    # -- stage 3 -------------------------------------------------------------------------------------------------
    def _semi(self, self_model: Classifier, backbone_name: str, embeddings: torch.Tensor, data: torch.Tensor,
              geometry: ImageGeometry, context: FitContext, generator: torch.Generator) -> Classifier:
        cfg = self.config
        if cfg.semi_init == "self":
            model = copy.deepcopy(self_model).requires_grad_(True)
        else:
            fresh = build_backbone(backbone_name, geometry.size, geometry.channels)
            model = Classifier(fresh, ClusterMLPHeads(fresh.out_dim, cfg.n_clusters, 1)).to(context.device)
        ema = copy.deepcopy(model).requires_grad_(False)
        forward = context.speedups.compiled(model)
        optimizer = make_optimizer("sgd", model.parameters(), cfg.semi_lr, cfg.semi_weight_decay,
                                   fused=context.speedups.fused_optimizer)

        # the labelled set: SPICE-Self's reliable assignments (deterministic, so a resumed run recomputes it)
        with torch.no_grad():
            probs = F.softmax(embed(self_model, data, geometry.augment("eval")), dim=1)
        neighbors = torch.from_numpy(mine_neighbors(embeddings, cfg.reliable_neighbors)).long().to(context.device)
        self.neighbors_ = neighbors.cpu().numpy().astype(np.int32)
        labelled, labels = reliable_pseudo_labels(neighbors, probs, cfg.reliable_consistency, cfg.reliable_confidence)
        reliable_share = torch.tensor(len(labelled) / len(data), device=context.device)
        context.info("semi", f"{len(labelled)} reliable images ({len(labelled) // cfg.n_clusters} per cluster)")
        if len(labelled) < cfg.min_reliable_per_cluster * int(labels.unique().numel()):
            context.info("semi", f"fewer than {cfg.min_reliable_per_cluster} reliable images per cluster: "
                                 f"SPICE-Semi skipped, SPICE-Self's clusters kept")
            return self_model

        weak, strong = geometry.augment("weak"), geometry.augment("strong")
        n_unlabelled = cfg.semi_batch_size * cfg.unlabeled_ratio
        labelled_batches = EndlessBatches(len(labelled), cfg.semi_batch_size, generator, context.device)
        unlabelled_batches = EndlessBatches(len(data), n_unlabelled, generator, context.device)
        steps_between_records = max(1, steps_per_epoch(len(data), n_unlabelled))  # the stage's "epochs"

        def steps_of(epoch: int):
            first = epoch * steps_between_records
            for _ in range(first, min(first + steps_between_records, cfg.semi_steps)):
                yield next(labelled_batches), next(unlabelled_batches)

        def step(batch: tuple[torch.Tensor, torch.Tensor], at: Position) -> dict[str, torch.Tensor]:
            rows, unlabelled = batch[0], data[batch[1]]
            inputs = torch.cat([weak(data[labelled[rows]]), weak(unlabelled), strong(unlabelled)])
            n_l, n_u = len(rows), len(unlabelled)
            logits = forward(inputs)
            terms = fixmatch_loss(logits[:n_l], labels[rows], logits[n_l:n_l + n_u], logits[n_l + n_u:],
                                  cfg.fixmatch_threshold, cfg.unlabeled_weight)
            return {**dict(zip(("total", "labeled_ce", "unlabeled_ce", "confident_share"), terms)),
                    "reliable_share": reliable_share}

        def fixmatch_lr(step: int, total: int) -> float:  # FixMatch's decay: lr·cos(7πk / 16K)
            return cfg.semi_lr * math.cos(7 * math.pi * step / (16 * total))

        train_epochs(context, "semi", model, optimizer, step, epochs=math.ceil(cfg.semi_steps / steps_between_records),
                     batches=BatchPlan(steps_between_records, steps_of, cfg.semi_steps), generator=generator,
                     losses=self.stages[2].losses, lr=cfg.semi_lr, lr_schedule=fixmatch_lr,
                     after_step=lambda: ema_update(ema, model, cfg.semi_ema_momentum),
                     checkpointed={"ema": ema, "labelled_batches": labelled_batches,
                                   "unlabelled_batches": unlabelled_batches},
                     clusters_of=self._clusters_by(ema, data, geometry))  # the EMA copy is the stage's result
        return ema

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        return F.softmax(embed(model, inputs, evaluate), dim=1)

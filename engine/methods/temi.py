"""TEMI: Exploring the Limits of Deep Image Clustering using Pretrained Models (Adaloglou et al., BMVC 2023).

Clustering heads on frozen embeddings:
1. ``features`` — embed every image once with a frozen pretrained backbone (``pretext_from=pretrained:NAME``,
   cached, see ``feature_source``), or take another run's stored features (``features_from=RUN_ID``). With
   neither, the ``pretext`` stage trains a self-supervised backbone on the images themselves (SimCLR, as SCAN's
   pretext; ``pretext_from=RUN_ID`` reuses a finished one) and the frozen features are its backbone's: TEMI
   clusters self-supervised embeddings (the paper's are DINO's), and no such backbone exists offline for a
   user's own images. Pixels were the fallback before: on 2,000 CIFAR-10 images TEMI on pixels scored 0.224
   against pixel K-means' 0.211 (their k-NN are barely better than chance, 0.21 purity); on the pretext's
   backbone features 0.29, and on digits28 0.71 against 0.58 (``fast``, means of seeds 0–2,
   benchmarks/presets-temi-pretext-*).
2. ``mine`` — each sample's k nearest neighbours in that space by cosine similarity (k=50).
3. ``cluster`` — H student heads and their EMA teacher copies see a sample x and a random mined neighbour x'.
   For head h with student probabilities q_s = softmax(g_s/τ_s), teacher probabilities q_t = softmax(g_t/τ_t) and
   an EMA estimate q̃ of the teacher's cluster marginal, the β-PMI of the pair is
   pmi_β(x, x') = log Σ_c (q_s(c|x) q_t(c|x'))^β / q̃(c), and the TEMI loss (paper eq. 7) weights it by how much
   the teachers agree that the pair shares a cluster, w(x, x') = Σ_c q_t(c|x) q_t(c|x'), so neighbour pairs from
   different classes (false positives of the k-NN graph) pull less:
   L = −w(x, x') · pmi_β(x, x'), symmetrised over (x, x') and (x', x). The head with the lowest loss over the last
   epoch is kept and its teacher gives the clusters.

Readings (``fast`` preset): the heads read the features standardised per dimension (``standardize_features``).
The small ConvNet's features come after a ReLU and an average pool, all positive: two images' features have a
mean cosine of 0.87 (digits) to 0.91 (300 letters), so a head's outputs start nearly alike for every image. On a
small set (300 images, K = 10: one step an epoch, 60 steps) every head then fell into one cluster (the run stops
as collapsed) in two of three seeds, and the third scored 0.16; 300 digits28 images collapsed in seeds 0 and 1.
Standardised, seeds 0–2, one thread, mean ACC before → after (pixel K-means): 300 letters 0.503 / 0.523 / 0.427
(K-means 0.387 / 0.350 / 0.303); 300 digits28 (seeds 0, 1) 0.573 / 0.583 (0.44 / 0.50); digits 0.878 → 0.874
(0.787); digits28 0.748 → 0.750 (0.577); 2k CIFAR-10 0.294 → 0.281 (0.211); 2,000 letters 0.590 → 0.573 (0.315)
(``benchmarks/presets-temi-standardized``). Centring alone (no scaling) also kept the heads apart on the 300
letters (0.457 / 0.487 / 0.527) but lost more on digits (0.818).

Defaults (``paper`` preset) follow the paper and the official repository's CIFAR-10 command
(HHU-MMBS/TEMI-official-BMVC2023): β=0.6, k=50, 16 heads, τ_s=τ_t=0.1, teacher momentum 0.996, marginal momentum
0.9, AdamW with lr 1e-4 per 256 samples (scaled linearly with the batch, 1024 → 4e-4), weight decay 1e-4,
20 warm-up epochs then constant, 100 epochs; heads are 2-layer MLPs (hidden 512, GELU) → 256-d bottleneck →
L2 normalisation → weight-normalised linear layer to K outputs, frozen during the first epoch. Readings of the
code we made: the pair weight is averaged over the heads' teachers (one weight per pair), as the official
multi-head loss does; the kept head is the teacher's.

The ``paper`` preset's pretext, used only without pretrained or stored features, is SCAN's CIFAR-10 SimCLR
(``PretextConfig``).

Published CIFAR-10 ACC/NMI/ARI (%): DINO ViT-B/16 94.5/88.6/88.5; CLIP ViT-L/14 96.9/92.6/93.2.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn import ema_update
from .base import Method, Stage, register_method, start_fit
from .context import FitContext
from .feature_source import check_one_feature_source, features_of_run, pretrained_features, pretrained_name
from .settings import described
from .simclr import SIMCLR_STAGE, PretextConfig, simclr_pretext
from .training import (Position, embed, make_optimizer, mine_stage, seed_everything, steps_per_epoch, to_device,
                       train_epochs)

TEMI_EQUATION = (r"\mathcal{L} = -\underbrace{\textstyle\sum_c q_t(c|x)\, q_t(c|x')}_{w(x,x')}\;"
                 r"\log \sum_c \frac{\big(q_s(c|x)\, q_t(c|x')\big)^{\beta}}{\tilde q(c)}")


def temi_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, marginal: torch.Tensor, beta: float = 0.6,
              student_temperature: float = 0.1, teacher_temperature: float = 0.1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The TEMI loss (weighted β-PMI, Adaloglou et al. 2023, eq. 7) of every head for a batch of pairs.

    Args:
        student_logits, teacher_logits: H×2B×K head outputs; rows [0, B) are samples x, rows [B, 2B) their
            neighbours x'.
        marginal: H×K estimate of each teacher's cluster marginal q̃(c).

    Returns:
        (per-head loss H, per-head mean −β-PMI H, mean pair weight): the loss is −w·pmi_β averaged over both
        directions (x→x', x'→x) and the batch; w is the teachers' agreement, averaged over heads.

    Examples:
        >>> logits = torch.randn(2, 8, 3)
        >>> loss, _, _ = temi_loss(logits, logits, torch.full((2, 3), 1 / 3))
        >>> loss.shape
        torch.Size([2])
    """
    if student_logits.shape != teacher_logits.shape or student_logits.shape[1] % 2:
        raise ValueError(f"expected two H×2B×K tensors of one shape, got {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    student = F.softmax(student_logits.float() / student_temperature, dim=-1)
    teacher = F.softmax(teacher_logits.float() / teacher_temperature, dim=-1).detach()
    s_x, s_pair = student.chunk(2, dim=1)
    t_x, t_pair = teacher.chunk(2, dim=1)
    weight = (t_x * t_pair).sum(-1).mean(0)  # B: one weight per pair, averaged over the heads' teachers
    marginal = marginal[:, None, :]
    neg_pmi = -0.5 * (((s_x * t_pair).pow(beta) / marginal).sum(-1).log()
                      + ((s_pair * t_x).pow(beta) / marginal).sum(-1).log())  # H×B
    return (weight * neg_pmi).mean(1), neg_pmi.detach().mean(1), weight.mean()


class TemiHeads(nn.Module):
    """H clustering heads computed together: Linear–GELU–Linear to a bottleneck, L2 normalisation, then a
    weight-normalised linear layer (DINO's head) to K outputs. ``forward`` maps N×D to H×N×K."""

    def __init__(self, in_dim: int, n_clusters: int, n_heads: int, hidden_dim: int = 512,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()

        def stacked(*shape: int) -> nn.Parameter:
            return nn.Parameter(nn.init.trunc_normal_(torch.empty(n_heads, *shape), std=0.02))

        self.w1, self.b1 = stacked(in_dim, hidden_dim), nn.Parameter(torch.zeros(n_heads, 1, hidden_dim))
        self.w2, self.b2 = stacked(hidden_dim, bottleneck_dim), nn.Parameter(torch.zeros(n_heads, 1, bottleneck_dim))
        self.direction = nn.Parameter(torch.empty(n_heads, bottleneck_dim, n_clusters).uniform_(-1, 1))
        self.gain = nn.Parameter(torch.ones(n_heads, 1, n_clusters))

    @property
    def n_heads(self) -> int:
        return self.w1.shape[0]

    def last_layer(self) -> list[nn.Parameter]:
        return [self.direction, self.gain]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(torch.baddbmm(self.b1, x.expand(self.n_heads, -1, -1), self.w1))
        z = F.normalize(torch.baddbmm(self.b2, h, self.w2), dim=-1)
        return z @ (self.gain * F.normalize(self.direction, dim=1))

    def keep_only(self, head: int) -> None:
        for name, param in list(self.named_parameters()):
            setattr(self, name, nn.Parameter(param.data[head:head + 1].clone()))


@dataclass
class TemiConfig(PretextConfig):
    # pretrained:NAME → that frozen backbone's (cached) features; a run id → that run's finished SimCLR pretext;
    # None (and no features_from) → a SimCLR pretext trained here
    pretext_from: str | None = None
    features_from: str | None = None  # run id whose stored features to use
    pretrained_weights: str | None = None  # state dict file for the backbone (train --weights)
    download_weights: bool = False  # let the backbone's library download its weights (train --download-weights)
    standardize_features: bool = False  # per-dimension zero mean / unit variance before the heads
    n_neighbors: int = 50
    n_heads: int = 16
    beta: float = described(0.6, "β of the PMI loss: below 1 it weighs confident pairs less and keeps the "
                                 "clusters balanced")
    student_temperature: float = 0.1
    teacher_temperature: float = 0.1
    teacher_momentum: float = 0.996
    marginal_momentum: float = 0.9
    cluster_epochs: int = 100
    warmup_epochs: int = 20
    cluster_batch_size: int = 1024
    cluster_lr: float = 1e-4  # per 256 samples of batch
    cluster_weight_decay: float = 1e-4
    head_hidden_dim: int = 512
    head_bottleneck_dim: int = 256

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        check_one_feature_source(self.pretext_from, self.features_from, self.pretrained_weights,
                                 self.download_weights)
        for name in ("teacher_momentum", "marginal_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.beta <= 1:
            raise ConfigError(f"beta must be in (0, 1], got {self.beta}")


@register_method
class Temi(Method):
    """TEMI: heads trained by self-distillation with a weighted PMI loss on k-NN pairs of frozen embeddings."""

    name = "temi"
    paper = "Adaloglou et al., Exploring the Limits of Deep Image Clustering using Pretrained Models, BMVC 2023"
    Config = TemiConfig
    stages = (
        SIMCLR_STAGE,  # only without pretrained or stored features
        Stage("mine", ("neighbor_purity",), "k nearest neighbours of every sample in the frozen embedding",
              r"\mathcal{N}_x = \operatorname{top-}k_{x' \ne x}\ \cos(f(x), f(x'))"),
        Stage("cluster", ("total", "neg_pmi", "pair_weight"),
              "a sample and its neighbour should share a cluster, weighted by how sure the teachers are of it",
              TEMI_EQUATION),
    )
    key_settings = ("n_neighbors", "n_heads", "beta", "cluster_epochs", "cluster_batch_size", "cluster_lr",
                    "teacher_momentum")
    presets = {
        "paper": {},
        # minutes on a CPU: SCAN's fast SimCLR pretext (the small ConvNet, Adam, milder crops) at batch 64, whose
        # 4× more steps gave better backbone features on digits28 (TEMI ACC 0.74 against 0.71 at batch 256, seed
        # 1); fewer neighbours for ~180 images per class, fewer and smaller heads; a 420-step run needs a faster
        # teacher (at 0.996 it keeps ~20 % of its random start: ACC 0.48 vs 0.87 on digits pixels); standardised
        # features, or every head can fall into one cluster on a small set (see "Readings" above)
        "fast": {"backbone": "convnet", "standardize_features": True, "pretext_epochs": 30, "pretext_batch_size": 64,
                 "pretext_optimizer": "adam", "pretext_lr": 1e-3, "pretext_weight_decay": 1e-5, "temperature": 0.2,
                 "crop_min_scale": 0.5, "n_neighbors": 10, "n_heads": 4, "cluster_epochs": 60, "warmup_epochs": 5,
                 "cluster_batch_size": 256, "cluster_lr": 1e-3, "teacher_momentum": 0.9, "head_hidden_dim": 256,
                 "head_bottleneck_dim": 64},
    }

    def _features(self, images: ImageSet, context: FitContext) -> torch.Tensor:
        cfg = self.config
        if cfg.features_from is not None:
            x = features_of_run(context, cfg.features_from, len(images))
        elif pretrained_name(cfg.pretext_from) is not None:
            x = pretrained_features(images, pretrained_name(cfg.pretext_from), cfg.pretrained_weights,
                                    cfg.download_weights, context)
        else:
            x = self._pretext_features(images, context)
        if cfg.standardize_features:
            x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
        return x

    def _pretext_features(self, images: ImageSet, context: FitContext) -> torch.Tensor:
        """The ``pretext`` stage (SimCLR on the images, or a reused run's), then every image embedded by its
        frozen backbone on the un-augmented image."""
        generator, geometry, backbone_name, data = start_fit(images, self.config, context)
        model = simclr_pretext(self.config, data, geometry, backbone_name, images.source, context, generator)
        return embed(model.backbone, data, geometry.augment("eval")).float()

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        x = self._features(images, context)
        generator = seed_everything(cfg.seed)
        neighbors = mine_stage(context, lambda: x, self.config.n_neighbors, images.labels)
        student = TemiHeads(x.shape[1], cfg.n_clusters, cfg.n_heads, cfg.head_hidden_dim,
                            cfg.head_bottleneck_dim).to(context.device)
        teacher = copy.deepcopy(student).requires_grad_(False)
        marginal = torch.full((cfg.n_heads, cfg.n_clusters), 1 / cfg.n_clusters, device=context.device)
        self._train(student, teacher, marginal, x, neighbors, context, generator)
        with torch.no_grad():
            logits = teacher(x)[0].float()
        self.heads_ = teacher
        self.probs_ = F.softmax(logits / cfg.teacher_temperature, dim=1).cpu().numpy()
        self.labels_ = self.probs_.argmax(1)
        self.features_ = x.cpu().numpy().astype(np.float16)
        self.neighbors_ = neighbors.cpu().numpy().astype(np.int32)

    def _train(self, student: TemiHeads, teacher: TemiHeads, marginal: torch.Tensor, x: torch.Tensor,
               neighbors: torch.Tensor, context: FitContext, generator: torch.Generator) -> None:
        """The ``cluster`` stage; leaves the head of lowest loss over the last epoch in ``student`` and
        ``teacher``."""
        cfg = self.config
        batch_size = min(cfg.cluster_batch_size, len(x))
        lr = cfg.cluster_lr * batch_size / 256  # the official linear scaling rule
        warmup_steps = cfg.warmup_epochs * steps_per_epoch(len(x), batch_size)
        decayed = [student.w1, student.w2, student.direction]  # biases and gains are not decayed
        groups = [{"params": decayed}, {"params": [student.b1, student.b2, student.gain], "weight_decay": 0.0}]
        optimizer = make_optimizer("adamw", groups, lr, cfg.cluster_weight_decay,
                                   fused=context.speedups.fused_optimizer)
        head_losses = torch.zeros(cfg.n_heads, device=context.device)
        student_forward, teacher_forward = context.speedups.compiled(student), context.speedups.compiled(teacher)

        def start_epoch(epoch: int) -> None:
            head_losses.zero_()
            for param in student.last_layer():  # the official schedule keeps it fixed during the first epoch
                param.requires_grad_(epoch > 0)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            pick = to_device(torch.randint(neighbors.shape[1], (len(indices),), generator=generator), context.device)
            pairs = torch.cat([x[indices], x[neighbors[indices, pick]]])
            student_logits = student_forward(pairs)
            with torch.no_grad():
                teacher_logits = teacher_forward(pairs)
                teacher_probs = F.softmax(teacher_logits.float() / cfg.teacher_temperature, dim=-1)
                marginal.lerp_(teacher_probs.mean(1), 1 - cfg.marginal_momentum)
            losses, neg_pmi, weight = temi_loss(student_logits, teacher_logits, marginal, cfg.beta,
                                                cfg.student_temperature, cfg.teacher_temperature)
            head_losses.add_(losses.detach())
            return {"total": losses.mean(), "neg_pmi": neg_pmi.mean(), "pair_weight": weight.detach()}

        def warmup_lr(step: int, total: int) -> float:
            return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr

        train_epochs(context, "cluster", student, optimizer, step, epochs=cfg.cluster_epochs, n_samples=len(x),
                     batch_size=batch_size, generator=generator, losses=self.stages[-1].losses, lr=lr,
                     lr_schedule=warmup_lr, before_epoch=start_epoch,
                     after_step=lambda: ema_update(teacher, student, cfg.teacher_momentum),
                     checkpointed={"teacher": teacher, "marginal": marginal, "head_losses": head_losses},
                     clusters_of=lambda indices: teacher(x[indices])[int(head_losses.argmin())].argmax(1))
        best = int(head_losses.argmin())
        student.keep_only(best), teacher.keep_only(best)
        context.info("cluster", f"kept head {best} of {cfg.n_heads} (lowest TEMI loss over the last epoch)")

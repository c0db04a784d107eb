"""DigPro: Towards Efficient and Effective Deep Clustering with Dynamic Grouping and Prototype Aggregation
(Zhang & Huang, arXiv:2401.13581, 2024; official code Regan-Zhang/DigPro, built on ProPos, Huang et al., "Learning
Representation for Clustering via Prototype Scattering and Positive Sampling", TPAMI 2022).

One end-to-end stage, ``train``, alternating as an EM procedure: the E-step assigns pseudo-labels by K-means
(k-means++, on the L2-normalised target projections of the whole dataset) before the first epoch and after every
epoch; the M-step trains the networks on three terms.

Networks (BYOL): an online backbone f, projector g (Linear–BN–ReLU–Linear, 4096 hidden, 256 out) and predictor q
(same shape); a target backbone and projector, an exponential moving average of the online ones (m = 0.996). For two
views a, b of a batch: z = g(f(x)) online, t = normalise(g_ξ(f_ξ(x))) target. Every term is symmetrised over
(a→b, b→a) and averaged.

1. BYOL term: L_byol = 2 − 2·cos(q(z_a + σε), t_b), with the positive-sampling noise of ProPos, σ = 0.001
   (ε ~ N(0, I)), switched on after the warm-up.
2. Prototype aggregation (ProPos' prototype scattering loss): with the batch's pseudo-labels, the per-cluster means
   of the normalised online projections μ_k and of the target projections μ'_k, both re-normalised onto the
   hypersphere; each online prototype must pick its own target prototype among the other online prototypes:
   L_proto = mean_k −log exp(μ_k·μ'_k/τ_p) / [exp(μ_k·μ'_k/τ_p) + Σ_{j≠k} exp(μ_k·μ_j/τ_p)],
   τ_p = 0.5; clusters absent from the batch are left out (as rows and as negatives).
3. Dynamic grouping (SMoG, Pang et al. ECCV 2022): K group features G on the hypersphere. Per batch, each target
   projection's nearest group is its group label; the groups are then moved by momentum towards the mean of the
   online projections nearest to them, G_k ← β·G_k + (1−β)·mean(z_i : i nearest to k), β = 0.99; the loss is
   the cross-entropy of the predictor output's cosine logits against the updated groups, τ_g = 0.1, with the
   target's group labels. Every ``group_reset_steps`` steps the groups are re-initialised by K-means on a memory bank of
   the last ``memory_bank_size`` online projections.

Loss = L_byol + 0.1·L_proto + 0.3·L_group (L_proto only after ``warmup_epochs``).
Recorded losses: ``total``, ``byol``, ``prototype`` (recorded during the warm-up too, though not yet trained on),
``group``. The warm-up is part of the one stage, not a stage of its own: it only ramps the learning rate and holds
back the prototype term and the noise, as ProPos' does.

Defaults (``paper`` preset) follow the official code's configs: ResNet-18 (CIFAR stem), 1000 epochs, batch 128,
SGD momentum 0.9, base lr 0.05 scaled by batch/256 (ProPos' rule), 50 warm-up epochs (linear lr ramp, no prototype
loss, no noise), then cosine decay to 0; the predictor's lr is 10× the base; weight decay 5e-4; SimCLR-style
augmentation (crops of 8–100 %, colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, no blur); K-means
every epoch; 10 K-means restarts; memory bank 2,560.

Readings and simplifications (where we depart from the official code, and why):

- The official code updates the target twice per step (momentum 0.99, then 0.996: effectively 0.986); we do one
  EMA update with ``target_momentum`` (0.996, ProPos' and the configs' value).
- It resets the SMoG groups every K steps (K = number of clusters; the code's comments change it per dataset) with
  scikit-learn K-means; we expose ``group_reset_steps`` (default 10 = K for CIFAR-10) and use one k-means++ restart
  of our torch K-means. The groups start from the first E-step's centres rather than uniform random vectors.
- The group update uses the normalised online projections and is done without gradient (the groups are a moving
  average, not parameters).
- One predictor pass (on the noisy projection) feeds both the BYOL and the group term; the official code runs the
  predictor twice, once without the 0.001 noise.
- ProPos' shuffled batch norm (it shuffles the target's batch across GPUs) is left out: we train on one device.
  Both views go through each network as one batch (one set of batch-norm statistics), where the official code
  runs them one view at a time. In our digits runs (fast preset, then 20 epochs, seeds 0/1/2) the joint batch
  gave ACC 0.90/0.92/0.91 and per-view batches 0.81/0.91/0.91, so we keep the joint batch.
- Labels, probabilities and features come from the final E-step: K-means on the normalised target projections
  (``features_``); ``probs_`` is softmax(cos(t, centre)/τ_g), a confidence for the maps, not part of the paper.

Collapse: BYOL's predictor + EMA target keeps the representation from collapsing; the K-means pseudo-labels
spread the data over K clusters and the prototype loss pushes the clusters' prototypes apart. base.fit still
refuses a result with one cluster over 90 % of the data.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..clustering.kmeans import fit_kmeans
from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn import build_backbone, ema_update, mlp_projector
from .base import BackboneConfig, DeepMethod, Stage, Transform, register_method, start_fit
from .context import FitContext
from .training import ImageGeometry, Position, embed, make_optimizer, train_epochs

STAGE = "train"
LOSS_NAMES = ("total", "byol", "prototype", "group")
_ABSENT = -1e4  # logit of a cluster missing from the batch: out of every softmax, yet finite (no NaN gradients)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss 2 − 2·cos(prediction, target), averaged over the batch (target gets no gradient).

    Examples:
        >>> x = torch.randn(4, 8)
        >>> float(byol_loss(x, 3 * x)) < 1e-6, round(float(byol_loss(x, -x)), 4)
        (True, 4.0)
    """
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=1)).mean()


def cluster_prototypes(features: torch.Tensor, labels: torch.Tensor, n_clusters: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster means of ``features`` put back on the unit sphere (K×D; a zero row for an absent cluster) and
    a mask of the clusters present in ``labels``."""
    one_hot = F.one_hot(labels, n_clusters).to(features.dtype)  # N×K
    counts = one_hot.sum(0)
    means = one_hot.t() @ features / counts.clamp_min(1).unsqueeze(1)
    return F.normalize(means, dim=1), counts > 0


def prototype_loss(online: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, n_clusters: int,
                   temperature: float = 0.5) -> torch.Tensor:
    """Prototype aggregation (ProPos' prototype scattering loss) for one direction.

    ``online`` and ``target`` are N×D projections of two views (normalised here), ``labels`` the batch's
    pseudo-labels. Online prototype k's positive is target prototype k; its negatives are the other online
    prototypes; clusters absent from the batch take no part.

    Examples:
        >>> z = F.normalize(torch.eye(4)[[0, 0, 1, 1, 2, 2, 3, 3]] + 0.01, dim=1)
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> aligned = prototype_loss(z, z, labels, 4, temperature=0.5)
        >>> swapped = prototype_loss(z, z.flip(0), labels, 4, temperature=0.5)
        >>> float(aligned) < float(swapped)
        True
    """
    if online.shape != target.shape or online.ndim != 2 or labels.shape != online.shape[:1]:
        raise ValueError(f"prototype_loss expects two N×D tensors and N labels, got {tuple(online.shape)}, "
                         f"{tuple(target.shape)} and {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    online_protos, present = cluster_prototypes(F.normalize(online, dim=1), labels, n_clusters)
    target_protos, _ = cluster_prototypes(F.normalize(target.detach(), dim=1), labels, n_clusters)
    logits = online_protos @ online_protos.t() / temperature
    positives = (online_protos * target_protos).sum(1) / temperature
    diagonal = torch.eye(n_clusters, dtype=torch.bool, device=logits.device)
    logits = torch.where(diagonal, positives.unsqueeze(1), logits)
    logits = logits.masked_fill(~present.unsqueeze(0), _ABSENT)
    per_cluster = torch.logsumexp(logits, dim=1) - positives
    return (per_cluster * present).sum() / present.sum().clamp_min(1)


class MomentumGroups(nn.Module):
    """SMoG's group features: K unit vectors moved by momentum towards the features assigned to them.

    ``assign`` gives each row its nearest group (cosine); ``updated`` returns (without storing) the groups after
    one momentum step G_k ← β·G_k + (1−β)·mean(x_i : i nearest to k), re-normalised (groups no row chose stay
    as they are); ``set_features`` stores them.
    """

    def __init__(self, n_groups: int, dim: int, momentum: float = 0.99) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"group momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("features", F.normalize(torch.randn(n_groups, dim), dim=1))

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x, dim=1) @ self.features.t()).argmax(1)

    @torch.no_grad()
    def updated(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        one_hot = F.one_hot(self.assign(x), len(self.features)).to(x.dtype)
        counts = one_hot.sum(0).unsqueeze(1)
        means = one_hot.t() @ x / counts.clamp_min(1)
        moved = F.normalize(self.momentum * self.features + (1 - self.momentum) * means, dim=1)
        return torch.where(counts > 0, moved, self.features)

    @torch.no_grad()
    def set_features(self, features: torch.Tensor) -> None:
        """Replace the groups (a momentum step's result, or K-means centres when re-initialising)."""
        self.features.copy_(F.normalize(features, dim=1))


def group_loss(prediction: torch.Tensor, groups: torch.Tensor, targets: torch.Tensor,
               temperature: float = 0.1) -> torch.Tensor:
    """SMoG's group-contrastive loss: cross-entropy of cos(prediction, group)/τ against the target's groups.

    Examples:
        >>> groups = torch.eye(3)
        >>> right = group_loss(torch.eye(3), groups, torch.tensor([0, 1, 2]))
        >>> wrong = group_loss(torch.eye(3), groups, torch.tensor([1, 2, 0]))
        >>> float(right) < 0.01 < float(wrong)
        True
    """
    logits = F.normalize(prediction, dim=1) @ F.normalize(groups, dim=1).t() / temperature
    return F.cross_entropy(logits, targets)


class BYOLNetworks(nn.Module):
    """Online backbone + projector + predictor, and the EMA target backbone + projector."""

    def __init__(self, backbone: nn.Module, projection_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.online = nn.Sequential(backbone, mlp_projector(backbone.out_dim, projection_dim, hidden_dim))
        self.predictor = mlp_projector(projection_dim, projection_dim, hidden_dim)
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)

    def target_projection(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.target(x), dim=1)


@dataclass
class DigProConfig(BackboneConfig):
    epochs: int = 1000
    warmup_epochs: int = 50
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05  # base lr, multiplied by batch_size/256
    predictor_lr_scale: float = 10.0
    weight_decay: float = 5e-4
    projection_dim: int = 256
    hidden_dim: int = 4096
    target_momentum: float = 0.996
    latent_noise_std: float = 0.001
    prototype_weight: float = 0.1
    prototype_temperature: float = 0.5
    group_weight: float = 0.3
    group_momentum: float = 0.99
    group_temperature: float = 0.1
    group_reset_steps: int = 10  # 0: never re-initialise the groups
    memory_bank_size: int = 2560
    n_kmeans_init: int = 10
    crop_min_scale: float = 0.08

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        for name in ("target_momentum", "group_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("projection_dim", "hidden_dim", "memory_bank_size", "predictor_lr_scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("latent_noise_std", "group_reset_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.epochs and self.warmup_epochs >= self.epochs:
            # the prototype term starts after the warm-up: a warm-up as long as the run would silently drop it
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs}); "
                              "set warmup_epochs to a few epochs (the paper warms up for 50 of 1000)")


@register_method
class DigPro(DeepMethod):
    """DigPro: BYOL with K-means prototypes contrasted across views and momentum-updated groups."""

    name = "digpro"
    paper = ("Zhang & Huang, Towards Efficient and Effective Deep Clustering with Dynamic Grouping and Prototype "
             "Aggregation, arXiv:2401.13581, 2024")
    Config = DigProConfig
    fitted_attributes = DeepMethod.fitted_attributes + ("cluster_centers_",)
    stages = (
        Stage(STAGE, LOSS_NAMES,
              "BYOL views agree; per-cluster prototypes of the two views match and repel other clusters; "
              "samples follow momentum-updated groups; K-means pseudo-labels refreshed every epoch",
              r"\mathcal{L} = \big(2 - 2\cos(q(z^a + \sigma\epsilon), t^b)\big) + \lambda_p \mathcal{L}_{proto}"
              r" + \lambda_g \mathcal{L}_{group},\ \mathcal{L}_{proto} = -\frac{1}{K}\sum_k \log "
              r"\frac{e^{\mu_k \cdot \mu'_k/\tau_p}}{e^{\mu_k \cdot \mu'_k/\tau_p} + \sum_{j \ne k} "
              r"e^{\mu_k \cdot \mu_j/\tau_p}}"),
    )
    key_settings = ("epochs", "warmup_epochs", "batch_size", "lr", "prototype_weight", "prototype_temperature",
                    "group_weight", "group_temperature", "target_momentum", "backbone")
    presets = {
        "paper": {},
        # CPU minutes: a short schedule with a short warm-up, Adam, a small MLP, milder crops; the small ConvNet (what
        # `auto` picks for gray images up to 28 px) also on colour images, where ResNet-18 takes hours. 40 epochs,
        # not 20 (digits28 seed 0: 0.632 against 0.476). Blurred views (SimCLR blurs only views above 64 px): the
        # BYOL pair then differs in stroke width, which digits28 varies. Mean ACC over seeds 0/1/2, without → with
        # blur: digits28 0.589 → 0.636 (pixel K-means 0.577; benchmarks/presets-digits28-blur-seeds), cifar2k
        # 0.252 → 0.271 (K-means 0.211), digits 0.925 → 0.920 / 0.927 (seeds 0 / 1; K-means ≈ 0.78).
        "fast": {"epochs": 40, "warmup_epochs": 2, "optimizer": "adam", "lr": 2e-3, "weight_decay": 1e-5,
                 "projection_dim": 128, "hidden_dim": 512, "target_momentum": 0.99,
                 "crop_min_scale": 0.5, "blur": True, "backbone": "convnet"},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator, geometry, backbone_name, data = start_fit(images, cfg, context)
        nets = BYOLNetworks(build_backbone(backbone_name, geometry.size, geometry.channels), cfg.projection_dim,
                            cfg.hidden_dim).to(context.device)
        groups = MomentumGroups(cfg.n_clusters, cfg.projection_dim, cfg.group_momentum).to(context.device)
        self.model_, self.geometry_ = nets, geometry
        self._train(nets, groups, data, geometry, context, generator)

        features, self.cluster_centers_, labels = self._expectation(data, seed=cfg.seed + cfg.epochs + 1)
        self._finish(nets, geometry, data, features)
        self.labels_ = labels.cpu().numpy()  # the last E-step's K-means partition, as the paper reports it

    @torch.no_grad()
    def _expectation(self, data: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """E-step: K-means on the normalised target projections of every image → (features, centres, labels)."""
        features = embed(self.model_.target, data, self.geometry_.augment("eval"))
        features = F.normalize(features, dim=1)
        centres, labels = fit_kmeans(features, self.config.n_clusters, self.config.n_kmeans_init, seed)
        return features, centres, labels

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        """Soft assignments: a softmax over the cosines of the normalised target projections to the K-means
        centres, at the group temperature."""
        features = F.normalize(embed(model.target, inputs, evaluate), dim=1)
        cosine = features @ F.normalize(self.cluster_centers_, dim=1).t()
        return F.softmax(cosine / self.config.group_temperature, dim=1)

    def _lr_at(self, step: int, total: int) -> float:
        """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 (the predictor's group runs ×scale)."""
        cfg = self.config
        base = cfg.lr * cfg.batch_size / 256
        warmup = total // cfg.epochs * cfg.warmup_epochs
        if step < warmup:
            return base * (step + 1) / warmup
        return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    def _train(self, nets: BYOLNetworks, groups: MomentumGroups, data: torch.Tensor, geometry: ImageGeometry,
               context: FitContext, generator: torch.Generator) -> None:
        cfg = self.config
        # the step calls these three, never nets itself; K-means' embedding calls nets.target uncompiled
        online_net, predictor = context.speedups.compiled(nets.online), context.speedups.compiled(nets.predictor)
        target_projection = context.speedups.compiled(nets.target_projection)
        optimizer = make_optimizer(cfg.optimizer, [
            {"params": nets.online.parameters(), "lr_scale": 1.0},
            {"params": nets.predictor.parameters(), "lr_scale": cfg.predictor_lr_scale}], cfg.lr, cfg.weight_decay,
            fused=context.speedups.fused_optimizer)
        bank = torch.zeros(cfg.memory_bank_size, cfg.projection_dim, device=context.device)
        rows_per_step = 2 * min(cfg.batch_size, len(data))  # both views' online projections enter the bank
        augment = geometry.augment("simclr", crop_scale=(cfg.crop_min_scale, 1.0))
        pseudo_labels = torch.empty(0)
        pending: list[tuple[torch.Tensor, Position]] = []  # the step's projections, banked after the optimiser

        def expectation_step(epoch: int) -> None:
            """Pseudo-labels for the epoch from the networks as they stand (the first E-step also places the
            groups); deterministic, so a resumed epoch recomputes them."""
            nonlocal pseudo_labels
            _, centres, pseudo_labels = self._expectation(data, seed=cfg.seed + epoch)
            if epoch == 0:
                groups.set_features(centres)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            after_warmup = float(at.epoch >= cfg.warmup_epochs)
            batch, labels = data[indices], pseudo_labels[indices]
            views = torch.cat([augment(batch), augment(batch)])
            online = online_net(views)
            noise = torch.randn_like(online) * (cfg.latent_noise_std * after_warmup)
            predicted = predictor(online + noise)
            with torch.no_grad():
                target = target_projection(views)
            (z_a, z_b), (p_a, p_b), (t_a, t_b) = online.chunk(2), predicted.chunk(2), target.chunk(2)
            byol = 0.5 * (byol_loss(p_a, t_b) + byol_loss(p_b, t_a))
            proto = 0.5 * (prototype_loss(z_a, t_b, labels, cfg.n_clusters, cfg.prototype_temperature)
                           + prototype_loss(z_b, t_a, labels, cfg.n_clusters, cfg.prototype_temperature))
            group = 0.5 * (self._group_step(groups, z_a, p_a, t_b) + self._group_step(groups, z_b, p_b, t_a))
            pending.append((online.detach(), at))
            return {"total": byol + cfg.prototype_weight * after_warmup * proto + cfg.group_weight * group,
                    "byol": byol, "prototype": proto, "group": group}

        def after_step() -> None:
            online, at = pending.pop()
            ema_update(nets.target, nets.online, cfg.target_momentum)
            features = F.normalize(online.float(), dim=1)
            bank.copy_(torch.cat([bank[len(features):], features[-len(bank):]]))
            bank_full = (at.step + 1) * rows_per_step >= len(bank)
            if cfg.group_reset_steps and (at.step + 1) % cfg.group_reset_steps == 0 and bank_full:
                centres, _ = fit_kmeans(bank, cfg.n_clusters, n_init=1, seed=cfg.seed + at.step)
                groups.set_features(centres)

        train_epochs(context, STAGE, nets, optimizer, step, epochs=cfg.epochs, n_samples=len(data),
                     batch_size=cfg.batch_size, generator=generator, losses=LOSS_NAMES, lr=cfg.lr,
                     lr_schedule=self._lr_at, before_epoch=expectation_step, after_step=after_step,
                     checkpointed={"groups": groups, "bank": bank},
                     clusters_of=lambda indices: pseudo_labels[indices])  # the E-step's, that the epoch trained on

    def _group_step(self, groups: MomentumGroups, online: torch.Tensor, predicted: torch.Tensor,
                    target: torch.Tensor) -> torch.Tensor:
        """One direction of dynamic grouping: target → group labels, online → momentum step, predictor → loss."""
        targets = groups.assign(target)
        updated = groups.updated(online.detach())
        loss = group_loss(predicted, updated, targets, self.config.group_temperature)
        groups.set_features(updated)
        return loss

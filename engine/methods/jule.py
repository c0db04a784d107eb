"""JULE: Joint Unsupervised Learning of Deep Representations and Image Clusters (Yang, Parikh & Batra, CVPR 2016).

Agglomerative clustering is unrolled as a recurrent process over CNN features: every timestep merges two
clusters (the forward pass), and after each *period* of timesteps the CNN is updated from the clusters found so
far (the backward pass), until K clusters remain.

Stages:
1. ``init`` — many small clusters: the connected components of the 1-nearest-neighbour graph of the raw pixels
   (L2-normalised), as the official code starts (``init_features``; the ``fast`` preset reads photos otherwise,
   below).
2. ``unroll`` — periods. Each period first trains the CNN for ``period_epochs`` epochs with the weighted triplet
   loss built from the current clusters: max(0, γ‖x_i − x_j‖² − ‖x_i − x_k‖² + m) with x_i, x_j from one
   cluster and x_k from another, on L2-normalised embeddings. It then embeds every image, builds the K_s-NN graph
   w_ij = exp(−‖x_i − x_j‖²/σ²) (j among i's K_s neighbours, σ² the mean of those squared distances) and merges
   ⌈η·n_c⌉ times (η the unfolding rate, n_c the clusters at the period's start; never below K). Each timestep
   merges the cluster C_i maximising the paper's merge criterion (its loss at one timestep, negated),
       A(C_i, N¹) + λ/(K_c − 1) Σ_{k=2..K_c} (A(C_i, N¹) − A(C_i, Nᵏ)),
   with its nearest neighbour cluster N¹, where Nᵏ are C_i's K_c nearest clusters by the graph-degree-linkage
   affinity (GDL, Zhang et al., ECCV 2012)
       A(C_a, C_b) = 1/|C_a|² · 1ᵀW_{a,b}W_{b,a}1 + 1/|C_b|² · 1ᵀW_{b,a}W_{a,b}1.
   The stage ends when K clusters remain (the CNN is not trained after the last merge); those clusters are the
   result.

Defaults (``paper`` preset): the paper's and its official Torch code's: K_s = 20, K_c = 5, λ = 1, η = 0.9 (the
value the authors use for all but the face datasets), 20 epochs per period, SGD lr 0.01, momentum 0.9, weight
decay 5e-5, the "inv" lr policy lr·(1 + 10⁻⁴·iter)^−0.75, batch 100, triplet margin 0.2, positive weight γ = 1,
160-d L2-normalised embedding (the MNIST network's).

Readings we had to make:
- The CNN: ``backbone`` (the small ConvNet for small gray images, ResNet-18 otherwise) + a linear layer to the
  160-d embedding, L2-normalised; the paper designs one small CNN per dataset (and the official code draws its
  initial weights from N(0, 0.01²); we keep PyTorch's initialisation).
- The end: the official Torch code finally re-clusters the learned embedding from scratch (1-NN components, then
  merges without CNN updates); we keep the clusters of the recurrent process, as the paper describes it (on
  digits the re-clustering was no better: ACC 0.88/0.82/0.89 against 0.88/0.95/0.89 over seeds 0/1/2).
- Triplets: the official code takes, inside each random batch of 100, all same-cluster pairs as (anchor,
  positive) and random other-cluster images of the batch as negatives. With thousands of clusters of 2–4 images,
  a random batch holds almost no positive pair, so each batch here is half anchors (cycling through a random order
  of the images whose cluster has ≥ 2 images), half a random positive of each anchor's cluster; every image of
  the batch from another cluster is a negative, and the loss is the mean hinge over all those triplets. An epoch
  is N / batch steps, as many images as one pass over the data. The paper
  derives its loss with negatives from the K_c neighbouring clusters; like the official code we take them at
  random (early on the neighbouring clusters are mostly fragments of the same class).
- The affinity is kept exact while merging (the in- and out-weights of every cluster are kept as sparse vectors),
  rather than the official code's approximate "fast" update; no dense N×N or n_c×n_c matrix is built.
- Clusters with no graph affinity to any other cannot be chosen by the criterion; while more than 20·K clusters remain
  they are merged into the cluster with the nearest centroid (as the official code does), and when no pair with
  positive affinity is left the smallest cluster joins its nearest centroid.
- Outlier clusters: a small tight group of images with weak links to the rest (on digits, 2 to 34 odd-looking
  images) scores low by the criterion, so plain merging keeps it to the end, where it takes the place of one of
  the K clusters while two real classes are merged (ACC 0.77–0.80 in half of the seeds on digits). Once fewer
  than 2K clusters remain, a cluster smaller than ``min_cluster_fraction`` · N/K (0.25; 0 turns it off) is merged
  first, into its strongest-affinity neighbour. On digits (``fast``, seeds 0–11) ACC went from a median of 0.79
  (0.77–0.88) to 0.92 (0.88–0.96). A true class smaller than that size would be merged too.
- ``probs_`` is not part of JULE (it gives hard clusters): softmax(−10·d²/s) over the squared distances d² of an
  embedding to the cluster centroids, s the mean of those distances on the training images (the K-means
  baseline's confidence, with its scale fixed at fit time so new images are scored alike).
- Initial clusters from shrunk pixels (``init_side``, ``fast`` preset: 14 px; ``paper``: the pixels at their own
  size). At 28 px the nearest neighbour of a digit is often another digit drawn with the same pen width, so the
  initial clusters group by width and the unrolling cannot undo it; the antialiased 14 px image keeps the shape
  and hides the width. digits28, ``fast``, seeds 0–2: ACC 0.549 → 0.785 (0.805 / 0.800 / 0.749; pixel K-means 0.577,
  ``benchmarks/presets-jule-init-side-digits28``); 8×8 digits are below the side and unchanged; 2,000 CIFAR-10
  images stay under K-means (0.203 against 0.211: ``benchmarks/presets-jule-init-side-cifar10-2k``).
- Photos (``fast`` preset): the initial graph on HOG + an 8×8 colour map (``init_features`` = ``auto``: colour
  images of 16 px or more; gray ones keep their pixels), the input DEC's paper gives its algorithms for STL-10
  photos, and an unfolding rate η = 0.5 instead of 0.9 (four periods of CNN updates from ~160 initial clusters
  instead of two). On 2,000 CIFAR-10 test images the 1-NN graph of the pixels has ~100 components of label purity
  0.30, that of the descriptor 163 of purity 0.37. Seeds 0–5: ACC 0.235 / 0.2435 / 0.240 / 0.2415 / 0.2425 /
  0.235 (mean 0.240; pixel K-means 0.211, margin +0.028, still just under the +0.03 bar), against 0.203 before;
  the descriptor alone with η 0.9: 0.208 / 0.2455 / 0.1945. On gray images only η changes: digits 0.947 / 0.898 /
  0.946, digits28 0.784 / 0.810 / 0.812, before 0.907 and 0.785 (``benchmarks/presets-jule-hog-eta``). What
  holds JULE back on photos is its forward pass: GDL merging the descriptor itself down to K gives 0.2175, while
  K-means on it gives 0.280.
- Collapse: the 1/|C|² normalisation of the affinity favours merging small clusters, and merging stops at K; the
  shared guard still stops a run that ends with one cluster > 90 % of the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..clustering.graph_linkage import GraphDegreeLinkage, knn_graph, nearest_neighbor_components
from ..data.augment import resize, to_float_nchw
from ..data.descriptors import hog_colour_of_images
from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn import build_backbone
from .base import BackboneConfig, DeepMethod, Stage, Transform, register_method, start_fit
from .context import FitContext
from .settings import described, one_of
from .training import (DESCRIPTORS, BatchPlan, Position, StopStage, embed, make_optimizer, resolve_descriptor,
                       to_device, train_epochs)

ISOLATED_MERGE_FACTOR = 20  # isolated clusters join their nearest centroid while > 20·K clusters remain


# -- the loss ----------------------------------------------------------------------------------------------------
def weighted_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor,
                          is_negative: torch.Tensor, margin: float = 0.2, positive_weight: float = 1.0
                          ) -> torch.Tensor:
    """JULE's weighted triplet loss: the mean over valid triplets (i, j, k) of
    max(0, γ‖x_i − x_j‖² − ‖x_i − x_k‖² + m).

    Args:
        anchor, positive: B×D embeddings; row b of each comes from one cluster.
        candidates: M×D embeddings that may serve as negatives.
        is_negative: B×M bool, True where candidate m is in another cluster than anchor b.
        margin: m. positive_weight: γ, the weight of the positive pair.

    Examples:
        >>> a, p = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.5]])
        >>> n = torch.tensor([[1.0, 0.0], [0.0, 0.1]])
        >>> round(float(weighted_triplet_loss(a, p, n, torch.tensor([[True, True]]), margin=0.2)), 4)  # (0+0.44)/2
        0.22
    """
    if anchor.shape != positive.shape or anchor.ndim != 2:
        raise ValueError(f"anchor and positive must be B×D of one shape, got {tuple(anchor.shape)} and "
                         f"{tuple(positive.shape)}")
    if is_negative.shape != (anchor.shape[0], candidates.shape[0]):
        raise ValueError(f"is_negative must be {anchor.shape[0]}×{candidates.shape[0]}, got "
                         f"{tuple(is_negative.shape)}")
    positive_distance = (anchor - positive).pow(2).sum(1, keepdim=True)
    negative_distance = (anchor.unsqueeze(1) - candidates.unsqueeze(0)).pow(2).sum(-1)
    hinge = F.relu(positive_weight * positive_distance - negative_distance + margin)
    mask = is_negative.to(hinge.dtype)
    return (hinge * mask).sum() / mask.sum().clamp_min(1.0)


# -- the forward pass: graph degree linkage (engine.clustering.graph_linkage) -----------------------------------
def merges_in_period(n_clusters: int, target: int, unfolding_rate: float) -> int:
    """Timesteps of one period: ⌈η·n_c⌉, but never past the target number of clusters.

    Examples:
        >>> merges_in_period(500, 10, 0.9), merges_in_period(50, 10, 0.9)
        (450, 40)
    """
    return max(0, min(math.ceil(unfolding_rate * n_clusters), n_clusters - target))


def agglomerate(features: torch.Tensor, labels: np.ndarray, n_merges: int, cfg: "JuleConfig"
                ) -> tuple[np.ndarray, np.ndarray]:
    """One period of the forward pass on ``features``: build the graph, merge; returns (labels, neighbours)."""
    neighbors, graph = knn_graph(features, cfg.n_neighbors)
    gdl = GraphDegreeLinkage(features.cpu().numpy(), graph, labels, cfg.n_cluster_neighbors, cfg.merge_lambda)
    if gdl.n_clusters > ISOLATED_MERGE_FACTOR * cfg.n_clusters:
        gdl.merge_isolated(cfg.n_clusters)
    gdl.run(n_merges, cfg.n_clusters, cfg.min_cluster_fraction * len(labels) / cfg.n_clusters)
    return gdl.compact_labels(), neighbors


# -- the network -------------------------------------------------------------------------------------------------
class JuleNet(nn.Module):
    """Backbone + linear embedding, L2-normalised (the official networks end in Linear → Normalize(2))."""

    def __init__(self, backbone: nn.Module, embedding_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Linear(backbone.out_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embedding(self.backbone(x)), dim=1)


@dataclass
class JuleConfig(BackboneConfig):
    embedding_dim: int = 160
    n_neighbors: int = 20  # K_s
    n_cluster_neighbors: int = described(5, "K_c: how many neighbouring clusters the merge criterion compares "
                                            "a cluster with")
    merge_lambda: float = described(1.0, "λ: how much the merge criterion prefers a neighbour that is much "
                                         "closer than the other K_c − 1 (0: the nearest alone)")
    unfolding_rate: float = described(0.9, "η: the share of the clusters merged in each period before the "
                                           "CNN is trained again; lower means more periods")
    period_epochs: int = 20
    unroll_batch_size: int = 100
    unroll_optimizer: str = "sgd"
    unroll_lr: float = 0.01
    unroll_weight_decay: float = 5e-5
    lr_decay_gamma: float = 1e-4  # "inv" policy: lr·(1 + gamma·iter)^−power
    lr_decay_power: float = 0.75
    triplet_margin: float = described(0.2, "m: how much farther an image of another cluster must be than one "
                                           "of its own in the triplet loss")
    positive_weight: float = 1.0  # γ
    min_cluster_fraction: float = 0.25  # of N/K: smaller clusters merge first among the last 2K
    # the initial clusters' nearest-neighbour graph is built on the pixels of the images shrunk (antialiased) to at
    # most this side; None: at their own size, as the paper
    init_side: int | None = None
    init_features: str = one_of("pixels", DESCRIPTORS, help=(
        "what the initial clusters' nearest-neighbour graph is built on: pixels, or HOG + an 8×8 colour map; auto: "
        "HOG + colour map for colour images of 16 px or more, pixels for gray ones"))

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        if not 0 < self.unfolding_rate <= 1:
            raise ConfigError(f"unfolding_rate η must be in (0, 1], got {self.unfolding_rate}")
        if self.unroll_batch_size < 4:
            raise ConfigError(f"unroll_batch_size must be at least 4 (anchors, positives and negatives), got "
                              f"{self.unroll_batch_size}")
        if (self.triplet_margin < 0 or self.positive_weight <= 0 or self.merge_lambda < 0
                or self.min_cluster_fraction < 0):
            raise ConfigError("triplet_margin, merge_lambda and min_cluster_fraction must be ≥ 0 and "
                              "positive_weight > 0")


@register_method
class Jule(DeepMethod):
    """JULE: agglomerative clustering unrolled over CNN features, the CNN trained from the clusters by triplets."""

    name = "jule"
    paper = ("Yang, Parikh & Batra, Joint Unsupervised Learning of Deep Representations and Image Clusters, "
             "CVPR 2016")
    Config = JuleConfig
    fitted_attributes = DeepMethod.fitted_attributes + ("cluster_centers_", "distance_scale_")
    stages = (
        Stage("init", ("n_clusters",), "small initial clusters: components of the 1-NN graph of the pixels "
                                       "(fast preset, photos: of HOG + an 8×8 colour map)"),
        Stage("unroll", ("triplet", "n_clusters"),
              "periods: train the CNN on the clusters (weighted triplets), then merge clusters by GDL affinity",
              r"\mathcal{L} = \sum_{(i,j,k)} \max\big(0,\ \gamma \lVert x_i - x_j \rVert^2 - \lVert x_i - x_k \rVert^2"
              r" + m\big),\quad \text{merge}\ \arg\max_{C_i} \mathcal{A}(C_i, \mathcal{N}^1) + \frac{\lambda}{K_c - 1}"
              r"\sum_{k=2}^{K_c} \big(\mathcal{A}(C_i, \mathcal{N}^1) - \mathcal{A}(C_i, \mathcal{N}^k)\big)"),
    )
    key_settings = ("embedding_dim", "n_neighbors", "n_cluster_neighbors", "merge_lambda", "unfolding_rate",
                    "period_epochs", "unroll_lr", "triplet_margin", "init_features")
    presets = {
        "paper": {},
        # about a minute on a CPU: the small ConvNet at any size and colour, Adam and few epochs per period; the
        # initial clusters from the pixels shrunk to 14 px (see the module docstring: digits28 0.549 → 0.785)
        "fast": {"backbone": "convnet", "period_epochs": 5, "unroll_optimizer": "adam", "unroll_lr": 1e-3,
                 "init_side": 14, "init_features": "auto", "unfolding_rate": 0.5},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator, geometry, backbone_name, data = start_fit(images, cfg, context)
        model = JuleNet(build_backbone(backbone_name, geometry.size, geometry.channels),
                        cfg.embedding_dim).to(context.device)
        evaluate = geometry.augment("eval")

        labels = self._init(data, resolve_descriptor(cfg.init_features, images, min(images.image_shape[:2])), context)
        labels, neighbors = self._unroll(model, data, labels, evaluate, context, generator)
        features = embed(model, data, evaluate)

        label_index = torch.from_numpy(labels).to(features.device)
        # An estimate's step limit can end the unrolling with more than K clusters left: it sizes the centres.
        n_centres = max(cfg.n_clusters, int(labels.max()) + 1)
        centres = torch.zeros(n_centres, features.shape[1], device=features.device)
        centres.index_add_(0, label_index, features)
        self.cluster_centers_ = centres / torch.bincount(label_index, minlength=n_centres).clamp_min(1)[:, None]
        self.distance_scale_ = float(torch.cdist(features, self.cluster_centers_).pow(2).mean())
        self._finish(model, geometry, data, features)
        self.labels_ = labels  # the merged partition; probs_ are distances to its centres
        self.neighbors_ = neighbors.astype(np.int32)

    def _init(self, data: torch.Tensor, descriptor: str, context: FitContext) -> np.ndarray:
        stored = context.load_stage("init")
        if stored is not None and stored[1]:
            return stored[0]["labels"].cpu().numpy()
        context.start_stage("init", 1)
        if descriptor == "hog_colour":
            values, what = hog_colour_of_images(data, min(data.shape[1:3])), "HOG + colour map"
        else:
            pixels = to_float_nchw(data)
            if self.config.init_side is not None and pixels.shape[-1] > self.config.init_side:
                pixels = resize(pixels, self.config.init_side)
            values, what = pixels.flatten(1), "raw pixels"
        labels = nearest_neighbor_components(F.normalize(values, dim=1))
        n_clusters = int(labels.max()) + 1
        context.step("init", 1, 1, {"n_clusters": n_clusters})
        context.info("init", f"{n_clusters} initial clusters from the nearest-neighbour graph of the {what}")
        context.save_stage("init", {"labels": torch.from_numpy(labels)}, done=True)
        context.end_stage("init")
        return labels

    def _periods(self, n_clusters: int) -> int:
        periods = 0
        while n_clusters > self.config.n_clusters:
            n_clusters -= merges_in_period(n_clusters, self.config.n_clusters, self.config.unfolding_rate)
            periods += 1
        return periods

    def _unroll(self, model: JuleNet, data: torch.Tensor, labels: np.ndarray, evaluate, context: FitContext,
                generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Periods of CNN updates and merges until K clusters remain; returns (labels, the last K_s-NN graph).

        Each period is ``period_epochs`` epochs of the weighted triplet loss on the clusters as they stand, then
        one forward pass of merges (``after_epoch`` at the period's last epoch); the stage stops once K clusters
        remain. Its epochs are those of the periods the planned merges need (merging isolated clusters can make
        it fewer)."""
        cfg = self.config
        n_steps = max(1, len(data) // cfg.unroll_batch_size)
        optimizer = make_optimizer(cfg.unroll_optimizer, model.parameters(), cfg.unroll_lr, cfg.unroll_weight_decay,
                                   fused=context.speedups.fused_optimizer)
        forward = context.speedups.compiled(model)  # embedding (below) runs the plain model: no recompiles
        clusters = torch.from_numpy(labels).long().to(context.device)
        last_graph: list[np.ndarray] = []  # the K_s-NN graph of the last merge this process ran

        def triplet_batches(epoch: int):
            if epoch % cfg.period_epochs == 0 and int(clusters.max()) + 1 <= cfg.n_clusters:
                raise StopStage  # the last merge left K clusters (one read per period)
            return self._triplet_batches(clusters, n_steps, generator, context.device)

        def step(batch: tuple[torch.Tensor, torch.Tensor], at: Position) -> dict[str, torch.Tensor]:
            anchors, positives = batch
            both = torch.cat([anchors, positives])
            embedding = forward(evaluate(data[both])).float()
            is_negative = clusters[anchors].unsqueeze(1) != clusters[both].unsqueeze(0)
            return {"triplet": weighted_triplet_loss(embedding[:len(anchors)], embedding[len(anchors):], embedding,
                                                     is_negative, cfg.triplet_margin, cfg.positive_weight)}

        def merge(epoch: int) -> None:
            if (epoch + 1) % cfg.period_epochs:
                return
            current = clusters.cpu().numpy()
            n_clusters = int(current.max()) + 1
            merged, neighbors = agglomerate(embed(model, data, evaluate), current,
                                            merges_in_period(n_clusters, cfg.n_clusters, cfg.unfolding_rate), cfg)
            clusters.copy_(torch.from_numpy(merged))
            last_graph[:] = [neighbors]
            context.step("unroll", (epoch + 1) * n_steps, total, {"n_clusters": int(merged.max()) + 1})
            context.info("unroll", f"period {(epoch + 1) // cfg.period_epochs}: {n_clusters} → "
                                   f"{int(merged.max()) + 1} clusters")

        def inv_lr(step: int, total: int) -> float:  # Caffe's "inv" policy
            return cfg.unroll_lr * (1 + cfg.lr_decay_gamma * step) ** -cfg.lr_decay_power

        epochs = self._periods(int(labels.max()) + 1) * cfg.period_epochs
        total = epochs * n_steps
        train_epochs(context, "unroll", model, optimizer, step, epochs=epochs, generator=generator,
                     batches=BatchPlan(n_steps, triplet_batches), losses=("triplet", "n_clusters"), lr=cfg.unroll_lr,
                     lr_schedule=inv_lr, after_epoch=merge, checkpointed={"clusters": clusters},
                     clusters_of=lambda indices: clusters[indices])  # the clusters before the epoch's merges
        # the CNN is not trained after the last merge: its graph is the final embedding's
        neighbors = last_graph[0] if last_graph else knn_graph(embed(model, data, evaluate), cfg.n_neighbors)[0]
        return clusters.cpu().numpy(), neighbors

    def _triplet_batches(self, labels: torch.Tensor, n_steps: int, generator: torch.Generator,
                         device: torch.device):
        """``n_steps`` batches of (anchors, positives): anchors cycle through a random order of the images whose
        cluster has another image; each positive is a random other member of the anchor's cluster."""
        sizes = torch.bincount(labels)
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device) - starts[labels[order]]
        eligible = torch.nonzero(sizes[labels] > 1).squeeze(1)
        if len(eligible) == 0:
            return
        half = self.config.unroll_batch_size // 2
        needed = n_steps * half
        # every draw of the epoch is made here and copied over once: a copy per step would wait for the GPU
        orders = torch.cat([torch.randperm(len(eligible), generator=generator)
                            for _ in range(math.ceil(needed / len(eligible)))])[:needed]
        uniforms = torch.rand(n_steps, half, generator=generator)
        picks = eligible[to_device(orders, device)].view(n_steps, half)
        for anchors, u in zip(picks, to_device(uniforms, device)):
            cluster = labels[anchors]
            offset = (u * (sizes[cluster] - 1)).long()
            offset = offset + (offset >= rank[anchors]).long()  # skip the anchor itself
            yield anchors, order[starts[cluster] + offset]

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        squared = torch.cdist(embed(model, inputs, evaluate), self.cluster_centers_).pow(2)
        return torch.softmax(-10 * squared / max(self.distance_scale_, 1e-12), dim=1)

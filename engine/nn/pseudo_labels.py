"""Pseudo-labels and the losses that train on them: SPICE's two labelling rules (Niu, Shan & Wang, TIP 2022, §3.2
and §3.3), SPICE-Self's bounded loss and FixMatch's (Sohn et al., NeurIPS 2020). Plain functions of tensors, with
no training-loop knowledge.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_pseudo_labels(embeddings: torch.Tensor, probs: torch.Tensor, center_ratio: float = 0.5
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """SPICE-Self's semantic pseudo-labels for one batch (§3.2).

    For each cluster c the ⌊center_ratio·B/K⌋ samples with the highest p_c are averaged into a prototype μ_c in
    the embedding space; the ⌊B/K⌋ samples most similar to μ_c (dot product with the L2-normalised embeddings)
    are labelled c.

    Args:
        embeddings: B×D L2-normalised embeddings of the batch.
        probs: B×K cluster probabilities of the batch (one head).
        center_ratio: share of B/K confident samples averaged into each prototype.

    Returns:
        (indices, labels), both of length K·⌊B/K⌋; an index may appear under two labels.

    Examples:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> probs = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.5, 0.5], [0.4, 0.6]])
        >>> idx, lab = prototype_pseudo_labels(emb, probs, center_ratio=0.5)
        >>> sorted(zip(idx.tolist(), lab.tolist()))
        [(0, 0), (1, 0), (2, 1), (3, 1)]
    """
    if embeddings.ndim != 2 or probs.ndim != 2 or len(embeddings) != len(probs):
        raise ValueError(f"embeddings B×D and probs B×K must have the same B, got {tuple(embeddings.shape)} "
                         f"and {tuple(probs.shape)}")
    n, k = probs.shape
    per_cluster = n // k
    if per_cluster < 1:
        raise ValueError(f"a batch of {n} images cannot give pseudo-labels to {k} clusters; use batches ≥ K")
    n_center = max(1, int(center_ratio * per_cluster))
    confident = probs.topk(n_center, dim=0).indices  # n_center×K
    prototypes = embeddings[confident].mean(dim=0)  # K×D
    chosen = (prototypes @ embeddings.t()).topk(per_cluster, dim=1).indices  # K×(B/K)
    labels = torch.arange(k, device=probs.device)[:, None].expand_as(chosen)
    return chosen.flatten(), labels.flatten()


def reliable_pseudo_labels(neighbors: torch.Tensor, probs: torch.Tensor, consistency: float, confidence: float
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """SPICE-Semi's reliable labels by local consistency (§3.3), balanced across clusters.

    An image is reliable when the share of its neighbours predicted in its own cluster is ≥ ``consistency`` and
    its confidence max_c p_c is > ``confidence``. Every cluster then keeps the same number m of images (the
    smallest reliable count of a cluster that has any), its most consistent, then most confident ones; a cluster
    with no reliable image contributes its m most consistent members.

    Args:
        neighbors: N×k indices of each image's nearest neighbours (itself excluded).
        probs: N×K cluster probabilities.

    Returns:
        (indices, labels) of the labelled set.

    Examples:
        >>> probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
        >>> neighbors = torch.tensor([[1], [0], [3], [2], [0]])  # image 4's neighbour is in the other cluster
        >>> idx, lab = reliable_pseudo_labels(neighbors, probs, consistency=0.9, confidence=0.5)
        >>> sorted(zip(idx.tolist(), lab.tolist()))
        [(0, 0), (1, 0), (2, 1), (3, 1)]
    """
    confidence_of, labels = probs.max(dim=1)
    agreement = (labels[neighbors] == labels[:, None]).float().mean(dim=1)
    reliable = (agreement >= consistency) & (confidence_of > confidence)
    k = probs.shape[1]
    counts = torch.bincount(labels[reliable], minlength=k)
    present = torch.bincount(labels, minlength=k) > 0
    m = int(counts[counts > 0].min()) if bool((counts > 0).any()) else 1
    # reliable first, then by agreement, then by confidence (confidence ≤ 1 only breaks ties of agreement)
    score = reliable.float() * 4 + agreement * 2 + confidence_of
    indices, chosen_labels = [], []
    for c in torch.nonzero(present).flatten().tolist():
        members = torch.nonzero(labels == c).flatten()
        keep = members[score[members].argsort(descending=True)[:m]]
        indices.append(keep)
        chosen_labels.append(torch.full_like(keep, c))
    return torch.cat(indices), torch.cat(chosen_labels)


def spice_self_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SPICE-Self's loss as the official code computes it: the cross-entropy of the cluster probabilities p =
    softmax(z) taken as scores, −log(e^{p_y} / Σ_c e^{p_c}), averaged over the batch.

    Because p lies on the simplex the loss is bounded, between log(e + K − 1) − 1 (p one-hot on the target) and
    log(e + K − 1) (p one-hot elsewhere): a wrong pseudo-label cannot dominate the gradient.

    Examples:
        >>> round(float(spice_self_loss(torch.tensor([[50.0, 0.0]]), torch.tensor([0]))), 4)  # log(e+1) − 1
        0.3133
    """
    return F.cross_entropy(F.softmax(logits, dim=1), targets)


def fixmatch_loss(logits_labeled: torch.Tensor, targets: torch.Tensor, logits_weak: torch.Tensor,
                  logits_strong: torch.Tensor, threshold: float = 0.95, unlabeled_weight: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's loss (Sohn et al. 2020, eqs. 1–4): ℓ_s + λ_u·ℓ_u with ℓ_s the cross-entropy on labelled weak
    views and ℓ_u = 1/μB Σ 1(max q_b ≥ τ) H(argmax q_b, p(y|strong view)), q_b the (detached) weak-view prediction.

    Returns (total, ℓ_s, ℓ_u, share of unlabelled images above the threshold).
    """
    supervised = F.cross_entropy(logits_labeled, targets)
    confidence, pseudo = F.softmax(logits_weak.detach(), dim=1).max(dim=1)
    mask = (confidence >= threshold).float()
    unsupervised = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
    return supervised + unlabeled_weight * unsupervised, supervised, unsupervised, mask.mean()

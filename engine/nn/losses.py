"""Losses shared by the methods. Each is a plain function of tensors with no training-loop knowledge."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020, eq. 1), averaged over the 2N anchors.

    Row i of ``z_a`` and row i of ``z_b`` are two views of one sample (the positive pair); the other 2N−2 rows are
    negatives: ℓ(i,j) = −log exp(sim(z_i,z_j)/τ) / Σ_{k≠i} exp(sim(z_i,z_k)/τ), sim = cosine similarity.

    Examples:
        >>> z = torch.randn(8, 16)
        >>> float(nt_xent_loss(z, z, temperature=0.1)) < float(nt_xent_loss(z, torch.randn(8, 16), 0.1))
        True
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"nt_xent_loss expects two N×D tensors of one shape, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # made on the device: no copy from the host
    return F.cross_entropy(logits, positives)


def entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shannon entropy −Σ p log p along the last dimension."""
    return -(probs * torch.log(probs.clamp_min(eps))).sum(dim=-1)


def scan_loss(anchor_logits: torch.Tensor, neighbor_logits: torch.Tensor,
              entropy_weight: float = 5.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCAN clustering loss (Van Gansbeke et al. 2020, eq. 2) for one head.

    Λ = −1/|D| Σ_X Σ_{k∈N_X} log⟨Φ(X), Φ(k)⟩ + λ Σ_c Φ'_c log Φ'_c, with Φ'_c the mean assignment to cluster c.
    The second term is minus the entropy of the mean prediction: it pushes towards using every cluster.

    Returns (total, consistency, entropy of the mean prediction) so the terms can be plotted separately.
    """
    p_anchor = F.softmax(anchor_logits, dim=1)
    p_neighbor = F.softmax(neighbor_logits, dim=1)
    similarity = (p_anchor * p_neighbor).sum(dim=1)
    consistency = -torch.log(similarity.clamp_min(1e-7)).mean()
    mean_entropy = entropy(p_anchor.mean(dim=0))
    return consistency - entropy_weight * mean_entropy, consistency, mean_entropy


def class_balanced_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, n_classes: int,
                                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with each class weighted by the inverse of its frequency in ``targets``.

    SCAN's self-labelling step (§2.3) uses it so that the few confident samples of small clusters are not drowned
    by large ones. ``mask`` (N booleans) keeps only some samples, the confident ones: it weighs the others by 0
    instead of indexing them out, because indexing by a mask waits for the GPU to count it. With no sample kept
    the loss is 0.

    Examples:
        >>> logits, targets = torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
        >>> keep = torch.tensor([True, True, False, True, True, False])
        >>> full = class_balanced_cross_entropy(logits[keep], targets[keep], 3)
        >>> torch.allclose(class_balanced_cross_entropy(logits, targets, 3, keep), full)
        True
    """
    kept = torch.ones_like(targets, dtype=torch.float32) if mask is None else mask.float()
    counts = torch.zeros(n_classes, device=targets.device).scatter_add_(0, targets, kept)  # no bincount: no sync
    class_weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), 0.0)
    weights = class_weights[targets] * kept
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)

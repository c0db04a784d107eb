"""Momentum-contrast pieces: a FIFO queue of key features, InfoNCE against that queue, and the cosine schedule of
a target network's EMA momentum.

MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020) keeps the keys
of past batches in a queue so that each query meets many more negatives than one batch holds; the keys come from
a slowly moving (EMA) copy of the encoder so that the queued keys stay consistent. SPICE's MoCo v2 pretext and the
super-multi-class model's BYOL-style pretext both use them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    """A ring buffer of the ``size`` most recent L2-normalised key features (MoCo §3.2 "dictionary as a queue").

    The buffer starts filled with random unit vectors, as MoCo's does, so it can be used from the first step. It is
    a module buffer, so it is saved and restored with ``state_dict`` (a resumed pretext keeps its negatives).

    Examples:
        >>> queue = FeatureQueue(dim=4, size=3)
        >>> queue.enqueue(torch.eye(4)[:2])
        >>> queue.features.shape, int(queue.pointer)
        (torch.Size([3, 4]), 2)
        >>> queue.enqueue(torch.eye(4)[2:])  # wraps around: the oldest row is overwritten
        >>> queue.features[0].tolist()
        [0.0, 0.0, 0.0, 1.0]
    """

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"a feature queue needs dim ≥ 1 and size ≥ 1, got dim={dim}, size={size}")
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write a batch of keys (N×D, normalised here) over the oldest entries; a batch longer than the queue
        keeps only its last ``size`` rows."""
        if keys.ndim != 2 or keys.shape[1] != self.features.shape[1]:
            raise ValueError(f"keys must be N×{self.features.shape[1]}, got {tuple(keys.shape)}")
        keys = F.normalize(keys.detach(), dim=1)[-self.size:].to(self.features.dtype)
        positions = (self.pointer + torch.arange(len(keys), device=keys.device)) % self.size
        self.features[positions] = keys
        self.pointer.copy_((self.pointer + len(keys)) % self.size)


def queue_info_nce_loss(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor,
                        temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of MoCo (eq. 1) with the negatives taken from a queue, averaged over the batch.

    L_q = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋∈queue} exp(q·k₋/τ)), with q, k₊ and the queue L2-normalised:
    row i of ``query`` and row i of ``key`` are two views of one image; every row of ``negatives`` is a negative
    for every query. Gradients flow into ``query`` only when ``key`` comes from a no-grad target network.

    Examples:
        >>> q = torch.randn(8, 16)
        >>> queue = torch.randn(32, 16)
        >>> bool(queue_info_nce_loss(q, q, queue) < queue_info_nce_loss(q, q.roll(1, dims=0), queue))
        True
    """
    if query.ndim != 2 or query.shape != key.shape:
        raise ValueError(f"query and key must be two N×D tensors of one shape, got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    if negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"negatives must be M×{query.shape[1]}, got {tuple(negatives.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ F.normalize(negatives, dim=1).t()
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a cosine over training (BYOL, Grill et al. 2020, §3.2):
    m_k = final − (final − base)·(cos(πk/K) + 1)/2.

    Examples:
        >>> cosine_momentum(0, 100), cosine_momentum(100, 100)
        (0.996, 1.0)
    """
    if not 0.0 <= base <= final <= 1.0:
        raise ValueError(f"momentum needs 0 ≤ base ≤ final ≤ 1, got base={base}, final={final}")
    progress = min(step / max(total_steps, 1), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2

"""Heads put on top of a backbone: MLP projectors and (multi-)cluster heads."""
from __future__ import annotations

import torch
from torch import nn


def mlp_projector(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Sequential:
    """Linear–BN–ReLU–Linear projector of SimCLR (Chen et al. 2020, §2.1 g(·)); features are taken before it."""
    hidden_dim = hidden_dim or in_dim
    return nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class ClusterHeads(nn.Module):
    """``n_heads`` independent linear heads with K outputs each (SCAN trains several and keeps the best one).

    ``forward`` returns logits of shape n_heads×N×K.
    """

    def __init__(self, in_dim: int, n_clusters: int, n_heads: int = 1) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_dim, n_clusters) for _ in range(n_heads))

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads])

    def keep_only(self, head_index: int) -> None:
        """Drop every head but one, so later stages train and predict with the chosen head alone."""
        self.heads = nn.ModuleList([self.heads[head_index]])


class ClusterModel(nn.Module):
    """Backbone followed by cluster heads; ``forward`` returns n_heads×N×K logits."""

    def __init__(self, backbone: nn.Module, n_clusters: int, n_heads: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = ClusterHeads(backbone.out_dim, n_clusters, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))

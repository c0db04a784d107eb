"""Analysis of a finished run: clustering metrics, neighbour mining and neighbour purity."""

from .metrics import (
    SCORE_NAMES,
    ari,
    cluster_accuracy,
    cluster_purity,
    clustering_scores,
    match_clusters,
    mean_neighbor_purity,
    neighbor_purity,
    nmi,
    overall_purity,
    weighted_prf,
)
from .neighbors import mine_neighbors

__all__ = [
    "SCORE_NAMES",
    "ari",
    "cluster_accuracy",
    "cluster_purity",
    "clustering_scores",
    "match_clusters",
    "mean_neighbor_purity",
    "mine_neighbors",
    "neighbor_purity",
    "nmi",
    "overall_purity",
    "weighted_prf",
]

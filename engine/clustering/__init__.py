"""Clustering primitives the methods, the runs and the pages share: clustering metrics, k-nearest-neighbour
mining and K-means. They know nothing of methods, runs or pages, so every layer above may use them."""
from .kmeans import fit_kmeans
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
    "fit_kmeans",
    "match_clusters",
    "mean_neighbor_purity",
    "mine_neighbors",
    "neighbor_purity",
    "nmi",
    "overall_purity",
    "weighted_prf",
]

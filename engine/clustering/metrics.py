"""Clustering metrics (DESIGN.md §4): Hungarian accuracy, NMI, ARI, weighted P/R/F, purity, neighbour purity.

All scores are fractions in [0, 1] (ARI can be negative). Labels may be any integers (or other sortable
values); clusters and classes are matched by value, never by position, so cluster ids need not be 0..K-1.

Notation used in the docstrings: ``L`` is the contingency matrix with ``L[c, t]`` = number of samples put in
cluster ``c`` whose true class is ``t``; ``L_c = Σ_t L[c, t]`` is the size of cluster ``c``.

Examples:
    >>> cluster_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> match_clusters([0, 0, 1, 1], [1, 1, 0, 0])
    {0: 1, 1: 0}
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

SCORE_NAMES: tuple[str, ...] = ("acc", "nmi", "ari", "precision", "recall", "f1")


def _check_labels(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return both label vectors as 1-D arrays of equal, non-zero length, or raise ``ValueError``."""
    y_true = np.asarray(labels_true)
    y_pred = np.asarray(labels_pred)
    for name, arr in (("labels_true", y_true), ("labels_pred", y_pred)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name} is empty: metrics need at least one labelled sample")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"labels_true and labels_pred must have the same length, got {y_true.shape[0]} and {y_pred.shape[0]}"
        )
    return y_true, y_pred


def _contingency(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency matrix ``L`` (clusters × classes) with the sorted cluster and class values it indexes."""
    clusters, cluster_idx = np.unique(y_pred, return_inverse=True)
    classes, class_idx = np.unique(y_true, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (cluster_idx, class_idx), 1)
    return table, clusters, classes


def _hungarian(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (clusters) and columns (classes) of the one-to-one matching that maximises Σ matched ``L[c, t]``."""
    return linear_sum_assignment(table, maximize=True)


def cluster_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Clustering accuracy: ``ACC = max_m Σ_i 1[y_i = m(c_i)] / N`` over one-to-one maps ``m`` clusters → classes.

    The best map is found with the Hungarian algorithm on the contingency matrix. With more clusters than
    classes the surplus clusters stay unmatched and all their samples count as wrong; with fewer clusters
    than classes the unmatched classes are simply never predicted.
    """
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, _, _ = _contingency(y_true, y_pred)
    rows, cols = _hungarian(table)
    return float(table[rows, cols].sum() / y_true.shape[0])


def matched_pairs(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[int, int]:
    """The one-to-one cluster → class pairs of the Hungarian matching (surplus clusters or classes absent)."""
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, clusters, classes = _contingency(y_true, y_pred)
    rows, cols = _hungarian(table)
    return {clusters[c].item(): classes[t].item() for c, t in zip(rows, cols)}


def match_clusters(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[int, int]:
    """Cluster → class map of the Hungarian matching used by :func:`cluster_accuracy`.

    Every cluster present in ``labels_pred`` is a key. Clusters the one-to-one matching leaves unmatched
    (more clusters than classes) map to their majority class ``argmax_t L[c, t]``, so the map can relabel
    predictions for display; :func:`cluster_accuracy` still counts those clusters as wrong.
    """
    mapping = matched_pairs(labels_true, labels_pred)
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, clusters, classes = _contingency(y_true, y_pred)
    for c in range(clusters.size):
        key = clusters[c].item()
        if key not in mapping:
            mapping[key] = classes[int(np.argmax(table[c]))].item()
    return dict(sorted(mapping.items()))


def nmi(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Normalised mutual information ``I(Y; C) / mean(H(Y), H(C))`` (arithmetic mean, as scikit-learn)."""
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))


def ari(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): pair-counting agreement corrected for chance."""
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def weighted_prf(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[float, float, float]:
    """Weighted precision, recall and F over clusters, literally as DESIGN.md §4.

    For each cluster ``c`` with majority class ``t = argmax_t' L[c, t']`` (ties: the smallest class value):

    - ``p_c = L[c, t] / L_c``                  (share of the cluster that is its majority class)
    - ``r_c = L[c, t] / Σ_{c'} L[c', t]``      (share of class ``t``, over all clusters, caught by ``c``)
    - ``f_c = 2 p_c r_c / (p_c + r_c)``

    and each is averaged with weights ``L_c / Σ_c' L_c'`` (cluster size over N). Returns ``(P, R, F)``.
    """
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, _, _ = _contingency(y_true, y_pred)
    majority = table.argmax(axis=1)
    hits = table[np.arange(table.shape[0]), majority].astype(np.float64)
    cluster_sizes = table.sum(axis=1).astype(np.float64)
    class_sizes = table.sum(axis=0)[majority].astype(np.float64)
    precision = hits / cluster_sizes
    recall = hits / class_sizes
    # hits >= 1 for every non-empty cluster, so p + r > 0 and f is well defined.
    f_score = 2.0 * precision * recall / (precision + recall)
    weights = cluster_sizes / cluster_sizes.sum()
    return float(weights @ precision), float(weights @ recall), float(weights @ f_score)


def cluster_purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[int, float]:
    """Per-cluster purity ``max_t L[c, t] / L_c``: the share of cluster ``c`` taken by its majority class."""
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, clusters, _ = _contingency(y_true, y_pred)
    purities = table.max(axis=1) / table.sum(axis=1)
    return {clusters[c].item(): float(purities[c]) for c in range(clusters.size)}


def overall_purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Overall purity ``Σ_c max_t L[c, t] / N``: the size-weighted mean of :func:`cluster_purity`."""
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    table, _, _ = _contingency(y_true, y_pred)
    return float(table.max(axis=1).sum() / y_true.shape[0])


def _check_neighbors(neighbors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(neighbors, labels)`` as an N×k integer index array and an N-vector, or raise ``ValueError``."""
    nbrs = np.asarray(neighbors)
    lab = np.asarray(labels)
    if nbrs.ndim != 2:
        raise ValueError(f"neighbors must be an N×k array of indices, got shape {nbrs.shape}")
    if lab.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {lab.shape}")
    if nbrs.shape[0] == 0 or nbrs.shape[1] == 0:
        raise ValueError(f"neighbors is empty (shape {nbrs.shape}): need at least one sample and one neighbour")
    if nbrs.shape[0] != lab.shape[0]:
        raise ValueError(f"neighbors has {nbrs.shape[0]} rows but labels has {lab.shape[0]} entries")
    if not np.issubdtype(nbrs.dtype, np.integer):
        raise ValueError(f"neighbors must hold integer indices, got dtype {nbrs.dtype}")
    if nbrs.min() < 0 or nbrs.max() >= lab.shape[0]:
        raise ValueError(f"neighbor indices must lie in [0, {lab.shape[0] - 1}]")
    return nbrs, lab


def neighbor_purity(neighbors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample neighbour purity: ``purity_i = |{j ∈ N_k(i) : y_j = y_i}| / k`` (SCAN, Van Gansbeke et al. 2020).

    ``neighbors[i]`` holds the indices of sample ``i``'s ``k`` mined neighbours; returns a float vector of
    length N with values in [0, 1].
    """
    nbrs, lab = _check_neighbors(neighbors, labels)
    return (lab[nbrs] == lab[:, None]).mean(axis=1)


def mean_neighbor_purity(neighbors: np.ndarray, labels: np.ndarray, k: int | None = None) -> float:
    """Neighbour purity@k: the mean of :func:`neighbor_purity` over the first ``k`` columns (all if ``None``)."""
    nbrs, lab = _check_neighbors(neighbors, labels)
    if k is not None:
        if not 1 <= k <= nbrs.shape[1]:
            raise ValueError(f"k must be between 1 and the {nbrs.shape[1]} mined neighbours, got {k}")
        nbrs = nbrs[:, :k]
    return float(neighbor_purity(nbrs, lab).mean())


def best_neighbor_purity(labels: np.ndarray, k: int) -> float:
    """The highest neighbour purity@k the labels allow: an image of a class of n images has at most n − 1
    same-class neighbours, so its purity is at most min(k, n − 1) / k. Below 1 when a class has k images or fewer.

    Examples:
        >>> round(best_neighbor_purity(np.repeat([0, 1, 2], 10), k=20), 3)  # 9 same-class neighbours at most, of 20
        0.45
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    per_image = np.minimum(counts[labels] - 1, k) / k
    return float(per_image.mean())


def clustering_scores(labels_true: ArrayLike | None, labels_pred: ArrayLike) -> dict[str, float | None]:
    """ACC, NMI, ARI and weighted precision/recall/F1 under the keys of ``SCORE_NAMES``.

    Without ground truth (``labels_true is None``, e.g. an unlabelled ``folder:`` dataset) every key maps to
    ``None``, so callers can display one table shape either way.
    """
    if labels_true is None:
        return dict.fromkeys(SCORE_NAMES)
    y_true, y_pred = _check_labels(labels_true, labels_pred)
    precision, recall, f1 = weighted_prf(y_true, y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": nmi(y_true, y_pred),
        "ari": ari(y_true, y_pred),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }

"""Suspected mistakes: the images most worth a person's look, ranked.

Each image gets a few scores, higher meaning more suspect:

* ``neighbours`` — the share of its k neighbours (the mined ones, else the nearest in the features) that sit in
  another cluster: ``1 − |{j ∈ N_k(i) : c_j = c_i}| / k``. An image whose cluster disagrees with its neighbours'
  is likely in the wrong cluster.
* ``confidence`` — ``1 − p(c_i | x_i)``, one minus the probability of the image's own cluster: the run itself was
  unsure (or assigned it against its own probabilities).
* ``outlier`` — scikit-learn's Local Outlier Factor (Breunig et al., SIGMOD 2000) over the same k-neighbour graph,
  with cosine distances in the run's features: how much sparser an image's neighbourhood is than its neighbours'.
* ``centre`` — the cosine distance from the image to the nearest cluster centre (the normalised mean of a cluster's
  features) over the median of that distance in the image's own cluster: an image far from every centre fits no
  cluster well.
* ``label`` (labelled sets only) — the share of its neighbours whose label differs from its own
  (``1 − neighbour purity``, the k-NN label-noise signal): a mislabelled image disagrees with its neighbours.

The combined ranking puts first the images that are most extreme in any one score: each score becomes a percentile
rank in (0, 1] (ties share the highest) and an image is ranked by its largest percentile (the minimum of its
empirical p-values), ties by the mean of its percentiles. cleanlab's label-quality scores need its package (not
installed here) and out-of-sample predicted probabilities that a clustering does not have; LOF is scikit-learn's,
the rest is a line of numpy each.

Examples:
    >>> suspects = suspect_scores(assign, probs, neighbors, features, labels)   # doctest: +SKIP
    >>> suspects.ranking()[:10]           # the ten images to look at first     # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

from ..errors import UserError
from .results import RunResults, view_neighbors

SCORE_TITLES = {
    "neighbours": "cluster disagrees with its neighbours",
    "confidence": "low confidence",
    "outlier": "outlier (LOF)",
    "centre": "far from every centre",
    "label": "label disagrees with its neighbours",
}
COMBINED = "combined"
LOF_NEIGHBOURS = 20
REASON_PERCENTILE = 0.95  # a score at or above this percentile is named as a reason to look


@dataclass
class Suspects:
    """Per-image suspicion scores (name → N-vector, higher = more suspect) and their percentile ranks."""

    scores: dict[str, np.ndarray]
    percentiles: dict[str, np.ndarray]

    @property
    def names(self) -> list[str]:
        return list(self.scores)

    @property
    def combined(self) -> np.ndarray:
        """Each image's largest percentile over the scores: 1.0 for the most extreme image of some score."""
        return np.max(np.stack(list(self.percentiles.values())), axis=0)

    def ranking(self, by: str = COMBINED) -> np.ndarray:
        """Image indices, most suspect first, by one score or ``"combined"``; ties keep index order."""
        if by == COMBINED:
            stacked = np.stack(list(self.percentiles.values()))
            return np.lexsort((np.arange(stacked.shape[1]), -stacked.mean(axis=0), -stacked.max(axis=0)))
        if by not in self.scores:
            raise ValueError(f"unknown score {by!r}; choose from {COMBINED}, {', '.join(self.scores)}")
        return np.argsort(-self.scores[by], kind="stable")

    def reasons(self, index: int) -> list[str]:
        """The scores on which image ``index`` is among the top ``1 − REASON_PERCENTILE`` of images, most
        extreme first, as titles ("low confidence")."""
        extreme = [(self.percentiles[name][index], name) for name in self.scores
                   if self.percentiles[name][index] >= REASON_PERCENTILE]
        return [SCORE_TITLES[name] for _, name in sorted(extreme, reverse=True)]


def suspect_scores(assign: np.ndarray, probs: np.ndarray, neighbors: np.ndarray, features: np.ndarray | None = None,
                   labels: np.ndarray | None = None, lof_neighbors: int = LOF_NEIGHBOURS) -> Suspects:
    """Score every image of a clustering for how likely it is a mistake (see the module docstring).

    Args:
        assign: N cluster ids.
        probs: N×K soft assignments (rows sum to 1).
        neighbors: N×k neighbour indices, self excluded (:func:`~engine.clustering.neighbors.mine_neighbors`).
        features: N×D features the distances are measured in; ``probs`` when None.
        labels: N true labels, or None for an unlabelled set (no ``label`` score then).
        lof_neighbors: neighbours per image for LOF, at most k.

    Raises:
        ValueError: shapes that do not agree, or fewer than 2 neighbours per image.
    """
    assign, probs, neighbors = np.asarray(assign), np.asarray(probs), np.asarray(neighbors)
    n = len(assign)
    if probs.shape[0] != n or neighbors.shape[0] != n:
        raise ValueError(f"assign ({n}), probs ({probs.shape[0]}) and neighbors ({neighbors.shape[0]}) must have "
                         "one row per image")
    if neighbors.ndim != 2 or neighbors.shape[1] < 2:
        raise ValueError(f"suspects need at least 2 neighbours per image, got shape {neighbors.shape}")
    points = _unit_rows(np.asarray(features if features is not None else probs, dtype=np.float32))
    if points.shape[0] != n:
        raise ValueError(f"features have {points.shape[0]} rows for {n} images")
    scores = {
        "neighbours": (assign[neighbors] != assign[:, None]).mean(axis=1),
        "confidence": 1.0 - probs[np.arange(n), assign],
        "outlier": local_outlier_factor(points, neighbors, min(lof_neighbors, neighbors.shape[1])),
        "centre": centre_distance(points, assign),
    }
    if labels is not None:
        labels = np.asarray(labels)
        scores["label"] = (labels[neighbors] != labels[:, None]).mean(axis=1)
    scores = {name: np.asarray(value, dtype=np.float64) for name, value in scores.items()}
    # tied images share the highest rank of their tie: every image with the top value is as extreme as any
    percentiles = {name: rankdata(value, method="max") / n for name, value in scores.items()}
    return Suspects(scores, percentiles)


def local_outlier_factor(points: np.ndarray, neighbors: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's LOF of each row (≈1 inside a cluster, larger in sparse places), computed on the given
    neighbour graph with cosine distances rather than on a fresh all-pairs search, so it costs O(N·k)."""
    from sklearn.neighbors import LocalOutlierFactor, sort_graph_by_row_values

    n, width = neighbors.shape[0], neighbors.shape[1] + 1
    # each row holds the image itself at distance 0: LOF, fitted on its own graph, drops the first entry as self
    columns = np.concatenate([np.arange(n)[:, None], neighbors], axis=1)
    distances = np.zeros(columns.shape, dtype=np.float64)
    for j in range(1, width):  # one neighbour column at a time: N×D at once, never N×k×D
        distances[:, j] = np.maximum(1.0 - np.einsum("nd,nd->n", points, points[columns[:, j]]), 0.0)
    graph = sparse.csr_matrix((distances.ravel(), columns.ravel(), np.arange(0, n * width + 1, width)),
                              shape=(n, n))
    graph = sort_graph_by_row_values(graph, warn_when_not_sorted=False)
    return -LocalOutlierFactor(n_neighbors=k, metric="precomputed").fit(graph).negative_outlier_factor_


def centre_distance(points: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Cosine distance of each unit row to its nearest cluster centre, over the median of that distance among
    the members of its own cluster (so a loose cluster's members are not all flagged)."""
    clusters = np.unique(assign)
    centres = _unit_rows(np.stack([points[assign == c].mean(axis=0) for c in clusters]))
    nearest = np.maximum(1.0 - (points @ centres.T).max(axis=1), 0.0)
    scale = np.ones(len(points))
    for c in clusters:
        members = assign == c
        scale[members] = max(float(np.median(nearest[members])), 1e-6)
    return nearest / scale


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32).reshape(len(matrix), -1)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def run_suspects(results: RunResults) -> Suspects:
    """:func:`suspect_scores` of a finished run, over the neighbours the Neighbours page shows (its mined ones,
    else the nearest in its features, computed once and kept)."""
    if len(results.assign) < 3:
        raise UserError("suspects need at least 3 images, to compare each with 2 neighbours")
    neighbors, _ = view_neighbors(results)
    return suspect_scores(results.assign, results.probs, neighbors, results.features, results.labels)

"""Per-cluster views of a clustering: galleries ordered by confidence, the cluster × class confusion matrix after
Hungarian matching and the images of each of its cells, and the agreement between two runs on the same images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..clustering.metrics import matched_pairs


@dataclass
class ClusterSummary:
    """One cluster: its members, most confident first, and (with labels) its majority class and purity."""

    cluster: int
    members: np.ndarray
    confidence: np.ndarray
    majority_label: int | None
    purity: float | None

    @property
    def size(self) -> int:
        return int(len(self.members))


def cluster_summaries(assign: np.ndarray, confidence: np.ndarray, n_clusters: int,
                      labels: np.ndarray | None = None) -> list[ClusterSummary]:
    """One summary per cluster id 0..K−1 (empty clusters included, so a gallery shows all K)."""
    summaries = []
    for cluster in range(n_clusters):
        members = np.flatnonzero(assign == cluster)
        order = members[np.argsort(-confidence[members], kind="stable")]
        majority, purity = None, None
        if labels is not None and len(members):
            counts = np.bincount(labels[members])
            majority, purity = int(counts.argmax()), float(counts.max() / len(members))
        summaries.append(ClusterSummary(cluster, order, confidence[order], majority, purity))
    return summaries


def matched_confusion(labels: np.ndarray, assign: np.ndarray, n_clusters: int, n_classes: int
                      ) -> tuple[np.ndarray, list[int]]:
    """Confusion counts (clusters × classes) with clusters reordered so cluster row i is the one matched to
    class i by the Hungarian matching (unmatched clusters last); returns (matrix, cluster id of each row)."""
    mapping = matched_pairs(labels, assign)
    matched = sorted(mapping, key=lambda c: mapping[c])
    order = matched + [c for c in range(n_clusters) if c not in mapping]
    matrix = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(matrix, (assign, labels), 1)
    return matrix[order], order


def confusion_cells(labels: np.ndarray, assign: np.ndarray) -> list[tuple[int, int, int]]:
    """Every non-empty cell of the cluster × class confusion matrix as (cluster, class, images): first the cells
    off the Hungarian match, where the clustering's mistakes (or the labels') are, then the matched cells, each
    group largest first."""
    mapping = matched_pairs(labels, assign)
    pairs, counts = np.unique(np.stack([assign, labels], axis=1), axis=0, return_counts=True)
    cells = [(int(cluster), int(label), int(n)) for (cluster, label), n in zip(pairs, counts)]
    return sorted(cells, key=lambda cell: (mapping.get(cell[0]) == cell[1], -cell[2], cell[0], cell[1]))


def cell_members(assign: np.ndarray, labels: np.ndarray, confidence: np.ndarray, cluster: int, label: int
                 ) -> np.ndarray:
    """The images of one confusion-matrix cell: put in ``cluster``, labelled ``label``; most confident first."""
    members = np.flatnonzero((assign == cluster) & (labels == label))
    return members[np.argsort(-confidence[members], kind="stable")]


def run_agreement(assign_a: np.ndarray, assign_b: np.ndarray) -> tuple[dict[int, int], dict[int, float], float]:
    """Match run B's clusters to run A's (Hungarian on their co-occurrence) and measure the overlap.

    Returns (cluster of A → matched cluster of B, per A-cluster share of its members that B put in the matched
    cluster, overall share of images on which the matched runs agree).
    """
    if len(assign_a) != len(assign_b):
        raise ValueError(f"the runs clustered different numbers of images ({len(assign_a)} and {len(assign_b)})")
    # A plays the "classes" and B the "clusters" of the usual matching
    a_to_b = {a: b for b, a in matched_pairs(assign_a, assign_b).items()}
    overlap = {}
    for a in np.unique(assign_a):
        members = assign_a == a
        b = a_to_b.get(int(a))
        overlap[int(a)] = float(np.mean(assign_b[members] == b)) if b is not None else 0.0
    matched_b = np.array([a_to_b.get(int(a), -1) for a in range(int(assign_a.max()) + 1)])
    return a_to_b, overlap, float(np.mean(matched_b[assign_a] == assign_b))


def aligned_rows(assign_a: np.ndarray, assign_b: np.ndarray, n_a: int, n_b: int
                 ) -> list[tuple[int | None, int | None]]:
    """Rows for showing two runs side by side: every cluster of A (in id order) next to the cluster of B the
    Hungarian matching pairs it with (None when it has no partner), then B's unmatched clusters next to None."""
    a_to_b, _, _ = run_agreement(assign_a, assign_b)
    rows: list[tuple[int | None, int | None]] = [(a, a_to_b.get(a)) for a in range(n_a)]
    matched_b = set(a_to_b.values())
    return rows + [(None, b) for b in range(n_b) if b not in matched_b]


def disagreements(assign_a: np.ndarray, assign_b: np.ndarray) -> np.ndarray:
    """Indices of the images run B did not put in the cluster matched to their cluster in run A (the images
    whose A-cluster has no partner included), in index order."""
    a_to_b, _, _ = run_agreement(assign_a, assign_b)
    partner = np.array([a_to_b.get(a, -1) for a in range(int(assign_a.max()) + 1)])
    return np.flatnonzero(partner[assign_a] != assign_b)


GALLERY_ORDERS = ("most", "least")


def gallery_members(summary: ClusterSummary, order: str = "most", page: int = 1, per_page: int = 30
                    ) -> np.ndarray:
    """One page of a cluster's members: page 1 holds its ``per_page`` most (``order="most"``) or least
    (``"least"``) confident images; a page past the end is empty."""
    if order not in GALLERY_ORDERS:
        raise ValueError(f"order must be one of {', '.join(GALLERY_ORDERS)}, got {order!r}")
    if page < 1 or per_page < 1:
        raise ValueError(f"page and per_page start at 1, got page={page}, per_page={per_page}")
    members = summary.members if order == "most" else summary.members[::-1]
    return np.ascontiguousarray(members[(page - 1) * per_page:page * per_page])  # torch indexes no reversed view


def off_majority(summary: ClusterSummary, members: np.ndarray, labels: np.ndarray | None) -> list[bool] | None:
    """Per member: does its label differ from the cluster's majority label (None without labels)."""
    if labels is None:
        return None
    return [bool(flag) for flag in labels[members] != summary.majority_label]

"""Agglomerative clustering with graph degree linkage (GDL; Zhang, Wang, Zhao & Tang, ECCV 2012), the forward pass
of JULE (Yang, Parikh & Batra, CVPR 2016, §3.2): a K_s-NN graph of the features with Gaussian weights, first
clusters from nearest-neighbour links, then merges by the GDL affinity under JULE's merge criterion.
"""
from __future__ import annotations

import heapq
from operator import itemgetter

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from .neighbors import mine_neighbors


def knn_graph(features: torch.Tensor, n_neighbors: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """The directed K_s-NN graph of L2-normalised features with Gaussian weights exp(−d²/σ²), σ² the mean squared
    distance to the K_s neighbours (a = 1 in the paper's notation).

    Returns (neighbour indices N×K_s, sparse weights N×N)."""
    n = len(features)
    k = min(n_neighbors, n - 1)
    neighbors = mine_neighbors(features, k)
    index = torch.from_numpy(neighbors).long().to(features.device)
    blocks = []
    for start in range(0, n, 4096):
        cosine = (features[start:start + 4096].unsqueeze(1) * features[index[start:start + 4096]]).sum(-1)
        blocks.append((2 - 2 * cosine).clamp_min(0))  # ‖x_i − x_j‖² of unit vectors
    squared = torch.cat(blocks).cpu().double().numpy()
    weights = np.exp(-squared / max(squared.mean(), 1e-12))
    graph = sp.csr_matrix((weights.ravel(), neighbors.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    return neighbors, graph


def nearest_neighbor_components(features: torch.Tensor) -> np.ndarray:
    """Initial clusters: connected components of the graph linking every sample to its nearest neighbour."""
    n = len(features)
    nearest = mine_neighbors(features, 1)[:, 0]
    graph = sp.csr_matrix((np.ones(n), nearest, np.arange(n + 1)), shape=(n, n))
    return connected_components(graph, directed=True, connection="weak")[1]


def _add_sparse(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sum of two sparse vectors given as (sorted indices, values)."""
    index = np.concatenate([a[0], b[0]])
    unique, inverse = np.unique(index, return_inverse=True)
    return unique, np.bincount(inverse, weights=np.concatenate([a[1], b[1]]), minlength=len(unique))


class GraphDegreeLinkage:
    """Agglomerative clustering of a fixed K_s-NN graph with the GDL affinity and JULE's merge criterion.

    With S(a, b) = 1ᵀW_{a,b}W_{b,a}1 = Σ_{j∈b} in_a(j)·out_a(j) (the weight of the 2-paths a → b → a, where
    in_a(j) = Σ_{i∈a} w_ij and out_a(j) = Σ_{i∈a} w_ji), A(a, b) = S(a, b)/|a|² + S(b, a)/|b|². A merge of a and b
    adds their in/out vectors, recomputes S(a∪b, ·) from them, and S(c, a∪b) = S(c, a) + S(c, b) for the rest:
    exact, with memory linear in the graph's size. Clusters keep their K_c strongest affinities and their score;
    a merge only rescores the clusters whose top K_c it can change.

    Args:
        features: N×D L2-normalised features (for centroids when a cluster has no affinity to any other).
        graph: N×N sparse graph weights w_ij. labels: N initial cluster ids.
    """

    def __init__(self, features: np.ndarray, graph: sp.csr_matrix, labels: np.ndarray, n_cluster_neighbors: int,
                 merge_lambda: float) -> None:
        self.features = features
        self.k_c = n_cluster_neighbors
        self.merge_lambda = merge_lambda
        _, self.labels = np.unique(labels, return_inverse=True)
        n, c = len(self.labels), int(self.labels.max()) + 1
        membership = sp.csr_matrix((np.ones(n), self.labels, np.arange(n + 1)), shape=(n, c))
        out_weights = (graph @ membership).tocsc()  # out_a(j), column a
        in_weights = (graph.T @ membership).tocsc()  # in_a(j), column a
        paths = (in_weights.multiply(out_weights).T @ membership).tocoo()  # S, c×c
        self.sizes = np.bincount(self.labels, minlength=c).astype(np.float64)
        order = np.argsort(self.labels, kind="stable")
        self.members = dict(enumerate(np.split(order, np.cumsum(self.sizes[:-1].astype(np.int64)))))
        self.in_vec = {a: self._column(in_weights, a) for a in range(c)}
        self.out_vec = {a: self._column(out_weights, a) for a in range(c)}
        self.ends: dict[int, dict[int, float]] = {a: {} for a in range(c)}  # ends[a][b] = S(a, b)
        self.mids: dict[int, set[int]] = {a: set() for a in range(c)}  # mids[b] = {a : S(a, b) > 0}
        for a, b, value in zip(paths.row.tolist(), paths.col.tolist(), paths.data.tolist()):
            if a != b and value > 0:
                self.ends[a][b] = value
                self.mids[b].add(a)
        self.affinity: dict[int, dict[int, float]] = {a: {} for a in range(c)}
        for a in range(c):
            for b in self.ends[a].keys() | self.mids[a]:
                self.affinity[a][b] = self._gdl(a, b)
        self.top: dict[int, list[tuple[int, float]]] = {}  # the K_c strongest (neighbour, affinity), best first
        self.top_ids: dict[int, set[int]] = {}
        self.score = np.full(c, -np.inf)
        for a in range(c):
            self._rescore(a)
        self.n_clusters = c

    @staticmethod
    def _column(matrix: sp.csc_matrix, a: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = matrix.indptr[a], matrix.indptr[a + 1]
        return matrix.indices[start:stop].astype(np.int64), matrix.data[start:stop].astype(np.float64)

    def _gdl(self, a: int, b: int) -> float:
        return (self.ends[a].get(b, 0.0) / self.sizes[a] ** 2 + self.ends[b].get(a, 0.0) / self.sizes[b] ** 2)

    def _rescore(self, a: int) -> None:
        """Cluster a's K_c strongest affinities and its merge criterion (missing neighbours count as 0)."""
        top = heapq.nlargest(self.k_c, self.affinity[a].items(), key=itemgetter(1))
        self.top[a] = top
        self.top_ids[a] = {b for b, _ in top}
        if not top:
            self.score[a] = -np.inf
            return
        best = top[0][1]
        local = sum(best - value for _, value in top[1:]) + best * (self.k_c - len(top))
        self.score[a] = best + (self.merge_lambda / (self.k_c - 1) * local if self.k_c > 1 else 0.0)

    def _nearest_by_centroid(self, clusters: list[int]) -> list[int]:
        """For each given cluster, the other live cluster whose centroid is nearest to its own."""
        ids = np.fromiter(self.members, dtype=np.int64)
        position = np.full(len(self.sizes), -1)
        position[ids] = np.arange(len(ids))
        membership = sp.csr_matrix((np.ones(len(self.labels)), position[self.labels], np.arange(len(self.labels) + 1)),
                                   shape=(len(self.labels), len(ids)))
        centroids = (membership.T @ self.features) / self.sizes[ids, None]
        squared_norms = (centroids ** 2).sum(1)
        partners = []
        for start in range(0, len(clusters), 1024):
            rows = position[np.asarray(clusters[start:start + 1024])]
            distances = squared_norms[rows, None] - 2 * centroids[rows] @ centroids.T + squared_norms[None, :]
            distances[np.arange(len(rows)), rows] = np.inf
            partners.extend(ids[distances.argmin(1)].tolist())
        return partners

    def merge(self, a: int, b: int) -> None:
        """Merge clusters a and b (the larger keeps its id) and update affinities, top lists and scores."""
        keep, gone = (a, b) if self.sizes[a] >= self.sizes[b] else (b, a)
        touched = (self.affinity[keep].keys() | self.affinity.pop(gone).keys()) - {keep, gone}
        for c in touched:
            self.affinity[c].pop(keep, None)
            self.affinity[c].pop(gone, None)
        self.affinity[keep] = {}

        self.labels[self.members[gone]] = keep
        self.members[keep] = np.concatenate([self.members[keep], self.members.pop(gone)])
        self.sizes[keep] += self.sizes[gone]
        self.sizes[gone] = 0
        self.in_vec[keep] = _add_sparse(self.in_vec[keep], self.in_vec.pop(gone))
        self.out_vec[keep] = _add_sparse(self.out_vec[keep], self.out_vec.pop(gone))

        # paths through the merged cluster: S(c, keep ∪ gone) = S(c, keep) + S(c, gone)
        for c in self.ends[keep]:
            self.mids[c].discard(keep)
        for c in self.ends.pop(gone):
            self.mids[c].discard(gone)
        for c in self.mids.pop(gone):
            if c != keep:
                self.ends[c][keep] = self.ends[c].get(keep, 0.0) + self.ends[c].pop(gone)
                self.mids[keep].add(c)
        # paths from the merged cluster: recomputed exactly from its in/out vectors
        (in_index, in_value), (out_index, out_value) = self.in_vec[keep], self.out_vec[keep]
        common, in_at, out_at = np.intersect1d(in_index, out_index, assume_unique=True, return_indices=True)
        through = self.labels[common]
        clusters, inverse = np.unique(through, return_inverse=True)
        totals = np.bincount(inverse, weights=in_value[in_at] * out_value[out_at], minlength=len(clusters))
        self.ends[keep] = {c: v for c, v in zip(clusters.tolist(), totals.tolist()) if c != keep and v > 0}
        for c in self.ends[keep]:
            self.mids[c].add(keep)

        for c in self.ends[keep].keys() | self.mids[keep]:
            value = self._gdl(keep, c)
            if value > 0:
                self.affinity[keep][c] = value
                self.affinity[c][keep] = value
        self.score[gone] = -np.inf
        self.top.pop(gone, None)
        self.top_ids.pop(gone, None)
        self._rescore(keep)
        for c in touched | self.affinity[keep].keys():  # only these clusters' affinities changed
            ids = self.top_ids[c]
            if (keep in ids or gone in ids or len(ids) < self.k_c
                    or self.affinity[c].get(keep, 0.0) > self.top[c][-1][1]):
                self._rescore(c)
        self.n_clusters -= 1

    def merge_isolated(self, min_clusters: int) -> int:
        """Merge every cluster with no affinity to any other into the cluster with the nearest centroid (centroids
        as they are before these merges)."""
        isolated = [a for a in self.members if not self.affinity[a]]
        if not isolated:
            return 0
        representative = {b: self.members[b][0] for b in self.members}
        merged = 0
        for a, partner in zip(isolated, self._nearest_by_centroid(isolated)):
            if self.n_clusters <= min_clusters:
                break
            a, partner = int(self.labels[representative[a]]), int(self.labels[representative[partner]])
            if a != partner:
                self.merge(a, partner)
                merged += 1
        return merged

    def run(self, n_merges: int, min_clusters: int, min_size: float = 0.0) -> None:
        """``n_merges`` timesteps, each merging the best pair by the criterion, never below ``min_clusters``.

        Once fewer than 2·``min_clusters`` clusters remain, a cluster smaller than ``min_size`` is merged first,
        into its strongest-affinity neighbour (else the nearest centroid)."""
        for _ in range(min(n_merges, self.n_clusters - min_clusters)):
            a = int(self.score.argmax())
            stuck = self.score[a] == -np.inf  # no pair with affinity left
            if stuck or self.n_clusters < 2 * min_clusters:
                smallest = min(self.members, key=lambda c: self.sizes[c])
                if stuck or self.sizes[smallest] < min_size:
                    a = smallest
            if self.top[a]:
                self.merge(a, self.top[a][0][0])
            else:  # a cluster with no affinity to any other joins its nearest centroid
                self.merge(a, self._nearest_by_centroid([a])[0])

    def compact_labels(self) -> np.ndarray:
        return np.unique(self.labels, return_inverse=True)[1]

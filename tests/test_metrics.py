"""Specification of engine.clustering.metrics (DESIGN.md §4), on cases small enough to check by hand."""

import numpy as np
import pytest

from engine.clustering.metrics import (
    SCORE_NAMES,
    ari,
    best_neighbor_purity,
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

# Hand-worked case: 3 classes, 2 clusters, N = 10. Contingency L (rows = clusters, columns = classes):
#             class 0  class 1  class 2 | L_c
#   cluster 0    4        1        1    |  6
#   cluster 1    0        3        1    |  4
#   class size   4        4        2
HAND_TRUE = [0, 0, 0, 0, 1, 2, 1, 1, 1, 2]
HAND_PRED = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]

# More clusters than classes: 2 classes, 3 clusters, N = 8.
#             class 0  class 1 | L_c
#   cluster 0    3        0    |  3
#   cluster 1    0        3    |  3
#   cluster 2    0        2    |  2
#   class size   3        5
EXTRA_TRUE = [0, 0, 0, 1, 1, 1, 1, 1]
EXTRA_PRED = [0, 0, 0, 1, 1, 1, 2, 2]


def test_permuted_labels_score_perfectly():
    truth = [0, 0, 1, 1, 2, 2]
    permuted = [2, 2, 0, 0, 1, 1]
    assert cluster_accuracy(truth, permuted) == 1.0
    assert nmi(truth, permuted) == pytest.approx(1.0)
    assert ari(truth, permuted) == pytest.approx(1.0)
    assert weighted_prf(truth, permuted) == pytest.approx((1.0, 1.0, 1.0))
    assert match_clusters(truth, permuted) == {0: 1, 1: 2, 2: 0}


def test_cluster_ids_need_not_be_contiguous():
    assert cluster_accuracy([0, 0, 1, 1], [7, 7, -3, -3]) == 1.0
    assert match_clusters([0, 0, 1, 1], [7, 7, -3, -3]) == {-3: 1, 7: 0}


def test_hand_case_accuracy_uses_the_best_one_to_one_matching():
    # Best matching: cluster 0 -> class 0 (4 hits) + cluster 1 -> class 1 (3 hits) = 7 of 10.
    assert cluster_accuracy(HAND_TRUE, HAND_PRED) == pytest.approx(0.7)
    assert match_clusters(HAND_TRUE, HAND_PRED) == {0: 0, 1: 1}


def test_hand_case_weighted_precision_recall_f():
    # Cluster 0: majority class 0; p = 4/6, r = 4/4 (class 0 has 4 samples), f = 2*(2/3)*1/(2/3+1) = 0.8.
    # Cluster 1: majority class 1; p = 3/4, r = 3/4 (class 1 has 4 samples), f = 0.75.
    # Weights L_c / N = 0.6, 0.4:
    #   P = 0.6*2/3 + 0.4*0.75 = 0.70;  R = 0.6*1 + 0.4*0.75 = 0.90;  F = 0.6*0.8 + 0.4*0.75 = 0.78.
    precision, recall, f1 = weighted_prf(HAND_TRUE, HAND_PRED)
    assert precision == pytest.approx(0.70)
    assert recall == pytest.approx(0.90)
    assert f1 == pytest.approx(0.78)


def test_hand_case_purity():
    # Cluster 0: 4 of 6 are class 0; cluster 1: 3 of 4 are class 1; overall (4 + 3) / 10.
    assert cluster_purity(HAND_TRUE, HAND_PRED) == pytest.approx({0: 4 / 6, 1: 3 / 4})
    assert overall_purity(HAND_TRUE, HAND_PRED) == pytest.approx(0.7)


def test_surplus_clusters_count_as_wrong_in_accuracy():
    # Clusters 0 and 1 take classes 0 and 1 (6 hits); cluster 2 is left unmatched, so ACC = 6/8,
    # although every cluster is pure.
    assert cluster_accuracy(EXTRA_TRUE, EXTRA_PRED) == pytest.approx(0.75)
    assert overall_purity(EXTRA_TRUE, EXTRA_PRED) == 1.0


def test_surplus_clusters_map_to_their_majority_class():
    assert match_clusters(EXTRA_TRUE, EXTRA_PRED) == {0: 0, 1: 1, 2: 1}


def test_surplus_clusters_weighted_prf():
    # Every cluster is pure, so p_c = 1. Recall divides by the whole class size:
    #   r = 3/3, 3/5, 2/5;  f = 1, 2*0.6/1.6 = 0.75, 2*0.4/1.4 = 4/7;  weights 3/8, 3/8, 2/8.
    #   R = 3/8 + 3/8*0.6 + 2/8*0.4 = 0.7;  F = 3/8 + 3/8*0.75 + 2/8*4/7.
    precision, recall, f1 = weighted_prf(EXTRA_TRUE, EXTRA_PRED)
    assert precision == pytest.approx(1.0)
    assert recall == pytest.approx(0.7)
    assert f1 == pytest.approx(3 / 8 + 3 / 8 * 0.75 + 2 / 8 * 4 / 7)


def test_fewer_clusters_than_classes_caps_accuracy():
    # One cluster for two balanced classes: at most half can be right.
    assert cluster_accuracy([0, 0, 1, 1], [5, 5, 5, 5]) == 0.5


def test_nmi_and_ari_match_known_values():
    # Independent labellings: no shared information, ARI at chance level or below.
    truth = [0, 0, 1, 1]
    pred = [0, 1, 0, 1]
    assert nmi(truth, pred) == pytest.approx(0.0)
    assert ari(truth, pred) == pytest.approx(-0.5)


def test_clustering_scores_bundles_all_metrics():
    scores = clustering_scores(HAND_TRUE, HAND_PRED)
    assert tuple(scores) == SCORE_NAMES
    assert scores["acc"] == pytest.approx(0.7)
    assert scores["nmi"] == pytest.approx(nmi(HAND_TRUE, HAND_PRED))
    assert scores["ari"] == pytest.approx(ari(HAND_TRUE, HAND_PRED))
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((0.70, 0.90, 0.78))
    assert all(isinstance(value, float) and value <= 1.0 for value in scores.values())


def test_clustering_scores_without_ground_truth_are_none():
    assert clustering_scores(None, [0, 1, 1]) == dict.fromkeys(SCORE_NAMES)


def test_neighbor_purity_hand_case():
    labels = np.array([0, 0, 0, 1, 1])
    neighbors = np.array(
        [
            [1, 2],  # both class 0       -> 1.0
            [3, 0],  # one of two         -> 0.5
            [4, 3],  # none               -> 0.0
            [4, 0],  # one of two         -> 0.5
            [3, 2],  # one of two         -> 0.5
        ]
    )
    assert neighbor_purity(neighbors, labels) == pytest.approx([1.0, 0.5, 0.0, 0.5, 0.5])
    assert mean_neighbor_purity(neighbors, labels) == pytest.approx(0.5)
    # purity@1 looks at the first column only: hits for samples 0, 3, 4 -> 3/5.
    assert mean_neighbor_purity(neighbors, labels, k=1) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("labels_true", "labels_pred", "message"),
    [
        ([0, 1, 1], [0, 1], "same length"),
        ([], [], "empty"),
        ([[0, 1]], [[0, 1]], "1-D"),
    ],
)
def test_invalid_labels_raise_value_error(labels_true, labels_pred, message):
    for metric in (cluster_accuracy, match_clusters, nmi, ari, weighted_prf, cluster_purity, clustering_scores):
        with pytest.raises(ValueError, match=message):
            metric(labels_true, labels_pred)


@pytest.mark.parametrize(
    ("neighbors", "labels", "k", "message"),
    [
        (np.array([0, 1]), np.array([0, 1]), None, "N×k"),
        (np.array([[1], [0]]), np.array([0, 1, 1]), None, "rows"),
        (np.array([[1], [5]]), np.array([0, 1]), None, "indices must lie"),
        (np.array([[1.0], [0.0]]), np.array([0, 1]), None, "integer"),
        (np.array([[1], [0]]), np.array([0, 1]), 2, "k must be"),
    ],
)
def test_invalid_neighbors_raise_value_error(neighbors, labels, k, message):
    with pytest.raises(ValueError, match=message):
        mean_neighbor_purity(neighbors, labels, k=k)


def test_the_best_neighbour_purity_is_one_unless_a_class_is_too_small_for_k():
    labels = np.array([0] * 30 + [1] * 5)
    assert best_neighbor_purity(labels[:30], k=20) == 1.0
    # 30 images can reach 1; 5 images of class 1 can have at most 4 same-class neighbours of 20
    assert best_neighbor_purity(labels, k=20) == pytest.approx((30 * 1.0 + 5 * 4 / 20) / 35)
    perfect = np.array([[j for j in np.flatnonzero(labels == labels[i]) if j != i][:20] for i in range(30)])
    assert mean_neighbor_purity(perfect, labels[:30]) == best_neighbor_purity(labels[:30], k=20)

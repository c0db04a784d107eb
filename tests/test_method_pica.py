"""PICA (Huang, Gong & Zhu, CVPR 2020): beats K-means on digits, records its loss terms, its partition
uncertainty loss behaves as the paper describes, and the paper preset carries the official settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.methods import create_method
from engine.methods.pica import SobelFilter, partition_uncertainty_index, pica_loss


@pytest.fixture(scope="module")
def fitted(digits):
    """One fast-preset fit on digits (seed 0), shared by the tests that need a trained model."""
    return fit_on_digits("pica", digits, seed=0)


def test_pica_beats_kmeans_on_digits_with_one_of_three_seeds(fitted, digits, kmeans_digits_acc):
    # short PICA runs are seed-sensitive (module docstring: 4 of 8 seeds beat K-means + 0.03, the others land
    # between 0.69 and 0.78), so this asserts the best of seeds 0–2, and that none falls below K-means - 0.1
    method, _ = fitted
    n = len(digits)
    assert method.features_.shape[0] == n and method.features_.dtype == np.float16
    accuracies = [cluster_accuracy(digits.labels, method.labels_)] + [
        cluster_accuracy(digits.labels, fit_on_digits("pica", digits, seed=seed)[0].labels_) for seed in (1, 2)]
    assert max(accuracies) >= kmeans_digits_acc + 0.03, accuracies
    assert min(accuracies) >= kmeans_digits_acc - 0.1, accuracies


def test_pica_loss_by_hand():
    # three images in three clusters, the same in both views: PUI = identity, each row's cross-entropy is
    # −log(e / (e + 2)); cluster sizes are uniform, so the balance term is 0
    q = torch.eye(3)
    np.testing.assert_allclose(partition_uncertainty_index(q, q).numpy(), np.eye(3), atol=1e-6)
    total, cross_entropy, size_entropy = pica_loss(q, q, entropy_weight=2.0)
    assert float(cross_entropy) == pytest.approx(math.log(1 + 2 / math.e), abs=1e-5)
    assert float(size_entropy) == pytest.approx(math.log(3), abs=1e-6)
    assert float(total) == pytest.approx(float(cross_entropy), abs=1e-6)


def test_pica_loss_prefers_agreeing_views_and_penalises_one_big_cluster():
    torch.manual_seed(0)
    q = torch.softmax(5 * torch.randn(64, 10), dim=1)
    agreeing = pica_loss(q, q)
    shuffled = pica_loss(q, q[torch.randperm(64)])
    assert float(agreeing[1]) < float(shuffled[1])
    one_cluster = torch.full((64, 10), 0.01)
    one_cluster[:, 0] = 0.91
    total, cross_entropy, size_entropy = pica_loss(one_cluster, one_cluster, entropy_weight=2.0)
    assert float(total - cross_entropy) == pytest.approx(2 * (math.log(10) - float(size_entropy)), abs=1e-5)
    assert float(total) > float(agreeing[0])


def test_sobel_layer_sees_edges_not_brightness():
    sobel = SobelFilter()
    flat = torch.full((1, 3, 6, 6), 0.7)
    assert sobel(flat)[:, :, 1:-1, 1:-1].abs().max() < 1e-6  # no edges inside a constant image
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0  # a vertical edge: the horizontal-gradient map responds, the vertical one does not
    edges = sobel(step)[0, :, 1:-1, 1:-1]
    assert edges.shape[0] == 2 and edges[0].abs().max() > 1 and edges[1].abs().max() < 1e-6


def test_pica_paper_preset_matches_the_paper():
    cfg = create_method("pica", "paper").config
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (200, 256, 1e-4, 0.0)
    assert (cfg.entropy_weight, cfg.n_overclusters, cfg.n_repeats, cfg.sobel) == (2.0, 70, 3, True)
    assert cfg.crop_min_scale == 0.2
    assert cfg.n_clusters == 10

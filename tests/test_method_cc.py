"""Contrastive Clustering (Li et al., AAAI 2021): beats K-means on digits, records its loss terms, its loss behaves
as the paper describes, and the paper preset carries the official settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.methods import create_method
from engine.methods.cc import cc_loss
from engine.nn import nt_xent_loss


@pytest.fixture(scope="module")
def fitted(digits):
    """One fast-preset fit on digits (seed 0), shared by the tests that need a trained model."""
    return fit_on_digits("cc", digits, seed=0)


def test_cc_beats_kmeans_on_digits_with_one_of_two_seeds(fitted, digits, kmeans_digits_acc):
    # CC from scratch is seed-sensitive (module docstring: 7 of 8 seeds beat K-means + 0.03, one stays below
    # K-means), so this asserts the better of seeds 0 and 1, and that neither collapses below K-means - 0.1
    method, _ = fitted
    n = len(digits)
    assert method.features_.shape[0] == n and method.features_.dtype == np.float16
    accuracies = [cluster_accuracy(digits.labels, method.labels_),
                  cluster_accuracy(digits.labels, fit_on_digits("cc", digits, seed=1)[0].labels_)]
    assert max(accuracies) >= kmeans_digits_acc + 0.03, accuracies
    assert min(accuracies) >= kmeans_digits_acc - 0.1, accuracies


def test_cc_cluster_contrast_by_hand():
    # two images, one per cluster, in both views: each column's positive has cosine 1, its two negatives 0,
    # so at τ_C = 1 every anchor costs −log(e / (e + 2)); both views use both clusters equally: H(Y) = 2·log 2
    y = torch.eye(2)
    z = torch.randn(2, 8)
    total, instance, cluster, size_entropy = cc_loss(z, z, y, y, instance_temperature=0.5, cluster_temperature=1.0)
    assert float(cluster) == pytest.approx(math.log(1 + 2 / math.e), abs=1e-5)
    assert float(size_entropy) == pytest.approx(2 * math.log(2), abs=1e-6)
    assert float(instance) == pytest.approx(float(nt_xent_loss(z, z, 0.5)), abs=1e-6)
    assert float(total) == pytest.approx(float(instance + cluster - size_entropy), abs=1e-6)


def test_cc_loss_prefers_agreeing_views_and_balanced_clusters():
    torch.manual_seed(0)
    y = torch.softmax(5 * torch.randn(64, 10), dim=1)
    z = torch.randn(64, 16)
    agreeing = cc_loss(z, z + 0.01 * torch.randn_like(z), y, y)
    shuffled = cc_loss(z, torch.randn_like(z), y, y[torch.randperm(64)])
    assert float(agreeing[1]) < float(shuffled[1])  # instance level: rows
    assert float(agreeing[2]) < float(shuffled[2])  # cluster level: columns
    one_cluster = torch.zeros(64, 10)
    one_cluster[:, 0] = 1.0
    assert float(cc_loss(z, z, one_cluster, one_cluster)[3]) == pytest.approx(0.0, abs=1e-5)  # H(Y) = 0


def test_cc_paper_preset_matches_the_paper():
    cfg = create_method("cc", "paper").config
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (1000, 256, 3e-4, 0.0)
    assert (cfg.instance_temperature, cfg.cluster_temperature, cfg.feature_dim) == (0.5, 1.0, 128)
    assert (cfg.crop_min_scale, cfg.jitter_strength) == (0.08, 0.5)
    assert cfg.n_clusters == 10

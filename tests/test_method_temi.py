"""TEMI: the weighted β-PMI loss, its heads, and the fast preset (on its own SimCLR pretext's features) beating
K-means on digits."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import fit_on_digits, recorded_losses
from engine.clustering.metrics import cluster_accuracy
from engine.errors import ConfigError
from engine.methods import create_method
from engine.methods.temi import TemiHeads, temi_loss

UNIFORM = torch.full((1, 2), 0.5)


def pair_logits(x_logits, neighbour_logits):
    """One head, rows [0, B) the samples and [B, 2B) their neighbours."""
    return torch.tensor([x_logits + neighbour_logits], dtype=torch.float32)


def test_temi_loss_rewards_pairs_that_agree_confidently_and_weights_by_the_teachers_agreement():
    agree = pair_logits([[1.0, 0.0]], [[1.0, 0.0]])
    disagree = pair_logits([[1.0, 0.0]], [[0.0, 1.0]])
    loss_agree, neg_pmi_agree, weight_agree = temi_loss(agree, agree, UNIFORM, beta=1.0)
    loss_disagree, neg_pmi_disagree, weight_disagree = temi_loss(disagree, disagree, UNIFORM, beta=1.0)
    # softmax(10, 0) ≈ (1, 0): the agreeing pair has PMI log 2 (its cluster holds half the mass), weight 1
    assert neg_pmi_agree.item() == pytest.approx(-math.log(2), abs=1e-3)
    assert weight_agree.item() == pytest.approx(1.0, abs=1e-3)
    assert loss_agree.item() == pytest.approx(-math.log(2), abs=1e-3)
    # the disagreeing pair: a large −PMI, but a near-zero weight damps it (a likely false-positive neighbour)
    assert neg_pmi_disagree.item() > 5 and weight_disagree.item() < 1e-3
    assert abs(loss_disagree.item()) < 0.05


def test_temi_loss_checks_its_inputs():
    logits = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="H×2B×K"):
        temi_loss(logits, torch.zeros(2, 4, 2), torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="beta"):
        temi_loss(logits, logits, torch.full((2, 3), 1 / 3), beta=0)


def test_temi_heads_map_features_to_one_output_per_head_and_can_keep_one():
    heads = TemiHeads(16, 5, 3, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(7, 16)
    out = heads(x)
    assert out.shape == (3, 7, 5)
    heads.keep_only(2)
    torch.testing.assert_close(heads(x), out[2:3])
    assert heads.n_heads == 1


def test_temi_takes_one_feature_source():
    with pytest.raises(ConfigError, match="not both"):
        create_method("temi", "fast", pretext_from="pretrained:resnet18-imagenet", features_from="run-1",
                      pretrained_weights=__file__).config.validate()
    with pytest.raises(ConfigError, match="not both"):
        create_method("temi", "fast", pretext_from="run-123", features_from="run-1").config.validate()
    create_method("temi", "fast", pretext_from="run-123").config.validate()  # a run's finished pretext, reused


def test_temi_fast_trains_a_pretext_and_beats_kmeans_on_digits(digits, kmeans_digits_acc):
    method, events = fit_on_digits("temi", digits)
    acc = cluster_accuracy(digits.labels, method.labels_)
    assert acc >= kmeans_digits_acc + 0.05, (acc, kmeans_digits_acc)
    assert recorded_losses(events) == {"pretext": {"nt_xent"}, "mine": {"neighbor_purity"},
                                       "cluster": {"total", "neg_pmi", "pair_weight"}}
    assert any(e.kind == "info" and e.message.startswith("kept head") for e in events)
    assert method.probs_.shape == (len(digits), 10) and method.neighbors_.shape == (len(digits), 10)
    # the features the Map and Neighbours pages read are the pretext backbone's, not the pixels
    assert method.features_.shape[0] == len(digits) and method.features_.shape[1] != digits.images[0].numel()

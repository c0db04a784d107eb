"""Specification of socnet (S3OCNet): cascaded self-organizing clustering heads trained in one stage."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import fit_on_digits

from engine.clustering.metrics import cluster_accuracy
from engine.data.imageset import ImageSet
from engine.methods.socnet import SelfOrganizingClusteringNet, SelfOrganizingHead, SocNet, soch_loss


@pytest.fixture(scope="module")
def fitted(digits):
    return fit_on_digits("socnet", digits, seed=0)


def test_socnet_beats_kmeans_on_digits(fitted, digits, kmeans_digits_acc):
    method, _ = fitted
    n = len(digits)
    assert method.features_.shape[0] == n and method.features_.dtype.name == "float16"
    assert cluster_accuracy(digits.labels, method.labels_) >= kmeans_digits_acc + 0.03


def test_socnet_predicts_new_images_like_its_fit(fitted, digits):
    method, _ = fitted
    probs = method.predict_proba(ImageSet(digits.images[:50], None, digits.class_names, digits.source))
    assert probs.shape == (50, 10)
    assert (probs.argmax(1) == method.labels_[:50]).mean() == 1.0


def test_soch_outputs_are_cosine_similarities_to_its_weight_rows():
    head = SelfOrganizingHead(in_dim=2, n_centres=3)
    with torch.no_grad():
        head.centres.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    similarities = head(torch.tensor([[5.0, 0.0], [1.0, 1.0]]))
    expected = torch.tensor([[1.0, 0.0, -1.0], [math.sqrt(0.5), math.sqrt(0.5), -math.sqrt(0.5)]])
    assert torch.allclose(similarities, expected, atol=1e-6)


def test_soch_layers_cascade_through_their_feature_dimensions():
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 6))
    backbone.out_dim = 6
    net = SelfOrganizingClusteringNet(backbone, [5, 3])
    outputs = net(torch.randn(7, 1, 2, 2))
    assert [tuple(o.shape) for o in outputs] == [(7, 5), (7, 3)]
    assert tuple(net.layers[1].centres.shape) == (3, 5)  # layer 2 clusters layer 1's similarity space


def test_soch_loss_by_hand():
    s = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assignment, balance = soch_loss(s, s, temperature=0.5)
    assert assignment.item() == pytest.approx(math.log(1 + math.exp(-4)), abs=1e-6)
    assert balance.item() == pytest.approx(0.0, abs=1e-6)


def test_soch_loss_prefers_agreeing_views_and_penalises_one_winner():
    torch.manual_seed(0)
    s = torch.nn.functional.normalize(torch.randn(64, 10), dim=1)
    agreeing, _ = soch_loss(s, s, temperature=0.1)
    shuffled, _ = soch_loss(s, s[torch.randperm(64)], temperature=0.1)
    assert agreeing < shuffled
    one_winner = torch.full((64, 10), -1.0)
    one_winner[:, 0] = 1.0
    _, collapsed_gap = soch_loss(one_winner, one_winner, temperature=0.01)
    assert collapsed_gap.item() == pytest.approx(math.log(10), rel=1e-4)


def test_socnet_paper_preset_matches_the_paper():
    method = SocNet.from_preset("paper")
    cfg = method.config
    # one stage: backbone and SOCHs trained jointly, no separate feature-then-cluster step
    assert [stage.name for stage in SocNet.stages] == ["train"]
    assert set(SocNet.stages[0].losses) == {"total", "assignment", "balance"}
    # our documented reading (the paper's own values are not available): cascaded SOCHs 512 → 128 → K
    assert tuple(cfg.hidden_soch_sizes) == (512, 128)
    assert (cfg.n_clusters, cfg.backbone, cfg.epochs, cfg.batch_size) == (10, "auto", 500, 256)
    assert (cfg.optimizer, cfg.lr, cfg.temperature, cfg.balance_weight) == ("adam", 1e-3, 0.1, 3.0)


def test_socnet_refuses_settings_no_run_can_use():
    from engine.errors import ConfigError

    for bad in ({"hidden_soch_sizes": (1,)}, {"temperature": 0.0}, {"balance_weight": -1.0}):
        with pytest.raises(ConfigError):
            SocNet.from_preset("fast", **bad).config.validate()

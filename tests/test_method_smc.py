"""Specification of the super-multi-class contrastive clustering model (Hu et al., Computer Science 2023)."""

import numpy as np
import pytest
import torch

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.errors import UserError
from engine.methods import FitContext, create_method
from engine.methods.smc import symmetric_queue_info_nce, three_view_neighbors


@pytest.fixture(scope="module")
def smc_fit(digits):
    """One fast-preset fit on digits (CPU, seed 0), shared by the tests that need a trained model."""
    return fit_on_digits("smc", digits)


def test_smc_beats_kmeans_on_digits(smc_fit, digits, kmeans_digits_acc):
    method, _ = smc_fit
    n = len(digits)
    assert method.features_.shape[0] == n and method.features_.dtype == np.float16
    assert method.neighbors_.shape == (n, method.config.n_neighbors) and method.neighbors_.dtype == np.int32
    assert not (method.neighbors_ == np.arange(n)[:, None]).any()  # nobody is its own neighbour
    assert cluster_accuracy(digits.labels, method.labels_) >= kmeans_digits_acc + 0.03


def test_symmetric_info_nce_pairs_each_prediction_with_the_other_views_target():
    torch.manual_seed(0)
    prediction_a, prediction_b = torch.randn(16, 8), torch.randn(16, 8)
    queue = torch.randn(128, 8)
    # the target of view b equals the prediction from view a (and vice versa): the views agree
    agreeing = symmetric_queue_info_nce(prediction_a, prediction_b, prediction_b, prediction_a, queue)
    disagreeing = symmetric_queue_info_nce(prediction_a, prediction_b, prediction_a, prediction_b, queue)
    assert agreeing < disagreeing
    target_a, target_b = torch.randn(16, 8), torch.randn(16, 8)
    assert torch.isclose(symmetric_queue_info_nce(prediction_a, prediction_b, target_a, target_b, queue),
                         symmetric_queue_info_nce(prediction_b, prediction_a, target_b, target_a, queue))


def test_three_view_mining_narrows_feature_neighbours_by_strong_view_and_cluster_agreement():
    # image 0's feature-space candidates (q = 1 → 4 candidates): 1, 2, 3, 4 in that order
    features = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.97, 0.24], [0.95, 0.31], [0.93, 0.37], [-1.0, 0.0]])
    # under the strong view image 1 drifts away, so 2 and 3 are the two (2q) kept
    strong = features.clone()
    strong[1] = torch.tensor([0.0, 1.0])
    # cluster probabilities: 3 agrees with 0 more than 2 does
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.9, 0.1], [0.1, 0.9]])
    neighbors = three_view_neighbors(features, strong, probs, n_neighbors=1)
    assert neighbors.shape == (6, 1)
    assert neighbors[0].item() == 3


def test_three_view_mining_shrinks_to_small_datasets():
    features = torch.randn(4, 3)
    neighbors = three_view_neighbors(features, features, torch.full((4, 2), 0.5), n_neighbors=2)
    assert neighbors.shape == (4, 2)
    assert not (neighbors == torch.arange(4)[:, None]).any()


def test_smc_reuses_a_stored_pretext_of_its_own_kind_only(digits, tmp_path):
    runs = tmp_path / "runs"
    tiny = {"pretext_epochs": 1, "cluster_epochs": 1, "cluster_lr": 1e-4}  # one gentle step: no collapse
    first = create_method("smc", "fast", **tiny)
    first.fit(digits, FitContext("cpu", checkpoint_dir=runs / "a" / "checkpoints", runs_root=runs))
    events = []
    second = create_method("smc", "fast", pretext_from="a", **tiny)
    second.fit(digits, FitContext("cpu", events.append, checkpoint_dir=runs / "b" / "checkpoints", runs_root=runs))
    assert "pretext" not in {e.stage for e in events if e.kind == "stage"}
    assert any("pretext reused from run a" in e.message for e in events if e.kind == "info")
    assert not (runs / "b" / "checkpoints" / "pretext.pt").exists()

    # a stored pretext of another method (here a fake SPICE/MoCo one) is refused with what differs
    stored = torch.load(runs / "a" / "checkpoints" / "pretext.pt", weights_only=True)
    stored["state"]["identity"] = {**stored["state"]["identity"], "pretext": "moco_v2"}
    (runs / "moco" / "checkpoints").mkdir(parents=True)
    torch.save(stored, runs / "moco" / "checkpoints" / "pretext.pt")
    with pytest.raises(UserError, match=r"trained with pretext moco_v2 \(this run: smc\)"):
        create_method("smc", "fast", pretext_from="moco", **tiny).fit(digits, FitContext("cpu", runs_root=runs))


def test_smc_paper_preset_matches_the_paper():
    cfg = create_method("smc", "paper").config
    assert cfg.temperature == 0.2
    assert cfg.base_momentum == 0.996
    assert cfg.n_neighbors == 20
    # the SCAN step the model builds on (SCAN's official CIFAR configs)
    assert (cfg.entropy_weight, cfg.n_heads, cfg.cluster_lr, cfg.cluster_batch_size) == (5.0, 10, 1e-4, 128)

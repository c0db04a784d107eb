"""Specification of engine.nn.memory_queue: the key queue, InfoNCE against it and the cosine momentum schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.nn.memory_queue import FeatureQueue, cosine_momentum, queue_info_nce_loss


def test_queue_starts_full_of_unit_vectors_and_is_saved_with_the_module():
    queue = FeatureQueue(dim=8, size=5)
    assert torch.allclose(queue.features.norm(dim=1), torch.ones(5))
    assert set(queue.state_dict()) == {"features", "pointer"}


def test_queue_overwrites_the_oldest_keys_first_and_normalises_them():
    queue = FeatureQueue(dim=2, size=3)
    queue.enqueue(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    queue.enqueue(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))  # the 4th key lands on slot 0
    assert queue.features.tolist() == [[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]
    assert int(queue.pointer) == 1


def test_a_batch_longer_than_the_queue_keeps_its_last_keys():
    queue = FeatureQueue(dim=1, size=2)
    queue.enqueue(torch.tensor([[1.0], [-1.0], [1.0]]))
    assert sorted(queue.features.flatten().tolist()) == [-1.0, 1.0]


def test_queue_rejects_keys_of_another_width():
    with pytest.raises(ValueError, match="N×4"):
        FeatureQueue(dim=4, size=3).enqueue(torch.zeros(2, 5))


def test_info_nce_with_queue_matches_a_hand_computed_value():
    query = torch.tensor([[1.0, 0.0]])
    key = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    tau = 0.5
    # logits: positive 1/τ = 2, negatives 0 and −2
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert float(queue_info_nce_loss(query, key, negatives, tau)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_prefers_matching_views_and_only_trains_the_query():
    torch.manual_seed(0)
    query = torch.randn(16, 8, requires_grad=True)
    key = query.detach() + 0.05 * torch.randn(16, 8)
    queue = torch.randn(64, 8)
    matched = queue_info_nce_loss(query, key, queue, 0.2)
    shuffled = queue_info_nce_loss(query, key.roll(1, dims=0), queue, 0.2)
    assert matched < shuffled
    matched.backward()
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_info_nce_is_scale_invariant():
    query, key, queue = torch.randn(4, 3), torch.randn(4, 3), torch.randn(10, 3)
    scaled = queue_info_nce_loss(5 * query, key, F.normalize(queue))
    assert torch.allclose(queue_info_nce_loss(query, key, queue), scaled)


def test_info_nce_checks_its_arguments():
    with pytest.raises(ValueError, match="temperature"):
        queue_info_nce_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 3), 0.0)
    with pytest.raises(ValueError, match="negatives"):
        queue_info_nce_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 2))


def test_cosine_momentum_rises_from_base_to_one():
    values = [cosine_momentum(k, 100, base=0.996) for k in range(101)]
    assert values[0] == pytest.approx(0.996) and values[-1] == pytest.approx(1.0)
    assert values[50] == pytest.approx(0.998)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert cosine_momentum(500, 100) == pytest.approx(1.0)  # past the end it stays at the final value

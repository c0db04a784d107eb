"""Specification of engine.clustering.neighbors.mine_neighbors (SCAN-style cosine kNN mining)."""

import sys

import numpy as np
import pytest
import torch

from engine.clustering import neighbors as neighbors_module
from engine.clustering.neighbors import mine_neighbors

try:
    import faiss  # noqa: F401

    HAS_FAISS = True
except ImportError:
    HAS_FAISS = False

needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed")
FORCED_PATHS = [False, pytest.param(True, marks=needs_faiss)]


def _circle_points() -> np.ndarray:
    """Five points at 0°, 10°, 90°, 100°, 180° with different norms (cosine must ignore the norm)."""
    angles = np.deg2rad([0.0, 10.0, 90.0, 100.0, 180.0])
    norms = np.array([1.0, 3.0, 0.5, 2.0, 7.0])
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * norms[:, None]


@pytest.mark.parametrize("use_faiss", FORCED_PATHS)
def test_hand_placed_points_get_their_nearest_angles(use_faiss):
    # Angular distances: 0°-10° and 90°-100° are 10° apart; 10°-90° and 100°-180° 80°; 0°-90° and 90°-180° 90°.
    expected = [[1, 2], [0, 2], [3, 1], [2, 4], [3, 2]]
    result = mine_neighbors(_circle_points(), 2, use_faiss=use_faiss)
    assert result.tolist() == expected


def test_returns_int32_n_by_k_for_numpy_and_torch_input():
    points = _circle_points()
    from_numpy = mine_neighbors(points, 3)
    from_torch = mine_neighbors(torch.from_numpy(points), 3)
    assert from_numpy.dtype == np.int32
    assert from_numpy.shape == (5, 3)
    np.testing.assert_array_equal(from_numpy, from_torch)


@pytest.mark.parametrize("use_faiss", FORCED_PATHS)
def test_never_contains_self_with_duplicate_points(use_faiss):
    rng = np.random.default_rng(0)
    # Six exact copies of one point: each ties with five others at similarity 1, more than k = 3.
    points = np.concatenate([np.repeat(rng.normal(size=(1, 8)), 6, axis=0), rng.normal(size=(10, 8))])
    result = mine_neighbors(points, 3, use_faiss=use_faiss)
    assert not (result == np.arange(len(points))[:, None]).any()
    # Duplicates are each other's nearest neighbours.
    assert set(result[:6].ravel()) <= set(range(6))


@pytest.mark.parametrize("use_faiss", FORCED_PATHS)
def test_all_identical_points_with_k_n_minus_1_list_every_other_index(use_faiss):
    points = np.ones((7, 4))
    result = mine_neighbors(points, 6, use_faiss=use_faiss)
    for i, row in enumerate(result):
        assert sorted(row.tolist()) == [j for j in range(7) if j != i]


def test_block_size_does_not_change_the_result():
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(
        mine_neighbors(features, 5, block_size=7, use_faiss=False),
        mine_neighbors(features, 5, use_faiss=False),
    )


@needs_faiss
def test_torch_and_faiss_paths_agree_on_random_data():
    features = np.random.default_rng(2).normal(size=(600, 32)).astype(np.float32)
    by_torch = mine_neighbors(features, 10, use_faiss=False)
    by_faiss = mine_neighbors(features, 10, use_faiss=True)
    # Both are exact; only float rounding on near-ties may reorder a neighbour across the k-th boundary.
    same_rows = np.mean([set(a) == set(b) for a, b in zip(by_torch, by_faiss)])
    assert same_rows >= 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_is_mined_on_the_gpu_with_the_same_result():
    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(3))
    on_gpu = mine_neighbors(features.cuda(), 5, block_size=64)
    on_cpu = mine_neighbors(features, 5, use_faiss=False)
    same_rows = np.mean([set(a) == set(b) for a, b in zip(on_gpu, on_cpu)])
    assert same_rows >= 0.99


def test_works_without_faiss_installed(monkeypatch):
    # A None entry in sys.modules makes `import faiss` raise ImportError.
    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setattr(neighbors_module, "FAISS_MIN_SAMPLES", 3)
    points = _circle_points()
    assert mine_neighbors(points, 2).tolist() == [[1, 2], [0, 2], [3, 1], [2, 4], [3, 2]]
    with pytest.raises(ImportError, match="faiss"):
        mine_neighbors(points, 2, use_faiss=True)


@pytest.mark.parametrize(
    ("features", "k", "message"),
    [
        (np.ones((4, 3)), 4, "k must satisfy"),
        (np.ones((4, 3)), 0, "k must satisfy"),
        (np.ones(4), 1, "N×D"),
        (np.ones((0, 3)), 1, "N×D"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), 1, "NaN"),
    ],
)
def test_invalid_inputs_raise_value_error(features, k, message):
    with pytest.raises(ValueError, match=message):
        mine_neighbors(features, k)


def test_non_positive_block_size_raises_value_error():
    with pytest.raises(ValueError, match="block_size"):
        mine_neighbors(np.eye(3), 1, block_size=0)


def test_the_approximate_search_finds_at_least_95_percent_of_the_exact_neighbours():
    from engine.bench import clustered_features, neighbor_recall

    features = clustered_features(3000, dim=64, n_clusters=30)
    exact = mine_neighbors(features, 20, use_faiss=True, exact=True)
    approximate = mine_neighbors(features, 20, exact=False)
    assert approximate.shape == (3000, 20) and not (approximate == np.arange(3000)[:, None]).any()
    assert neighbor_recall(approximate, exact) >= 0.95


def test_large_sets_are_searched_approximately_small_ones_exactly(monkeypatch):
    import engine.clustering.neighbors as neighbors

    calls = []
    monkeypatch.setattr(neighbors, "_faiss_top", lambda feats, m, exact=True: calls.append(exact) or
                        np.tile(np.arange(m), (len(feats), 1)))
    monkeypatch.setattr(neighbors, "APPROXIMATE_MIN_SAMPLES", 500)
    monkeypatch.setattr(neighbors, "FAISS_MIN_SAMPLES", 100)
    mine_neighbors(np.random.rand(400, 8), 5)
    mine_neighbors(np.random.rand(600, 8), 5)
    assert calls == [True, False]

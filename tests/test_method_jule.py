"""JULE (Yang et al., CVPR 2016): agglomerative clustering unrolled over CNN features trained by weighted triplets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.data.imageset import ImageSet
from engine.methods import get_method
from engine.clustering.graph_linkage import GraphDegreeLinkage, knn_graph, nearest_neighbor_components
from engine.methods.jule import merges_in_period, weighted_triplet_loss


@pytest.fixture(scope="module")
def jule_fit(digits):
    """One fast-preset fit on digits (CPU, seed 0), shared by the tests that need a trained model."""
    return fit_on_digits("jule", digits, seed=0)


def test_jule_beats_kmeans_on_digits(jule_fit, digits, kmeans_digits_acc):
    method, _ = jule_fit
    n = len(digits)
    assert method.features_.shape == (n, 160)  # the L2-normalised embedding
    assert method.neighbors_.shape == (n, 20)  # the K_s-NN graph of the last merge
    assert len(np.unique(method.labels_)) == 10
    assert cluster_accuracy(digits.labels, method.labels_) >= kmeans_digits_acc + 0.03


def test_jule_merges_down_to_k_clusters_period_by_period(jule_fit):
    _, events = jule_fit
    counts = [e.losses["n_clusters"] for e in events if e.kind == "step" and "n_clusters" in e.losses]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 10 and counts[0] > 100
    assert merges_in_period(500, 10, 0.9) == 450  # ⌈η·n_c⌉ timesteps per period …
    assert merges_in_period(50, 10, 0.9) == 40  # … but never below K


def test_jule_assigns_new_images_like_the_training_ones(jule_fit, digits):
    method, _ = jule_fit
    probs = method.predict_proba(ImageSet(digits.images[:50], None, [], digits.source))
    assert probs == pytest.approx(method.probs_[:50], abs=1e-5)


def test_weighted_triplet_loss_by_hand():
    anchor, positive = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.5]])
    negatives = torch.tensor([[1.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    valid = torch.tensor([[True, True, False]])  # the third candidate shares the anchor's cluster
    # γ=1, m=0.2: max(0, 0.25 − 1 + 0.2) = 0 and max(0, 0.25 − 0.01 + 0.2) = 0.44 → mean 0.22
    assert float(weighted_triplet_loss(anchor, positive, negatives, valid, 0.2, 1.0)) == pytest.approx(0.22)
    # γ=2 weighs the positive pair twice: (0 + 0.69) / 2
    assert float(weighted_triplet_loss(anchor, positive, negatives, valid, 0.2, 2.0)) == pytest.approx(0.345)


def test_weighted_triplet_loss_prefers_tight_clusters():
    torch.manual_seed(0)
    anchor = F.normalize(torch.randn(16, 8), dim=1)
    others = F.normalize(torch.randn(32, 8), dim=1)
    valid = torch.ones(16, 32, dtype=torch.bool)
    tight = weighted_triplet_loss(anchor, anchor, others, valid)
    loose = weighted_triplet_loss(anchor, F.normalize(torch.randn(16, 8), dim=1), others, valid)
    assert float(tight) < float(loose)


def _dense_gdl(weights: np.ndarray, labels: np.ndarray) -> dict[tuple[int, int], float]:
    """JULE eq. 3 straight from its definition, for every ordered pair of clusters with positive affinity."""
    affinity = {}
    for a in np.unique(labels):
        for b in np.unique(labels):
            if a != b:
                ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
                value = (weights[np.ix_(ia, ib)] @ weights[np.ix_(ib, ia)]).sum() / len(ia) ** 2 \
                    + (weights[np.ix_(ib, ia)] @ weights[np.ix_(ia, ib)]).sum() / len(ib) ** 2
                if value > 0:
                    affinity[int(a), int(b)] = value
    return affinity


def test_incremental_gdl_affinity_equals_its_definition_after_every_merge():
    rng = np.random.default_rng(0)
    features = F.normalize(torch.from_numpy(rng.normal(size=(80, 4))).float(), dim=1)
    _, graph = knn_graph(features, 5)
    gdl = GraphDegreeLinkage(features.numpy(), graph, nearest_neighbor_components(features), 5, 1.0)
    start = gdl.n_clusters
    for _ in range(start - 3):
        gdl.run(1, min_clusters=3)
        kept = {(a, b): value for a, row in gdl.affinity.items() for b, value in row.items()}
        expected = _dense_gdl(graph.toarray(), gdl.labels)
        assert kept.keys() == expected.keys()
        assert np.allclose([kept[k] for k in expected], list(expected.values()))
    assert gdl.n_clusters == 3 and len(np.unique(gdl.compact_labels())) == 3


def test_each_timestep_merges_the_pair_that_maximises_the_criterion():
    rng = np.random.default_rng(1)
    features = F.normalize(torch.from_numpy(rng.normal(size=(60, 4))).float(), dim=1)
    _, graph = knn_graph(features, 5)
    gdl = GraphDegreeLinkage(features.numpy(), graph, nearest_neighbor_components(features), 3, 1.0)
    affinity = _dense_gdl(graph.toarray(), gdl.labels)
    best_score, best_pair = -1.0, None
    for a in np.unique(gdl.labels):
        row = sorted(((v, b) for (i, b), v in affinity.items() if i == a), reverse=True)[:3]
        values = [v for v, _ in row] + [0.0] * (3 - len(row))
        score = values[0] + 1.0 / 2 * sum(values[0] - v for v in values[1:])
        if row and score > best_score:
            best_score, best_pair = score, {int(a), int(row[0][1])}
    before = gdl.labels.copy()
    gdl.run(1, min_clusters=2)
    moved = before != gdl.labels  # the members of one cluster of the pair took the other's id
    assert {*before[moved].tolist(), *gdl.labels[moved].tolist()} == best_pair


def test_small_clusters_are_merged_before_the_last_k_are_reached():
    rng = np.random.default_rng(3)  # on these points plain GDL ends with a 2-point cluster among its 5
    features = F.normalize(torch.from_numpy(rng.normal(size=(200, 4))).float(), dim=1)
    _, graph = knn_graph(features, 5)
    sizes = {}
    for min_size in (0.0, 10.0):
        gdl = GraphDegreeLinkage(features.numpy(), graph, nearest_neighbor_components(features), 5, 1.0)
        gdl.run(10**6, min_clusters=5, min_size=min_size)
        sizes[min_size] = np.bincount(gdl.compact_labels())
    assert len(sizes[0.0]) == len(sizes[10.0]) == 5
    assert sizes[0.0].min() < 10 <= sizes[10.0].min()


def test_jule_paper_preset_matches_the_paper():
    config = get_method("jule").from_preset("paper").config
    assert (config.n_neighbors, config.n_cluster_neighbors, config.merge_lambda) == (20, 5, 1.0)  # K_s, K_c, λ
    assert config.unfolding_rate == 0.9  # η
    assert config.period_epochs == 20
    assert (config.unroll_optimizer, config.unroll_lr, config.unroll_weight_decay) == ("sgd", 0.01, 5e-5)
    assert (config.lr_decay_gamma, config.lr_decay_power) == (1e-4, 0.75)
    assert config.unroll_batch_size == 100
    assert (config.triplet_margin, config.positive_weight) == (0.2, 1.0)
    assert config.embedding_dim == 160
    assert config.min_cluster_fraction == 0.25  # ours, not the paper's: see the module docstring
    assert config.init_side is None  # the initial clusters from the pixels at their own size


def test_the_initial_clusters_come_from_the_pixels_shrunk_to_init_side(tmp_path):
    """With init_side the initial clusters are the components of the antialiased small images' nearest-neighbour
    graph, without it those of the pixels at full size (on these random images the two graphs differ)."""
    from engine.methods import FitContext, create_method

    images = torch.randint(0, 256, (60, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    small = F.interpolate(images.permute(0, 3, 1, 2).float() / 255, size=(14, 14), mode="bilinear", antialias=True)
    for side, pixels in ((None, images.float().flatten(1)), (14, small.flatten(1))):
        jule = create_method("jule", "fast", init_side=side)
        labels = jule._init(images, "pixels", FitContext("cpu", checkpoint_dir=tmp_path / str(side)))
        assert np.array_equal(labels, nearest_neighbor_components(F.normalize(pixels, dim=1))), side


def test_the_fast_preset_builds_the_first_graph_of_photos_on_hog_and_a_colour_map(tmp_path):
    """Colour images of 16 px or more (photos) start from the components of the descriptor's 1-NN graph; gray
    ones keep their pixels (checked above)."""
    from engine.data.descriptors import hog_colour
    from engine.methods import FitContext, create_method
    from engine.methods.training import resolve_descriptor

    images = torch.randint(0, 256, (60, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    jule = create_method("jule", "fast")
    descriptor = resolve_descriptor(jule.config.init_features, ImageSet(images, None, [], "folder:/photos"), 32)
    assert descriptor == "hog_colour"
    labels = jule._init(images, descriptor, FitContext("cpu", checkpoint_dir=tmp_path))
    values = hog_colour(images.permute(0, 3, 1, 2).float() / 255)
    assert np.array_equal(labels, nearest_neighbor_components(F.normalize(values, dim=1)))

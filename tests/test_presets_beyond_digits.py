"""The fast presets beat K-means on pixels by 0.03 ACC beyond the 8×8 digits too: some methods are checked here on
digits28 (28×28 digits of varied shift and pen width) or on colour shapes (photo-like: what an image shows is not
its colours), a second kind of image, on top of their digits tests. The other methods and the other image sets
(three seeds or more, 2,000 CIFAR-10 images among them) are in the committed preset benchmarks,
``benchmarks/presets-*``: a fit here takes seconds to two minutes on one CPU thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.data import ImageSet, load_dataset
from engine.methods import create_method

# one-thread seed 0 on digits28: jule 0.78, temi 0.81, socnet 0.71, against K-means 0.60
CHECKED_ON_DIGITS28 = ("jule", "temi", "socnet")


@pytest.fixture(scope="module")
def digits28():
    return load_dataset("digits28")


@pytest.fixture(scope="module")
def kmeans_digits28_acc(digits28) -> float:
    return cluster_accuracy(digits28.labels, create_method("kmeans", "fast").fit(digits28).labels_)


@pytest.mark.parametrize("method_name", CHECKED_ON_DIGITS28)
def test_the_fast_preset_beats_kmeans_on_digits28(method_name, digits28, kmeans_digits28_acc):
    method, _ = fit_on_digits(method_name, digits28, seed=0)
    acc = cluster_accuracy(digits28.labels, method.labels_)
    assert acc >= kmeans_digits28_acc + 0.03, (acc, kmeans_digits28_acc)


def test_temi_keeps_its_clusters_apart_on_a_small_set_and_beats_kmeans():
    """300 images, K = 10. From unstandardised features every head fell into one cluster (seeds 0 and 1: the run
    stopped as collapsed); standardised, seed 0 scored 0.57 against K-means' 0.44, and 0.72 since a small set's
    batches shrink (``small_set_batches``)."""
    small = load_dataset("digits28", subset=300)
    kmeans_acc = cluster_accuracy(small.labels, create_method("kmeans", "fast").fit(small).labels_)
    method, _ = fit_on_digits("temi", small, seed=0)
    assert np.bincount(method.labels_, minlength=10).min() > 0  # every cluster in use
    assert cluster_accuracy(small.labels, method.labels_) >= kmeans_acc + 0.03


# seed 0, one thread: dec 0.74, jule 0.50, against K-means 0.37 (chance: 0.33); from the pixels dec 0.39, jule 0.41
# (as a folder, since a small set's batches shrink: dec 0.75, jule 0.51)
CHECKED_ON_COLOUR_SHAPES = ("dec", "jule")


@pytest.fixture(scope="module")
def colour_shapes() -> ImageSet:
    """300 colour images of 32 px in three classes by shape: a disc, a square, vertical stripes; each image in a
    random foreground and background colour, the shape at a random place and size, with pixel noise. Pixel
    distances see the colours, which say nothing of the class."""
    rng = np.random.default_rng(0)
    side = 32
    yy, xx = np.mgrid[:side, :side]
    labels = np.arange(300) % 3
    images = np.empty((len(labels), side, side, 3), np.uint8)
    for i, shape in enumerate(labels):
        background, foreground = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        cy, cx = rng.uniform(0.35 * side, 0.65 * side, 2)
        r = rng.uniform(0.2 * side, 0.3 * side)
        masks = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2,
                 (abs(yy - cy) < 0.85 * r) & (abs(xx - cx) < 0.85 * r),
                 (xx + rng.integers(0, 8)) // 4 % 2 == 0)
        image = np.where(masks[shape][..., None], foreground, background) + rng.normal(0, 8, (side, side, 3))
        images[i] = np.clip(image, 0, 255)
    return ImageSet(torch.from_numpy(images), labels, ["disc", "square", "stripes"], "folder:/colour-shapes")


@pytest.mark.parametrize("method_name", CHECKED_ON_COLOUR_SHAPES)
def test_the_fast_preset_clusters_colour_shapes_by_shape(method_name, colour_shapes):
    kmeans = create_method("kmeans", "fast", n_clusters=3).fit(colour_shapes)
    kmeans_acc = cluster_accuracy(colour_shapes.labels, kmeans.labels_)
    method, _ = fit_on_digits(method_name, colour_shapes, seed=0, n_clusters=3)
    acc = cluster_accuracy(colour_shapes.labels, method.labels_)
    assert acc >= kmeans_acc + 0.03, (acc, kmeans_acc)

"""A class-balanced, seeded subset of an :class:`ImageSet`: how a benchmark runs a method on, say, 2,000 of
CIFAR-10's 10,000 test images with every class equally present, the same images on every machine."""
from __future__ import annotations

import dataclasses

import numpy as np

from engine.data.imageset import ImageSet
from engine.errors import ConfigError


def balanced_subset(images: ImageSet, n_images: int, seed: int = 0) -> ImageSet:
    """``n_images`` of ``images``, as many of every class as the classes allow, kept in their original order.

    Each class's images are shuffled with ``seed``; the subset takes the first of every class, then the second of
    every class, and so on, so the classes differ by at most one image (the lower class numbers get the
    remainder), and a class too small for its share leaves its place to the others. Without labels the images
    are one class. The subset's ``source`` names the cut (``cifar10:test@2000``), so caches keyed by the source
    (a method's pretext) never mix it with the whole set. ``n_images`` at or above the set's size returns it
    unchanged.

    Raises:
        ConfigError: ``n_images`` below 1.

    Examples:
        >>> import torch
        >>> toy = ImageSet(torch.zeros(6, 2, 2, 1, dtype=torch.uint8), np.array([0, 0, 0, 0, 1, 1]), ["a", "b"], "toy")
        >>> balanced_subset(toy, 4).labels.tolist()
        [0, 0, 1, 1]
    """
    if n_images < 1:
        raise ConfigError(f"a subset needs at least 1 image, not {n_images}")
    if n_images >= len(images):
        return images
    labels = images.labels if images.labels is not None else np.zeros(len(images), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rank = np.empty(len(images), dtype=np.int64)  # the image's place in its class's shuffled order
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[rng.permutation(members)] = np.arange(len(members))
    keep = np.sort(np.lexsort((labels, rank))[:n_images])
    return dataclasses.replace(
        images, images=images.images[keep],
        labels=None if images.labels is None else images.labels[keep],
        paths=[images.paths[i] for i in keep] if images.paths else [],
        source=f"{images.source}@{n_images}")

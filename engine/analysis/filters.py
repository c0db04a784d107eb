"""Which images of a run to show: one filter (cluster, true label, confidence range, correct/incorrect, tag) that
the Map, Neighbours, Clusters, Suspects and Export pages all apply, so a filter set on one holds on the others.

Each part left at its default keeps every image; the parts combine with AND, the values within a part with OR
(clusters 1 and 3: images in either). A part that needs labels (true label, correct/incorrect) keeps every image of
an unlabelled run. "Correct" means the image's label is the class its cluster is matched to by the Hungarian
matching (:func:`~engine.clustering.metrics.match_clusters`), as the Map's "correct / incorrect" colouring shows.

Examples:
    >>> keep = ImageFilter(clusters=(3,), tags=("mislabelled",)).mask(results, tags)   # doctest: +SKIP
    >>> np.flatnonzero(keep)                                                            # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..clustering.metrics import match_clusters
from .results import RunResults

CORRECTNESS = ("all", "correct", "incorrect")
ANY_TAG = "(any tag)"
NO_TAG = "(no tag)"


@dataclass(frozen=True)
class ImageFilter:
    """The parts of a filter; the defaults keep every image."""

    clusters: tuple[int, ...] = ()
    labels: tuple[int, ...] = ()
    confidence: tuple[float, float] = (0.0, 1.0)
    correctness: str = "all"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.correctness not in CORRECTNESS:
            raise ValueError(f"correctness must be one of {', '.join(CORRECTNESS)}, got {self.correctness!r}")
        low, high = self.confidence
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"the confidence range must lie within [0, 1] with low ≤ high, got {self.confidence}")

    @property
    def active(self) -> bool:
        """Whether some part can drop an image."""
        return self != ImageFilter()

    def mask(self, results: RunResults, tags: Mapping[int, Sequence[str]]) -> np.ndarray:
        """Boolean N-vector: True for the images of ``results`` the filter keeps (``tags``: image → its tags)."""
        return self.mask_arrays(results.assign, results.confidence, results.labels, tags)

    def mask_arrays(self, assign: np.ndarray, confidence: np.ndarray, labels: np.ndarray | None,
                    tags: Mapping[int, Sequence[str]]) -> np.ndarray:
        """:meth:`mask` on plain arrays: cluster ids, confidences, labels (None: unlabelled)."""
        keep = np.ones(len(assign), dtype=bool)
        if self.clusters:
            keep &= np.isin(assign, self.clusters)
        low, high = self.confidence
        if (low, high) != (0.0, 1.0):
            keep &= (confidence >= low) & (confidence <= high)
        if labels is not None:
            if self.labels:
                keep &= np.isin(labels, self.labels)
            if self.correctness != "all":
                right = correct(labels, assign)
                keep &= right if self.correctness == "correct" else ~right
        if self.tags:
            keep &= tagged(len(assign), tags, self.tags)
        return keep

    def describe(self, class_name: Callable[[int], str] = str) -> str:
        """The active parts in words, e.g. "cluster 1 or 3 · tag mislabelled"; "" for no filter."""
        parts = []
        if self.clusters:
            parts.append("cluster " + " or ".join(str(c) for c in self.clusters))
        if self.labels:
            parts.append("label " + " or ".join(class_name(label) for label in self.labels))
        if self.confidence != (0.0, 1.0):
            parts.append(f"confidence {self.confidence[0]:.2f}–{self.confidence[1]:.2f}")
        if self.correctness != "all":
            parts.append(self.correctness)
        if self.tags:
            parts.append("tag " + " or ".join(self.tags))
        return " · ".join(parts)


def confidence_range(text: str) -> tuple[float, float]:
    """``0.2-0.9`` as (0.2, 0.9): a confidence range as the address and ``export --confidence`` write it.

    Raises:
        ValueError: not two numbers LOW-HIGH, or not within [0, 1] with LOW ≤ HIGH.

    Examples:
        >>> confidence_range("0-0.6")
        (0.0, 0.6)
    """
    try:
        low, high = (float(part) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"a confidence range is LOW-HIGH, e.g. 0-0.6; got {text!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"a confidence range lies within 0-1 with LOW ≤ HIGH, got {text!r}")
    return low, high


def correct(labels: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Per image: is its label the class its cluster is matched to (Hungarian, surplus clusters to their
    majority class)."""
    mapping = match_clusters(labels, assign)
    return np.array([mapping[c] for c in assign.tolist()]) == labels


def tagged(n: int, tags: Mapping[int, Sequence[str]], wanted: Sequence[str]) -> np.ndarray:
    """Boolean n-vector: images carrying any of ``wanted`` (``ANY_TAG``: any tag at all; ``NO_TAG``: none)."""
    wanted_set = set(wanted)
    keep = np.zeros(n, dtype=bool)
    if NO_TAG in wanted_set:
        keep[:] = True
        keep[[image for image, image_tags in tags.items() if image_tags and 0 <= image < n]] = False
    for image, image_tags in tags.items():
        if 0 <= image < n and image_tags and (ANY_TAG in wanted_set or wanted_set.intersection(image_tags)):
            keep[image] = True
    return keep

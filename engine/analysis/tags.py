"""Tags a person puts on a run's images while auditing it, and the corrected labels some of them carry.

A tag is free text ("mislabelled", "duplicate", "blurry", …) kept in the run store (:meth:`RunStore.add_tag`), so
it lasts across restarts and every session of every server on that store sees it. A tag ``label: NAME`` sets
an image's corrected label to the class ``NAME`` of a labelled set; an image keeps at most one such tag (the
newest), and :func:`corrected_labels` reads them for the corrected-labels CSV.

Examples:
    >>> tag_images(results, [12, 40], "mislabelled")        # doctest: +SKIP
    2
    >>> tag_images(results, [12], label_tag("7"))          # doctest: +SKIP
    1
    >>> corrected_labels(results, results.store.image_tags(results.run_id))[12]   # doctest: +SKIP
    7
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import UserError
from ..runs.store import check_tag
from .results import RunResults

SUGGESTED_TAGS = ("mislabelled", "duplicate")
LABEL_TAG_PREFIX = "label: "
NOT_CORRECTED = -1


def label_tag(class_name: str) -> str:
    """The tag that sets an image's corrected label to ``class_name``."""
    return LABEL_TAG_PREFIX + class_name


def _normalised(tag: str) -> str:
    """``tag`` checked, with ``label:NAME`` spelled the one way (``label: NAME``)."""
    tag = check_tag(tag)
    head, sep, rest = tag.partition(":")
    if sep and head.strip().lower() == LABEL_TAG_PREFIX[:-2]:
        return label_tag(rest.strip())
    return tag


def _class_names(results: RunResults) -> list[str]:
    names = list(results.class_names)
    return names or [str(label) for label in range(int(results.labels.max()) + 1)]


def _checked_images(results: RunResults, images: Iterable[int]) -> list[int]:
    chosen = sorted({int(image) for image in images})
    n = len(results.assign)
    if not chosen:
        raise UserError("no image chosen to tag: select some first")
    outside = [image for image in (chosen[0], chosen[-1]) if not 0 <= image < n]
    if outside:
        raise UserError(f"run {results.run_id} has images 0–{n - 1}; there is no image {outside[0]}")
    return chosen


def tag_images(results: RunResults, images: Iterable[int], tag: str) -> int:
    """Tag images of a finished run; returns how many were not tagged so before.

    Raises:
        UserError: an empty or over-long tag, an index outside the run, or a ``label: NAME`` tag on an unlabelled
            set or naming no class of the set.
    """
    tag, chosen = _normalised(tag), _checked_images(results, images)
    if tag.startswith(LABEL_TAG_PREFIX):
        name = tag[len(LABEL_TAG_PREFIX):]
        if results.labels is None:
            raise UserError("this dataset has no labels to correct; tag the images with text instead")
        if name not in _class_names(results):
            raise UserError(f"{name!r} is no class of this dataset; choose one of "
                            f"{', '.join(_class_names(results))}")
        return results.store.add_tag(results.run_id, chosen, tag, replace_prefix=LABEL_TAG_PREFIX)
    return results.store.add_tag(results.run_id, chosen, tag)


def untag_images(results: RunResults, images: Iterable[int], tag: str) -> int:
    """Take a tag off images of a run; returns how many carried it."""
    return results.store.remove_tag(results.run_id, _checked_images(results, images), _normalised(tag))


def tag_names(tags: Mapping[int, Sequence[str]]) -> list[str]:
    """Every tag in use, in the order first used."""
    return list(dict.fromkeys(tag for image_tags in tags.values() for tag in image_tags))


def corrected_labels(results: RunResults, tags: Mapping[int, Sequence[str]]) -> np.ndarray:
    """Per image the label index its ``label: NAME`` tag sets, ``NOT_CORRECTED`` (−1) where it has none."""
    index = {name: label for label, name in enumerate(_class_names(results))}
    corrected = np.full(len(results.assign), NOT_CORRECTED, dtype=np.int64)
    for image, image_tags in tags.items():
        for tag in image_tags:
            if tag.startswith(LABEL_TAG_PREFIX) and tag[len(LABEL_TAG_PREFIX):] in index:
                corrected[image] = index[tag[len(LABEL_TAG_PREFIX):]]
    return corrected

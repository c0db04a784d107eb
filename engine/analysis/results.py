"""A finished run's results in one object: its record, stored arrays and (on demand) its images."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePath

import numpy as np

from ..data import ImageSet, load_dataset
from ..errors import UserError
from ..runs import RunRecord, RunStore


@dataclass
class RunResults:
    """Arrays of one finished run. ``labels`` is None for unlabelled data; ``neighbors`` for methods that mine.
    ``data_roots`` confines the files its images are read from again (see :func:`engine.data.load_dataset`)."""

    record: RunRecord
    store: RunStore = field(repr=False)
    assign: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None
    neighbors: np.ndarray | None
    labels: np.ndarray | None
    data_roots: Sequence[Path] | None = None

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def n_clusters(self) -> int:
        return int(self.probs.shape[1])

    @property
    def confidence(self) -> np.ndarray:
        """max_k p(k | x): how sure the run is of each assignment."""
        return self.probs.max(axis=1)

    @cached_property
    def images(self) -> ImageSet:
        """The run's dataset, loaded the way the run loaded it (from the decode cache when possible)."""
        options = self.record.options
        images = load_dataset(self.record.dataset, data_root=options.get("data_root"),
                              download=bool(options.get("download")), data_roots=self.data_roots,
                              image_size=options.get("image_size"), subset=options.get("subset"))
        if len(images) != len(self.assign):
            raise UserError(f"the dataset {self.record.dataset} now has {len(images)} images but run "
                            f"{self.run_id} clustered {len(self.assign)}; its files changed since the run")
        digest = self.record.summary.get("files_sha256")  # absent from runs made before it was stored
        if digest is not None and images.files_digest() != digest:
            raise UserError(f"the files of {self.record.dataset} changed since run {self.run_id} (renamed, added or "
                            f"removed, the count the same): its clusters would be put on other files. Put the "
                            f"folder back as it was, or train a new run on it")
        return images

    @property
    def class_names(self) -> list[str]:
        return self.images.class_names

    def class_name(self, label: int | None) -> str:
        """A label's class name ("—" for None, the number when the dataset names no classes)."""
        if label is None:
            return "—"
        names = self.class_names
        return names[label] if 0 <= label < len(names) else str(label)

    @cached_property
    def image_names(self) -> list[str]:
        """How the pages name each image: when the dataset was read from files, its file name, with as many of its
        folders as tell it apart from the set's other files of that name (:func:`shortest_unique_names`); else
        ``#index``."""
        paths = self.images.paths
        if len(paths) == len(self.assign):
            return shortest_unique_names(paths)
        return [f"#{index}" for index in range(len(self.assign))]

    def image_name(self, index: int) -> str:
        """The name of one image (see :attr:`image_names`)."""
        return self.image_names[index]

    def image_caption(self, index: int, separator: str = " · ") -> str:
        """Name, cluster and (with labels) label of an image, spelled out: ``#122 · cluster 8 · label 8``."""
        parts = [self.image_name(index), f"cluster {self.assign[index]}"]
        if self.labels is not None:
            parts.append(f"label {self.class_name(int(self.labels[index]))}")
        return separator.join(parts)


def shortest_unique_names(paths: Sequence[str]) -> list[str]:
    """Each path's shortest ending that no other path shares: the file name where it is the only file of that name,
    else the file name under as many of its folders as set it apart (``A/0163.png`` and ``B/0163.png``), so that an
    image's name finds its file.

    Examples:
        >>> shortest_unique_names(["A/0163.png", "B/0163.png", "A/0164.png", "x/A/1.png", "y/A/1.png"])
        ['A/0163.png', 'B/0163.png', '0164.png', 'x/A/1.png', 'y/A/1.png']
    """
    parts = [PurePath(path).parts for path in paths]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        shared = {name for name, count in Counter(names).items() if count > 1}
        deeper = [i for i, name in enumerate(names) if name in shared and depth[i] < len(parts[i])]
        if not deeper:
            return names
        for i in deeper:
            depth[i] += 1


def load_results(store: RunStore, run_id: str, data_roots: Sequence[Path] | None = None) -> RunResults:
    """The stored results of a finished run; a UserError if it has none (not finished, or files removed).
    ``data_roots``: the folders its images may be read from, or None for any."""
    record = store.get(run_id)
    if record.status != "finished":
        raise UserError(f"run {run_id} is {record.status}; only finished runs have results to explore")
    assign, probs = store.load_array(run_id, "assign"), store.load_array(run_id, "probs")
    if assign is None or probs is None:
        raise UserError(f"run {run_id}'s result files are missing from {store.run_dir(run_id)}")
    return RunResults(record, store, assign.astype(np.int64), probs, store.load_array(run_id, "features"),
                      store.load_array(run_id, "neighbors"), store.load_array(run_id, "labels"), data_roots)


def view_neighbors(results: RunResults, k: int = 20) -> tuple[np.ndarray, bool]:
    """The run's mined neighbours when it has them (returns mined=True); otherwise the k nearest neighbours in
    its stored features, computed once and kept as ``knn.npy`` (mined=False), so every run can be inspected."""
    if results.neighbors is not None:
        return results.neighbors, True
    cached = results.store.load_array(results.run_id, "knn")
    if cached is not None and cached.shape[1] >= min(k, len(results.assign) - 1):
        return cached, False
    from ..clustering.neighbors import mine_neighbors

    source = results.features if results.features is not None else results.probs
    knn = mine_neighbors(source.astype(np.float32), min(k, len(source) - 1))
    results.store.save_array(results.run_id, "knn", knn)
    return knn, False


def run_neighbor_purity(store: RunStore, run_id: str, k: int = 20) -> tuple[float | None, str]:
    """A run's neighbour purity: the mean share of each image's neighbours that carry its label, over the
    neighbours :func:`view_neighbors` shows (the mined ones, else the ``k`` nearest in the features).

    Every page shows this one figure. A finished run whose summary lacks it (a method that mines no neighbours)
    gets it computed once from its stored arrays and written into its summary. Returns (value, "") or, when there
    is no figure, (None, why not).
    """
    record = store.get(run_id)
    if record.summary.get("neighbor_purity") is not None:
        return float(record.summary["neighbor_purity"]), ""
    if record.status == "failed":
        return None, "the run failed: it has no scores"
    if record.status != "finished":
        return None, f"the run is {record.status}; scores come when it finishes"
    no_labels = None, "no labels: the dataset has no classes to score against"
    if "acc" in record.summary and record.summary["acc"] is None:
        return no_labels  # known from the summary: the Train page asks every second, loading nothing
    try:
        results = load_results(store, run_id)
    except UserError as exc:  # its files were removed: say so where the figure would be
        return None, str(exc)
    if results.labels is None:
        return no_labels
    from ..clustering.metrics import mean_neighbor_purity

    value = mean_neighbor_purity(view_neighbors(results, k)[0], results.labels)
    store.update(run_id, summary={**record.summary, "neighbor_purity": value})
    return value, ""

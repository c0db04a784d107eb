"""A finished run's results in one object: its record, stored arrays and (on demand) its images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

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
                              image_size=options.get("image_size"))
        if len(images) != len(self.assign):
            raise UserError(f"the dataset {self.record.dataset} now has {len(images)} images but run "
                            f"{self.run_id} clustered {len(self.assign)}; its files changed since the run")
        return images

    @property
    def class_names(self) -> list[str]:
        return self.images.class_names


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
    from .neighbors import mine_neighbors

    source = results.features if results.features is not None else results.probs
    knn = mine_neighbors(source.astype(np.float32), min(k, len(source) - 1))
    results.store.save_array(results.run_id, "knn", knn)
    return knn, False

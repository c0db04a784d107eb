"""2-D maps of a run's learned features: PaCMAP (Wang et al., JMLR 2021; the default, it keeps both local and
global structure) or UMAP (McInnes et al. 2018). Computed once per run and kind, then read from
``<run>/map_<kind>.npy``. pacmap and umap are imported only here, when a map is first computed.

Above ``MAP_FIT_MAX`` points the map is fitted on a random sample of that size and every other point is placed
at the distance-weighted mean of its nearest sampled points' positions (found with a faiss HNSW graph), so the
first map of 200k images costs about what 100k cost (``python -m engine bench --map N``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import UserError
from ..npy import load_npy
from .results import RunResults

MAP_KINDS = ("pacmap", "umap")
MAP_FIT_MAX = 100_000
PLACEMENT_NEIGHBOURS = 5


def map_path(results: RunResults, kind: str) -> Path:
    return results.store.run_dir(results.run_id) / f"map_{kind}.npy"


def _project(features: np.ndarray, kind: str, seed: int) -> np.ndarray:
    if kind == "pacmap":
        import pacmap

        reducer = pacmap.PaCMAP(n_components=2, n_neighbors=min(10, len(features) - 1), random_state=seed)
    else:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(features) - 1), random_state=seed,
                            n_jobs=1)
    return reducer.fit_transform(features).astype(np.float32)


def _project_sampled(features: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The map of all rows, fitted on at most ``MAP_FIT_MAX`` of them and the rest placed among those."""
    if len(features) <= MAP_FIT_MAX:
        return _project(features, kind, seed)
    rng = np.random.default_rng(seed)
    fitted = np.zeros(len(features), dtype=bool)
    fitted[rng.choice(len(features), MAP_FIT_MAX, replace=False)] = True
    coords = np.empty((len(features), 2), dtype=np.float32)
    coords[fitted] = _project(features[fitted], kind, seed)
    coords[~fitted] = place_among(features[fitted], coords[fitted], features[~fitted])
    return coords


def place_among(reference: np.ndarray, reference_coords: np.ndarray, queries: np.ndarray,
                k: int = PLACEMENT_NEIGHBOURS) -> np.ndarray:
    """2-D positions for ``queries``: the inverse-distance-weighted mean position of each one's ``k`` nearest
    ``reference`` rows (Euclidean, as the maps use)."""
    import faiss

    index = faiss.IndexHNSWFlat(reference.shape[1], 32)
    index.hnsw.efSearch = 64
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    squared, nearest = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    weights = 1 / (np.sqrt(np.maximum(squared, 0)) + 1e-6)
    weights[nearest < 0] = 0  # a query the graph found fewer than k neighbours for
    positions = reference_coords[np.maximum(nearest, 0)]
    return ((weights[..., None] * positions).sum(1) / weights.sum(1, keepdims=True)).astype(np.float32)


def compute_map(results: RunResults, kind: str = "pacmap", seed: int = 0) -> np.ndarray:
    """N×2 coordinates of the run's features (its soft assignments when it stored no features), cached."""
    if kind not in MAP_KINDS:
        raise UserError(f"unknown map {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    path = map_path(results, kind)
    if path.exists():
        return load_npy(path)
    features = results.features if results.features is not None else results.probs
    if len(features) < 4:
        raise UserError("a map needs at least 4 images")
    coords = _project_sampled(np.ascontiguousarray(features, dtype=np.float32), kind, seed)
    with atomic_path(path) as tmp:
        np.save(tmp, coords)
    return coords

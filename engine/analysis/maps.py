"""2-D maps of a run's learned features: PaCMAP (Wang et al., JMLR 2021; the default, it keeps both local and
global structure) or UMAP (McInnes et al. 2018). Computed once per run and kind, then read from
``<run>/map_<kind>.npy``. pacmap and umap are imported only here, when a map is first computed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import UserError
from .results import RunResults

MAP_KINDS = ("pacmap", "umap")


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


def compute_map(results: RunResults, kind: str = "pacmap", seed: int = 0) -> np.ndarray:
    """N×2 coordinates of the run's features (its soft assignments when it stored no features), cached."""
    if kind not in MAP_KINDS:
        raise UserError(f"unknown map {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    path = map_path(results, kind)
    if path.exists():
        return np.load(path)
    features = results.features if results.features is not None else results.probs
    if len(features) < 4:
        raise UserError("a map needs at least 4 images")
    coords = _project(np.ascontiguousarray(features, dtype=np.float32), kind, seed)
    with atomic_path(path) as tmp:
        np.save(tmp, coords)
    return coords

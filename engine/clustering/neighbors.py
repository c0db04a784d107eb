"""k-nearest-neighbour mining by cosine similarity, shared by SCAN-style methods and the Neighbours page."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Below this many samples an exact blocked matmul on the CPU is as fast as faiss and needs no extra package.
FAISS_MIN_SAMPLES = 20_000
# Above this many samples an exact all-pairs search is quadratic hours on a CPU: faiss HNSW graphs answer instead.
APPROXIMATE_MIN_SAMPLES = 200_000
HNSW_LINKS = 32  # graph degree M: recall@20 ≥ 0.95 with the search breadth below (benchmarks/knn-*)
HNSW_SEARCH_BREADTH = 128  # efSearch: candidates kept per query


def mine_neighbors(
    features: torch.Tensor | np.ndarray,
    k: int,
    *,
    block_size: int = 4096,
    use_faiss: bool | None = None,
    exact: bool | None = None,
) -> np.ndarray:
    """Indices of each sample's ``k`` nearest neighbours by cosine similarity, the sample itself excluded.

    This is the neighbour-mining step of SCAN (Van Gansbeke et al., "SCAN: Learning to Classify Images
    without Labels", ECCV 2020, §2.2): ``N_k(i) = top-k_{j ≠ i} <f_i, f_j> / (||f_i|| ||f_j||)``. Features are
    L2-normalised here, so callers may pass raw embeddings.

    A CUDA tensor is searched exactly on its GPU with a blocked matmul + ``topk``. On the CPU faiss is used when
    it is installed and N > ``FAISS_MIN_SAMPLES`` (``use_faiss=True``/``False`` forces one path): an exact
    ``IndexFlatIP`` up to ``APPROXIMATE_MIN_SAMPLES``, above it an HNSW graph (Malkov & Yashunin, TPAMI 2020),
    whose recall@20 against the exact search is measured in ``python -m engine bench --knn N``. ``exact``
    forces either search.

    Self is excluded by index, not by similarity, so duplicate images still get ``k`` other samples: the
    ``k + 1`` best are taken and the sample's own index dropped, or the last one if the sample is absent
    (possible when more than ``k`` exact duplicates tie with it).

    Args:
        features: N×D embeddings (torch tensor on any device, or numpy array).
        k: neighbours per sample, ``1 <= k < N``.
        block_size: query rows per matmul block; bounds memory to ``block_size × N`` similarities.
        use_faiss: ``None`` picks automatically, ``True`` requires faiss, ``False`` never uses it.
        exact: ``None`` is exact up to ``APPROXIMATE_MIN_SAMPLES``; ``False`` asks for faiss HNSW at any size.

    Returns:
        ``int32`` array of shape N×k, each row ordered by decreasing similarity.

    Examples:
        >>> points = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> mine_neighbors(points, 1).ravel().tolist()
        [1, 0, 1]
    """
    feats = _as_float_tensor(features)
    n = feats.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < N = {n} (number of samples), got k={k}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if not torch.isfinite(feats).all():
        raise ValueError("features contain NaN or infinite values; check the backbone output")

    feats = F.normalize(feats, dim=1)
    if exact is None:
        exact = feats.device.type != "cpu" or n <= APPROXIMATE_MIN_SAMPLES or not _faiss_available()
    if use_faiss is None:
        use_faiss = not exact or (feats.device.type == "cpu" and n > FAISS_MIN_SAMPLES and _faiss_available())
    if not exact and not use_faiss:
        raise ValueError("an approximate search (exact=False) needs faiss (use_faiss=True)")
    if use_faiss:
        candidates = _faiss_top(feats, k + 1, exact)
    else:
        candidates = _matmul_top(feats, k + 1, block_size)
    return _drop_self(candidates).astype(np.int32)


def _as_float_tensor(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Features as a 2-D float32 tensor on their own device, or ``ValueError``."""
    if isinstance(features, torch.Tensor):
        feats = features.detach().float()
    else:
        feats = torch.from_numpy(np.asarray(features, dtype=np.float32))
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise ValueError(f"features must be a non-empty N×D matrix, got shape {tuple(feats.shape)}")
    return feats


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _matmul_top(feats: torch.Tensor, m: int, block_size: int) -> np.ndarray:
    """Top-``m`` indices by inner product, one block of query rows at a time on ``feats``' device."""
    blocks = []
    with torch.no_grad():
        for start in range(0, feats.shape[0], block_size):
            sims = feats[start : start + block_size] @ feats.T
            blocks.append(sims.topk(m, dim=1).indices.cpu())
    return torch.cat(blocks).numpy()


def _faiss_top(feats: torch.Tensor, m: int, exact: bool = True) -> np.ndarray:
    """Top-``m`` indices by inner product: an exact faiss ``IndexFlatIP``, or an HNSW graph when not ``exact``."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu, or pass use_faiss=False") from err
    matrix = np.ascontiguousarray(feats.cpu().numpy(), dtype=np.float32)
    if exact:
        index = faiss.IndexFlatIP(matrix.shape[1])
    else:
        index = faiss.IndexHNSWFlat(matrix.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(HNSW_SEARCH_BREADTH, m)
    index.add(matrix)
    _, indices = index.search(matrix, m)
    return indices


def _drop_self(candidates: np.ndarray) -> np.ndarray:
    """From N×(k+1) candidates, drop each row's own index, or its last column where the row lacks it."""
    n, m = candidates.shape
    is_self = candidates == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), m - 1] = True
    # Each row now has exactly one True (top-k indices are distinct), so k columns remain in order.
    return candidates[~is_self].reshape(n, m - 1)

"""k-nearest-neighbour mining by cosine similarity, shared by SCAN-style methods and the Neighbours page."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Below this many samples an exact blocked matmul on the CPU is as fast as faiss and needs no extra package.
FAISS_MIN_SAMPLES = 20_000


def mine_neighbors(
    features: torch.Tensor | np.ndarray,
    k: int,
    *,
    block_size: int = 4096,
    use_faiss: bool | None = None,
) -> np.ndarray:
    """Indices of each sample's ``k`` nearest neighbours by cosine similarity, the sample itself excluded.

    This is the neighbour-mining step of SCAN (Van Gansbeke et al., "SCAN: Learning to Classify Images
    without Labels", ECCV 2020, §2.2): ``N_k(i) = top-k_{j ≠ i} <f_i, f_j> / (||f_i|| ||f_j||)``. Features are
    L2-normalised here, so callers may pass raw embeddings.

    The search is exact. A CUDA tensor is searched on its GPU with a blocked matmul + ``topk``; on the CPU
    faiss ``IndexFlatIP`` is used when it is installed and N > ``FAISS_MIN_SAMPLES``, otherwise the same
    blocked matmul. ``use_faiss=True``/``False`` forces one path.

    Self is excluded by index, not by similarity, so duplicate images still get ``k`` other samples: the
    ``k + 1`` best are taken and the sample's own index dropped, or the last one if the sample is absent
    (possible when more than ``k`` exact duplicates tie with it).

    Args:
        features: N×D embeddings (torch tensor on any device, or numpy array).
        k: neighbours per sample, ``1 <= k < N``.
        block_size: query rows per matmul block; bounds memory to ``block_size × N`` similarities.
        use_faiss: ``None`` picks automatically, ``True`` requires faiss, ``False`` never uses it.

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
    if use_faiss is None:
        use_faiss = feats.device.type == "cpu" and n > FAISS_MIN_SAMPLES and _faiss_available()
    candidates = _faiss_top(feats, k + 1) if use_faiss else _matmul_top(feats, k + 1, block_size)
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


def _faiss_top(feats: torch.Tensor, m: int) -> np.ndarray:
    """Top-``m`` indices by inner product with an exact faiss ``IndexFlatIP``."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu, or pass use_faiss=False") from err
    matrix = np.ascontiguousarray(feats.cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatIP(matrix.shape[1])
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

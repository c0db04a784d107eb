"""K-means: Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii 2007) and several restarts, keeping
the restart with the lowest inertia Σ_i ‖x_i − μ_{c(i)}‖². Written in torch so it runs on the GPU when the data is
there. The K-means method (``engine.methods.kmeans``) and the methods that start from a K-means partition (DEC,
DigPro, SMC) call :func:`fit_kmeans`.
"""
from __future__ import annotations

from typing import Callable

import torch


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_i‖² of every row, without the N×D temporary that ``x.pow(2).sum(1)`` allocates."""
    return torch.linalg.vector_norm(x, dim=1).square()


def _squared_distances(x: torch.Tensor, centres: torch.Tensor, x_norms: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """N×K squared distances ‖x_i‖² − 2 x_i·μ_k + ‖μ_k‖²; pass ``x_norms`` (:func:`squared_norms`) when calling
    it repeatedly on the same rows."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    # addmm scales the N×K product; ``2 * x @ …`` would first build 2x, a second N×D array
    return torch.addmm(squared_norms(centres), x, centres.t(), alpha=-2).add_(x_norms[:, None]).clamp_min_(0)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator,
                     x_norms: torch.Tensor | None = None) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability ∝ D(x)², the squared distance to the nearest
    centre so far."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    first = torch.randint(len(x), (1,), generator=generator).item()
    centres = [x[first]]
    nearest = _squared_distances(x, x[first:first + 1], x_norms).squeeze(1)
    for _ in range(1, k):
        weights = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1 / len(x))
        index = torch.multinomial(weights.cpu(), 1, generator=generator).item()
        centres.append(x[index])
        torch.minimum(nearest, _squared_distances(x, x[index:index + 1], x_norms).squeeze(1), out=nearest)
    return torch.stack(centres)


def lloyd(x: torch.Tensor, centres: torch.Tensor, max_iter: int = 300, tol: float = 1e-4,
          x_norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Alternate assignment and mean updates until the centres move less than ``tol`` times the data's mean
    per-feature variance (scikit-learn's rule). Returns (centres, assignments, inertia).

    Each iteration allocates only N×K and K×D arrays: the row norms are computed once, and the assignment needs
    only ‖μ_k‖² − 2 x_i·μ_k (‖x_i‖² is the same for every k)."""
    x_norms = squared_norms(x) if x_norms is None else x_norms
    mean_variance = (x_norms.mean() - x.mean(0).pow(2).sum()).item() / x.shape[1]
    threshold = tol * mean_variance
    sums = torch.empty_like(centres)
    for _ in range(max_iter):
        assign = torch.addmm(squared_norms(centres), x, centres.t(), alpha=-2).argmin(1)
        sums.zero_().index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=len(centres)).unsqueeze(1)
        # an emptied cluster keeps its old centre rather than becoming NaN
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        shift = (updated - centres).pow(2).sum().item()
        centres = updated
        if shift <= threshold:
            break
    distances = _squared_distances(x, centres, x_norms)
    assign = distances.argmin(1)
    return centres, assign, distances.gather(1, assign[:, None]).sum().item()


def fit_kmeans(x: torch.Tensor, k: int, n_init: int = 10, seed: int = 0, max_iter: int = 300,
               on_restart: Callable[[int, float], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of ``n_init`` k-means++ restarts on the rows of ``x``; returns (centres K×D, assignments N).

    ``on_restart(i, inertia)`` is called after each restart (progress, cancellation)."""
    generator = torch.Generator().manual_seed(seed)
    x_norms = squared_norms(x)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for restart in range(n_init):
        seeds = kmeans_plus_plus(x, k, generator, x_norms)
        centres, assign, inertia = lloyd(x, seeds, max_iter, x_norms=x_norms)
        if best is None or inertia < best[0]:
            best = (inertia, centres, assign)
        if on_restart is not None:
            on_restart(restart, inertia)
    assert best is not None
    return best[1], best[2]


def soft_assignments(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Softmax over negative squared distances scaled by the mean distance: a confidence for the maps and
    galleries, not part of K-means itself."""
    distances = _squared_distances(x, centres)
    return torch.softmax(-distances / distances.mean().clamp_min(1e-12) * 10, dim=1)

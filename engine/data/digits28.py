"""``digits28``: scikit-learn's 8×8 digits drawn again at 28×28, MNIST's size, with a stroke width and a position
that vary from image to image — a second digit set, made here, on which a method's presets are checked beyond the
8×8 images they were first tuned on.

Each digit is upsampled (bilinear) to a 20×20 glyph, which blurs its 4×4-block counts into a smooth ink density;
a per-image threshold on that density then sets the stroke width (a low threshold keeps more of the blur: a thick
stroke), with a soft edge so the result stays gray like MNIST. The glyph is placed in the middle of a 28×28 canvas
(MNIST's 20-pixel box in a 4-pixel margin) and shifted by up to :data:`MAX_SHIFT` pixel each way (a shift of 2 already halves pixel K-means' ACC, far below
its ≈0.55 on MNIST, so the set would no longer stand in for MNIST-like data). Everything is
drawn from one seeded generator, so the set is the same on every machine.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 28
GLYPH = 20  # MNIST's digits fill a 20×20 box centred in 28×28
MAX_SHIFT = 1  # MNIST centres each digit by its centre of mass: positions vary by about a pixel
THRESHOLDS = (0.25, 0.55)  # ink-density cut-offs of the thickest and thinnest strokes
EDGE = 0.15  # width of the soft edge, in ink density


def load_digits28(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N×28×28×1 uint8 images, N int64 labels): all 1,797 scikit-learn digits drawn by :func:`render_digits28`."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return render_digits28(bunch.images, seed), bunch.target.astype(np.int64)


def render_digits28(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """N×28×28×1 uint8 drawings of N 8×8 digits with values 0..16 (scikit-learn's ``load_digits().images``).

    Examples:
        >>> from sklearn.datasets import load_digits
        >>> render_digits28(load_digits().images[:5]).shape
        (5, 28, 28, 1)
    """
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"expected N×8×8 digits, got {images.shape}")
    rng = np.random.default_rng(seed)
    n = len(images)
    thresholds = torch.from_numpy(rng.uniform(*THRESHOLDS, size=n)).float().view(n, 1, 1, 1)
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(n, 2))
    density = torch.from_numpy(images).float().div(16.0).unsqueeze(1)
    density = F.interpolate(density, size=(GLYPH, GLYPH), mode="bilinear", align_corners=False)
    ink = ((density - thresholds) / EDGE + 0.5).clamp(0.0, 1.0)
    canvas = torch.zeros(n, 1, SIDE, SIDE)
    margin = (SIDE - GLYPH) // 2
    for i, (dy, dx) in enumerate(shifts):
        top, left = margin + int(dy), margin + int(dx)
        canvas[i, 0, top:top + GLYPH, left:left + GLYPH] = ink[i, 0]
    return canvas.mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

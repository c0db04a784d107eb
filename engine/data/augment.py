"""Batched image augmentations that run wherever the image tensor lives (GPU or CPU).

The resident dataset is a uint8 tensor N×H×W×C (C = 1 or 3). A pipeline takes any index-gathered slice of it
(``images[idx]``) and returns a normalised float batch N×C×S×S, with no per-sample Python loop and no host sync:
every random draw is a batched torch draw (optionally from a ``torch.Generator``), every per-sample choice is a
mask applied with ``torch.where``, and every geometric change is one ``affine_grid`` + ``grid_sample`` call.

Building blocks work on float N×C×H×W images in [0, 1]:

- :func:`random_resized_crop_flip` and :func:`random_crop_with_padding` (geometry and horizontal flip),
- :func:`color_jitter`, :func:`random_grayscale`, :func:`gaussian_blur` (SimCLR's photometric set),
- :func:`random_stroke_width` (pen width of gray glyphs),
- :func:`rand_augment` and :func:`cutout` (the strong augmentation).

Pipelines (:class:`EvalTransform`, :class:`WeakAugment`, :class:`SimCLRAugment`, :class:`StrongAugment`) chain them
and normalise; :func:`build_augment` makes one from its name.

Examples:
    >>> images = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8)
    >>> simclr = build_augment("simclr", out_size=32, channels=3)
    >>> views = simclr(images[:128]), simclr(images[:128])
    >>> views[0].shape
    torch.Size([128, 3, 32, 32])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "RAND_AUGMENT_OPS",
    "EvalTransform",
    "SimCLRAugment",
    "StrongAugment",
    "WeakAugment",
    "build_augment",
    "color_jitter",
    "cutout",
    "gaussian_blur",
    "normalize",
    "rand_augment",
    "random_crop_with_padding",
    "random_grayscale",
    "random_resized_crop_flip",
    "random_stroke_width",
    "resize",
    "to_float_nchw",
]

# Colour constants are Python floats, not tensors: a constant tensor made on the host is copied to the GPU at every
# call, and that copy waits for the GPU (a host sync per view).
# ITU-R BT.601 luma weights, as used by PIL's "L" conversion and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# RGB → YIQ (NTSC). Hue is the angle in the I–Q plane, so a hue shift is a rotation there: a linear map per sample.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114),
               (0.595716, -0.274453, -0.321263),
               (0.211456, -0.522591, 0.311135))
_YIQ_TO_RGB = tuple(map(tuple, torch.linalg.inv(torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)).tolist()))

RAND_AUGMENT_OPS = ("identity", "autocontrast", "equalize", "rotate", "shear_x", "shear_y", "translate_x",
                    "translate_y", "brightness", "contrast", "sharpness", "posterize", "solarize")
_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_MAX_LEVEL = 30
# Strength of each op at the top level (30): RandAugment's ranges (rotate 30°, shear 0.3, translate 45 % of the
# side, enhance factors 1 ± 0.9, posterize down to 4 bits, solarize threshold down to 0).
_MAX_ROTATE_DEG = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.45
_MAX_ENHANCE = 0.9


# ---------------------------------------------------------------------------------------------------------------
# Random draws and tensor plumbing
# ---------------------------------------------------------------------------------------------------------------

def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
             low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """U[low, high) draws on ``device``; drawn on the generator's own device when one is given.

    A generator only feeds draws on its own device, so a CPU generator driving a CUDA batch draws on the CPU and
    copies the few numbers over (from pinned memory: an asynchronous copy, not a host sync).
    """
    if generator is None:
        u = torch.rand(shape, device=device)
    else:
        u = torch.rand(shape, generator=generator, device=generator.device)
        if device.type == "cuda" and u.device.type == "cpu":
            u = u.pin_memory()  # a pageable copy would wait for the GPU; a pinned one is queued like a kernel
        u = u.to(device, non_blocking=True)
    return low + (high - low) * u if (low, high) != (0.0, 1.0) else u


def _bernoulli(n: int, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Boolean mask of n independent draws that are True with probability p."""
    return _uniform((n,), generator, device) < p


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    """Shape a per-sample vector (N,) to broadcast against N×C×H×W."""
    return v.view(-1, 1, 1, 1)


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
        raise ValueError(f"expected a float image batch N×C×H×W with C in (1, 3), got {x.dtype} {tuple(x.shape)}")


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _check_range(name: str, bounds: Sequence[float], lowest: float = 0.0) -> None:
    if len(bounds) != 2 or not lowest <= bounds[0] <= bounds[1]:
        raise ValueError(f"{name} must be (low, high) with {lowest} <= low <= high, got {tuple(bounds)}")


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W×C (channels last, as stored) → float32 N×C×H×W in [0, 1], on the same device."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images N×H×W×C with C in (1, 3), got {images.dtype} "
                         f"{tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x − mean) / std per channel; a one-value mean or std applies to every channel."""
    c = x.shape[1]
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise ValueError(f"mean/std need 1 or {c} values for {c}-channel images, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (x - mean[0]) / std[0]
    # channel by channel with Python-float constants: a mean or std tensor would be copied from the host each call
    return torch.cat([(x[:, i:i + 1] - mean[i % len(mean)]) / std[i % len(std)] for i in range(c)], dim=1)


def resize(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """Bilinear resize to out_size × out_size; antialiased when shrinking, so thin strokes do not alias away."""
    if x.shape[-2:] == (out_size, out_size):
        return x
    shrinking = x.shape[-2] > out_size or x.shape[-1] > out_size
    return F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=shrinking)


def _affine_sample(x: torch.Tensor, theta: torch.Tensor, out_size: int, padding_mode: str) -> torch.Tensor:
    """Sample x at the points of an N×2×3 affine map of the output grid (normalised coordinates, half-pixel)."""
    n, c = x.shape[:2]
    grid = F.affine_grid(theta.to(x.dtype), [n, c, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _theta(a: torch.Tensor, b: torch.Tensor, tx: torch.Tensor,
           d: torch.Tensor, e: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Stack per-sample coefficients into N×2×3 matrices [[a, b, tx], [d, e, ty]]."""
    return torch.stack([torch.stack([a, b, tx], dim=1), torch.stack([d, e, ty], dim=1)], dim=1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of an N×C×H×W batch as N×1×H×W (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    return _mix(x, (_LUMA,))


def _mix(x: torch.Tensor, matrix: Sequence[Sequence[float]]) -> torch.Tensor:
    """The channels of an N×3×H×W batch mixed by a constant matrix of Python floats: output channel r is
    Σ_c matrix[r][c]·x[:, c] (a per-pixel matrix product with no constant tensor to copy to the device)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([torch.add(torch.add(r * wr, g, alpha=wg), b, alpha=wb) for wr, wg, wb in matrix], dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------

def random_resized_crop_flip(x: torch.Tensor, out_size: int, scale: Sequence[float] = (0.2, 1.0),
                             ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crop plus random horizontal flip, in one ``grid_sample`` for the whole batch.

    Each sample gets a box covering a ``scale`` share of its area with a width/height ``ratio`` drawn log-uniformly
    (Inception-style cropping as used by SimCLR), at a uniform position; the box is resized to
    out_size × out_size with bilinear sampling and mirrored with probability ``flip_p``. As in torchvision, ten
    candidate boxes are drawn per sample and the first that fits the image is kept; a sample with none falls
    back to the largest centred box of an allowed ratio (the whole image for square inputs). Edges are clamped,
    so a crop never brings in outside pixels.

    Args:
        x: float N×C×H×W in [0, 1], any H and W.
        out_size: side S of the square output.
        scale: range of the crop's share of the image area.
        ratio: range of the crop's width / height.
        flip_p: probability of a horizontal flip.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        float N×C×S×S.
    """
    _check_batch(x)
    _check_range("scale", scale)
    if scale[1] > 1.0 or scale[1] <= 0.0:
        raise ValueError(f"scale must lie in (0, 1], got {tuple(scale)}")
    _check_range("ratio", ratio)
    if ratio[0] <= 0.0:
        raise ValueError(f"ratio must be positive, got {tuple(ratio)}")
    _check_probability("flip_p", flip_p)
    n, _, h, w = x.shape
    attempts = 10
    u = _uniform((n, attempts, 4), generator, x.device)
    area = (scale[0] + (scale[1] - scale[0]) * u[..., 0]) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cw, ch = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (cw <= w * (1 + 1e-6)) & (ch <= h * (1 + 1e-6))
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximal index
    any_fit = fits.any(dim=1)

    def pick(v: torch.Tensor) -> torch.Tensor:
        return v.gather(1, first).squeeze(1)

    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), w / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = h * ratio[1], float(h)
    else:
        fw, fh = float(w), float(h)
    cw = torch.where(any_fit, pick(cw), fw).clamp(max=w)
    ch = torch.where(any_fit, pick(ch), fh).clamp(max=h)
    fx, fy = torch.where(any_fit, pick(u[..., 2]), 0.5), torch.where(any_fit, pick(u[..., 3]), 0.5)
    x0, y0 = fx * (w - cw), fy * (h - ch)
    flip = _bernoulli(n, flip_p, generator, x.device)
    sx = torch.where(flip, -cw / w, cw / w)
    sy = ch / h
    tx = (2 * x0 + cw) / w - 1
    ty = (2 * y0 + ch) / h - 1
    zero = torch.zeros_like(sx)
    return _affine_sample(x, _theta(sx, zero, tx, zero, sy, ty), out_size, "border")


def random_crop_with_padding(x: torch.Tensor, out_size: int, padding: int, padding_mode: str = "reflect",
                             flip_p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels (a padded random crop) plus random horizontal flip.

    The classic CIFAR "pad 4 and crop 32" weak augmentation, done as one integer-pixel translation per sample in
    a single ``grid_sample``. An input whose side is not ``out_size`` is first resized (antialiased) to it, so the
    shift stays an exact whole-pixel move.

    Args:
        x: float N×C×H×W in [0, 1].
        out_size: side S of the square output.
        padding: largest shift in pixels along each axis (at output resolution).
        padding_mode: ``"reflect"`` (mirror the border) or ``"zeros"`` (black).
        flip_p: probability of a horizontal flip.
        generator: optional ``torch.Generator``.

    Returns:
        float N×C×S×S.
    """
    _check_batch(x)
    modes = {"reflect": "reflection", "zeros": "zeros"}
    if padding_mode not in modes:
        raise ValueError(f"padding_mode must be one of {sorted(modes)}, got {padding_mode!r}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    _check_probability("flip_p", flip_p)
    x = resize(x, out_size)
    n = x.shape[0]
    u = _uniform((n, 2), generator, x.device)
    shift = (torch.floor(u * (2 * padding + 1)) - padding).clamp(-padding, padding)
    flip = _bernoulli(n, flip_p, generator, x.device)
    one = torch.ones(n, device=x.device)
    zero = torch.zeros_like(one)
    sx = torch.where(flip, -one, one)
    theta = _theta(sx, zero, 2 * shift[:, 0] / out_size, zero, one, 2 * shift[:, 1] / out_size)
    return _affine_sample(x, theta, out_size, modes[padding_mode])


# ---------------------------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------------------------

def _factor(n: int, strength: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Per-sample factor in [max(0, 1 − strength), 1 + strength]."""
    return _uniform((n,), generator, device, max(0.0, 1.0 - strength), 1.0 + strength)


def _blend(x: torch.Tensor, base: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """base + factor·(x − base), clipped to [0, 1]: factor 0 gives base, 1 gives x, >1 extrapolates."""
    return (base + _per_sample(factor) * (x - base)).clamp_(0.0, 1.0)


def color_jitter(x: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue, applied to each sample with probability p.

    Factors are drawn per sample: brightness scales the image by b ∈ [1−brightness, 1+brightness]; contrast
    blends with the image's mean luma; saturation blends with the per-pixel luma; hue rotates the chroma plane
    of YIQ space by 2π·h, h ∈ [−hue, hue] (a linear stand-in for an HSV hue shift). The four are applied in this
    fixed order. Saturation and hue are skipped for one-channel images.

    Args:
        x: float N×C×H×W in [0, 1].
        brightness, contrast, saturation: jitter strengths (0 disables).
        hue: largest hue shift as a fraction of a full turn, in [0, 0.5].
        p: probability that a sample is jittered at all.
        generator: optional ``torch.Generator``.
    """
    _check_batch(x)
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    _check_probability("p", p)
    n, device = x.shape[0], x.device
    out = x
    if brightness > 0:
        out = (out * _per_sample(_factor(n, brightness, generator, device))).clamp_(0.0, 1.0)
    if contrast > 0:
        mean_luma = _grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
        out = _blend(out, mean_luma, _factor(n, contrast, generator, device))
    if x.shape[1] == 3:
        if saturation > 0:
            out = _blend(out, _grayscale(out), _factor(n, saturation, generator, device))
        if hue > 0:
            angle = _uniform((n,), generator, device, -hue, hue) * (2 * math.pi)
            cos, sin = _per_sample(torch.cos(angle)), _per_sample(torch.sin(angle))
            yiq = _mix(out, _RGB_TO_YIQ)
            y, i, q = yiq[:, 0:1], yiq[:, 1:2], yiq[:, 2:3]
            rotated = torch.cat([y, cos * i - sin * q, sin * i + cos * q], dim=1)
            out = _mix(rotated, _YIQ_TO_RGB).clamp_(0.0, 1.0)
    apply = _per_sample(_bernoulli(n, p, generator, device))
    return torch.where(apply, out, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample by its luma (repeated over the three channels) with probability p; a no-op for C = 1."""
    _check_batch(x)
    _check_probability("p", p)
    if x.shape[1] == 1:
        return x
    apply = _per_sample(_bernoulli(x.shape[0], p, generator, x.device))
    return torch.where(apply, _grayscale(x).expand_as(x), x)


def random_stroke_width(x: torch.Tensor, p: float = 2 / 3, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """Thicken or thin every stroke by about a pixel: a 3×3 gray-scale dilation (max filter) or erosion (min
    filter), each with probability p/2.

    Ours, not from the papers: handwriting and scans vary in pen width, which SimCLR's crops and colour jitter
    never change, so contrastive features of gray glyphs keep it and clusters split by it. A dilation grows the
    bright strokes (digits, MNIST) and thins dark ones (ink on paper), an erosion the other way round.

    Examples:
        >>> dot = torch.zeros(1, 1, 5, 5)
        >>> dot[0, 0, 2, 2] = 1.0
        >>> grown = random_stroke_width(dot, p=1.0, generator=torch.Generator().manual_seed(1))
        >>> int(grown.sum()) in (0, 9)  # eroded away, or grown to 3×3
        True
    """
    _check_batch(x)
    _check_probability("p", p)
    u = _per_sample(_uniform((x.shape[0],), generator, x.device))
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return torch.where(u < p / 2, dilated, torch.where(u < p, eroded, x))


def gaussian_blur(x: torch.Tensor, p: float = 0.5, sigma: Sequence[float] = (0.1, 2.0),
                  kernel_size: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with a per-sample σ ∈ ``sigma``, applied with probability p.

    SimCLR blurs ImageNet-sized views (kernel about 10 % of the side, σ ∈ [0.1, 2]) and leaves it out for
    CIFAR-sized ones. Each sample's separable kernel is built from its own σ and applied as two grouped
    convolutions (one group per sample and channel), with mirrored borders.

    Args:
        x: float N×C×H×W in [0, 1].
        p: probability that a sample is blurred.
        sigma: range of the standard deviation in pixels.
        kernel_size: odd kernel side; default the odd number nearest 10 % of the image side (at least 3).
        generator: optional ``torch.Generator``.
    """
    _check_batch(x)
    _check_probability("p", p)
    _check_range("sigma", sigma)
    if sigma[0] <= 0:
        raise ValueError(f"sigma must be positive, got {tuple(sigma)}")
    n, c, h, w = x.shape
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    radius = kernel_size // 2
    if radius >= min(h, w):
        raise ValueError(f"kernel_size {kernel_size} is too large for {h}×{w} images")
    s = _uniform((n,), generator, x.device, sigma[0], sigma[1])
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * s.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N·C) × k
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    apply = _per_sample(_bernoulli(n, p, generator, x.device))
    return torch.where(apply, flat.view(n, c, h, w), x)


# ---------------------------------------------------------------------------------------------------------------
# Strong augmentation: RandAugment and Cutout
# ---------------------------------------------------------------------------------------------------------------

def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full [0, 1] range (flat channels unchanged)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    flat = span < 1e-6
    return torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(span), span))


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel over 256 levels (histogram by scatter-add, LUT by cumsum)."""
    n, c, h, w = x.shape
    levels = (x * 255).round_().clamp_(0, 255).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=x.dtype))
    cdf = hist.cumsum(dim=1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(dim=1, keepdim=True)
    denom = float(h * w) - cdf_min
    flat = denom < 0.5  # one level only: nothing to spread
    lut = ((cdf - cdf_min) / torch.where(flat, torch.ones_like(denom), denom)).clamp_(0.0, 1.0)
    out = lut.gather(1, levels).view(n, c, h, w)
    return torch.where(flat.view(n, c, 1, 1), x, out)


def _sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a 3×3 smoothed copy (PIL's SMOOTH kernel): factor < 1 blurs, > 1 sharpens."""
    c = x.shape[1]
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / k.sum()).expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
    return _blend(x, smooth, factor)


def _posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` bits of each 8-bit value."""
    step = float(2 ** (8 - bits))
    return torch.floor((x * 255).round_() / step) * step / 255


def _geometric_theta(names: Sequence[str], op: torch.Tensor, sign: torch.Tensor, level: float) -> torch.Tensor:
    """Per-sample N×2×3 maps for the geometric ops chosen in ``op`` (identity for every other sample)."""
    one = torch.ones_like(sign)
    zero = torch.zeros_like(sign)
    a, b, tx, d, e, ty = one, zero, zero, zero, one, zero
    angle = sign * math.radians(_MAX_ROTATE_DEG * level)
    shear = sign * _MAX_SHEAR * level
    shift = sign * 2 * _MAX_TRANSLATE * level  # normalised coordinates span 2 per image side
    for k, name in enumerate(names):
        chosen = op == k
        if name == "rotate":
            a, b = torch.where(chosen, torch.cos(angle), a), torch.where(chosen, -torch.sin(angle), b)
            d, e = torch.where(chosen, torch.sin(angle), d), torch.where(chosen, torch.cos(angle), e)
        elif name == "shear_x":
            b = torch.where(chosen, shear, b)
        elif name == "shear_y":
            d = torch.where(chosen, shear, d)
        elif name == "translate_x":
            tx = torch.where(chosen, shift, tx)
        elif name == "translate_y":
            ty = torch.where(chosen, shift, ty)
    return _theta(a, b, tx, d, e, ty)


def rand_augment(x: torch.Tensor, n_ops: int = 2, magnitude: float = 10, ops: Sequence[str] = RAND_AUGMENT_OPS,
                 fill: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced search
    space", CVPRW 2020): ``n_ops`` rounds, each applying one op drawn uniformly per sample at a shared magnitude.

    Magnitude is on RandAugment's 0–30 scale; at 30 the ops reach rotate ±30°, shear ±0.3, translate ±45 % of
    the side, brightness/contrast/sharpness factor 1 ± 0.9, posterize to 4 bits and solarize every pixel. Signed
    ops get a random sign per sample. Ops: identity, autocontrast, equalize (exact 256-level histogram
    equalisation per image and channel), rotate, shear_x, shear_y, translate_x, translate_y (the geometric ones
    share one ``grid_sample`` per round; uncovered area is filled with ``fill``), brightness, contrast,
    sharpness (blend with a 3×3 smoothing), posterize, solarize. Each op is computed for the whole batch and
    kept where chosen, so the cost is the same for every sample and there is no host sync.

    Args:
        x: float N×C×H×W in [0, 1].
        n_ops: rounds per sample.
        magnitude: shared strength in [0, 30].
        ops: names to draw from (a subset of :data:`RAND_AUGMENT_OPS`).
        fill: value of the area a geometric op uncovers.
        generator: optional ``torch.Generator``.
    """
    _check_batch(x)
    unknown = sorted(set(ops) - set(RAND_AUGMENT_OPS))
    if unknown or not ops:
        raise ValueError(f"ops must be a non-empty subset of {RAND_AUGMENT_OPS}, got unknown {unknown}")
    if not 0 <= magnitude <= _MAX_LEVEL:
        raise ValueError(f"magnitude must be in [0, {_MAX_LEVEL}], got {magnitude}")
    if n_ops < 0:
        raise ValueError(f"n_ops must be >= 0, got {n_ops}")
    ops = tuple(ops)
    level = magnitude / _MAX_LEVEL
    n, _, h, w = x.shape
    has_geometric = any(name in _GEOMETRIC_OPS for name in ops)
    if has_geometric and h != w:
        raise ValueError(f"geometric RandAugment ops need square images, got {h}×{w}; resize or crop first")
    enhance = _MAX_ENHANCE * level
    bits = 8 - round(4 * level)
    threshold = 1.0 - level
    for _ in range(n_ops):
        u = _uniform((n, 2), generator, x.device)
        op = torch.floor(u[:, 0] * len(ops)).long().clamp_(max=len(ops) - 1)
        sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0).to(x.dtype)
        factor = 1.0 + sign * enhance
        out = x
        if has_geometric:
            theta = _geometric_theta(ops, op, sign, level)
            # Sampling x − fill with zero padding and adding fill back fills the uncovered area with ``fill``.
            moved = _affine_sample(x - fill, theta, h, "zeros") + fill
        for k, name in enumerate(ops):
            if name == "identity":
                continue
            if name in _GEOMETRIC_OPS:
                result = moved
            elif name == "autocontrast":
                result = _autocontrast(x)
            elif name == "equalize":
                result = _equalize(x)
            elif name == "brightness":
                result = _blend(x, torch.zeros_like(x), factor)
            elif name == "contrast":
                result = _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)
            elif name == "sharpness":
                result = _sharpen(x, factor)
            elif name == "posterize":
                result = _posterize(x, bits)
            else:  # solarize
                result = torch.where(x >= threshold, 1.0 - x, x)
            out = torch.where(_per_sample(op == k), result, out)
        x = out
    return x


def cutout(x: torch.Tensor, size_frac: float = 0.5, p: float = 1.0, fill: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor, "Improved regularization of convolutional neural networks with cutout", 2017).

    Each sample, with probability p, gets one square of side ``round(size_frac · H)`` set to ``fill``. The
    square's centre is uniform over the image, so near the border it is partly outside and covers less area.
    Works on any float batch: the strong pipeline applies it after normalisation with fill 0, i.e. the dataset
    mean.
    """
    _check_batch(x)
    _check_probability("p", p)
    if not 0.0 <= size_frac <= 1.0:
        raise ValueError(f"size_frac must be in [0, 1], got {size_frac}")
    n, _, h, w = x.shape
    side = int(round(size_frac * h))
    u = _uniform((n, 2), generator, x.device)
    cy = torch.floor(u[:, 0] * h).clamp_(max=h - 1)
    cx = torch.floor(u[:, 1] * w).clamp_(max=w - 1)
    top, left = cy - side // 2, cx - side // 2
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1)))
    inside = inside & _bernoulli(n, p, generator, x.device).view(-1, 1, 1)
    return x.masked_fill(inside.unsqueeze(1), fill)


# ---------------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------------

class _Pipeline:
    """Shared part of the pipelines: output size, normalisation constants and the uint8 → float step."""

    def __init__(self, out_size: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        if out_size < 1:
            raise ValueError(f"out_size must be a positive number of pixels, got {out_size}")
        self.out_size = int(out_size)
        self.mean = tuple(float(m) for m in (mean if mean is not None else (0.5,)))
        self.std = tuple(float(s) for s in (std if std is not None else (0.5,)))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class EvalTransform(_Pipeline):
    """Deterministic view for feature extraction and evaluation: resize to out_size (if needed) and normalise.

    Examples:
        >>> EvalTransform(32)(torch.zeros(4, 28, 28, 1, dtype=torch.uint8)).shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(self, out_size: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(out_size, mean, std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._normalize(resize(to_float_nchw(images), self.out_size))


class WeakAugment(_Pipeline):
    """Weak view: random translation by up to out_size // 8 pixels (mirrored border) and a horizontal flip.

    ``flip=False`` for images whose meaning changes when mirrored (digits, text).
    """

    def __init__(self, out_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 flip: bool = True) -> None:
        super().__init__(out_size, mean, std)
        self.flip = bool(flip)
        self.padding = self.out_size // 8

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = random_crop_with_padding(to_float_nchw(images), self.out_size, self.padding,
                                     flip_p=0.5 if self.flip else 0.0, generator=generator)
        return self._normalize(x)


class SimCLRAugment(_Pipeline):
    """SimCLR view (Chen et al., "A simple framework for contrastive learning of visual representations", ICML
    2020): random resized crop + horizontal flip, colour jitter with probability ``jitter_p``, grayscale with
    probability ``grayscale_p``, and optionally Gaussian blur and (ours) a random stroke width.

    Jitter strength s sets brightness = contrast = saturation = 0.8·s and hue = 0.2·s; the paper uses s = 1 on
    ImageNet and s = 0.5 on CIFAR (the default here, as SCAN's CIFAR configs). ``blur=None`` turns blur on only
    for outputs larger than 64 px, as the paper blurs ImageNet views but not CIFAR ones. ``stroke`` applies
    :func:`random_stroke_width` after the crop.
    """

    def __init__(self, out_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 flip: bool = True, crop_scale: Sequence[float] = (0.2, 1.0), jitter_strength: float = 0.5,
                 jitter_p: float = 0.8, grayscale_p: float = 0.2, blur: bool | None = None,
                 stroke: bool = False) -> None:
        super().__init__(out_size, mean, std)
        _check_range("crop_scale", crop_scale)
        if jitter_strength < 0 or jitter_strength > 2.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5] (hue 0.2·s <= 0.5), got {jitter_strength}")
        _check_probability("jitter_p", jitter_p)
        _check_probability("grayscale_p", grayscale_p)
        self.flip = bool(flip)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.jitter_strength = float(jitter_strength)
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)
        self.blur = self.out_size > 64 if blur is None else bool(blur)
        self.stroke = bool(stroke)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        s = self.jitter_strength
        x = random_resized_crop_flip(to_float_nchw(images), self.out_size, scale=self.crop_scale,
                                     flip_p=0.5 if self.flip else 0.0, generator=generator)
        if self.stroke:
            x = random_stroke_width(x, generator=generator)
        if s > 0 and self.jitter_p > 0:
            x = color_jitter(x, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s,
                             p=self.jitter_p, generator=generator)
        if self.grayscale_p > 0:
            x = random_grayscale(x, p=self.grayscale_p, generator=generator)
        if self.blur:
            x = gaussian_blur(x, p=0.5, generator=generator)
        return self._normalize(x)


class StrongAugment(_Pipeline):
    """Strong view as in SCAN's self-labelling and FixMatch-style training: the weak translation/flip, then
    RandAugment (Cubuk et al. 2020) with ``n_ops`` ops at ``magnitude`` (0–30), normalisation, and Cutout
    (DeVries & Taylor 2017) of a square ``cutout_frac`` of the side filled with the dataset mean.
    """

    def __init__(self, out_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 flip: bool = True, n_ops: int = 2, magnitude: float = 10, cutout_frac: float = 0.5) -> None:
        super().__init__(out_size, mean, std)
        if not 0 <= magnitude <= _MAX_LEVEL:
            raise ValueError(f"magnitude must be in [0, {_MAX_LEVEL}], got {magnitude}")
        if not 0.0 <= cutout_frac <= 1.0:
            raise ValueError(f"cutout_frac must be in [0, 1], got {cutout_frac}")
        self.flip = bool(flip)
        self.padding = self.out_size // 8
        self.n_ops = int(n_ops)
        self.magnitude = float(magnitude)
        self.cutout_frac = float(cutout_frac)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = random_crop_with_padding(to_float_nchw(images), self.out_size, self.padding,
                                     flip_p=0.5 if self.flip else 0.0, generator=generator)
        x = rand_augment(x, n_ops=self.n_ops, magnitude=self.magnitude, generator=generator)
        x = self._normalize(x)
        return cutout(x, size_frac=self.cutout_frac, fill=0.0, generator=generator)


_PIPELINES: dict[str, type[_Pipeline]] = {
    "eval": EvalTransform,
    "weak": WeakAugment,
    "simclr": SimCLRAugment,
    "strong": StrongAugment,
}


def build_augment(kind: str, out_size: int, channels: int, **kw) -> _Pipeline:
    """Make the pipeline named ``kind`` ('eval', 'weak', 'simclr' or 'strong') for ``channels``-channel images.

    Keyword arguments go to the pipeline's constructor (``mean``, ``std``, ``flip``, ...). ``mean`` and ``std``
    default to 0.5 per channel and must have one value or one per channel.

    Examples:
        >>> aug = build_augment("weak", out_size=28, channels=1, flip=False)
        >>> aug(torch.zeros(8, 28, 28, 1, dtype=torch.uint8)).shape
        torch.Size([8, 1, 28, 28])
    """
    if kind not in _PIPELINES:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {sorted(_PIPELINES)}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    for name in ("mean", "std"):
        values = kw.get(name)
        if values is not None and len(values) not in (1, channels):
            raise ValueError(f"{name} needs 1 or {channels} values, got {len(values)}")
    return _PIPELINES[kind](out_size, **kw)

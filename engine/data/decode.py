"""Decoding a dataset's image files into one uint8 array: every image flattened to RGB or L (alpha over white,
palettes and 16-bit gray mapped to 8 bits) and resized to one square side, on threads. A survey opens every file
first to choose the side and the channels and to skip what cannot be read (decompression bombs included)."""
from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.data.listing import Entry
from engine.errors import ConfigError

# A folder's images are decoded at this side unless asked otherwise (or smaller, when the images are): enough for
# the conv nets the methods train from scratch, and 50,000 images take 600 MB.
DEFAULT_FOLDER_IMAGE_SIZE = 64
# Larger sides are refused as a mistake: 1024 px is already 3 MB per colour image, 150 GB for 50,000 of them.
MAX_IMAGE_SIZE = 1024

# Files handed to one worker at a time: small enough to balance, large enough that a 60k-file set does not
# drown in futures.
_CHUNK = 256
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA"})
# Images up to this many pixels are decoded once, during the size survey, as long as those kept hold at most
# _KEEP_BUDGET_BYTES (all of CIFAR-10's 60,000 take 184 MB); the rest are opened twice instead, so RAM stays
# near the size of the memory-mapped output.
_SMALL_PIXELS = 96 * 96
_KEEP_BUDGET_BYTES = 256 << 20
# Warning filters are process-wide, so two loads running at once must not interleave their set/restore.
_DECODE_LOCK = threading.Lock()


def check_image_size(image_size: object) -> int | None:
    """``image_size`` when it is None or a whole number of pixels from 1 to :data:`MAX_IMAGE_SIZE`.

    Raises:
        ConfigError: anything else (0, a negative or fractional number, text, an absurd side).
    """
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image size must be a whole number of pixels from 1 to {MAX_IMAGE_SIZE}, got "
                          f"{image_size!r}; 32–96 suits training from scratch")
    return image_size


def _open(source: Path | bytes) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ValueError("empty file (0 bytes)")
        return Image.open(io.BytesIO(source))
    if source.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    return Image.open(source)


def _skip_reason(error: Exception) -> str:
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too many pixels, refused as a possible decompression bomb ({error})"
    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(error, FileNotFoundError):
        return "file vanished or is a broken link"
    if isinstance(error, ValueError):
        return str(error)
    return f"cannot decode: {error}"


def _is_colour(im: Image.Image) -> bool:
    if im.mode in _GRAY_MODES:
        return False
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []
        used = {c[0] if isinstance(c, tuple) else c for _, c in im.getcolors(256) or []}  # PA: (index, alpha)
        return any(len(set(palette[3 * i:3 * i + 3])) > 1 for i in used)
    return True


class _Probe(NamedTuple):
    size: tuple[int, int]
    colour: bool
    pixels: np.ndarray | None  # the flattened image, for small ones, so they are opened only once


def _probe_image(source: Path | bytes, may_keep: Callable[[int], bool]) -> _Probe:
    """Size and colour of an image; a small one is decoded right away too when ``may_keep(its bytes)``."""
    with _open(source) as im:
        size, colour = im.size, _is_colour(im)
        small = size[0] * size[1] <= _SMALL_PIXELS
        keep = small and may_keep(size[0] * size[1] * (3 if colour else 1))
        return _Probe(size, colour, np.asarray(_flatten(im)) if keep else None)


def _high_depth_to_gray(im: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16-bit values at 255, which turns most 16-bit scans white.
    values = np.asarray(im)
    if im.mode == "F":
        values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
    elif im.mode.startswith("I;16") or values.max(initial=0) > 255:
        top = 65535 if values.max(initial=0) <= 65535 else values.max()
        values = values.astype(np.float64) * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _flatten(im: Image.Image) -> Image.Image:
    """The image as RGB or L: transparency over white, palettes expanded, other colour spaces to RGB."""
    if im.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_gray(im)
    gray = not _is_colour(im)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("La", "RGBa"):  # premultiplied alpha: undo it before compositing
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    if im.mode in _ALPHA_MODES:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if gray:
        return im if im.mode == "L" else im.convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


def _decode_image(source: Path | bytes, side: int, channels: int) -> np.ndarray:
    """One image as a uint8 side×side×channels array."""
    with _open(source) as opened:
        opened.draft(None, (side, side))  # JPEG: let the decoder scale down by up to 8× for free
        return _to_square(_flatten(opened), side, channels)


def _to_square(im: Image.Image, side: int, channels: int) -> np.ndarray:
    im = im.convert("L" if channels == 1 else "RGB")  # convert copies, even to the same mode
    width, height = im.size
    if (width, height) != (side, side):
        # Crop the centre square, then resize: the same picture as "shorter side to `side`, then centre crop",
        # but the filter cannot blend in pixels from the cropped-off margins.
        crop = min(width, height)
        left, top = (width - crop) // 2, (height - crop) // 2
        # reducing_gap: shrink by a whole factor with a box filter first, then resample (thumbnail quality,
        # antialiased either way, much faster for large images).
        im = im.crop((left, top, left + crop, top + crop)).resize((side, side), Image.Resampling.BILINEAR,
                                                                  reducing_gap=2.0)
    pixels = np.asarray(im, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(32, cores + 4)


def _run_parallel(task: Callable[[int], object], count: int) -> list[object]:
    """``task(i)`` for i in range(count) on threads (Pillow releases the GIL while decoding)."""
    def run_chunk(start: int) -> list[object]:
        return [task(i) for i in range(start, min(start + _CHUNK, count))]

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        return [r for chunk in pool.map(run_chunk, range(0, count, _CHUNK)) for r in chunk]


class Survey(NamedTuple):
    """What probing every file found: the output shape, the images that opened and their probes, the skips."""

    shape: tuple[int, int, int, int]
    readable: list[int]
    probes: list[_Probe | None]
    skipped: dict[int, str]


def survey_images(entries: Sequence[Entry], image_size: int | None, channels: int | None) -> Survey:
    """Open every entry (decoding only small ones) to decide the side and channels and to skip unreadable files."""
    skipped: dict[int, str] = {}
    # Small images are kept decoded from the probe onwards (opening a file costs more than decoding a
    # 32×32 JPEG); the budget bounds what that may hold.
    kept_bytes = [0]
    budget_lock = threading.Lock()

    def may_keep(nbytes: int) -> bool:
        with budget_lock:
            if kept_bytes[0] + nbytes > _KEEP_BUDGET_BYTES:
                return False
            kept_bytes[0] += nbytes
            return True

    def probe(i: int) -> _Probe | None:
        try:
            return _probe_image(entries[i].source, may_keep)
        except Exception as error:  # any failure of one file only skips that file
            skipped[i] = _skip_reason(error)
            return None

    with _DECODE_LOCK, warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; such files are skipped like bigger ones.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        probes = _run_parallel(probe, len(entries))
    readable = [i for i, found in enumerate(probes) if found is not None]
    if not readable:
        return Survey((0, 1, 1, 1), [], probes, skipped)
    if image_size is None:
        image_size = min(int(np.median([min(probes[i].size) for i in readable])), DEFAULT_FOLDER_IMAGE_SIZE)
    if channels is None:
        channels = 3 if any(probes[i].colour for i in readable) else 1
    return Survey((len(readable), image_size, image_size, channels), readable, probes, skipped)


def decode_into(out: np.ndarray, entries: Sequence[Entry], survey: Survey
                ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode the readable entries into ``out`` (``survey.shape``: a memory map keeps the pixels out of RAM, so
    RAM holds only the images being decoded at the moment); returns the images (the first rows of ``out``: the
    few files that fail only now are squeezed out), the indices kept and the skips."""
    _, side, _, channels = survey.shape
    readable, probes, skipped = survey.readable, survey.probes, dict(survey.skipped)

    def decode(row: int) -> None:
        i = readable[row]
        found = probes[i]
        try:
            if found.pixels is None:
                out[row] = _decode_image(entries[i].source, side, channels)
            elif found.pixels.shape in (out.shape[1:], out.shape[1:3] if channels == 1 else None):
                out[row] = found.pixels.reshape(out.shape[1:])
            else:
                out[row] = _to_square(Image.fromarray(found.pixels), side, channels)
        except Exception as error:  # truncated data shows only now, when the pixels are read
            skipped[i] = _skip_reason(error)
        probes[i] = found._replace(pixels=None)  # free the memory as the output fills

    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _run_parallel(decode, len(readable))

    rows = [row for row, i in enumerate(readable) if i not in skipped]
    for target, row in enumerate(rows):  # rows only move up, so each is read before it is overwritten
        if target != row:
            out[target] = out[row]
    return out[:len(rows)], [readable[row] for row in rows], [(entries[i].name, reason)
                                                             for i, reason in sorted(skipped.items())]

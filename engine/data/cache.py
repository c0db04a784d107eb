"""The decode cache: a decoded folder or archive is kept, once per source and settings, as two files named by one
digest: ``<name>-<digest>.npy``, the images (memory-mapped on every load), and ``<name>-<digest>.npz``, the rest
(labels, names, paths, skips) and the images' shape. Each is renamed into place whole, the images first, so a
reader that finds the .npz finds complete images next to it. Decoding writes straight into the memory map, so RAM
holds only the images being decoded."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_path
from engine.data.decode import Survey, decode_into
from engine.data.imageset import ImageSet
from engine.data.listing import Entry
from engine.errors import UserError
from engine.npy import load_npy, load_npz

# Bump when the cached arrays would come out differently for the same files.
# 4: loose images beside sub-folders kept, default side the median; 3: images in a memory-mapped .npy, default side
# capped; 2: truncated archives are refused
_CACHE_FORMAT = 4
# Rows copied at a time when the output is compacted after late skips.
_COPY_ROWS = 1024


def default_cache_dir() -> Path:
    """Where decoded datasets are kept: ``$DCE_CACHE_DIR`` or ``~/.cache/deep-clustering-explorer``."""
    return Path(os.environ.get("DCE_CACHE_DIR") or "~/.cache/deep-clustering-explorer").expanduser()


def cache_path(root: Path, fingerprint: list[int], decided_by: dict[str, object]) -> Path:
    """Where the decoded ``root`` is cached, named by a digest of its files' ``fingerprint`` and of every setting
    the result depends on (``decided_by``)."""
    key = json.dumps({"path": str(root), "tree": fingerprint, **decided_by, "format": _CACHE_FORMAT},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return default_cache_dir() / "folders" / f"{root.name[:40]}-{digest}.npz"


def map_images(file: Path) -> np.ndarray:
    """The cached images, memory-mapped copy-on-write: nothing is read until used, and a stray in-place write
    (torch has no read-only tensors) changes this process's copy, never the file, instead of crashing."""
    return load_npy(file, mmap_mode="c")


def decode_cached(entries: Sequence[Entry], survey: Survey, images_file: Path
                  ) -> tuple[np.ndarray, list[int], list[tuple[str, str]], bool]:
    """Decode into a memory map that becomes ``images_file``; returns :func:`decode_into`'s images (mapped
    from that file), kept and skips, and whether the file was written. When it cannot be (a read-only or full
    disk), a warning says so and the images are decoded into RAM instead."""
    if not survey.readable:
        return decode_into(np.empty(survey.shape, np.uint8), entries, survey) + (False,)
    try:
        images_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(images_file) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=survey.shape)
            reserve_space(tmp)
            images, kept, skips = decode_into(out, entries, survey)
            if len(images) < len(out):
                _shrink(tmp, images)
            out.flush()
            del out, images  # unmapped before the rename
        return map_images(images_file), kept, skips, True
    except (OSError, UserError) as error:
        _warn_uncached(images_file.parent, error)
        return decode_into(np.empty(survey.shape, np.uint8), entries, survey) + (False,)


def reserve_space(file: Path) -> None:
    """Allocate the whole memory-mapped file on disk now: a page written into a map of a sparse file on a full
    disk kills the process (SIGBUS), where this raises ENOSPC."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot: map it sparse
            raise
    finally:
        os.close(fd)


def _shrink(file: Path, images: np.ndarray) -> None:
    """Rewrite ``file`` holding only ``images`` (its first rows), copying a few rows at a time."""
    smaller = file.with_name(f"{file.stem}-short.npy")
    try:
        copy = np.lib.format.open_memmap(smaller, mode="w+", dtype=np.uint8, shape=images.shape)
        reserve_space(smaller)
        for start in range(0, len(images), _COPY_ROWS):
            copy[start:start + _COPY_ROWS] = images[start:start + _COPY_ROWS]
        copy.flush()
        del copy
        os.replace(smaller, file)
    finally:
        smaller.unlink(missing_ok=True)


def read_cache(file: Path, source: str) -> ImageSet | None:
    images_file = file.with_suffix(".npy")
    if not file.is_file() or not images_file.is_file():
        return None
    try:
        saved = load_npz(file)
        images = map_images(images_file)
        if images.dtype != np.uint8 or images.shape != tuple(saved["shape"].tolist()):
            return None
        return ImageSet(
            images=torch.from_numpy(images),
            labels=saved["labels"] if bool(saved["has_labels"]) else None,
            class_names=saved["class_names"].tolist(),
            source=source,
            paths=saved["paths"].tolist(),
            skipped=list(zip(saved["skipped_paths"].tolist(), saved["skipped_reasons"].tolist())),
        )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache file is rebuilt, not trusted


def write_cache(file: Path, data: ImageSet) -> None:
    """Write everything but the images (already in place, see :func:`decode_cached`) atomically: a reader never
    sees half a file, even with two loads racing."""
    try:
        with atomic_path(file) as tmp:
            np.savez(tmp, shape=np.array(data.images.shape, dtype=np.int64),
                     labels=data.labels if data.labels is not None else np.empty(0, np.int64),
                     has_labels=np.array(data.labels is not None),
                     class_names=np.array(data.class_names, dtype=str),
                     paths=np.array(data.paths, dtype=str),
                     skipped_paths=np.array([p for p, _ in data.skipped], dtype=str),
                     skipped_reasons=np.array([r for _, r in data.skipped], dtype=str))
    except UserError as error:
        _warn_uncached(file.parent, error)


def _warn_uncached(folder: Path, error: Exception) -> None:
    warnings.warn(f"could not cache decoded images in {folder} ({error}); the next load will decode "
                  f"again. Set DCE_CACHE_DIR to a writable folder to fix this.", stacklevel=4)

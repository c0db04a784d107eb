"""Load the user's own images: a folder, or a .zip/.tar(.gz) archive of one.

Three layouts are understood, in an archive as on disk:

* class folders — ``root/<class>/**/<image>``: labels are the sorted class-folder names, 0..C-1;
* a flat folder — images in ``root`` itself, and in any sub-folders beside them: no labels (loose images
  beside sub-folders are never dropped);
* a split folder — ``root/train/<class>/…`` and ``root/test/<class>/…`` (the official-split copies of
  CIFAR-10 and friends): ``split`` picks one side; the class list is the union over both sides so labels
  agree between ``train`` and ``test``.

Every image is decoded with Pillow, flattened to RGB or L (alpha composited over white, palettes and 16-bit
gray mapped to 8 bits) and resized to one square size: the shorter side to ``image_size`` (antialiased), then
the centre square; by default :data:`~engine.data.decode.DEFAULT_FOLDER_IMAGE_SIZE` pixels, or the images' own
size when they are smaller — never a folder's full resolution, which for 50,000 photos of 224 px would take
7.5 GB. A file that cannot be read is skipped and reported in ``ImageSet.skipped``; it never stops the load. An
image over Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels) is skipped before its pixels are decoded, as
a possible decompression bomb; an archive over :func:`~engine.data.archive.archive_limits` is refused before its
members are read, and one that is cut short or damaged is refused as a whole, never loaded as the smaller set it
happens to start with.

Decoded images are cached once per (source, image size, channels, split, limits) as a uint8 ``.npy`` that every
load memory-maps: decoding writes into a preallocated memory map (a temporary file renamed into place), so RAM
holds no more than the few images being decoded at once, and a cached load takes a moment and no RAM until the
pixels are read.

This module only puts the steps together; each has a module of its own: :mod:`~engine.data.listing` (which files,
path checks), :mod:`~engine.data.archive` (reading an archive within its limits), :mod:`~engine.data.layout`
(classes and splits), :mod:`~engine.data.decode` (pixels) and :mod:`~engine.data.cache` (the decode cache).
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.data.archive import archive_limits, read_archive
from engine.data.cache import cache_path, decode_cached, read_cache, write_cache
from engine.data.decode import check_image_size, survey_images
from engine.data.imageset import ImageSet
from engine.data.layout import SPLITS, arrange, looks_like_image, unwrap_single_folder
from engine.data.listing import (OUTSIDE_ROOTS, Entry, expand_user_path, image_source, is_hidden, links_outside,
                                 resolve_inside, walk_folder)
from engine.errors import ConfigError, DatasetError


def load_folder(path: str | Path, *, image_size: int | None = None, channels: int | None = None,
                split: str | None = None, data_roots: Sequence[Path] | None = None) -> ImageSet:
    """Decode a folder or archive of images into an :class:`ImageSet`.

    Args:
        path: a folder, or a ``.zip``/``.tar``/``.tar.gz``/``.tgz`` archive of one (read in memory, never
            extracted).
        image_size: side of the square every image is resized to (shorter side to ``image_size``, antialiased,
            then a centre crop), from 1 to :data:`~engine.data.decode.MAX_IMAGE_SIZE`. Default:
            :data:`~engine.data.decode.DEFAULT_FOLDER_IMAGE_SIZE`, or the median of the images' shorter sides
            when that is smaller (a few thumbnails among photos do not shrink them all).
        channels: 1 (gray) or 3 (RGB). Default: 3 if any readable image is in colour, else 1.
        split: ``"train"`` or ``"test"`` for a folder split into ``train/`` and ``test/``; None loads both,
            train first.
        data_roots: the folders a shared server may read (:mod:`engine.data.roots`), or None for any. The
            path must resolve inside one, and so must every file: a link to a file elsewhere is skipped. The
            check runs on every load, cached or not.

    Raises:
        ConfigError: ``image_size`` or ``channels`` is out of range.
        DatasetError: the path does not exist, lies outside ``data_roots`` or holds a NUL byte, holds no file,
            holds no readable image, ``split`` names a side the folder does not have, an archive has more files
            or bytes than :func:`archive_limits`, or an archive is cut short or damaged.

    Examples:
        >>> pets = load_folder("~/photos/pets", image_size=64)   # doctest: +SKIP
        >>> pets.class_names, pets.image_shape                    # doctest: +SKIP
        (['cats', 'dogs'], (64, 64, 3))
    """
    check_image_size(image_size)
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if split not in (None, *SPLITS):
        raise DatasetError(f"unknown split {split!r}; use 'train', 'test', or none for both")

    root = image_source(path, data_roots)

    links_out: list[str] = []
    if root.is_dir():
        files = walk_folder(root)
        if data_roots is not None:
            links_out = links_outside(root, files, data_roots)
            out = set(links_out)
            files = [file for file in files if "/".join(file[0]) not in out]
        fingerprint = [len(files), sum(size for _, size, _ in files),
                       max([mtime for _, _, mtime in files] + [root.stat().st_mtime_ns]), *links_out]
    else:
        info = root.stat()
        fingerprint = [info.st_size, info.st_mtime_ns]
    # Everything that decides what a load gives is in the key. The archive limits are read here, before the
    # cache can answer, so a bad setting is reported and an archive over a lowered limit is read again and refused.
    decided_by = {"image_size": image_size, "channels": channels, "split": split,
                  "max_image_pixels": Image.MAX_IMAGE_PIXELS,
                  "archive_limits": None if root.is_dir() else archive_limits()}
    cache_file = cache_path(root, fingerprint, decided_by)
    cached = read_cache(cache_file, source=f"folder:{root}")
    if cached is not None:
        return cached

    if root.is_dir():
        entries = [Entry(parts, "/".join(parts), root.joinpath(*parts)) for parts, _, _ in files]
        skipped: list[tuple[str, str]] = [(name, f"a link to a file {OUTSIDE_ROOTS}") for name in links_out]
    else:
        entries, skipped = read_archive(root)
        entries = unwrap_single_folder(entries)
    if not entries and not skipped:
        raise _no_files(root)

    items, class_names, stray = arrange(entries, split, root)
    skipped += stray
    entries = [entry for entry, _ in items]
    survey = survey_images(entries, image_size, channels)
    images, kept, decode_skips, cached = decode_cached(entries, survey, cache_file.with_suffix(".npy"))
    skipped += decode_skips
    if not kept:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3])
        raise DatasetError(f"no readable image in {root}: {len(skipped)} file(s) skipped ({reasons}"
                           f"{'; …' if len(skipped) > 3 else ''}). Pillow must be able to open the files "
                           f"(PNG, JPEG, GIF, BMP, TIFF, WebP, …)")

    labels = None
    if class_names is not None:
        labels = np.array([items[i][1] for i in kept], dtype=np.int64)
    result = ImageSet(images=torch.from_numpy(images), labels=labels, class_names=class_names or [],
                      source=f"folder:{root}", paths=[items[i][0].name for i in kept], skipped=skipped)
    if cached:
        write_cache(cache_file, result)
    return result


def count_folder_files(path: str | Path, data_roots: Sequence[Path] | None = None) -> int | None:
    """How many files the folder or zip archive ``path`` holds, hidden ones aside: at least as many as its readable
    images, counted without opening any (a zip's directory only), so that a run can be refused before it is
    queued. None for a tar archive (its listing means reading it through), a missing path, a damaged zip or a
    path outside ``data_roots``: the load reports those, and whether a path outside the roots exists is none of
    the user's business.

    Raises:
        DatasetError: the folder holds no file.
    """
    try:
        root = expand_user_path(path) if data_roots is None else resolve_inside(path, data_roots)
    except DatasetError:
        return None
    if root.is_file() and root.name.lower().endswith(".zip"):
        try:
            return len(_zip_entries(root))
        except (zipfile.BadZipFile, OSError):
            return None
    if not root.is_dir():
        return None
    count = len(walk_folder(root))
    if count == 0:
        raise _no_files(root)
    return count


def folder_class_names(path: str | Path, data_roots: Sequence[Path] | None = None) -> list[str] | None:
    """The class folders' names of the folder ``path`` (the layout :mod:`engine.data.layout` reads), from the names
    in its top two levels only, so that a folder typed on the Train page (``/`` say) costs no walk of a whole tree:
    what K the user most likely wants; a zip's from its directory. None for a flat folder, images beside
    sub-folders, a tar archive, a missing path or one outside ``data_roots``."""
    try:
        root = expand_user_path(path) if data_roots is None else resolve_inside(path, data_roots)
        if root.is_file() and root.name.lower().endswith(".zip"):  # the layout a load reads, from the directory
            return arrange(unwrap_single_folder(_zip_entries(root)), None, root)[1]
        if not root.is_dir():
            return None

        def visible(folder: Path) -> list[os.DirEntry]:
            with os.scandir(folder) as entries:
                return [entry for entry in entries if not is_hidden(entry.name)]

        top = visible(root)
        if any(entry.is_file() and looks_like_image(entry.name) for entry in top):
            return None  # images beside the sub-folders: one unlabelled set
        folders = sorted(entry.name for entry in top if entry.is_dir())
        if folders and set(folders) <= set(SPLITS):  # train/ and test/ of one set of class folders
            folders = sorted({entry.name for side in folders for entry in visible(root / side) if entry.is_dir()})
    except (DatasetError, OSError, zipfile.BadZipFile):
        return None
    return folders or None


def _zip_entries(root: Path) -> list[Entry]:
    """The visible files of the zip ``root`` as the layout sees them, read from its directory (no member is read)."""
    with zipfile.ZipFile(root) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
    parts = [tuple(part for part in name.split("/") if part) for name in names]
    return [Entry(p, "/".join(p), root) for p in parts if p and not any(is_hidden(part) for part in p)]


def _no_files(root: Path) -> DatasetError:
    return DatasetError(f"{root} holds no files; put images in it, one sub-folder per class or all in the folder "
                        f"itself")

"""Load the user's own images: a folder, or a .zip/.tar(.gz) archive of one.

Three layouts are understood, in an archive as on disk:

* class folders — ``root/<class>/**/<image>``: labels are the sorted class-folder names, 0..C-1;
* a flat folder — ``root/**/<image>`` with no sub-folder: no labels;
* a split folder — ``root/train/<class>/…`` and ``root/test/<class>/…`` (the official-split copies of
  CIFAR-10 and friends): ``split`` picks one side; the class list is the union over both sides so labels
  agree between ``train`` and ``test``.

Every image is decoded with Pillow, flattened to RGB or L (alpha composited over white, palettes and 16-bit
gray mapped to 8 bits) and resized to one square size: the shorter side to ``image_size`` (antialiased), then
the centre square; by default :data:`DEFAULT_FOLDER_IMAGE_SIZE` pixels, or the images' own size when they are
smaller — never a folder's full resolution, which for 50,000 photos of 224 px would take 7.5 GB. A file that
cannot be read is skipped and reported in ``ImageSet.skipped``; it never stops the load. An image over Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89
megapixels) is skipped before its pixels are decoded, as a possible decompression bomb; an archive over
:func:`archive_limits` is refused before its members are read, and one that is cut short or damaged is refused
as a whole, never loaded as the smaller set it happens to start with.

Decoded images are cached once per (source, image size, channels, split, limits) as a uint8 ``.npy`` that every
load memory-maps: decoding writes into a preallocated memory map (a temporary file renamed into place), so RAM
holds no more than the few images being decoded at once, and a cached load takes a moment and no RAM until the
pixels are read.
"""
from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import tarfile
import threading
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.data.imageset import ImageSet
from engine.atomic import atomic_path
from engine.errors import ConfigError, DatasetError, UserError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SPLITS = ("train", "test")
DEFAULT_MAX_ARCHIVE_FILES = 200_000
DEFAULT_MAX_ARCHIVE_BYTES = 4 << 30

# A folder's images are decoded at this side unless asked otherwise (or smaller, when the images are): enough for
# the conv nets the methods train from scratch, and 50,000 images take 600 MB.
DEFAULT_FOLDER_IMAGE_SIZE = 64
# Larger sides are refused as a mistake: 1024 px is already 3 MB per colour image, 150 GB for 50,000 of them.
MAX_IMAGE_SIZE = 1024

# Bump when the cached arrays would come out differently for the same files.
_CACHE_FORMAT = 3  # 3: images in a memory-mapped .npy, default side capped; 2: truncated archives are refused
# Files handed to one worker at a time: small enough to balance, large enough that a 60k-file set does not
# drown in futures.
_CHUNK = 256
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA"})
_NOT_IN_CLASS = "not inside a class folder"
_OUTSIDE_ROOTS = "outside the folders this server may read"
# Images up to this many pixels are decoded once, during the size survey, as long as those kept hold at most
# _KEEP_BUDGET_BYTES (all of CIFAR-10's 60,000 take 184 MB); the rest are opened twice instead, so RAM stays
# near the size of the memory-mapped output.
_SMALL_PIXELS = 96 * 96
_KEEP_BUDGET_BYTES = 256 << 20
# Rows copied at a time when the output is compacted after late skips.
_COPY_ROWS = 1024
# Warning filters are process-wide, so two loads running at once must not interleave their set/restore.
_DECODE_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Where decoded datasets are kept: ``$DCE_CACHE_DIR`` or ``~/.cache/deep-clustering-explorer``."""
    return Path(os.environ.get("DCE_CACHE_DIR") or "~/.cache/deep-clustering-explorer").expanduser()


def expand_user_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, after checking it can name a file at all.

    Raises:
        DatasetError: ``path`` holds a NUL byte, which no file name can (the OS calls would raise ValueError).
    """
    if "\0" in str(path):
        raise DatasetError(f"{str(path)!r} contains a NUL byte (\\0), which no file or folder name can hold; "
                           f"type the path again")
    return Path(path).expanduser()


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


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class _Entry:
    """One file of the dataset tree.

    ``parts`` is its place in the tree as the layout sees it (after unwrapping an archive's wrapper folder);
    ``name`` is the path shown to the user; ``source`` is a file path on disk or an archive member's bytes.
    """

    parts: tuple[str, ...]
    name: str
    source: Path | bytes


def resolve_inside(path: str | Path, roots: Sequence[Path]) -> Path:
    """``path`` resolved (``~``, ``..``, symlinks), after checking it lies inside one of ``roots``.

    Raises:
        DatasetError: ``path`` resolves outside every root, or holds a NUL byte.
    """
    resolved = expand_user_path(path).resolve()
    if not _is_inside(resolved, roots):
        raise DatasetError(f"{path} is {_OUTSIDE_ROOTS} ({', '.join(map(str, roots))}); put your images under one "
                           f"of them or upload an archive. The server's DCE_DATA_ROOTS setting lists these folders")
    return resolved


def check_image_source(path: Path) -> Path:
    """``path`` resolved, after checking it can hold a dataset: an existing folder, or an archive file.

    Raises:
        DatasetError: ``path`` does not exist, or is a file that is not one of :data:`ARCHIVE_SUFFIXES`.
    """
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give a folder of images (one sub-folder per class, or "
                           f"all in one folder) or a .zip/.tar/.tar.gz archive of one")
    root = path.resolve()
    if root.is_file() and not is_archive(root):
        raise DatasetError(f"{root} is a file; give a folder of images or a "
                           f"{'/'.join(ARCHIVE_SUFFIXES)} archive of one")
    return root


def _is_inside(resolved: Path, roots: Sequence[Path]) -> bool:
    return any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in roots)


def load_folder(path: str | Path, *, image_size: int | None = None, channels: int | None = None,
                split: str | None = None, data_roots: Sequence[Path] | None = None) -> ImageSet:
    """Decode a folder or archive of images into an :class:`ImageSet`.

    Args:
        path: a folder, or a ``.zip``/``.tar``/``.tar.gz``/``.tgz`` archive of one (read in memory, never
            extracted).
        image_size: side of the square every image is resized to (shorter side to ``image_size``, antialiased,
            then a centre crop), from 1 to :data:`MAX_IMAGE_SIZE`. Default: :data:`DEFAULT_FOLDER_IMAGE_SIZE`,
            or the shorter side of the most common image size when that is smaller.
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

    # Confinement first: whether a path outside the roots exists is none of the user's business.
    root = check_image_source(expand_user_path(path) if data_roots is None else resolve_inside(path, data_roots))

    links_out: list[str] = []
    if root.is_dir():
        files = _walk_folder(root)
        if data_roots is not None:
            links_out = _links_outside(root, files, data_roots)
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
    cache_file = _cache_file(root, fingerprint, decided_by)
    cached = _read_cache(cache_file, source=f"folder:{root}")
    if cached is not None:
        return cached

    if root.is_dir():
        entries = [_Entry(parts, "/".join(parts), root.joinpath(*parts)) for parts, _, _ in files]
        skipped: list[tuple[str, str]] = [(name, f"a link to a file {_OUTSIDE_ROOTS}") for name in links_out]
    else:
        entries, skipped = _read_archive(root)
        entries = _unwrap_single_folder(entries)
    if not entries and not skipped:
        raise DatasetError(f"{root} holds no files; put images in it, one sub-folder per class or all "
                           f"in the folder itself")

    items, class_names, stray = _arrange(entries, split, root)
    skipped += stray
    entries = [entry for entry, _ in items]
    survey = _survey(entries, image_size, channels)
    images, kept, decode_skips, cached = _decode_cached(entries, survey, cache_file.with_suffix(".npy"))
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
        _write_cache(cache_file, result)
    return result


# ---------------------------------------------------------------------------------------------------- listing

def _is_hidden(name: str) -> bool:
    # macOS adds __MACOSX/ to zips and ._* / .DS_Store everywhere; none of it is the user's data.
    return name.startswith(".") or name == "__MACOSX"


def _walk_folder(root: Path) -> list[tuple[tuple[str, ...], int, int]]:
    """(parts, size, mtime_ns) of every visible file under ``root``; folder mtimes count too, so a rename
    changes the newest mtime even though no file changed."""
    found: list[tuple[tuple[str, ...], int, int]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        base = Path(folder)
        rel = base.relative_to(root).parts
        folder_mtime = base.stat().st_mtime_ns
        for name in names:
            if _is_hidden(name):
                continue
            try:
                info = (base / name).stat()
                size, mtime = info.st_size, info.st_mtime_ns
            except OSError:  # a dangling symlink: the decoder reports it
                size, mtime = 0, 0
            found.append(((*rel, name), size, max(mtime, folder_mtime)))
    found.sort()
    return found


def _links_outside(root: Path, files: list[tuple[tuple[str, ...], int, int]], roots: Sequence[Path]) -> list[str]:
    """The names of the files under ``root`` that are symlinks resolving outside every root. Only the files
    can be links: the walk does not follow linked folders, and ``root`` itself is already resolved."""
    return ["/".join(parts) for parts, _, _ in files
            if (path := root.joinpath(*parts)).is_symlink() and not _is_inside(path.resolve(), roots)]


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The path components of an archive member, or None when the name escapes the archive."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def archive_limits() -> tuple[int, int]:
    """(most members, most uncompressed bytes) an archive may hold: ``$DCE_MAX_ARCHIVE_FILES`` (default
    200,000) and ``$DCE_MAX_ARCHIVE_BYTES`` (default 4 GiB). Archives are read into memory, so the byte limit is
    also the most memory their files take."""
    return (positive_env("DCE_MAX_ARCHIVE_FILES", DEFAULT_MAX_ARCHIVE_FILES),
            positive_env("DCE_MAX_ARCHIVE_BYTES", DEFAULT_MAX_ARCHIVE_BYTES))


def positive_env(name: str, default: int) -> int:
    """The positive whole number in ``$name``, ``default`` when it is unset or blank; a ConfigError otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r} is not a positive whole number; set it to one or unset it "
                          f"(default {default})")
    return value


class _ArchiveBudget:
    """Counts an archive's members and their declared sizes against :func:`archive_limits` before they are read,
    and reads each member no further than its declared size: a zip bomb is refused, not unpacked."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.max_files, self.max_bytes = archive_limits()
        self.files = self.bytes = 0

    def count(self, declared_size: int) -> None:
        self.files += 1
        self.bytes += max(declared_size, 0)
        if self.files > self.max_files:
            raise DatasetError(f"the archive {self.archive} holds more than {self.max_files:,} files, the limit "
                               f"(DCE_MAX_ARCHIVE_FILES); split it into smaller archives, or raise the limit")
        if self.bytes > self.max_bytes:
            raise DatasetError(f"the archive {self.archive} unpacks to more than {describe_size(self.max_bytes)}, "
                               f"the limit (DCE_MAX_ARCHIVE_BYTES; a zip bomb looks like this too); split it, or "
                               f"raise the limit if the data is genuine")

    @staticmethod
    def read(stream: IO[bytes], declared_size: int) -> bytes:
        """A member's bytes, never more than its declared size, the size :meth:`count` checked."""
        with stream:
            return stream.read(declared_size)


def describe_size(size: int) -> str:
    """``4 GiB`` from a gibibyte up, exact bytes (``1,000,000 bytes``) below."""
    return f"{size / (1 << 30):.3g} GiB" if size >= 1 << 30 else f"{size:,} bytes"


def _read_archive(archive: Path) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """Every visible regular file of a zip or tar archive, read into memory, within :func:`archive_limits`.

    A tar.gz can only be read front to back efficiently, so members are read in one pass here rather than
    opened on demand by the decoding threads. A zip's sizes are all checked before any member is read; a tar's
    as its headers stream by.
    """
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    budget = _ArchiveBudget(archive)

    def add(name: str, read: Callable[[], bytes] | None) -> None:
        """``read`` is None for a link, which could point outside the archive."""
        parts = _member_parts(name)
        if parts is None:
            skipped.append((name, "unsafe path in archive (absolute or with '..')"))
        elif any(_is_hidden(p) for p in parts):
            return
        elif read is None:
            skipped.append((name, "link in archive"))
        else:
            entries.append(_Entry(parts, "/".join(parts), read()))

    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for info in members:
                    budget.count(info.file_size)
                for info in members:
                    if info.is_dir():
                        continue
                    # Zips made on Unix keep the file's st_mode in the high 16 bits of external_attr.
                    is_link = stat.S_ISLNK(info.external_attr >> 16)
                    add(info.filename, None if is_link else
                        lambda info=info: budget.read(zf.open(info), info.file_size))
        else:
            with _decompressed(archive) as stream, \
                    tarfile.open(fileobj=stream, mode="r|", tarinfo=_CompleteTarInfo) as tf:
                # streaming: one pass, no seeking back in the compressed data
                for member in tf:
                    budget.count(member.size if member.isfile() else 0)
                    if member.isfile():
                        add(member.name, lambda member=member: budget.read(tf.extractfile(member), member.size))
                    elif member.issym() or member.islnk():
                        add(member.name, None)
                # Reading on to the end checks the compressed stream's length and checksum, kept in its last bytes.
                while stream.read(1 << 20):
                    pass
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as error:
        raise DatasetError(f"cannot read the archive {archive}: {error}; check that the file is complete "
                           f"(re-download or re-create it)") from error
    entries.sort(key=lambda e: e.parts)
    return entries, skipped


class _CompleteTarInfo(tarfile.TarInfo):
    """Tar headers read so that a cut-off or damaged archive is an error.

    After the first member, :mod:`tarfile` ends the listing without a word at a missing, short or garbled
    header, which passes a truncated download off as a smaller archive. Only the end marker (a block of zeros)
    may end it here.
    """

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        try:
            return super().frombuf(buf, encoding, errors)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as error:
            # tarfile turns this kind, wherever it occurs, into a ReadError.
            raise tarfile.SubsequentHeaderError(f"the archive ends or is damaged before its end marker ({error})"
                                                ) from None


def _decompressed(archive: Path) -> IO[bytes]:
    """The archive's tar stream, through a decompressor that checks the length and checksum at the end
    (tarfile's own reads neither)."""
    with open(archive, "rb") as raw:
        magic = raw.read(6)
    for signature, open_stream in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open)):
        if magic.startswith(signature):
            return open_stream(archive, "rb")
    return open(archive, "rb")


def _unwrap_single_folder(entries: list[_Entry]) -> list[_Entry]:
    """Archives usually wrap everything in one folder named after the archive; the layout starts below it."""
    while entries and all(len(e.parts) > 1 for e in entries) and len({e.parts[0] for e in entries}) == 1:
        entries = [_Entry(e.parts[1:], e.name, e.source) for e in entries]
    return entries


def _arrange(entries: list[_Entry], split: str | None, root: Path
             ) -> tuple[list[tuple[_Entry, int]], list[str] | None, list[tuple[str, str]]]:
    """Order the files and give each its label (-1 when unlabelled); files outside every class folder of a
    labelled layout are returned as skipped."""
    top = {e.parts[0] for e in entries if len(e.parts) > 1}
    if top and top <= set(SPLITS):
        if split is not None and split not in top:
            raise DatasetError(f"{root} has no {split}/ folder (it has {', '.join(sorted(t + '/' for t in top))}); "
                               f"ask for another split or none")
        chosen = [s for s in SPLITS if s in top and split in (None, s)]
        by_split = {s: [_Entry(e.parts[1:], e.name, e.source) for e in entries if len(e.parts) > 1 and e.parts[0] == s]
                    for s in top}
        stray = [(e.name, "not inside train/ or test/") for e in entries if len(e.parts) == 1]
        classes = sorted({e.parts[0] for side in by_split.values() for e in side if len(e.parts) > 1})
        items: list[tuple[_Entry, int]] = []
        for s in chosen:
            side_items, side_stray = _label(by_split[s], classes or None)
            items += side_items
            stray += side_stray
        return items, classes or None, stray
    if split is not None:
        raise DatasetError(f"{root} is not split into train/ and test/ folders, so split={split!r} cannot be "
                           f"honoured; load it without a split")
    classes = sorted(top)
    items, stray = _label(entries, classes or None)
    return items, classes or None, stray


def _label(entries: list[_Entry], classes: list[str] | None
           ) -> tuple[list[tuple[_Entry, int]], list[tuple[str, str]]]:
    if classes is None:
        return [(e, -1) for e in sorted(entries, key=lambda e: e.parts)], []
    index = {name: i for i, name in enumerate(classes)}
    inside = sorted((e for e in entries if len(e.parts) > 1), key=lambda e: (index[e.parts[0]], e.parts))
    return [(e, index[e.parts[0]]) for e in inside], [(e.name, _NOT_IN_CLASS) for e in entries if len(e.parts) == 1]


# --------------------------------------------------------------------------------------------------- decoding

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


class _Survey(NamedTuple):
    """What probing every file found: the output shape, the images that opened and their probes, the skips."""

    shape: tuple[int, int, int, int]
    readable: list[int]
    probes: list[_Probe | None]
    skipped: dict[int, str]


def _survey(entries: Sequence[_Entry], image_size: int | None, channels: int | None) -> _Survey:
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
        return _Survey((0, 1, 1, 1), [], probes, skipped)
    if image_size is None:
        (width, height), _ = Counter(probes[i].size for i in readable).most_common(1)[0]
        image_size = min(width, height, DEFAULT_FOLDER_IMAGE_SIZE)
    if channels is None:
        channels = 3 if any(probes[i].colour for i in readable) else 1
    return _Survey((len(readable), image_size, image_size, channels), readable, probes, skipped)


def _decode_into(out: np.ndarray, entries: Sequence[_Entry], survey: _Survey
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


# ------------------------------------------------------------------------------------------------------ cache
#
# A cached load is two files named by one digest: ``<name>-<digest>.npy``, the images (memory-mapped on every
# load), and ``<name>-<digest>.npz``, the rest (labels, names, paths, skips) and the images' shape. Each is renamed
# into place whole, the images first, so a reader that finds the .npz finds complete images next to it.

def _cache_file(root: Path, fingerprint: list[int], decided_by: dict[str, object]) -> Path:
    """Where the decoded ``root`` is cached, named by a digest of its files' ``fingerprint`` and of every setting
    the result depends on (``decided_by``)."""
    key = json.dumps({"path": str(root), "tree": fingerprint, **decided_by, "format": _CACHE_FORMAT},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return default_cache_dir() / "folders" / f"{root.name[:40]}-{digest}.npz"


def map_images(file: Path) -> np.ndarray:
    """The cached images, memory-mapped copy-on-write: nothing is read until used, and a stray in-place write
    (torch has no read-only tensors) changes this process's copy, never the file, instead of crashing."""
    return np.load(file, mmap_mode="c", allow_pickle=False)


def _decode_cached(entries: Sequence[_Entry], survey: _Survey, images_file: Path
                   ) -> tuple[np.ndarray, list[int], list[tuple[str, str]], bool]:
    """Decode into a memory map that becomes ``images_file``; returns :func:`_decode_into`'s images (mapped
    from that file), kept and skips, and whether the file was written. When it cannot be (a read-only or full
    disk), a warning says so and the images are decoded into RAM instead."""
    if not survey.readable:
        return _decode_into(np.empty(survey.shape, np.uint8), entries, survey) + (False,)
    try:
        images_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(images_file) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=survey.shape)
            reserve_space(tmp)
            images, kept, skips = _decode_into(out, entries, survey)
            if len(images) < len(out):
                _shrink(tmp, images)
            out.flush()
            del out, images  # unmapped before the rename
        return map_images(images_file), kept, skips, True
    except (OSError, UserError) as error:
        _warn_uncached(images_file.parent, error)
        return _decode_into(np.empty(survey.shape, np.uint8), entries, survey) + (False,)


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


def _read_cache(file: Path, source: str) -> ImageSet | None:
    images_file = file.with_suffix(".npy")
    if not file.is_file() or not images_file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as saved:
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


def _write_cache(file: Path, data: ImageSet) -> None:
    """Write everything but the images (already in place, see :func:`_decode_cached`) atomically: a reader never
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

"""Which files a dataset holds: the checks on the path the user gave (``~``, NUL bytes, the data roots, a folder
or an archive), the walk over a folder's visible files and the links that lead outside the roots. An archive's
members are listed by :mod:`engine.data.archive`."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DatasetError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
OUTSIDE_ROOTS = "outside the folders this server may read"


def expand_user_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, after checking it can name a file at all.

    Raises:
        DatasetError: ``path`` holds a NUL byte, which no file name can (the OS calls would raise ValueError).
    """
    if "\0" in str(path):
        raise DatasetError(f"{str(path)!r} contains a NUL byte (\\0), which no file or folder name can hold; "
                           f"type the path again")
    return Path(path).expanduser()


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Entry:
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
        raise DatasetError(f"{path} is {OUTSIDE_ROOTS} ({', '.join(map(str, roots))}); put your images under one "
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


def image_source(path: str | Path, data_roots: Sequence[Path] | None = None) -> Path:
    """The folder or archive ``path`` names, resolved and checked (:func:`check_image_source`), after checking it
    lies inside ``data_roots`` when given: confinement first, as whether a path outside the roots exists is none of
    the user's business.

    Raises:
        DatasetError: as :func:`resolve_inside` and :func:`check_image_source` do.
    """
    return check_image_source(expand_user_path(path) if data_roots is None else resolve_inside(path, data_roots))


def _is_inside(resolved: Path, roots: Sequence[Path]) -> bool:
    return any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in roots)


def is_hidden(name: str) -> bool:
    # macOS adds __MACOSX/ to zips and ._* / .DS_Store everywhere; none of it is the user's data.
    return name.startswith(".") or name == "__MACOSX"


def walk_folder(root: Path) -> list[tuple[tuple[str, ...], int, int]]:
    """(parts, size, mtime_ns) of every visible file under ``root``; folder mtimes count too, so a rename
    changes the newest mtime even though no file changed."""
    found: list[tuple[tuple[str, ...], int, int]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        base = Path(folder)
        rel = base.relative_to(root).parts
        folder_mtime = base.stat().st_mtime_ns
        for name in names:
            if is_hidden(name):
                continue
            try:
                info = (base / name).stat()
                size, mtime = info.st_size, info.st_mtime_ns
            except OSError:  # a dangling symlink: the decoder reports it
                size, mtime = 0, 0
            found.append(((*rel, name), size, max(mtime, folder_mtime)))
    found.sort()
    return found


def links_outside(root: Path, files: list[tuple[tuple[str, ...], int, int]], roots: Sequence[Path]) -> list[str]:
    """The names of the files under ``root`` that are symlinks resolving outside every root. Only the files
    can be links: the walk does not follow linked folders, and ``root`` itself is already resolved."""
    return ["/".join(parts) for parts, _, _ in files
            if (path := root.joinpath(*parts)).is_symlink() and not _is_inside(path.resolve(), roots)]

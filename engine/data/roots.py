"""Where a shared app may read a user's images from: the configured data roots, and the folder uploads go to.

``$DCE_DATA_ROOTS`` (folders separated by ``os.pathsep``) confines the folder paths typed into the app: a path
that resolves, after ``~``, ``..`` and symlinks, outside every root is refused. Unset, any path the server can
read is accepted — right for one person running the app on their own machine, wrong for a shared server. The
command line never applies the roots: whoever runs it can read the files anyway.

Archives uploaded on the Train page are kept under ``$DCE_UPLOAD_DIR`` (default ``<runs folder>/uploads``), one
fresh folder each. ``$DCE_MAX_UPLOADS_BYTES`` (default 10 GiB) caps what that folder may hold: an upload that
would take it over is refused. An upload goes when the last run made from it is deleted, if the user agrees.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from engine.atomic import atomic_path, disk_full_message, is_disk_full
from engine.data.archive import check_archive, describe_size, positive_env
from engine.data.listing import ARCHIVE_SUFFIXES, check_image_source, expand_user_path, resolve_inside
from engine.errors import DatasetError, DiskFullError, UserError

DEFAULT_MAX_UPLOADS_BYTES = 10 << 30


def configured_data_roots() -> list[Path] | None:
    """The resolved folders of ``$DCE_DATA_ROOTS``, or None when it is unset or empty (no confinement)."""
    text = os.environ.get("DCE_DATA_ROOTS", "")
    roots = [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]
    return roots or None


def check_inside_data_roots(path: str | Path, also_allowed: tuple[Path, ...] = ()) -> Path:
    """``path`` resolved (``~``, ``..``, symlinks), after checking it lies inside a configured data root.

    Args:
        path: a folder or archive a user typed.
        also_allowed: folders accepted besides the roots (the app's uploads folder).

    Raises:
        DatasetError: ``$DCE_DATA_ROOTS`` is set and ``path`` resolves outside every root and ``also_allowed``;
            ``path`` holds a NUL byte.

    Examples:
        >>> os.environ["DCE_DATA_ROOTS"] = "/srv/data"                    # doctest: +SKIP
        >>> check_inside_data_roots("/srv/data/pets/../../etc")           # doctest: +SKIP
        Traceback (most recent call last):
        DatasetError: /srv/data/pets/../../etc is outside the folders this server may read …
    """
    roots = configured_data_roots()
    if roots is None:
        return expand_user_path(path).resolve()
    return resolve_inside(path, [*roots, *also_allowed])


def check_folder_to_load(path: str | Path, also_allowed: tuple[Path, ...] = ()) -> Path:
    """``path`` resolved, after the checks a run would only make when its turn comes: it lies inside the data
    roots (:func:`check_inside_data_roots`) and is an existing folder or archive. Call it before queueing a run.

    Raises:
        DatasetError: ``path`` is empty, outside the data roots, missing, or a file that is not an archive.
    """
    if not str(path).strip():
        raise DatasetError("type the path of a folder of images (or of a .zip/.tar/.tar.gz archive of one) on "
                           "the server")
    return check_image_source(check_inside_data_roots(str(path).strip(), also_allowed))


def readable_roots(runs_root: Path) -> list[Path] | None:
    """The folders the app may read images from: the data roots and the uploads folder; None when
    ``$DCE_DATA_ROOTS`` is unset. The app's JobManager loads every run's files confined to these."""
    roots = configured_data_roots()
    return None if roots is None else [*roots, default_upload_dir(runs_root).resolve()]


def uploads_cap() -> int:
    """The most bytes the uploads folder may hold: ``$DCE_MAX_UPLOADS_BYTES``, default 10 GiB."""
    return positive_env("DCE_MAX_UPLOADS_BYTES", DEFAULT_MAX_UPLOADS_BYTES)


def default_upload_dir(runs_root: Path) -> Path:
    """Where uploaded archives are kept: ``$DCE_UPLOAD_DIR``, else ``<runs folder>/uploads``."""
    return Path(os.environ.get("DCE_UPLOAD_DIR") or Path(runs_root) / "uploads").expanduser()


def save_upload(filename: str, data: BinaryIO, upload_dir: Path) -> Path:
    """Store an uploaded archive in a fresh folder of its own under ``upload_dir``; returns its path.

    Only the last component of ``filename`` is kept, reduced to letters, digits, ``.``, ``_`` and ``-``, so a
    name like ``../../x.zip`` cannot place the file elsewhere. That it is an archive naming images is checked
    here; its contents when it is loaded, with the limits every archive gets
    (:func:`engine.data.archive.archive_limits`).

    Raises:
        DatasetError: the name does not end in one of the archive suffixes, or the file is not a readable archive
            or names no image (:func:`engine.data.archive.check_archive`); nothing is left behind.
        UserError: the file cannot be stored: it would take ``upload_dir`` over :func:`uploads_cap`, or the disk
            is full (``DiskFullError``); nothing is left behind.
        ConfigError: ``$DCE_MAX_UPLOADS_BYTES`` is not a positive whole number.
    """
    base = PurePosixPath(filename.replace("\\", "/")).name
    suffix = next((s for s in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True) if base.lower().endswith(s)), None)
    if suffix is None:
        raise DatasetError(f"{filename!r} is not an archive; upload a {', '.join(ARCHIVE_SUFFIXES)} of your "
                           f"image folder")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base[:-len(suffix)]).strip("._-")[:100] or "upload"
    cap = uploads_cap()
    room = cap - _bytes_under(Path(upload_dir))
    folder = Path(upload_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    target = folder / f"{stem}{suffix}"
    try:
        folder.mkdir(parents=True)
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            while chunk := data.read(1 << 20):
                room -= len(chunk)
                if room < 0:
                    raise UserError(f"this upload would take the uploads folder over {describe_size(cap)}, the "
                                    f"limit for uploads (DCE_MAX_UPLOADS_BYTES); delete runs made from uploads on "
                                    f"the Compare page (their archives can go with them), or ask whoever runs the "
                                    f"server to raise the limit")
                out.write(chunk)
    except OSError as exc:
        full = is_disk_full(exc, upload_dir)
        shutil.rmtree(folder, ignore_errors=True)
        if full:
            raise DiskFullError(disk_full_message(folder.parent)) from exc
        raise UserError(f"cannot store the upload in {folder.parent}: {exc.strerror or exc}") from exc
    except UserError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        check_archive(target)
    except DatasetError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def _bytes_under(folder: Path) -> int:
    """The size of every file under ``folder`` (0 when it does not exist)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += (Path(parent) / name).stat().st_size
            except OSError:
                pass  # removed while counting: it no longer takes room
    return total

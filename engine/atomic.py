"""Atomic file writes shared by the run store, the export, the maps and the decode cache.

A file is written to a hidden temporary file next to it and renamed into place, so a reader never sees half a
file and a failed write leaves the earlier file as it was. A full disk (or quota) becomes a :class:`DiskFullError`
that names the folder; any other write failure a :class:`UserError`. The temporary file is removed either way.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError, UserError

_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_NEARLY_FULL_BYTES = 16 << 20


def is_disk_full(error: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``error`` comes from a full disk or quota.

    True when it, or an exception it was raised from, is an ``OSError`` with ENOSPC or EDQUOT; false when the
    first errno found is another one. Some writers report a full disk without an errno (``torch.save`` raises a
    RuntimeError, numpy's ``tofile`` an OSError saying how many bytes it wrote), so given ``folder``, such an
    error while that folder's disk has (almost) no space left for the user counts too. An error with an errno
    never counts by the free space: virtual file systems such as procfs report none free.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno in _DISK_FULL
        current = current.__cause__ or current.__context__
    if folder is None or not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def disk_full_message(folder: Path) -> str:
    return (f"the disk holding {folder} is full (or your quota there is used up); free some space or choose "
            f"another folder, then try again — earlier files there are unchanged")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    The temporary name keeps ``path``'s suffix, so ``np.save``/``np.savez`` do not append another one, and is
    unique per call, so two threads writing the same file do not clash.

    Raises:
        DiskFullError: the disk or quota is full.
        UserError: any other failure to write (permissions, a vanished folder).

    Examples:
        >>> with atomic_path(run_dir / "assign.npy") as tmp:   # doctest: +SKIP
        ...     np.save(tmp, labels)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(3)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        full = is_disk_full(exc, path.parent)  # before the partial file is removed and frees its space
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(disk_full_message(path.parent)) from exc
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)

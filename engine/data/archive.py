"""Reading a .zip or .tar(.gz/.bz2/.xz) archive into memory within a budget: the members and their declared bytes
are counted against :func:`archive_limits` before they are read, a member is never read past its declared size,
and an archive that is cut short or damaged is refused as a whole."""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from engine.data.layout import looks_like_image
from engine.data.listing import Entry, is_hidden
from engine.errors import ConfigError, DatasetError

DEFAULT_MAX_ARCHIVE_FILES = 200_000
# what reading a damaged, cut-short or mislabelled archive raises
UNREADABLE_ARCHIVE = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
DEFAULT_MAX_ARCHIVE_BYTES = 4 << 30


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


def read_archive(archive: Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Every visible regular file of a zip or tar archive, read into memory, within :func:`archive_limits`.

    A tar.gz can only be read front to back efficiently, so members are read in one pass here rather than
    opened on demand by the decoding threads. A zip's sizes are all checked before any member is read; a tar's
    as its headers stream by.
    """
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    budget = _ArchiveBudget(archive)

    def add(name: str, read: Callable[[], bytes] | None) -> None:
        """``read`` is None for a link, which could point outside the archive."""
        parts = _member_parts(name)
        if parts is None:
            skipped.append((name, "unsafe path in archive (absolute or with '..')"))
        elif any(is_hidden(p) for p in parts):
            return
        elif read is None:
            skipped.append((name, "link in archive"))
        else:
            entries.append(Entry(parts, "/".join(parts), read()))

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
    except UNREADABLE_ARCHIVE as error:
        raise DatasetError(f"cannot read the archive {archive}: {error}; check that the file is complete "
                           f"(re-download or re-create it)") from error
    entries.sort(key=lambda e: e.parts)
    return entries, skipped


def check_archive(archive: Path) -> None:
    """Refuse a file that is not a readable zip or tar archive, or that names no image, when it is uploaded rather
    than when a run from it takes its turn. Reads a zip's directory, or a tar's headers up to its first image (not
    the members' data), so a good upload costs little more than storing it.

    Raises:
        DatasetError: the file is not such an archive (damaged, cut short, or another kind of file), or no member
            has an image's extension.
    """
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                found = any(looks_like_image(info.filename) for info in zf.infolist() if not info.is_dir())
        else:
            with _decompressed(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
                found = any(member.isfile() and looks_like_image(member.name) for member in tf)
    except UNREADABLE_ARCHIVE as error:
        raise DatasetError(f"{archive.name} cannot be read as an archive ({error}); upload a complete .zip or "
                           f".tar(.gz) of your image folder") from error
    if not found:
        raise DatasetError(f"{archive.name} holds no image (PNG, JPEG, GIF, BMP, TIFF, WebP, …); upload an archive "
                           f"of your image folder")


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

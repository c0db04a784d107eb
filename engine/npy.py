"""Reading the ``.npy``/``.npz`` files the engine writes, safely from any thread.

``numpy.load`` reads a file's header with ``ast.literal_eval``. In CPython before 3.13 the AST builder keeps its
recursion depth in interpreter-wide state, so two threads parsing at once can fail with ``SystemError: AST
constructor recursion depth mismatch`` (cpython gh-106905). A job worker loading a cache while Streamlit compiles
a page in another thread hit exactly that. These readers parse the header (a dict literal that numpy writes with
one fixed layout) with a regular expression instead, and read the data as ``numpy.load`` would.
"""
from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

_HEADER = re.compile(r"""\{'descr':\s*'(?P<descr>[^']+)',\s*'fortran_order':\s*(?P<fortran>True|False),\s*"""
                     r"""'shape':\s*\((?P<shape>[\d,\s]*)\),\s*\}""")
_LENGTH_FORMAT = {1: "<H", 2: "<I", 3: "<I"}


def _read_header(stream: BinaryIO) -> tuple[np.dtype, tuple[int, ...], bool]:
    """The dtype, shape and Fortran order of the ``.npy`` array whose header starts ``stream``; the stream is left
    at the first byte of the data. A ValueError when it is not a plain (non-object, non-structured) array."""
    major, _minor = np.lib.format.read_magic(stream)
    if major not in _LENGTH_FORMAT:
        raise ValueError(f"unsupported .npy format version {major}")
    length_format = _LENGTH_FORMAT[major]
    (length,) = struct.unpack(length_format, stream.read(struct.calcsize(length_format)))
    header = stream.read(length).decode("utf-8" if major == 3 else "latin1")
    match = _HEADER.match(header.strip())
    if match is None:
        raise ValueError(f"not a plain .npy array header: {header.strip()[:80]!r}")
    dtype = np.dtype(match["descr"])
    if dtype.hasobject:
        raise ValueError("the .npy array holds Python objects; refusing to unpickle them")
    shape = tuple(int(size) for size in match["shape"].replace(",", " ").split())
    return dtype, shape, match["fortran"] == "True"


def load_npy(file: str | Path, mmap_mode: str | None = None) -> np.ndarray:
    """The array in the ``.npy`` ``file``, like ``numpy.load(file, mmap_mode=mmap_mode, allow_pickle=False)``."""
    with open(file, "rb") as stream:
        dtype, shape, fortran = _read_header(stream)
        offset = stream.tell()
        order = "F" if fortran else "C"
        if mmap_mode is not None:
            return np.memmap(file, dtype=dtype, mode=mmap_mode, shape=shape, order=order, offset=offset)
        count = int(np.prod(shape, dtype=np.int64))
        array = np.fromfile(stream, dtype=dtype, count=count)
    if len(array) != count:
        raise ValueError(f"{Path(file).name} is cut short: {len(array)} of {count} values")
    return array.reshape(shape, order=order)


def load_npz(file: str | Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` ``file`` (as written by ``numpy.savez``), by name."""
    arrays = {}
    with zipfile.ZipFile(file) as archive:
        for name in archive.namelist():
            stream = io.BytesIO(archive.read(name))
            dtype, shape, fortran = _read_header(stream)
            count = int(np.prod(shape, dtype=np.int64))
            data = np.frombuffer(stream.read(), dtype=dtype, count=count)
            arrays[name.removesuffix(".npy")] = data.reshape(shape, order="F" if fortran else "C").copy()
    return arrays

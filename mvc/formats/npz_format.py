"""numpy .npz: a zip of ``.npy`` members, indexed member by member, never unpickled.

Stored (uncompressed, ``np.savez``) members are hashed straight from their byte range
in the zip, like safetensors tensors; compressed ones (``np.savez_compressed``) are
streamed through the decompressor. A Fortran-ordered or big-endian array is hashed
after conversion to C order little-endian, so one tensor hashes the same in any
format. Object arrays need pickle to load: they are skipped with a note.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mvc.errors import CorruptFileError
from mvc.formats import dtypes
from mvc.formats.base import (
    RE_EXPORT,
    FileIndex,
    TensorReader,
    check_shape,
    finish_array,
    pread_into,
)
from mvc.formats.hashing import CHUNK, Progress, hash_file_ranges
from mvc.formats.index import TensorInfo, TensorSpec

if TYPE_CHECKING:
    import zipfile

    import numpy as np

NPY_MAGIC = b"\x93NUMPY"
# numpy caps .npy headers at 10,000 bytes by default; allow more for wide structured
# dtypes, but stay far from what ast.literal_eval would choke on.
MAX_NPY_HEADER = 1 << 20


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member: its zip entry and array header."""

    info: zipfile.ZipInfo
    name: str
    dtype: Any  # numpy dtype
    shape: tuple[int, ...]
    fortran: bool
    header_len: int  # bytes of the .npy magic + header
    data_start: int | None  # absolute offset of the array data for stored members

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def canonical(self) -> str:
        return dtypes.canonical_from_numpy(self.dtype)

    @property
    def plain(self) -> bool:
        """True if the stored bytes are already C order, little-endian."""
        return (
            (not self.fortran or len(self.shape) < 2)
            and self.dtype.byteorder in "<|="
            and (self.dtype.byteorder != "=" or _little_host())
        )


def _little_host() -> bool:
    import sys

    return sys.byteorder == "little"


def _read_exact(f: IO[bytes], n: int, label: str, member: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptFileError(f"{label}: member {member} is truncated", RE_EXPORT)
    return data


def parse_npy_header(f: IO[bytes], label: str, member: str) -> tuple[Any, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, header bytes) of a ``.npy`` stream, safely.

    The header dict is parsed with ``ast.literal_eval`` (literals only) and the dtype
    built with ``numpy.lib.format.descr_to_dtype``: nothing is unpickled or executed.
    """
    import ast

    import numpy as np

    magic = _read_exact(f, 8, label, member)
    if magic[:6] != NPY_MAGIC:
        raise CorruptFileError(f"{label}: member {member} is not a .npy array", RE_EXPORT)
    major = magic[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", _read_exact(f, 2, label, member))
        prefix = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", _read_exact(f, 4, label, member))
        prefix = 12
    else:
        raise CorruptFileError(f"{label}: member {member} has unknown .npy version {major}", RE_EXPORT)
    if hlen > MAX_NPY_HEADER:
        raise CorruptFileError(f"{label}: member {member} has a {hlen} byte .npy header", RE_EXPORT)
    text = _read_exact(f, hlen, label, member).decode("utf-8" if major == 3 else "latin1")
    try:
        d = ast.literal_eval(text)
        dtype = np.lib.format.descr_to_dtype(d["descr"])
        shape = d["shape"]
        fortran = d["fortran_order"]
        if not isinstance(shape, tuple):
            raise TypeError(f"bad shape {shape!r}")
        if not isinstance(fortran, bool):
            raise ValueError("bad fortran_order")
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError) as exc:
        raise CorruptFileError(f"{label}: member {member} has a bad .npy header ({exc})", RE_EXPORT) from exc
    return dtype, check_shape(shape, label, member, dtype.itemsize), fortran, prefix + hlen


def _local_data_start(f: IO[bytes], info: zipfile.ZipInfo, label: str) -> int:
    """Absolute offset of a member's data: after its local header and extra field."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise CorruptFileError(f"{label}: zip entry {info.filename} has a bad local header", RE_EXPORT)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def scan(path: Path, label: str) -> tuple[list[Member], list[str]]:
    """Parse every member's header. Returns (members, notes)."""
    import zipfile

    notes: list[str] = []
    members: list[Member] = []
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptFileError(f"{label} is not a valid .npz (zip) file: {exc}", RE_EXPORT) from exc
    size = path.stat().st_size
    seen: set[str] = set()
    with zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                notes.append(f"{info.filename}: not a .npy member; skipped")
                continue
            name = info.filename[: -len(".npy")]
            if name in seen:
                raise CorruptFileError(f"{label}: member {info.filename} appears twice", RE_EXPORT)
            seen.add(name)
            if info.flag_bits & 0x1:
                notes.append(f"{name}: encrypted member; skipped")
                continue
            data_start = None
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    start = _local_data_start(raw, info, label)
                    if start + info.compress_size > size:
                        raise CorruptFileError(
                            f"{label} is truncated: member {info.filename} ends at byte "
                            f"{start + info.compress_size}, file has {size}",
                            RE_EXPORT,
                        )
                    raw.seek(start)
                    dtype, shape, fortran, hlen = parse_npy_header(raw, label, info.filename)
                    data_start = start + hlen
                else:
                    with zf.open(info) as f:
                        dtype, shape, fortran, hlen = parse_npy_header(f, label, info.filename)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
                raise CorruptFileError(f"{label}: member {info.filename} cannot be read: {exc}", RE_EXPORT) from exc
            if dtype.hasobject:
                notes.append(f"{name}: object array (loading it needs pickle); not indexed")
                continue
            member = Member(info, name, dtype, shape, fortran, hlen, data_start)
            if info.file_size != hlen + member.nbytes:
                raise CorruptFileError(
                    f"{label}: member {info.filename} holds {info.file_size - hlen} bytes of data, "
                    f"its header says {member.nbytes}",
                    RE_EXPORT,
                )
            members.append(member)
    return members, notes


def _load_member(zf: zipfile.ZipFile, raw: IO[bytes], m: Member, label: str) -> np.ndarray:
    """The member's array as stored (its dtype, its order), read in one pass."""
    import zipfile

    import numpy as np

    arr = np.empty(m.shape, dtype=m.dtype, order="F" if m.fortran else "C")
    flat = arr.reshape(-1, order="F" if m.fortran else "C")
    view = memoryview(flat.view(np.uint8)) if flat.size else memoryview(b"")  # type: ignore[arg-type]
    if m.data_start is not None:
        done = 0
        while done < view.nbytes:
            n = pread_into(raw, view[done:], m.data_start + done)
            if not n:
                raise CorruptFileError(f"{label}: member {m.info.filename} is truncated", RE_EXPORT)
            done += n
        return arr
    try:
        with zf.open(m.info) as f:
            _read_exact(f, m.header_len, label, m.info.filename)
            done = 0
            while done < view.nbytes:
                n = f.readinto(view[done:])  # type: ignore[attr-defined]  # a ZipExtFile
                if not n:
                    raise CorruptFileError(f"{label}: member {m.info.filename} is truncated", RE_EXPORT)
                done += n
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CorruptFileError(f"{label}: member {m.info.filename} cannot be read: {exc}", RE_EXPORT) from exc
    return arr


def index_file(path: Path, *, label: str, progress: Progress | None = None, threads: int | None = None) -> FileIndex:
    """Index an .npz file: one hash per array, of its C-order little-endian bytes."""
    import zipfile

    import numpy as np
    import xxhash

    members, notes = scan(path, label)
    digests: dict[str, str] = {}
    fast = [m for m in members if m.data_start is not None and m.plain]
    if fast:
        found = hash_file_ranges(
            path,
            [(m.data_start, m.data_start + m.nbytes) for m in fast],  # type: ignore[operator,misc]
            label=label,
            progress=progress,
            threads=threads,
        )
        digests.update(zip((m.name for m in fast), found))
    slow = [m for m in members if m.name not in digests]
    if slow:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
            for m in slow:
                if m.fortran and len(m.shape) > 1:
                    # C order needs the whole array: it is read once (one tensor in
                    # memory, as a merge holds) and hashed a block of rows at a time.
                    arr = _load_member(zf, raw, m, label)
                    hasher = xxhash.xxh3_128()
                    rows = max(1, CHUNK // max(1, m.nbytes // max(1, m.shape[0])))
                    little = arr.dtype.newbyteorder("<")
                    for i in range(0, m.shape[0], rows):
                        block = np.ascontiguousarray(arr[i : i + rows], dtype=little)
                        hasher.update(block.reshape(-1).view(np.uint8).data)
                        if progress is not None:
                            progress(block.nbytes)
                        del block
                    del arr
                    digests[m.name] = hasher.hexdigest()
                else:
                    # Stored big-endian, or compressed: stream chunk by chunk, never the
                    # whole array (a 2 MB npz can declare gigabytes of zeros, issue 14).
                    digests[m.name] = _hash_stream(zf, raw, m, label, progress)
    tensors = [TensorInfo(m.name, m.canonical, m.shape, m.nbytes, digests[m.name]) for m in members]
    return FileIndex("npz", "numpy", tensors, notes)


def _hash_stream(zf: zipfile.ZipFile, raw: IO[bytes], m: Member, label: str, progress: Progress | None) -> str:
    """xxh3-128 of a C-ordered member's little-endian bytes, read and converted in chunks."""
    import zipfile

    import numpy as np
    import xxhash

    hasher = xxhash.xxh3_128()
    step = max(1, CHUNK // max(1, m.dtype.itemsize)) * max(1, m.dtype.itemsize)
    swap = None if m.plain else m.dtype.newbyteorder("<")

    def feed(chunk: bytes | memoryview) -> None:
        if swap is not None and len(chunk):
            chunk = np.frombuffer(chunk, dtype=m.dtype).astype(swap).view(np.uint8).data
        hasher.update(chunk)
        if progress is not None:
            progress(len(chunk))

    if m.data_start is not None:
        buf = bytearray(min(step, m.nbytes) or 1)
        done = 0
        while done < m.nbytes:
            view = memoryview(buf)[: min(step, m.nbytes - done)]
            got = 0
            while got < len(view):
                n = pread_into(raw, view[got:], m.data_start + done + got)
                if not n:
                    raise CorruptFileError(f"{label}: member {m.info.filename} is truncated", RE_EXPORT)
                got += n
            feed(view)
            done += got
        return hasher.hexdigest()
    left = m.nbytes
    try:
        with zf.open(m.info) as f:
            _read_exact(f, m.header_len, label, m.info.filename)
            while left:
                chunk = f.read(min(step, left))
                if not chunk or len(chunk) % max(1, m.dtype.itemsize):
                    raise CorruptFileError(f"{label}: member {m.info.filename} is truncated", RE_EXPORT)
                feed(chunk)
                left -= len(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CorruptFileError(f"{label}: member {m.info.filename} cannot be read: {exc}", RE_EXPORT) from exc
    return hasher.hexdigest()


class NpzReader(TensorReader):
    """Reads one member at a time: stored members by byte range, others decompressed."""

    format = "npz"

    def __init__(self, path: Path, label: str) -> None:
        import zipfile

        super().__init__(path, label)
        members, self.notes = scan(path, label)
        self._members = {m.name: m for m in members}
        self._specs = {m.name: TensorSpec(m.name, m.canonical, m.shape, m.nbytes) for m in members}
        self._zip = zipfile.ZipFile(path)
        self._raw = open(path, "rb", buffering=0)

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return self._specs

    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        import numpy as np

        m = self._members[spec.name]
        arr = _load_member(self._zip, self._raw, m, self.label)
        if not m.plain:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        return finish_array(arr, spec.dtype, as_float32, self.label, spec.name)

    def close(self) -> None:
        self._zip.close()
        self._raw.close()


def is_npz(path: Path) -> bool:
    """True if ``path`` is a zip whose members are all ``.npy`` files."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)

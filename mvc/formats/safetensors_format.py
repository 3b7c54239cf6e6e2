"""safetensors: index from the header, hash each tensor's byte range, read lazily.

Layout: 8-byte little-endian header length N, N bytes of JSON
(``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [b, e]}}``,
offsets relative to the end of the header), then the data. We validate what the
safetensors library itself checks: a header of at most 100 MB, valid JSON, known
dtypes, sizes matching shapes, offsets contiguous from 0, and the data ending exactly
at the end of the file.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import CorruptFileError
from mvc.formats import dtypes
from mvc.formats.base import (
    RE_EXPORT,
    FileIndex,
    TensorReader,
    check_shape,
    finish_array,
    nbytes_of,
    read_into,
)
from mvc.formats.hashing import Progress, hash_file_ranges
from mvc.formats.index import TensorInfo, TensorSpec

if TYPE_CHECKING:
    import numpy as np

# The safetensors library refuses bigger headers too (MAX_HEADER_SIZE = 100_000_000).
MAX_HEADER_BYTES = 100_000_000

FRAMEWORKS = {
    "pt": "pytorch",
    "pytorch": "pytorch",
    "torch": "pytorch",
    "tf": "tensorflow",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "flax": "flax",
    "jax": "jax",
    "np": "numpy",
    "numpy": "numpy",
    "mlx": "mlx",
    "paddle": "paddle",
}


@dataclass(frozen=True)
class Entry:
    """One tensor of the header; ``start``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    metadata: dict[str, str]
    entries: list[Entry]
    data_start: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def read_header(path: Path, label: str) -> Header:
    """Parse and validate the header of a safetensors file (reads only the header).

    Raises:
        CorruptFileError: any inconsistency; the message names ``label``.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError(f"{label} is truncated: {size} bytes, too short for a safetensors header", RE_EXPORT)
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise CorruptFileError(
                f"{label} is not a valid safetensors file: header length {n} bytes exceeds the "
                f"{MAX_HEADER_BYTES} byte limit",
                RE_EXPORT,
            )
        if 8 + n > size:
            raise CorruptFileError(
                f"{label} is truncated: header says {n} bytes of header, file has {size - 8}",
                RE_EXPORT,
            )
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFileError(
            f"{label} is not a valid safetensors file: header is not valid JSON ({exc})", RE_EXPORT
        ) from exc
    except RecursionError as exc:  # a header nested thousands deep (issue 14)
        raise CorruptFileError(
            f"{label} is not a valid safetensors file: its header JSON nests too deep", RE_EXPORT
        ) from exc
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{label} is not a valid safetensors file: header is not a JSON object", RE_EXPORT)
    data_start = 8 + n
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CorruptFileError(f"{label}: __metadata__ must map strings to strings", RE_EXPORT)
    entries = []
    for name, spec in doc.items():
        if not isinstance(spec, dict):
            raise CorruptFileError(f"{label}: tensor {name!r} has a bad header entry", RE_EXPORT)
        code = spec.get("dtype")
        if code not in dtypes.SAFETENSORS_DTYPES:
            raise CorruptFileError(f"{label}: tensor {name!r} has an unknown dtype {code!r}", RE_EXPORT)
        dtype = dtypes.SAFETENSORS_DTYPES[code][0]
        shape = check_shape(spec.get("shape"), label, name, -(-dtypes.BITS[dtype] // 8))
        offsets = spec.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise CorruptFileError(f"{label}: tensor {name!r} has bad data_offsets {offsets!r}", RE_EXPORT)
        expected = nbytes_of(dtype, shape)
        if expected != offsets[1] - offsets[0]:
            raise CorruptFileError(
                f"{label}: tensor {name!r} ({dtype}, shape {list(shape)}) should take {expected} "
                f"bytes, its offsets span {offsets[1] - offsets[0]}",
                RE_EXPORT,
            )
        entries.append(Entry(name, dtype, shape, data_start + offsets[0], data_start + offsets[1]))
    at = data_start
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start != at:
            raise CorruptFileError(
                f"{label}: tensor offsets are not contiguous ({entry.name!r} starts at data byte "
                f"{entry.start - data_start}, expected {at - data_start})",
                RE_EXPORT,
            )
        at = entry.end
    data_bytes, have = at - data_start, size - data_start
    if data_bytes > have:
        raise CorruptFileError(
            f"{label} is truncated: header says {data_bytes} bytes of data, file has {have}",
            RE_EXPORT,
        )
    if data_bytes < have:
        raise CorruptFileError(
            f"{label} is not a valid safetensors file: {have - data_bytes} bytes follow the "
            f"{data_bytes} bytes of data its header describes",
            RE_EXPORT,
        )
    return Header(metadata, entries, data_start)


def framework_of(metadata: dict[str, str]) -> str | None:
    """The framework named by ``__metadata__["format"]``, if any."""
    return FRAMEWORKS.get(metadata.get("format", "").strip().lower())


def index_file(path: Path, *, label: str, progress: Progress | None = None, threads: int | None = None) -> FileIndex:
    """Index a safetensors file: header, then one hash per tensor byte range."""
    header = read_header(path, label)
    if progress is not None:
        progress(header.data_start)
    digests = hash_file_ranges(
        path, [(e.start, e.end) for e in header.entries], label=label, progress=progress, threads=threads
    )
    tensors = [
        TensorInfo(e.name, e.dtype, e.shape, e.end - e.start, digest) for e, digest in zip(header.entries, digests)
    ]
    return FileIndex("safetensors", framework_of(header.metadata), tensors)


class SafetensorsReader(TensorReader):
    """Reads tensors straight from their byte range, one ``readinto`` per tensor."""

    format = "safetensors"

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        header = read_header(path, label)
        self.metadata = header.metadata
        self._entries = {e.name: e for e in header.entries}
        # By data offset: the order the tensors are stored in (stored_order).
        self._specs = {
            e.name: TensorSpec(e.name, e.dtype, e.shape, e.end - e.start)
            for e in sorted(header.entries, key=lambda e: (e.start, e.end))
        }
        self._file = open(path, "rb", buffering=0)

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return self._specs

    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        entry = self._entries[spec.name]
        raw = read_into(self._file, entry.start, dtypes.storage_dtype(entry.dtype), entry.shape, self.label)
        return finish_array(raw, entry.dtype, as_float32, self.label, entry.name)

    def close(self) -> None:
        self._file.close()

"""GGUF (llama.cpp): parse the header, hash each tensor's byte range.

Layout (versions 2 and 3, little-endian): magic ``GGUF``, u32 version, u64 tensor
count, u64 metadata count; metadata key/value pairs (string key, u32 type, value;
arrays are u32 element type + u64 count + elements); tensor infos (string name, u32
n_dims, u64 dims innermost first, u32 ggml type, u64 offset); padding to
``general.alignment`` (default 32); the data. Offsets are relative to the data.

Shapes are reported outermost first (the reverse of ggml's ``ne``), like the torch
tensors they were converted from. Plain types get canonical names (``float32``);
quantized ones keep the ggml name lowercased (``q4_k``).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mvc.errors import CorruptFileError, UsageError
from mvc.formats import dtypes
from mvc.formats.base import (
    RE_EXPORT,
    FileIndex,
    TensorReader,
    check_shape,
    finish_array,
    read_into,
)
from mvc.formats.hashing import Progress, hash_file_ranges
from mvc.formats.index import TensorInfo, TensorSpec

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"GGUF"
# Beyond these a field is garbage, not a newer llama.cpp (ggml names are at most 64
# bytes; keys are short dotted names; type ids and versions grow by one at a time).
MAX_NAME = 1 << 16
MAX_TYPE_ID = 1023
MAX_VERSION = 255
DEFAULT_ALIGNMENT = 32
QK_K = 256

# ggml type id -> (name, elements per block, bytes per block); from ggml's
# ggml-common.h / gguf-py's GGML_QUANT_SIZES. Ids 4, 5 and 31-33, 36-38 were removed.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("float32", 1, 4),
    1: ("float16", 1, 2),
    2: ("q4_0", 32, 18),
    3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34),
    9: ("q8_1", 32, 36),
    10: ("q2_k", QK_K, 84),
    11: ("q3_k", QK_K, 110),
    12: ("q4_k", QK_K, 144),
    13: ("q5_k", QK_K, 176),
    14: ("q6_k", QK_K, 210),
    15: ("q8_k", QK_K, 292),
    16: ("iq2_xxs", QK_K, 66),
    17: ("iq2_xs", QK_K, 74),
    18: ("iq3_xxs", QK_K, 98),
    19: ("iq1_s", QK_K, 50),
    20: ("iq4_nl", 32, 18),
    21: ("iq3_s", QK_K, 110),
    22: ("iq2_s", QK_K, 82),
    23: ("iq4_xs", QK_K, 136),
    24: ("int8", 1, 1),
    25: ("int16", 1, 2),
    26: ("int32", 1, 4),
    27: ("int64", 1, 8),
    28: ("float64", 1, 8),
    29: ("iq1_m", QK_K, 56),
    30: ("bfloat16", 1, 2),
    34: ("tq1_0", QK_K, 54),
    35: ("tq2_0", QK_K, 66),
    39: ("mxfp4", 32, 17),
    40: ("nvfp4", 64, 36),
    41: ("q1_0", 128, 18),
}
TYPE_IDS = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}

# gguf metadata value types: id -> struct format of a scalar (8 string, 9 array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class Unsupported(Exception):
    """A gguf file this reader does not parse (the caller indexes it as opaque)."""


@dataclass(frozen=True)
class GgufTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]  # outermost first
    start: int  # absolute
    end: int


class _Cursor:
    def __init__(self, f: IO[bytes], size: int, label: str) -> None:
        self.f, self.size, self.label = f, size, label

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.f.tell():
            raise CorruptFileError(
                f"{self.label} is truncated: {what} needs {n} bytes at byte {self.f.tell()}, file has {self.size}",
                RE_EXPORT,
            )

    def read(self, n: int, what: str) -> bytes:
        self.need(n, what)
        return self.f.read(n)

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.f.seek(n, os.SEEK_CUR)

    def unpack(self, fmt: str, what: str) -> int | float | bool:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int | None = None) -> bytes:
        n = int(self.unpack("<Q", what))
        if limit is not None and n > limit:
            raise CorruptFileError(f"{self.label}: a {what} of {n} bytes (at most {limit})", RE_EXPORT)
        return self.read(n, what)

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _SCALARS:
            self.skip(struct.calcsize(_SCALARS[vtype]), what)
        elif vtype == _STRING:
            self.skip(int(self.unpack("<Q", what)), what)
        elif vtype == _ARRAY and depth < 8:
            etype = int(self.unpack("<I", what))
            count = int(self.unpack("<Q", what))
            if etype in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[etype]), what)
            else:
                self.need(count * 8, what)  # each string / array takes at least 8 bytes
                for _ in range(count):
                    self.skip_value(etype, what, depth + 1)
        else:
            raise CorruptFileError(f"{self.label}: metadata {what} has unknown value type {vtype}", RE_EXPORT)


def read_header(path: Path, label: str) -> tuple[list[GgufTensor], dict[str, object]]:
    """Tensors and the few metadata values we use (``general.alignment``, ``general.architecture``).

    Raises:
        CorruptFileError: the header is inconsistent or the file is truncated.
        Unsupported: gguf version 1, a newer version, or a big-endian file.
    """
    size = os.path.getsize(path)
    with open(path, "rb", buffering=1 << 20) as f:
        cur = _Cursor(f, size, label)
        if cur.read(4, "magic") != MAGIC:
            raise CorruptFileError(f"{label} is not a gguf file (bad magic)", RE_EXPORT)
        version = int(cur.unpack("<I", "version"))
        if version not in (2, 3):
            if version == 1:
                raise Unsupported("gguf version 1 is not supported; re-convert with a recent llama.cpp")
            if version in (1 << 24, 2 << 24, 3 << 24):
                raise Unsupported("big-endian gguf is not supported")
            if 3 < version <= MAX_VERSION:
                raise Unsupported(f"gguf version {version} is newer than this mvc reads")
            # Garbage after the magic was once versioned as a blob (issue 14).
            raise CorruptFileError(f"{label} is not a valid gguf file: version field is {version}", RE_EXPORT)
        n_tensors = int(cur.unpack("<Q", "tensor count"))
        n_kv = int(cur.unpack("<Q", "metadata count"))
        if n_tensors > size or n_kv > size:
            raise CorruptFileError(
                f"{label}: implausible counts ({n_tensors} tensors, {n_kv} metadata keys)", RE_EXPORT
            )
        meta: dict[str, object] = {}
        for _ in range(n_kv):
            key = cur.string("metadata key", MAX_NAME).decode("utf-8", "replace")
            vtype = int(cur.unpack("<I", key))
            if key == "general.alignment" and vtype in _SCALARS and vtype not in (6, 7, 12):
                meta[key] = cur.unpack(_SCALARS[vtype], key)
            elif key == "general.architecture" and vtype == _STRING:
                meta[key] = cur.string(key).decode("utf-8", "replace")
            else:
                cur.skip_value(vtype, key)
        alignment = int(meta.get("general.alignment", DEFAULT_ALIGNMENT))  # type: ignore[call-overload]
        if alignment <= 0 or alignment & (alignment - 1):
            raise CorruptFileError(f"{label}: general.alignment {alignment} is not a power of two", RE_EXPORT)
        infos = []
        for _ in range(n_tensors):
            name = cur.string("tensor name", MAX_NAME).decode("utf-8", "replace")
            n_dims = int(cur.unpack("<I", name))
            if n_dims > 8:
                raise CorruptFileError(f"{label}: tensor {name!r} has {n_dims} dimensions", RE_EXPORT)
            dims = [int(cur.unpack("<Q", name)) for _ in range(n_dims)]
            check_shape(dims, label, name)
            tid = int(cur.unpack("<I", name))
            offset = int(cur.unpack("<Q", name))
            infos.append((name, dims, tid, offset))
        data_start = -(-f.tell() // alignment) * alignment
    tensors = []
    seen = set()
    for name, dims, tid, offset in infos:
        if name in seen:
            raise CorruptFileError(f"{label}: tensor {name!r} appears twice", RE_EXPORT)
        seen.add(name)
        if tid not in GGML_TYPES:
            if tid > MAX_TYPE_ID:
                raise CorruptFileError(f"{label}: tensor {name!r} has ggml type {tid}", RE_EXPORT)
            raise Unsupported(f"tensor {name!r} has ggml type {tid}, unknown to this mvc")
        dtype, block, type_size = GGML_TYPES[tid]
        if dims and dims[0] % block:
            raise CorruptFileError(
                f"{label}: tensor {name!r} has {dims[0]} columns, not a multiple of the {dtype} block ({block})",
                RE_EXPORT,
            )
        if offset % alignment:
            raise CorruptFileError(f"{label}: tensor {name!r} offset {offset} is not {alignment}-aligned", RE_EXPORT)
        nbytes = math.prod(dims) // block * type_size
        start = data_start + offset
        if start + nbytes > size:
            raise CorruptFileError(
                f"{label} is truncated: tensor {name!r} ends at byte {start + nbytes}, file has {size}",
                RE_EXPORT,
            )
        tensors.append(GgufTensor(name, dtype, tuple(reversed(dims)), start, start + nbytes))
    ordered = sorted(tensors, key=lambda t: t.start)
    for a, b in pairwise(ordered):
        if b.start < a.end:
            raise CorruptFileError(f"{label}: tensors {a.name!r} and {b.name!r} overlap", RE_EXPORT)
    return tensors, meta


def index_file(path: Path, *, label: str, progress: Progress | None = None, threads: int | None = None) -> FileIndex:
    """Index a gguf file; versions we do not parse become opaque with a note."""
    try:
        tensors, _meta = read_header(path, label)
    except Unsupported as exc:
        return FileIndex("opaque", "llama.cpp", [], [f"opaque: {exc}; versioned as a blob, no tensor index"])
    digests = hash_file_ranges(
        path, [(t.start, t.end) for t in tensors], label=label, progress=progress, threads=threads
    )
    infos = [TensorInfo(t.name, t.dtype, t.shape, t.end - t.start, d) for t, d in zip(tensors, digests)]
    return FileIndex("gguf", "llama.cpp", infos)


class GgufReader(TensorReader):
    """Reads plain (unquantized) gguf tensors; quantized ones raise UsageError."""

    format = "gguf"

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        try:
            tensors, self.metadata = read_header(path, label)
        except Unsupported as exc:
            raise UsageError(f"cannot read tensors of {label}: {exc}", "index it as an opaque blob") from exc
        self._tensors = {t.name: t for t in tensors}
        self._specs = {
            t.name: TensorSpec(t.name, t.dtype, t.shape, t.end - t.start) for t in sorted(tensors, key=lambda t: t.start)
        }
        self._file = open(path, "rb", buffering=0)

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return self._specs

    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        t = self._tensors[spec.name]
        if t.dtype not in dtypes.NUMPY_NATIVE and t.dtype != "bfloat16":
            raise UsageError(
                f"tensor {t.name!r} of {self.label} is quantized ({t.dtype}); mvc does not dequantize gguf",
                "read it with llama.cpp's gguf tools",
            )
        raw = read_into(self._file, t.start, dtypes.storage_dtype(t.dtype), t.shape, self.label)
        return finish_array(raw, t.dtype, as_float32, self.label, t.name)

    def close(self) -> None:
        self._file.close()

"""Builders of real weight files byte by byte, for the format tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import xxhash


def xxh(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


def raw_safetensors(
    path: Path,
    tensors: dict[str, tuple[str, list[int], bytes]],
    *,
    metadata: dict[str, str] | None = None,
    header_len: int | None = None,
    extra: bytes = b"",
) -> bytes:
    """Write a safetensors file by hand: name -> (dtype code, shape, raw bytes).

    ``header_len`` overrides the length prefix (to make it lie); ``extra`` is appended.
    Returns the header JSON written.
    """
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (code, shape, data) in tensors.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header).encode()
    n = len(blob) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + blob + b"".join(d for _, _, d in tensors.values()) + extra)
    return blob


# gguf metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _gguf_value(vtype: int, value: object) -> bytes:
    if vtype == STRING:
        return _gguf_str(value)  # type: ignore[arg-type]
    if vtype == ARRAY:
        etype, items = value  # type: ignore[misc]
        return struct.pack("<IQ", etype, len(items)) + b"".join(_gguf_value(etype, v) for v in items)
    return struct.pack(_FMT[vtype], value)


def make_gguf(
    path: Path,
    tensors: list[tuple[str, list[int], int, bytes]],
    *,
    kvs: list[tuple[str, int, object]] = (),  # type: ignore[assignment]
    version: int = 3,
    alignment: int = 32,
    truncate: int = 0,
) -> dict[str, tuple[int, int]]:
    """Write a gguf file: tensors are (name, ggml dims innermost first, ggml type, raw bytes).

    Returns name -> (absolute start, end) of each tensor's data.
    """
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, vtype, value in kvs:
        out += _gguf_str(key) + struct.pack("<I", vtype) + _gguf_value(vtype, value)
    offsets = []
    at = 0
    for _, _, _, data in tensors:
        at = -(-at // alignment) * alignment
        offsets.append(at)
        at += len(data)
    for (name, dims, ttype, _), off in zip(tensors, offsets):
        out += _gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, off)
    data_start = -(-len(out) // alignment) * alignment
    out += b"\0" * (data_start - len(out))
    ranges = {}
    for (name, _, _, data), off in zip(tensors, offsets):
        out += b"\0" * (data_start + off - len(out))
        ranges[name] = (data_start + off, data_start + off + len(data))
        out += data
    path.write_bytes(bytes(out[: len(out) - truncate]))
    return ranges

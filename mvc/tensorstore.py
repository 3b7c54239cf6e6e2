"""Tensor chunks for the ``tensors`` remote layout (issue 15): splitting, encoding, recipes.

Pure functions over bytes and files, no remote and no DVC. A version's file is cut into
*parts*: the header bytes, then each tensor's bytes in fixed pieces of at most
:data:`CHUNK_BYTES` (any byte the tensor index does not cover, and every file of a format
mvc cannot index, becomes plain fixed pieces). A part is content-addressed by the blake3
of its raw bytes (its *chunk id*), so identical tensors are stored once. A stored chunk
is a small binary header then its payload, one of:

- ``raw``: the bytes as they are (they did not compress);
- ``zstd``: the bytes byte-grouped by element width (all first bytes of each float, then
  all second bytes, ...) then zstd-compressed: exponents and signs sit together;
- ``sub`` / ``xor``: the difference against the same part of the parent version (the
  *base*, named by its chunk id in the header), byte-grouped then zstd-compressed. A
  fine-tune changes every float a little: the difference keeps sign, exponent and high
  mantissa bits mostly zero. ``sub`` (elements of 2, 4 or 8 bytes) is the zigzag of the
  integer difference of the bit patterns; ``xor`` (other widths) the bytewise XOR.

A *recipe* per DVC md5 lists the parts in file order; concatenating their raw bytes
rebuilds the file exactly. Delta chains stay bounded: a part whose base is already
:data:`MAX_DEPTH` deltas deep is stored whole.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mvc import documents
from mvc.errors import IntegrityError

CHUNK_BYTES = 8 * 2**20  # a tensor bigger than this is split in pieces of this size
SMALL_TENSOR = 2**20  # consecutive tensors smaller than this share a part ...
GROUP_BYTES = 4 * 2**20  # ... of at most this size
MAX_PART = 256 * 2**20  # no part is ever bigger: a chunk claiming more is hostile (a zstd bomb)
MAX_DEPTH = 8  # a delta chain is at most this long: every 9th version of a part is stored whole
RECIPE_SCHEMA = 1
ZSTD_LEVEL = 1  # on byte planes level 1 is both faster and smaller than 3 (fp32: 0.842 vs 0.856 whole)
MAGIC = b"MVT1"
RAW, ZSTD, XOR, SUB = 0, 1, 2, 3
CODECS = {RAW: "raw", ZSTD: "zstd", XOR: "xor", SUB: "sub"}
DELTAS = (XOR, SUB)
_INTS = {2: "<i2", 4: "<i4", 8: "<i8"}
_HEAD = struct.Struct("<4sBBBBQ")  # magic, codec, width, depth, reserved, raw length
ID_BYTES = 32  # blake3 digest
_CHUNK_ID = re.compile(f"[0-9a-f]{{{2 * ID_BYTES}}}")  # what a recipe may name: ids become paths
HEAD_BYTES = 16 + ID_BYTES  # a stored chunk's header, its delta base included
# Compressed output larger than this share of the input is not worth a decode: stored raw.
KEEP_RAW_ABOVE = 0.97
# A delta this small is kept without trying the whole part; a bigger one only when it beats the
# compressed whole part by 10% (unrelated tensors "delta" to about their own size).
DELTA_SURE = 0.7
DELTA_GAIN = 0.9


# A plain `mvc push` skips a version whose recipe is on the remote; the whole file beside
# the chunks repairs it (a pull falls back to it).
RECIPE_FIX = "upload the whole file from a machine that has the weights (`mvc push --full NAME@vN`): pull then uses it"


@dataclass(frozen=True)
class Part:
    """One part of a recipe: ``size`` bytes of the file, stored as chunk ``id``."""

    id: str  # blake3 hex of the raw bytes
    size: int
    tensor: str | None = None  # None for the header and for bytes outside any tensor
    piece: int = 0  # index of this piece within its tensor
    width: int = 1  # element width in bytes (byte grouping)
    depth: int = 0  # delta chain length of the stored chunk (0: stored whole)
    base: str | None = None  # the chunk a delta is taken against (what gc must keep with it)


@dataclass(frozen=True)
class Recipe:
    """How to rebuild the file of DVC md5 ``md5`` from chunks."""

    md5: str
    size: int
    format: str  # "safetensors" or "opaque"
    parts: tuple[Part, ...]
    schema: int = RECIPE_SCHEMA

    def offsets(self) -> Iterator[tuple[int, Part]]:
        """``(offset in the file, part)`` for each part, in file order."""
        at = 0
        for part in self.parts:
            yield at, part
            at += part.size

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["parts"] = [[p.id, p.size, p.tensor, p.piece, p.width, p.depth, p.base] for p in self.parts]
        return json.dumps(data, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(raw: bytes, md5: str) -> Recipe:
        """Parse a stored recipe.

        Raises:
            IntegrityError: not a recipe, a recipe for another md5, or parts not adding up.
        """
        try:
            data = documents.load_json(raw)
            parts = tuple(
                Part(
                    id=str(p[0]), size=int(p[1]), tensor=p[2], piece=int(p[3]), width=int(p[4]), depth=int(p[5]),
                    base=str(p[6]) if len(p) > 6 and p[6] else None,
                )
                for p in data["parts"]
            )
            recipe = Recipe(md5=str(data["md5"]), size=int(data["size"]), format=str(data["format"]), parts=parts)
            if not all(_CHUNK_ID.fullmatch(i) for p in parts for i in (p.id, p.base or p.id)):
                raise ValueError("a chunk id that is not a chunk hash")  # ids become paths: no "../"
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise IntegrityError(
                f"the tensor recipe of {md5[:8]} on the remote is unreadable",
                hint=RECIPE_FIX,
            ) from exc
        if recipe.md5 != md5 or sum(p.size for p in parts) != recipe.size or any(p.size < 0 for p in parts):
            raise IntegrityError(
                f"the tensor recipe of {md5[:8]} on the remote does not describe that version",
                hint=RECIPE_FIX,
            )
        return recipe


@dataclass(frozen=True)
class Segment:
    """A byte range of a file to cut into parts."""

    start: int
    end: int
    tensor: str | None
    width: int
    grouped: bool = False  # several small tensors, named after the first


def chunk_id(data: bytes | memoryview) -> str:
    """The content address of a part: blake3 of its raw bytes.

    One thread per part: parts are hashed many at once, and blake3's own threads made an
    8 MiB part slower here (2 cores: 39 ms against 21 ms for 87 MiB of parts, one thread).
    """
    import blake3

    return blake3.blake3(data).hexdigest()


def segments(path: Path, size: int) -> tuple[str, list[Segment]]:
    """The format and byte ranges of ``path`` (``size`` bytes): the header, each tensor, any gap.

    A safetensors file is split at its tensors; any other file (or a header mvc cannot
    read) is one opaque range.
    """
    from mvc.errors import CorruptFileError
    from mvc.formats import dtypes, safetensors_format

    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError("short")
        header = safetensors_format.read_header(path, path.name)
    except (CorruptFileError, OSError, ValueError):
        return "opaque", [Segment(0, size, None, 1)] if size else []
    out = [Segment(0, header.data_start, None, 1)]
    at = header.data_start
    for entry in sorted(header.entries, key=lambda e: (e.start, e.end)):
        if entry.start > at:
            out.append(Segment(at, entry.start, None, 1))
        if entry.end > entry.start:
            bits = dtypes.BITS.get(entry.dtype, 8)
            width = bits // 8 if bits % 8 == 0 and bits >= 8 else 1
            out.append(Segment(entry.start, entry.end, entry.name, width))
        at = max(at, entry.end)
    if at < size:
        out.append(Segment(at, size, None, 1))
    return "safetensors", _merge_small(out)


def _merge_small(segs: list[Segment]) -> list[Segment]:
    """Join runs of small tensors of one element width into one segment (fewer requests).

    The run is named after its first tensor, so the next version, with the same layout,
    cuts the same run and finds its delta base under the same name.
    """
    out: list[Segment] = []
    for seg in segs:
        prev = out[-1] if out else None
        if (
            prev is not None
            and seg.tensor is not None
            and prev.tensor is not None
            and prev.width == seg.width
            and prev.end == seg.start
            and seg.end - seg.start < SMALL_TENSOR
            and seg.end - prev.start <= GROUP_BYTES
            and (prev.end - prev.start < SMALL_TENSOR or prev.grouped)
        ):
            out[-1] = Segment(prev.start, seg.end, prev.tensor, prev.width, grouped=True)
        else:
            out.append(seg)
    return out


def pieces(segs: list[Segment], chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int, Segment, int]]:
    """``(offset, size, segment, piece index)`` of every part the segments cut into."""
    for seg in segs:
        n = 0
        for start in range(seg.start, seg.end, chunk_bytes):
            yield start, min(chunk_bytes, seg.end - start), seg, n
            n += 1


# ---- codec ----------------------------------------------------------------------------


def _planes(data: bytes | memoryview, width: int) -> Any:
    """Byte-plane grouping as a new uint8 array (one strided copy per plane, no transpose)."""
    import numpy as np

    arr = np.frombuffer(data, dtype=np.uint8)
    body = len(arr) - len(arr) % width
    out = np.empty(len(arr), dtype=np.uint8)
    if body:
        grid, planes = arr[:body].reshape(-1, width), out[:body].reshape(width, -1)
        for k in range(width):
            planes[k] = grid[:, k]
    out[body:] = arr[body:]
    return out


def _unplanes(data: bytes | memoryview, width: int) -> Any:
    """The inverse of :func:`_planes`, as a new (writable) uint8 array."""
    import numpy as np

    arr = np.frombuffer(data, dtype=np.uint8)
    body = len(arr) - len(arr) % width
    out = np.empty(len(arr), dtype=np.uint8)
    if body:
        grid, planes = out[:body].reshape(-1, width), arr[:body].reshape(width, -1)
        for k in range(width):
            grid[:, k] = planes[k]
    out[body:] = arr[body:]
    return out


def group_bytes(data: bytes | memoryview, width: int) -> bytes:
    """Byte-plane grouping: byte 0 of every element, then byte 1, ...; a tail shorter than ``width`` stays last."""
    return bytes(data) if width <= 1 else bytes(_planes(data, width).data)


def ungroup_bytes(data: bytes | memoryview, width: int) -> bytes:
    """The inverse of :func:`group_bytes`."""
    return bytes(data) if width <= 1 else bytes(_unplanes(data, width).data)


def _xor(a: bytes | memoryview, b: bytes | memoryview) -> Any:
    import numpy as np

    return np.bitwise_xor(np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8))


def xor_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """Bytewise XOR of two equal-length buffers."""
    return bytes(_xor(a, b).data)


def _sub(new: bytes | memoryview, base: bytes | memoryview, width: int) -> Any:
    """Zigzag of ``new - base`` per element as a new array (see :func:`sub_bytes`)."""
    import numpy as np

    dt = np.dtype(_INTS[width])
    d = np.subtract(np.frombuffer(new, dtype=dt), np.frombuffer(base, dtype=dt))  # wraps
    z = np.left_shift(d, 1)
    np.right_shift(d, 8 * width - 1, out=d)
    np.bitwise_xor(z, d, out=z)
    return z


def sub_bytes(new: bytes | memoryview, base: bytes | memoryview, width: int) -> bytes:
    """Zigzag of ``new - base`` per element, the floats' bit patterns read as integers.

    Smaller than the XOR for a fine-tune step: a change of a few units in the last place
    carries into higher bits under XOR (``0x0fff -> 0x1000`` flips 13 bits), the
    difference stays small (measured: 0.54 of the bytes against XOR's 0.57).
    """
    return bytes(_sub(new, base, width).data)


def _unsub_into(z: Any, base: bytes | memoryview, width: int) -> Any:
    """The inverse of :func:`_sub`, in place on the writable uint8 array ``z``: 4 passes, one temporary."""
    import numpy as np

    u = z.view(np.dtype(_INTS[width].replace("i", "u")))
    sign = np.bitwise_and(u, 1)
    np.negative(sign, out=sign)  # 0 or all ones (unsigned wrap)
    np.right_shift(u, 1, out=u)
    np.bitwise_xor(u, sign, out=u)
    del sign
    np.add(u, np.frombuffer(base, dtype=u.dtype), out=u)  # wraps like the signed sum
    return z


def unsub_bytes(z: bytes | memoryview, base: bytes | memoryview, width: int) -> bytes:
    """The inverse of :func:`sub_bytes`."""
    import numpy as np

    return bytes(_unsub_into(np.frombuffer(z, dtype=np.uint8).copy(), base, width).data)


BLOCK = 2**18  # elements per step of the fused delta passes: temporaries stay ~1-2 MiB, not a part


def _delta_planes(new: bytes | memoryview, base: bytes | memoryview, width: int, codec: int) -> Any:
    """``_planes(_sub(new, base))`` (or of the XOR) in one pass of blocks: one part-sized output."""
    import numpy as np

    n = len(new)
    a8, b8 = np.frombuffer(new, dtype=np.uint8), np.frombuffer(base, dtype=np.uint8)
    if width <= 1:
        return np.bitwise_xor(a8, b8)
    body = n - n % width
    out = np.empty(n, dtype=np.uint8)
    planes = out[:body].reshape(width, -1)
    dt = np.dtype(_INTS[width]) if codec == SUB else None
    for s in range(0, body // width, BLOCK):
        e = min(s + BLOCK, body // width)
        if dt is not None:
            d = np.subtract(a8[s * width : e * width].view(dt), b8[s * width : e * width].view(dt))  # wraps
            z = np.left_shift(d, 1)
            np.right_shift(d, 8 * width - 1, out=d)
            np.bitwise_xor(z, d, out=z)
            grid = z.view(np.uint8).reshape(-1, width)
        else:
            grid = np.bitwise_xor(a8[s * width : e * width], b8[s * width : e * width]).reshape(-1, width)
        for k in range(width):
            planes[k, s:e] = grid[:, k]
    np.bitwise_xor(a8[body:], b8[body:], out=out[body:])
    return out


def _undelta_planes(plain: bytes | memoryview, base: bytes | memoryview, width: int, codec: int) -> Any:
    """The inverse of :func:`_delta_planes`, in blocks: the part-sized output is the only big allocation."""
    import numpy as np

    n = len(plain)
    p8, b8 = np.frombuffer(plain, dtype=np.uint8), np.frombuffer(base, dtype=np.uint8)
    if width <= 1:
        return np.bitwise_xor(p8, b8)
    body = n - n % width
    out = np.empty(n, dtype=np.uint8)
    planes = p8[:body].reshape(width, -1)
    grid = out[:body].reshape(-1, width)
    udt = np.dtype(_INTS[width].replace("i", "u")) if codec == SUB else None
    for s in range(0, body // width, BLOCK):
        e = min(s + BLOCK, body // width)
        for k in range(width):
            grid[s:e, k] = planes[k, s:e]
        if udt is not None:
            u = out[s * width : e * width].view(udt)
            sign = np.bitwise_and(u, 1)
            np.negative(sign, out=sign)  # 0 or all ones (unsigned wrap)
            np.right_shift(u, 1, out=u)
            np.bitwise_xor(u, sign, out=u)
            np.add(u, b8[s * width : e * width].view(udt), out=u)  # wraps like the signed sum
        else:
            np.bitwise_xor(out[s * width : e * width], b8[s * width : e * width], out=out[s * width : e * width])
    np.bitwise_xor(p8[body:], b8[body:], out=out[body:])
    return out


_local = threading.local()


def _compress(data: bytes | memoryview | Any) -> bytes:
    """zstd, one thread per part: parts are compressed many at once (zstd's own threads
    cost more than they gained on 8 MiB parts). A compressor per thread, reused."""
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        import zstandard

        cctx = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return bytes(cctx.compress(data))


def _decompress(data: bytes | memoryview, size: int) -> bytes:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        import zstandard

        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return bytes(dctx.decompress(data, max_output_size=size))


def encode(raw: bytes | memoryview, width: int, base: bytes | memoryview | None = None, base_id: str | None = None, base_depth: int = 0) -> tuple[bytes, int]:
    """The stored form of ``raw`` and its delta depth.

    With a ``base`` (the same part of the parent version, same length, chain not too
    long) the delta is tried first and kept when it compresses well; otherwise the part is
    byte-grouped and compressed, or kept raw when that does not pay.
    """
    n = len(raw)
    delta = None
    codec = SUB if width in _INTS and n % width == 0 else XOR
    if base is not None and base_id is not None and len(base) == n and base_depth < MAX_DEPTH:
        delta = _compress(_delta_planes(raw, base, width, codec))
        if len(delta) < DELTA_SURE * n:
            head = _HEAD.pack(MAGIC, codec, width, base_depth + 1, 0, n) + bytes.fromhex(base_id)
            return head + delta, base_depth + 1
    packed = _compress(raw if width <= 1 else _planes(raw, width))
    if delta is not None and len(delta) < DELTA_GAIN * len(packed):  # else no chain for nothing
        head = _HEAD.pack(MAGIC, codec, width, base_depth + 1, 0, n) + bytes.fromhex(str(base_id))
        return head + delta, base_depth + 1
    if len(packed) > KEEP_RAW_ABOVE * n:
        return _HEAD.pack(MAGIC, RAW, 1, 0, 0, n) + bytes(raw), 0
    return _HEAD.pack(MAGIC, ZSTD, width, 0, 0, n) + packed, 0


@dataclass(frozen=True)
class ChunkHead:
    codec: int
    width: int
    depth: int
    size: int
    base: str | None
    payload_at: int


def read_head(stored: bytes | memoryview, cid: str) -> ChunkHead:
    """Parse a stored chunk's header.

    Raises:
        IntegrityError: not a chunk mvc wrote.
    """
    if len(stored) < _HEAD.size:
        raise _corrupt(cid)
    magic, codec, width, depth, _, size = _HEAD.unpack_from(stored)
    if magic != MAGIC or codec not in CODECS or width < 1 or size > MAX_PART:
        raise _corrupt(cid)
    if codec in DELTAS:
        if len(stored) < _HEAD.size + ID_BYTES:
            raise _corrupt(cid)
        base = bytes(stored[_HEAD.size : _HEAD.size + ID_BYTES]).hex()
        return ChunkHead(codec, width, depth, size, base, _HEAD.size + ID_BYTES)
    return ChunkHead(codec, width, depth, size, None, _HEAD.size)


def decode(stored: bytes | memoryview, cid: str, base: bytes | memoryview | None = None) -> bytes:
    """The raw bytes of stored chunk ``cid`` (``base``: the raw bytes of its base, for a delta), checked.

    Raises:
        IntegrityError: the chunk is damaged or does not hash to ``cid``.
    """
    return bytes(decode_buffer(stored, cid, base))


def decode_buffer(stored: bytes | memoryview, cid: str, base: bytes | memoryview | None = None) -> memoryview:
    """:func:`decode` without the final copy: a read-only view of the raw bytes, checked.

    Raises:
        IntegrityError: the chunk is damaged or does not hash to ``cid``.
    """
    head = read_head(stored, cid)
    payload = memoryview(stored)[head.payload_at :]
    try:
        if head.codec == RAW:
            raw = payload
        elif head.codec == ZSTD:
            plain = _decompress(payload, head.size)
            raw = memoryview(plain) if head.width <= 1 else _unplanes(plain, head.width).data
        else:
            if base is None or len(base) != head.size or (head.codec == SUB and head.width not in _INTS):
                raise _corrupt(cid)
            plain = _decompress(payload, head.size)
            if len(plain) != head.size:
                raise _corrupt(cid)
            raw = _undelta_planes(plain, base, head.width, head.codec).data
            del plain
    except IntegrityError:
        raise
    except Exception as exc:  # zstd: a damaged frame
        raise _corrupt(cid) from exc
    if len(raw) != head.size or chunk_id(raw) != cid:
        raise _corrupt(cid)
    return raw.toreadonly() if not raw.readonly else raw


def _corrupt(cid: str) -> IntegrityError:
    return IntegrityError(f"chunk {cid[:12]} is corrupt", hint="push the version again from a machine that has its weights")


def read_range(path: Path | str, offset: int, size: int) -> bytes:
    """``size`` bytes of ``path`` from ``offset`` (positional read, no shared file position, one buffer)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, size, offset)
        if len(data) == size:
            return data
        out = bytearray(data)
        while len(out) < size:  # a short read (rare for regular files): go on from where it stopped
            more = os.pread(fd, size - len(out), offset + len(out))
            if not more:
                raise IntegrityError(f"{path} is shorter than expected", hint="re-add or re-fetch it")
            out += more
        return bytes(out)
    finally:
        os.close(fd)


def chunk_key(cid: str) -> str:
    """The chunk's path below the layout's chunk directory: ``ab/cdef...``."""
    return f"{cid[:2]}/{cid[2:]}"


def parts_by_key(recipe: Recipe) -> dict[tuple[str, int], tuple[int, Part]]:
    """``(tensor, piece) -> (offset, part)`` of a recipe's tensor parts: delta bases for its children."""
    return {(p.tensor, p.piece): (at, p) for at, p in recipe.offsets() if p.tensor is not None}

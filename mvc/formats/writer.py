"""Streaming, atomic safetensors writer (model merging writes through this).

The header (names, dtypes, shapes) comes first in a safetensors file, so either the
caller declares it up front (``SafetensorsWriter(path, specs)`` or
``write_safetensors(..., header=specs)``) and tensors stream straight into place, or
``write_safetensors`` spools the data to a temporary file and copies it behind the
header at the end (one extra sequential copy, memory still one tensor at a time).

Everything is written to a temporary file in the target's directory, fsynced, then
``os.replace``d over the target: readers see the old file or the new one, never half
of one, and a failure leaves no temporary file behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mvc.errors import PathNotFoundError, UsageError
from mvc.formats import dtypes

if TYPE_CHECKING:
    pass

# Elements converted per step, so a dtype conversion never doubles a big tensor.
_STEP = 4 << 20
_SUB_BYTE = frozenset({"float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"})

Spec = tuple[str, Any, Sequence[int]]


def _temp_file(target: Path, kind: str) -> tuple[Path, IO[bytes]]:
    """A new file next to ``target``, created with the umask's permissions."""
    parent = target.parent
    if not parent.is_dir():
        raise PathNotFoundError(f"directory {parent} does not exist", "create it first")
    while True:
        tmp = parent / f".{target.name}.{os.urandom(4).hex()}.{kind}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "w+b")


def _normalize_specs(specs: Iterable[Spec]) -> list[tuple[str, str, tuple[int, ...], int]]:
    out = []
    seen: set[str] = set()
    for spec in specs:
        try:
            name, dtype, shape = spec
        except (TypeError, ValueError):
            raise UsageError(f"tensor spec {spec!r} must be (name, dtype, shape)", None) from None
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise UsageError(f"bad tensor name {name!r}", "use a non-empty string other than __metadata__")
        if name in seen:
            raise UsageError(f"tensor {name!r} is declared twice", None)
        seen.add(name)
        canonical = dtypes.normalize_dtype(dtype)
        if canonical in _SUB_BYTE:
            raise UsageError(f"writing {canonical} tensors is not supported", None)
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise UsageError(f"tensor {name!r} has a negative dimension: {shape}", None)
        nbytes = math.prod(shape) * dtypes.BITS[canonical] // 8
        out.append((name, canonical, shape, nbytes))
    return out


def encode(array: Any, dtype: str, shape: tuple[int, ...], name: str) -> Iterator[memoryview]:
    """The bytes of ``array`` stored as canonical ``dtype``: C order, little-endian.

    Conversions: float arrays to bfloat16 round to nearest even; uint16 arrays
    declared bfloat16 (and uint8 arrays declared float8) are taken as raw bits, as
    are ml_dtypes arrays of the same dtype; other numeric arrays are cast if numpy
    calls the cast ``same_kind`` (float64 -> float16, int64 -> int32, ...).

    Raises:
        UsageError: wrong shape, or a conversion that would change the kind.
    """
    import numpy as np

    arr = np.asarray(array)
    if tuple(arr.shape) != shape:
        raise UsageError(f"tensor {name!r} has shape {list(arr.shape)}, declared {list(shape)}", None)
    source = dtypes.canonical_from_numpy(arr.dtype)
    flat = arr.reshape(-1)
    if dtype == "bfloat16" and arr.dtype.kind == "f" and source != "bfloat16":
        for i in range(0, flat.size, _STEP):
            bits = dtypes.float32_to_bfloat16_bits(flat[i : i + _STEP]).astype("<u2", copy=False)
            yield memoryview(bits.view(np.uint8))  # type: ignore[arg-type]  # numpy arrays are buffers
        return
    if dtype in dtypes.MINIFLOATS:
        raw = np.dtype("<u2") if dtype == "bfloat16" else np.dtype("u1")
        if source == dtype:
            flat = np.ascontiguousarray(flat).view(raw)
        elif arr.dtype.kind != "u" or arr.dtype.itemsize != raw.itemsize:
            floats = "floats (they are rounded) or " if dtype == "bfloat16" else ""
            raise UsageError(
                f"cannot store {source} tensor {name!r} as {dtype}",
                f"pass {floats}its raw bits as a {raw.name} array",
            )
        target = raw
    else:
        target = dtypes.numpy_dtype(dtype)
        if arr.dtype.newbyteorder("<") != target and not np.can_cast(arr.dtype, target, "same_kind"):
            raise UsageError(f"cannot store {source} tensor {name!r} as {dtype}", "convert it first")
    for i in range(0, flat.size, _STEP):
        chunk = np.ascontiguousarray(flat[i : i + _STEP], dtype=target)
        yield memoryview(chunk.view(np.uint8))  # type: ignore[arg-type]  # numpy arrays are buffers


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, in the order of its header.

    Example::

        with SafetensorsWriter(path, [("w", "bfloat16", (4, 4)), ("b", "float32", (4,))]) as w:
            w.write("w", w_float32)   # rounded to bfloat16
            w.write("b", b)

    Leaving the ``with`` block normally publishes the file (``close``); an exception
    discards it (``abort``).

    Args:
        path: the file to create or replace.
        specs: (name, dtype, shape) of every tensor, in the order they will be written;
            dtype is a canonical name, a safetensors code, or a numpy / torch dtype.
        metadata: the header's ``__metadata__`` (strings to strings), e.g. ``{"format": "pt"}``.

    Raises:
        UsageError: bad specs or metadata.
        PathNotFoundError: the target's directory does not exist.
    """

    def __init__(self, path: Path, specs: Iterable[Spec], *, metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self._specs = _normalize_specs(specs)
        header: dict[str, Any] = {}
        if metadata:
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
                raise UsageError("safetensors metadata must map strings to strings", None)
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, dtype, shape, nbytes in self._specs:
            header[name] = {
                "dtype": dtypes.CANONICAL_TO_SAFETENSORS[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as safetensors does
        self._next = 0
        self._tmp, self._file = _temp_file(self.path, "tmp")
        self._done = False
        self._data_start = 8 + len(blob)
        try:
            self._file.write(len(blob).to_bytes(8, "little") + blob)
        except BaseException:
            self.abort()
            raise

    @property
    def pending(self) -> list[str]:
        """Names still to write, in order."""
        return [s[0] for s in self._specs[self._next :]]

    def write(self, name: str, array: Any) -> None:
        """Write the next tensor; ``name`` must be the next one of the header.

        Raises:
            UsageError: out of order, unknown name, wrong shape or dtype kind.
        """
        if self._done:
            raise UsageError(f"{self.path.name}: the writer is closed", None)
        if self._next >= len(self._specs):
            raise UsageError(f"{self.path.name}: tensor {name!r} is not declared, or written twice", None)
        expected, dtype, shape, nbytes = self._specs[self._next]
        if name != expected:
            raise UsageError(
                f"{self.path.name}: expected tensor {expected!r} next, got {name!r}",
                "write tensors in the order of the specs",
            )
        written = 0
        for chunk in encode(array, dtype, shape, name):
            self._file.write(chunk)
            written += chunk.nbytes
        if written != nbytes:  # a bug in encode, never the caller's input
            raise AssertionError(f"wrote {written} bytes for {name!r}, expected {nbytes}")
        self._next += 1

    def _copy_data(self, src: IO[bytes], length: int) -> None:
        """Append ``length`` bytes of already encoded data (all tensors, in order)."""
        self._file.flush()
        start = self._data_start
        copied = 0
        copy_range = getattr(os, "copy_file_range", None)  # in-kernel copy (Linux)
        if copy_range is not None:
            try:
                while copied < length:
                    n = copy_range(src.fileno(), self._file.fileno(), length - copied, copied, start + copied)
                    if not n:
                        break
                    copied += n
            except OSError:
                copied = 0
        if copied < length:
            src.seek(copied)
            self._file.seek(start + copied)
            shutil.copyfileobj(src, self._file, 8 << 20)
        self._file.seek(start + length)
        self._next = len(self._specs)

    def close(self) -> None:
        """Publish the file atomically (fsync, then rename over the target).

        Raises:
            UsageError: tensors declared in the header were not written (the
                temporary file is removed and the target left as it was).
        """
        if self._done:
            return
        if self._next != len(self._specs):
            missing = self.pending
            self.abort()
            raise UsageError(
                f"{self.path.name}: {len(missing)} declared tensors were not written "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
                None,
            )
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Discard the temporary file; the target is left untouched."""
        self._done = True
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_safetensors(
    tensors: Iterable[tuple[str, Any]] | Mapping[str, Any],
    path: Path,
    *,
    metadata: Mapping[str, str] | None = None,
    header: Iterable[Spec] | None = None,
) -> None:
    """Write tensors to a safetensors file atomically, one tensor in memory at a time.

    Args:
        tensors: a mapping or an iterable (a generator is fine) of (name, array).
        path: the file to create or replace.
        metadata: the header's ``__metadata__``.
        header: (name, dtype, shape) of every tensor in the order ``tensors`` yields
            them. With it, data streams straight into place and dtypes may differ
            from the arrays' (float32 -> bfloat16 rounds). Without it each tensor keeps
            its array's dtype and an iterable is spooled to a temporary file first.

    Raises:
        UsageError: names, shapes or dtypes that do not fit; nothing is written.
    """
    import numpy as np

    path = Path(path)
    if isinstance(tensors, Mapping):
        if header is None:
            items = [(name, np.asarray(arr)) for name, arr in tensors.items()]
            header = [(name, arr.dtype, arr.shape) for name, arr in items]
        else:
            header = list(header)
            missing = [spec[0] for spec in header if spec[0] not in tensors]
            if missing or len(header) != len(tensors):
                raise UsageError("the header and the tensors name different tensors", None)
            items = [(spec[0], tensors[spec[0]]) for spec in header]
        tensors = items
    if header is not None:
        with SafetensorsWriter(path, header, metadata=metadata) as writer:
            for name, arr in tensors:
                writer.write(name, arr)
        return
    spool_path, spool = _temp_file(path, "spool")
    try:
        specs: list[Spec] = []
        seen: set[str] = set()
        size = 0
        for name, array in tensors:
            arr = np.asarray(array)
            if name in seen:
                raise UsageError(f"tensor {name!r} is given twice", None)
            seen.add(name)
            (spec,) = _normalize_specs([(name, arr.dtype, arr.shape)])
            for chunk in encode(arr, spec[1], spec[2], name):
                spool.write(chunk)
                size += chunk.nbytes
            specs.append((name, spec[1], spec[2]))
        spool.flush()
        with SafetensorsWriter(path, specs, metadata=metadata) as writer:
            writer._copy_data(spool, size)
    finally:
        spool.close()
        os.unlink(spool_path)

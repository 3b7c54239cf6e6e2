"""What every format module shares: the per-file index result and the reader base."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import CorruptFileError, UsageError
from mvc.formats import dtypes
from mvc.formats.index import TensorInfo, TensorSpec

if TYPE_CHECKING:
    import numpy as np

RE_EXPORT = "re-export the weights, or fetch them again"


@dataclass
class FileIndex:
    """The tensors of one weight file, before directory bookkeeping."""

    format: str
    framework: str | None = None
    tensors: list[TensorInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Dimensions a header may declare: numpy (and torch) index with signed 64-bit sizes, so
# an array whose non-zero dimensions multiply past this cannot exist (a ``2**64``
# dimension next to a zero one passed every size check and crashed merge, issue 14).
MAX_DIMS = 64
MAX_SIZE = 2**63 - 1


def check_shape(shape: Any, label: str, name: str, itemsize: int = 1) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints an array can have, or CorruptFileError.

    Args:
        itemsize: bytes per element (at least 1 is assumed), so the array's byte size
            is checked against what numpy can allocate, zero dimensions aside.
    """
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptFileError(f"{label}: tensor {name!r} has a bad shape {_short(shape)}", RE_EXPORT)
    if len(shape) > MAX_DIMS:
        raise CorruptFileError(f"{label}: tensor {name!r} has {len(shape)} dimensions (at most {MAX_DIMS})", RE_EXPORT)
    if math.prod(max(d, 1) for d in shape) * max(itemsize, 1) > MAX_SIZE:
        raise CorruptFileError(
            f"{label}: tensor {name!r} declares an impossible shape {_short(list(shape))} (over 2**63 bytes)",
            RE_EXPORT,
        )
    return tuple(shape)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes of a tensor of a safetensors-storable dtype; None if not whole bytes."""
    bits = math.prod(shape) * dtypes.BITS[dtype]
    return bits // 8 if bits % 8 == 0 else None


def read_into(f: Any, start: int, dtype: np.dtype, shape: tuple[int, ...], label: str) -> np.ndarray:
    """Read ``shape`` elements of ``dtype`` at byte ``start`` of an open file, in one copy.

    Positional reads: safe to call from several threads on one file where the OS has
    ``preadv`` (Linux, macOS); elsewhere callers must not share ``f`` across threads.
    """
    import numpy as np

    arr = np.empty(shape, dtype=dtype)
    view = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # numpy arrays are buffers
    done = 0
    while done < view.nbytes:
        n = pread_into(f, view[done:], start + done)
        if not n:
            raise CorruptFileError(f"{label} is truncated (ends inside a tensor)", RE_EXPORT)
        done += n
    return arr


def pread_into(f: Any, view: memoryview, offset: int) -> int:
    """Read into ``view`` at ``offset`` without moving the file position where the OS
    allows (``os.preadv``), so readers can be shared by threads; returns bytes read."""
    preadv = getattr(os, "preadv", None)
    if preadv is not None:
        return preadv(f.fileno(), [view], offset)
    f.seek(offset)
    return f.readinto(view)


def finish_array(raw: np.ndarray, dtype: str, as_float32: bool, label: str, name: str) -> np.ndarray:
    """Turn raw stored elements into what ``TensorReader.read`` returns."""
    if dtype in dtypes.MINIFLOATS:
        if not as_float32:
            raise UsageError(
                f"tensor {name!r} of {label} is {dtype}, which numpy cannot hold",
                "read it with as_float32=True",
            )
        return dtypes.to_float32(raw, dtype)
    if as_float32 and raw.dtype.kind == "f":
        import numpy as np

        return raw.astype(np.float32, copy=False)
    return raw


class TensorReader(ABC):
    """Streaming access to the tensors of a model, one tensor at a time.

    Use as a context manager. ``read`` returns a fresh numpy array (it does not keep
    the file alive), so memory holds only the tensors the caller keeps.
    """

    format: str = ""

    def __init__(self, path: Path, label: str) -> None:
        self.path = Path(path)
        self.label = label

    @property
    @abstractmethod
    def specs(self) -> dict[str, TensorSpec]:
        """Every readable tensor, by name."""

    @abstractmethod
    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        """Read one tensor."""

    def names(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self.specs)

    def stored_order(self) -> list[str]:
        """Tensor names in the order the file stores them (a merge keeps it)."""
        return list(self.specs)

    def info(self, name: str) -> TensorSpec:
        """Name, dtype, shape and size of a tensor, without reading it.

        Raises:
            UsageError: no tensor of that name.
        """
        try:
            return self.specs[name]
        except KeyError:
            raise UsageError(
                f"{self.label} has no tensor named {name!r}",
                "list the names with names()",
            ) from None

    def read(self, name: str, *, as_float32: bool = False) -> np.ndarray:
        """Read one tensor into a new numpy array (C order, the stored dtype).

        Args:
            name: the tensor's name, as in ``names()``.
            as_float32: return floating tensors (float16, bfloat16, float8, float32,
                float64) as float32; needed for dtypes numpy lacks (bfloat16, float8).
                Other tensors are returned unchanged.

        Raises:
            UsageError: unknown name, or a dtype numpy lacks without ``as_float32``.
            CorruptFileError: the file is damaged.
        """
        return self._read(self.info(name), as_float32)

    def items(self, *, as_float32: bool = False) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) for each tensor in name order, reading one at a time."""
        for name in self.names():
            yield name, self.read(name, as_float32=as_float32)

    def close(self) -> None:  # noqa: B027  (optional: readers without resources keep it)
        """Release the file(s). Reading after this is an error."""

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

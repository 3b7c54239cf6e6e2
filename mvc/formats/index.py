"""The tensor index: ``name -> dtype, shape, hash`` plus totals, and its JSON form.

The JSON is compact and deterministic (same index, same bytes), so identical weights
share one content-addressed sidecar file. Rows are lists under a ``columns`` header
rather than one object per tensor: a 30,000-tensor checkpoint stays a few MB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property

from mvc import documents
from mvc.errors import SchemaError

SCHEMA = 1
COLUMNS = ("name", "dtype", "shape", "nbytes", "hash", "file")
FORMATS = frozenset({"safetensors", "npz", "torch", "gguf", "opaque", "mixed"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a model, as indexed.

    Attributes:
        name: tensor name; in a directory model a name found in several files is
            prefixed with the file's relative path and a colon (``"a/b.safetensors:w"``).
        dtype: canonical dtype name (``float32``, ``bfloat16``, gguf: ``q4_k``).
        shape: dimensions, outermost first.
        nbytes: bytes the tensor occupies as stored.
        hash: xxh3-128 hex digest of those bytes (little-endian, C order).
        file: path relative to the model directory (posix), or None for a file model.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    hash: str
    file: str | None = None

    @property
    def numel(self) -> int:
        """Number of elements (the product of the shape; 1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class TensorSpec:
    """What a reader knows about a tensor without reading it (no hash)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str | None = None


@dataclass(frozen=True)
class TensorIndex:
    """The tensor index of a model file or directory.

    Attributes:
        format: ``safetensors``, ``npz``, ``torch``, ``gguf``, ``opaque``, or ``mixed``
            (a directory holding several formats).
        framework: best guess of the framework (``pytorch``, ``numpy``, ``tensorflow``,
            ``flax``, ``llama.cpp``, ...), or None.
        tensors: sorted by name (the constructor sorts them).
        notes: human-readable notes (opaque files, skipped tensors).
    """

    format: str
    framework: str | None
    tensors: tuple[TensorInfo, ...]
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(sorted(self.tensors, key=lambda t: t.name)))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        """Sum over tensors of the product of the shape."""
        return sum(t.numel for t in self.tensors)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def bytes_by_dtype(self) -> dict[str, int]:
        """Bytes per dtype, keys sorted."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dtype] = out.get(t.dtype, 0) + t.nbytes
        return dict(sorted(out.items()))

    @cached_property
    def by_name(self) -> dict[str, TensorInfo]:
        """Tensors keyed by name."""
        return {t.name: t for t in self.tensors}

    def to_json(self) -> bytes:
        """Compact, deterministic JSON (UTF-8) with ``schema`` and the totals."""
        doc = {
            "schema": SCHEMA,
            "format": self.format,
            "framework": self.framework,
            "tensor_count": self.tensor_count,
            "parameter_count": self.parameter_count,
            "total_bytes": self.total_bytes,
            "bytes_by_dtype": self.bytes_by_dtype,
            "notes": list(self.notes),
            "columns": list(COLUMNS),
            "tensors": [[t.name, t.dtype, list(t.shape), t.nbytes, t.hash, t.file] for t in self.tensors],
        }
        # ASCII escapes keep any name (even a lone surrogate from a JSON header) encodable.
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes | str) -> TensorIndex:
        """Parse what :meth:`to_json` wrote.

        Raises:
            SchemaError: the JSON is malformed, inconsistent, or from a newer mvc.
        """
        try:
            doc = documents.load_json(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"tensor index is not valid JSON: {exc}", _REBUILD) from exc
        if not isinstance(doc, dict):
            raise SchemaError("tensor index is not a JSON object", _REBUILD)
        schema = doc.get("schema")
        if type(schema) is not int:
            raise SchemaError("tensor index has no integer 'schema' field", _REBUILD)
        if schema > SCHEMA:
            raise SchemaError(
                f"tensor index schema {schema} is newer than this mvc reads ({SCHEMA})",
                "upgrade mvc: pip install -U mvc",
            )
        if schema != SCHEMA:
            raise SchemaError(f"tensor index schema {schema} is not supported", _REBUILD)
        try:
            index = cls._from_doc(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"tensor index is malformed: {exc}", _REBUILD) from exc
        for key in ("tensor_count", "parameter_count", "total_bytes", "bytes_by_dtype"):
            if key in doc and doc[key] != getattr(index, key):
                raise SchemaError(
                    f"tensor index is inconsistent: {key} is {doc[key]!r}, tensors add up to {getattr(index, key)!r}",
                    _REBUILD,
                )
        return index

    @classmethod
    def _from_doc(cls, doc: dict) -> TensorIndex:
        fmt = doc["format"]
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        framework = doc["framework"]
        if framework is not None and not isinstance(framework, str):
            raise ValueError("framework must be a string or null")
        notes = doc.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("notes must be a list of strings")
        if doc.get("columns", list(COLUMNS)) != list(COLUMNS):
            raise ValueError(f"columns must be {list(COLUMNS)}")
        rows = doc["tensors"]
        if not isinstance(rows, list):
            raise ValueError("tensors must be a list")
        tensors = []
        seen = set()
        for row in rows:
            if not isinstance(row, list) or len(row) != len(COLUMNS):
                raise ValueError(f"tensor row {row!r} must be a list of {len(COLUMNS)}")
            name, dtype, shape, nbytes, hash_, file = row
            if not isinstance(name, str) or not isinstance(dtype, str) or not isinstance(hash_, str):
                raise ValueError(f"tensor row {row!r} has a non-string name, dtype or hash")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise ValueError(f"tensor {name!r} has a bad shape {shape!r}")
            if type(nbytes) is not int or nbytes < 0:
                raise ValueError(f"tensor {name!r} has a bad nbytes {nbytes!r}")
            if file is not None and not isinstance(file, str):
                raise ValueError(f"tensor {name!r} has a bad file {file!r}")
            if name in seen:
                raise ValueError(f"tensor {name!r} appears twice")
            seen.add(name)
            tensors.append(TensorInfo(name, dtype, tuple(shape), nbytes, hash_, file))
        return cls(fmt, framework, tuple(tensors), tuple(notes))


_REBUILD = "re-add the model (mvc add) to rebuild its tensor index from the weights"

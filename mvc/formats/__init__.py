"""Weight formats: tensor indexes, streaming tensor reads, safetensors writes.

Readers parse headers, not weights, where the format allows (safetensors, gguf, npz
members); each tensor's bytes are hashed with xxh3-128. torch checkpoints are loaded
only with ``weights_only=True`` (memory-mapped) and anything needing arbitrary code
is versioned as an opaque blob. numpy, torch and safetensors are imported lazily:
importing this package stays cheap.

Public surface::

    detect_format(path) -> str
    build_index(path, *, progress=None, threads=None) -> TensorIndex
    open_tensors(path) -> TensorReader          # context manager
    write_safetensors(tensors, path, *, metadata=None, header=None) -> None
    SafetensorsWriter(path, specs, *, metadata=None)  # .write(name, array), .close()
    TensorIndex, TensorInfo, TensorSpec
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mvc.formats.index import SCHEMA, TensorIndex, TensorInfo, TensorSpec

if TYPE_CHECKING:
    from mvc.formats.base import TensorReader
    from mvc.formats.build import build_index
    from mvc.formats.detect import detect_format
    from mvc.formats.reader import open_tensors
    from mvc.formats.writer import SafetensorsWriter, write_safetensors

# Readers and writers load on first use: reading a tensor index (mvc diff, mvc log)
# needs only mvc.formats.index.
_LAZY = {
    "TensorReader": "mvc.formats.base",
    "build_index": "mvc.formats.build",
    "detect_format": "mvc.formats.detect",
    "open_tensors": "mvc.formats.reader",
    "SafetensorsWriter": "mvc.formats.writer",
    "write_safetensors": "mvc.formats.writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mvc.formats' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "SCHEMA",
    "SafetensorsWriter",
    "TensorIndex",
    "TensorInfo",
    "TensorReader",
    "TensorSpec",
    "build_index",
    "detect_format",
    "open_tensors",
    "write_safetensors",
]

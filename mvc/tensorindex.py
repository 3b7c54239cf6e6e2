"""Tensor-index sidecars: ``.mvc/index/<md5[:2]>/<md5>.json``, git-tracked and content-addressed.

The index itself is built by :mod:`mvc.formats`; this module stores and finds it.
Identical weights share one sidecar file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mvc.pointer import write_atomic
from mvc.settings import MVC_DIR

if TYPE_CHECKING:
    from mvc.formats import TensorIndex

INDEX_DIR = f"{MVC_DIR}/index"


def sidecar_path(md5: str) -> str:
    """The sidecar's path (relative to the repo root) for content hash ``md5``."""
    key = md5.removesuffix(".dir")
    return f"{INDEX_DIR}/{key[:2]}/{key}.json"


def save(root: Path, md5: str, index: TensorIndex) -> str:
    """Write the sidecar for ``md5`` unless it exists; return its relative path."""
    rel = sidecar_path(md5)
    full = root / rel
    if not full.exists():
        write_atomic(full, index.to_json())
    return rel


def load_bytes(data: bytes) -> TensorIndex:
    """Parse sidecar bytes (from the work tree or a git blob)."""
    from mvc.formats import TensorIndex

    return TensorIndex.from_json(data)


def load(root: Path, md5: str) -> TensorIndex | None:
    """The sidecar for ``md5`` from the work tree, or None."""
    try:
        return load_bytes((root / sidecar_path(md5)).read_bytes())
    except FileNotFoundError:
        return None

"""Tensor-index sidecars: ``.mvc/index/<md5[:2]>/<md5>.json``, git-tracked and content-addressed.

The index itself is built by :mod:`mvc.formats`; this module stores and finds it.
Identical weights share one sidecar file.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mvc.errors import IntegrityError
from mvc.files import write_atomic
from mvc.settings import MVC_DIR

if TYPE_CHECKING:
    from mvc.formats import TensorIndex
    from mvc.manifest import Manifest

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


def digest(data: bytes) -> str:
    """The hash the manifest records of a sidecar's bytes (``sha256:<hex>``)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def state(root: Path, manifest: Manifest | None, commit: str | None) -> str:
    """Does the version's tensor index still match the hash its manifest records?

    ``ok``; ``mismatch`` (edited by hand, or swapped); ``missing`` (the sidecar is gone);
    ``none`` (no index bound to the manifest: opaque weights, or an older mvc). ``commit``
    None reads the work tree's sidecar, else the one committed there.
    """
    if manifest is None or not manifest.index or not manifest.index_hash:
        return "none"
    if commit is None:
        try:
            data: bytes | None = (root / manifest.index).read_bytes()
        except FileNotFoundError:
            data = None
    else:
        from mvc import gitstore

        data = gitstore.read_blob(root, commit, manifest.index)
    if data is None:
        return "missing"
    return "ok" if digest(data) == manifest.index_hash else "mismatch"


def bind(root: Path, manifest: Manifest) -> Manifest:
    """``manifest`` with the hash of its sidecar, so a hand-edited index is caught on read (issue 14)."""
    if not manifest.index:
        return manifest
    return manifest.evolve(index_hash=digest((root / manifest.index).read_bytes()))


def build_from_cache(root: Path, md5: str, filename: str = "weights") -> TensorIndex | None:
    """The tensor index of the cached weights ``md5``, or None when the cache lacks them."""
    from mvc import dvcstore, formats

    if not dvcstore.has_object(root, md5):
        return None
    with tempfile.TemporaryDirectory(prefix="mvc-index-") as tmp:
        weights = dvcstore.export(root, md5, Path(tmp) / filename, verify=True)
        return formats.build_index(weights)


def load_checked(
    root: Path, manifest: Manifest | None, data: bytes | None, md5: str, *, filename: str = "weights"
) -> TensorIndex | None:
    """A version's tensor index, checked against the hash its manifest records.

    Args:
        root: the repository.
        manifest: the version's manifest (its ``index`` and ``index_hash``).
        data: the sidecar's bytes at the version's commit, or None to read the work tree.
        md5: the weights' content hash.
        filename: the weights' file name (its suffix tells the format when rebuilding).

    Returns:
        The index; rebuilt from the cached weights (and the sidecar rewritten) when the
        sidecar does not match its recorded hash. None when there is no sidecar.

    Raises:
        IntegrityError: the sidecar does not match and the weights are not in the cache.
    """
    rel = manifest.index if manifest is not None and manifest.index else sidecar_path(md5)
    if data is None:
        try:
            data = (root / rel).read_bytes()
        except FileNotFoundError:
            return None
    expected = manifest.index_hash if manifest is not None else None
    if expected is None or digest(data) == expected:
        return load_bytes(data)
    rebuilt = build_from_cache(root, md5, filename)
    if rebuilt is None:
        raise IntegrityError(
            f"tensor index {rel} does not match the hash its manifest records (edited by hand?)",
            hint=f"restore it with `git checkout -- {rel}`, or `mvc pull` the weights so mvc can rebuild it",
        )
    fresh = rebuilt.to_json()
    if digest(fresh) == expected:
        write_atomic(root / rel, fresh)
    return rebuilt

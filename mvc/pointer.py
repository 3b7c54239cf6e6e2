"""Reading and writing DVC pointer files (``<path>.dvc``) that carry a manifest.

Pointers are parsed with PyYAML's C loader, without importing DVC, so history and
listing commands stay fast. The layout stays exactly what DVC expects: mvc only adds
``type: model`` to the output entry and its manifest under the top-level ``meta`` key,
both of which DVC keeps when it re-adds the file.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from mvc import documents
from mvc.errors import SchemaError
from mvc.files import write_atomic
from mvc.manifest import Manifest, Parent

SUFFIX = ".dvc"


@dataclass(frozen=True)
class Pointer:
    """One parsed pointer file."""

    path: str  # the pointer's path relative to the repo root, e.g. "models/m.safetensors.dvc"
    out: str  # the weights' path relative to the repo root
    md5: str  # DVC's content hash ("<md5>" or "<md5>.dir"); "" when the pointer has none yet
    size: int
    nfiles: int | None
    manifest: Manifest | None

    @property
    def is_model(self) -> bool:
        """True when mvc wrote a manifest into this pointer."""
        return self.manifest is not None

    @property
    def outside_mvc(self) -> bool:
        """True when plain ``dvc add`` changed the weights after mvc wrote the manifest."""
        return self.manifest is not None and self.manifest.hash != self.md5

    @property
    def effective(self) -> Manifest | None:
        """The manifest of the version this pointer records: the one owner of "which version is this".

        Status, log, show, diff and add all read a pointer's version through here. A
        pointer re-added by plain ``dvc add`` (issue 14) keeps the previous version's
        ``meta``: it is the next version (number + 1, parent = the version the manifest
        describes), with none of the stale metrics, params, message or tensor index.
        """
        return effective_manifest(self.manifest, self.md5)

    @property
    def version(self) -> int:
        """The version number this pointer records (0 when it carries no manifest)."""
        m = self.effective
        return m.version if m is not None else 0

    @property
    def isdir(self) -> bool:
        """True for a directory (sharded) model."""
        return self.md5.endswith(".dir")


def effective_manifest(manifest: Manifest | None, md5: str) -> Manifest | None:
    """``manifest`` as it describes the weights ``md5`` (see :attr:`Pointer.effective`)."""
    if manifest is None or not md5 or manifest.hash == md5:
        return manifest
    return Manifest(
        name=manifest.name,
        version=manifest.version + 1,
        hash=md5,
        created="",
        author="",
        message="",
        parents=(Parent(hash=manifest.hash, version=manifest.version),),
        format=manifest.format,
        framework=manifest.framework,
        notes=("added outside mvc (plain dvc add): metadata not recorded",),
    )


def _load_yaml(text: bytes | str, source: str) -> Any:
    import yaml

    try:
        return documents.load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        what = "holds a YAML alias, which mvc never writes and does not expand" if getattr(exc, "problem", None) == "alias" else "is not valid YAML"
        raise SchemaError(
            f"{source} {what}{where}",
            hint=f"restore it with `git checkout -- {source}` or fix it by hand",
        ) from exc


def parse(text: bytes | str, path: str) -> Pointer:
    """Parse a pointer file's text.

    Args:
        text: the file's bytes or text.
        path: its path relative to the repo root (for messages and the output path).

    Raises:
        SchemaError: invalid YAML, not a single-output pointer, or a malformed manifest.
    """
    return from_data(_load_yaml(text, path), path)


def load_yaml(text: bytes | str, path: str) -> Any:
    """The YAML document of a pointer file, unvalidated (see :func:`from_data`).

    Raises:
        SchemaError: invalid YAML (the message names ``path`` and the line).
    """
    return _load_yaml(text, path)


def from_data(data: Any, path: str) -> Pointer:
    """Build a :class:`Pointer` from a pointer file's loaded YAML document.

    Lets callers that cache loaded documents (``mvc log`` over hundreds of versions)
    skip the YAML parse.

    Raises:
        SchemaError: not a single-output pointer, or a malformed or newer manifest.
    """
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict) or "path" not in outs[0]:
        raise SchemaError(
            f"{path} is not a DVC pointer with one output",
            hint=f"restore it with `git checkout -- {path}`",
        )
    out = outs[0]
    meta = data.get("meta")
    raw_manifest = meta.get("mvc") if isinstance(meta, dict) else None
    manifest = Manifest.from_dict(raw_manifest, source=path) if raw_manifest is not None else None
    parent = PurePosixPath(path).parent
    raw = str(out["path"])
    joined = posixpath.normpath((parent / raw).as_posix())
    if raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive or joined == ".." or joined.startswith("../"):
        # A hostile repository's pointer must not make pull or checkout write outside it.
        raise SchemaError(
            f"{path}: its output path {raw!r} points outside the repository",
            hint=f"do not pull this commit; restore the pointer with `git checkout -- {path}` or remove it",
            path=path,
        )
    return Pointer(
        path=path,
        out=(parent / raw).as_posix(),
        md5=str(out.get("md5") or ""),
        size=int(out.get("size") or 0),
        nfiles=out.get("nfiles"),
        manifest=manifest,
    )


def read(root: Path, path: str) -> Pointer | None:
    """Parse the pointer at ``root/path`` in the work tree, or None when it does not exist."""
    try:
        text = (root / path).read_bytes()
    except FileNotFoundError:
        return None
    return parse(text, path)


def pointer_path(out: str) -> str:
    """The pointer path for weights at ``out`` (both relative to the repo root)."""
    return out + SUFFIX


def write_manifest(root: Path, path: str, manifest: Manifest) -> None:
    """Write ``manifest`` into the existing pointer ``root/path`` atomically.

    Keeps every key DVC wrote; sets ``type: model`` on the output and
    ``meta.mvc`` to the manifest.
    """
    import yaml

    full = root / path
    data = _load_yaml(full.read_bytes(), path)
    data["outs"][0]["type"] = "model"
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    meta["mvc"] = manifest.to_dict()
    data["meta"] = meta
    text = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, allow_unicode=True)
    write_atomic(full, text.encode())

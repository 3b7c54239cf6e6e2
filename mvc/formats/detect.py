"""Which format a weight file (or a model directory) is: by magic bytes and suffix."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from mvc.errors import CorruptFileError, PathNotFoundError
from mvc.formats import npz_format, opaque, torch_format, torch_legacy
from mvc.formats.base import RE_EXPORT
from mvc.formats.safetensors_format import MAX_HEADER_BYTES

INDEXED = ("safetensors", "npz", "torch", "gguf")
# A damaged file with one of these suffixes is reported as corrupt, not as a blob.
_BY_SUFFIX = {".safetensors": "safetensors", ".gguf": "gguf", ".npz": "npz"}


# Zip-based formats mvc reads: a file with one of these suffixes and the zip magic whose
# archive cannot be opened is corrupt, not a blob.
_ZIP_SUFFIXES = {".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch", ".npz": ".npz"}


def _readable_zip(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
    return True


def sniff(path: Path) -> str:
    """Format of a regular file: magic bytes first, then the suffix.

    ``torch`` means a ``torch.save`` zip archive (legacy pickles and TorchScript are
    ``opaque``); ``safetensors`` needs a plausible header (length, then ``{``).

    Raises:
        CorruptFileError: a torch or npz file (by suffix) whose zip archive is damaged.
    """
    with open(path, "rb") as f:
        head = f.read(32)
    suffix = path.suffix.lower()
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        if suffix in _ZIP_SUFFIXES and not _readable_zip(path):
            # A truncated checkpoint was once versioned as a blob (issue 14).
            raise CorruptFileError(
                f"{path.name} is not a valid {_ZIP_SUFFIXES[suffix]} file: its zip archive is truncated or damaged",
                RE_EXPORT,
            )
        kind = torch_format.archive_kind(path)
        if kind == "torch":
            return "torch"
        if kind is None and (suffix == ".npz" or npz_format.is_npz(path)):
            return "npz"
        return "opaque"
    if torch_legacy.is_legacy(head):
        why = torch_legacy.damage(path)
        if why is not None:  # a truncated legacy checkpoint was versioned as a blob (issue 14)
            raise CorruptFileError(f"{path.name} is not a valid torch file: {why}", RE_EXPORT)
        return "opaque"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= MAX_HEADER_BYTES and 8 + n <= os.path.getsize(path):
            return "safetensors"
    return _BY_SUFFIX.get(suffix, "opaque")


@dataclass(frozen=True)
class DirFile:
    """A regular file inside a model directory."""

    rel: str  # posix path relative to the directory
    path: Path
    size: int
    format: str | None  # None: not a weight file (config.json, tokenizer, hidden files)


def walk(root: Path) -> list[DirFile]:
    """Every regular file under ``root`` (recursively, sorted by relative path).

    Hidden files and anything under a hidden directory (``.cache``, ``.git``) are
    never weight files. Symlinked directories are not followed.
    """
    found: list[DirFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(root)
        hidden_dir = any(part.startswith(".") for part in rel_dir.parts)
        for name in filenames:
            p = base / name
            if not p.is_file():
                continue
            rel = (rel_dir / name).as_posix()
            fmt = None
            if not hidden_dir and not name.startswith("."):
                fmt = sniff(p)
                if fmt == "opaque" and not opaque.is_opaque_weight(p):
                    fmt = None
            found.append(DirFile(rel, p, p.stat().st_size, fmt))
    found.sort(key=lambda f: f.rel)
    return found


def combine(formats: list[str]) -> str:
    """Format of a directory from its weight files' formats."""
    kinds = set(formats)
    if not kinds:
        return "opaque"
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed"


def detect_format(path: Path) -> str:
    """Format of a weight file or model directory.

    Returns:
        ``safetensors``, ``npz``, ``torch``, ``gguf`` or ``opaque`` for a file; for a
        directory the format of its weight files if they agree, ``mixed`` if not,
        ``opaque`` if it has none.

    Raises:
        PathNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        return combine([f.format for f in walk(path) if f.format is not None])
    if not path.exists():
        raise PathNotFoundError(f"{path} does not exist", "check the path of the weights", path=str(path))
    return sniff(path)

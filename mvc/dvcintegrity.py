"""Integrity of stored objects: re-hashing cache and remote objects (issue 11).

Part of the DVC adapter (see :mod:`mvc.dvcstore`): each version's objects are checked
in the local cache or on a remote, and a corrupt copy is dropped or replaced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.dvcstore import _repo, _tree_entries, _VerifiedLog, file_md5
from mvc.errors import MissingObjectError
from mvc.progress import Progress

if TYPE_CHECKING:
    from dvc.repo import Repo


@dataclass(frozen=True)
class CachedFile:
    """One file of a version in the local cache."""

    relpath: str | None  # inside a directory model; None for a single-file model
    oid: str
    path: Path
    present: bool


@dataclass(frozen=True)
class ObjectCheck:
    """The verdict on one stored object: ``ok``, ``corrupt`` or ``missing``."""

    oid: str
    state: str
    detail: str = ""  # why it is corrupt, e.g. "size 10, expected 12"


def cache_files(root: Path, md5: str) -> list[CachedFile]:
    """The cache files holding version ``md5``: the file, or each file a ``.dir`` listing names.

    Raises:
        MissingObjectError: a ``.dir`` listing is not in the cache (its files are unknown).
    """
    with _repo(root) as repo:
        odb = repo.cache.local
        if not md5.endswith(".dir"):
            path = Path(odb.oid_to_path(md5))
            return [CachedFile(None, md5, path, path.is_file())]
        entries = _tree_entries(odb, md5)
        if entries is None:
            raise MissingObjectError(
                f"the listing {md5[:8]}.dir is not in the local cache (or unreadable)",
                hint="fetch it with `mvc pull` or `mvc verify --repair --remote R`",
            )
        return [CachedFile(rel, oid, Path(odb.oid_to_path(oid)), Path(odb.oid_to_path(oid)).is_file()) for rel, oid in entries]


def check_cache(root: Path, md5: str, *, use_state: bool = False, progress: Progress | None = None) -> list[ObjectCheck]:
    """Re-hash the cache objects of version ``md5`` (a ``.dir`` listing and every file in it).

    Args:
        use_state: trust DVC's state database for objects whose inode, mtime and size are
            what they were when the object entered the cache (DVC records them then);
            only changed objects are re-hashed. False re-hashes every byte.
        progress: called as ``progress(oid, bytes, total)`` after each object.

    Returns:
        One verdict per object; a missing ``.dir`` listing hides its files.
    """
    with _repo(root) as repo:
        odb = repo.cache.local
        oids = [md5]
        if md5.endswith(".dir") and odb.exists(md5):
            entries = _tree_entries(odb, md5)
            oids += [oid for _, oid in entries or []]
        checks = []
        trusted = _VerifiedLog(repo).known([odb.oid_to_path(oid) for oid in oids]) if use_state else set()
        for oid in oids:
            path = odb.oid_to_path(oid)
            if not os.path.isfile(path):
                checks.append(ObjectCheck(oid, "missing"))
                continue
            ok = path in trusted or _object_intact(repo, path, oid, use_state=False)
            checks.append(ObjectCheck(oid, "ok" if ok else "corrupt", "" if ok else "bytes do not match the hash"))
            if progress is not None:
                size = os.path.getsize(path)
                progress(oid[:8], size, size)
        return checks


def _object_intact(repo: Repo, path: str, oid: str, use_state: bool) -> bool:
    """True when the cache file ``path`` hashes to ``oid``; with ``use_state`` an object mvc
    verified before, whose inode, mtime and size have not changed since, is trusted without
    reading it (DVC's own state is not enough: it vouches for downloads it never read)."""
    from dvc_data.hashfile.hash_info import HashInfo

    fs = repo.cache.local.fs
    log = _VerifiedLog(repo)
    if use_state and log.knows(path):
        return True
    ok = file_md5(Path(path)) == oid.split(".")[0]
    if ok:
        repo.state.save(path, fs, HashInfo("md5", oid))
        log.record([path])
    return ok


def check_remote(root: Path, md5: str, *, remote: str) -> list[ObjectCheck]:
    """Check that ``remote`` holds every object of version ``md5``, intact where it can tell.

    A local-directory remote is re-hashed; for S3 the single-part ETag (the md5) and
    for GCS the md5 the store reports are compared; sizes are compared with the local
    cache copy when there is one. An object with a multipart ETag is streamed and re-hashed.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or it failed.
    """
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "status")
        cache = repo.cache.local
        oids = [md5]
        if md5.endswith(".dir"):
            entries = _tree_entries(cache, md5) if cache.exists(md5) else _tree_entries(odb, md5)
            oids += [oid for _, oid in entries or []]
        return [_check_remote_object(odb, cache, oid) for oid in oids]


def _check_remote_object(odb: Any, cache: Any, oid: str) -> ObjectCheck:
    path = odb.oid_to_path(oid)
    try:
        info = odb.fs.info(path)
    except FileNotFoundError:
        return ObjectCheck(oid, "missing")
    size = info.get("size")
    local = cache.oid_to_path(oid)
    if size is not None and os.path.isfile(local) and int(size) != os.path.getsize(local):
        return ObjectCheck(oid, "corrupt", f"size {size}, expected {os.path.getsize(local)}")
    actual = _remote_md5(odb, path, info)
    if actual is not None and actual != oid.split(".")[0]:
        return ObjectCheck(oid, "corrupt", "bytes do not match the hash")
    return ObjectCheck(oid, "ok")


def _remote_md5(odb: Any, path: str, info: dict[str, Any]) -> str | None:
    """The md5 of a remote object: as the store reports it, else re-hashed (a local remote,
    an S3 multipart object)."""
    import base64

    if odb.fs.protocol == "local":
        return file_md5(Path(path))
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag and "-" not in etag and len(etag) == 32:
        return etag.lower()
    md5_b64 = info.get("md5Hash")
    if md5_b64:
        return base64.b64decode(md5_b64).hex()
    # No checksum to trust (an S3 multipart ETag is an md5 of part md5s, not of the
    # bytes): stream the object and hash it.
    import hashlib

    digest = hashlib.md5()  # DVC's content address, not security
    with odb.fs.open(path, "rb") as handle:
        while chunk := handle.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def delete_cache_object(root: Path, oid: str) -> None:
    """Remove one (corrupt) object from the local cache; a later fetch brings a fresh copy."""
    with _repo(root) as repo:
        path = Path(repo.cache.local.oid_to_path(oid))
        if path.exists():
            os.chmod(path, 0o644)  # DVC keeps cache files read-only
            path.unlink()


def replace_remote_object(root: Path, oid: str, *, remote: str) -> None:
    """Overwrite a (corrupt) object on ``remote`` with the local cache copy.

    DVC's push skips objects the remote already lists, so it never fixes a bad copy.

    Raises:
        MissingObjectError: the object is not in the local cache.
        RemoteError: the upload failed.
    """
    with _repo(root, remote) as repo:
        local = repo.cache.local.oid_to_path(oid)
        if not os.path.isfile(local):
            raise MissingObjectError(f"object {oid[:8]} is not in the local cache", hint="fetch a good copy first")
        odb = repo.cloud.get_remote_odb(remote, "push")
        target = odb.oid_to_path(oid)
        # Upload first, then replace; never delete first (a failed upload would lose the
        # remote's only copy, corrupt or not). S3 and GCS replace an object atomically when
        # the upload completes; DVC's local filesystem writes a temp file, then renames.
        odb.fs.put_file(local, target)



def drop_corrupt(root: Path, md5s: Iterable[str]) -> list[str]:
    """Re-hash the cached objects of ``md5s`` that mvc has not verified; remove those that are corrupt.

    Objects mvc verified (and that have not changed since) are not re-read. Run before
    a fetch, so that a good copy replaces a bad one, and nothing unverified is checked out.

    Returns:
        The oids removed from the cache.
    """
    with _repo(root) as repo:
        odb = repo.cache.local
        bad = []
        for md5 in md5s:
            oids = [md5]
            if md5.endswith(".dir") and odb.exists(md5):
                if not _object_intact(repo, odb.oid_to_path(md5), md5, use_state=True):
                    bad.append(md5)
                    continue
                oids = [oid for _, oid in _tree_entries(odb, md5) or []]
            trusted = _VerifiedLog(repo).known([odb.oid_to_path(oid) for oid in oids])
            for oid in oids:
                path = odb.oid_to_path(oid)
                if path not in trusted and os.path.isfile(path) and not _object_intact(repo, path, oid, use_state=False):
                    bad.append(oid)
        for oid in bad:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(odb.oid_to_path(oid), 0o644)
                os.unlink(odb.oid_to_path(oid))
        return bad


def corrupt_in_cache(root: Path, md5s: Iterable[str]) -> list[str]:
    """The cached objects of ``md5s`` whose bytes no longer match (not re-reading verified ones)."""
    found = []
    for md5 in md5s:
        found += [c.oid for c in check_cache(root, md5, use_state=True) if c.state == "corrupt"]
    return found


__all__ = [
    "CachedFile",
    "ObjectCheck",
    "cache_files",
    "check_cache",
    "check_remote",
    "corrupt_in_cache",
    "delete_cache_object",
    "drop_corrupt",
    "replace_remote_object",
]

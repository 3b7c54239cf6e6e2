"""gc's view of the stores: listing and removing cache and remote objects, leftover temp
files and unfinished S3 multipart uploads (issue 14).

Part of the DVC adapter (see :mod:`mvc.dvcstore`); :mod:`mvc.cleanup` decides what goes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mvc.dvcstore import _OID, Upload, _abort_upload, _repo, _tree_entries, _uploads_under

# dvc_objects.fs.utils.tmp_fname: f"{prefix}.{token_urlsafe(16)}.tmp" (22 url-safe characters);
# DVC writes every download, cache copy and local-remote upload under such a name first.
DVC_TEMP = re.compile(r"^.*\.[A-Za-z0-9_-]{22}\.tmp$")
# mvc's own temp files in the cache's files/md5 directories: :func:`_precache`'s
# ".mvc-tmp-<pid>-<thread>", a tensors-remote rebuild's ".mvc-rebuild-<pid>-<hex8>" and the
# transfer engine's ".<name>.<token>.mvc.tmp" (mvc.transfer.TMP_SUFFIX): what a killed pull leaves.
_MVC_CACHE_TEMP = re.compile(r"^\.(mvc-tmp-\d+-\d+|mvc-rebuild-\d+-[0-9a-f]{8}|.+\.[A-Za-z0-9_-]{11}\.mvc\.tmp)$")


@dataclass(frozen=True)
class StoredFile:
    """One file of a cache or remote: an object (``oid`` set) or a leftover temp file."""

    path: str  # in the store's own terms: a local path, or bucket/key
    oid: str | None  # None for a temp file
    size: int
    mtime: float | None  # seconds since the epoch, when the store tells


def _classify(parts: list[str], path: str, size: int, mtime: float | None) -> StoredFile | None:
    """An object or temp file at ``parts`` below an object store's ``files/md5``; None for anything else."""
    name = parts[-1]
    if len(parts) == 2 and len(parts[0]) == 2 and _OID.match(parts[0] + name):
        return StoredFile(path, parts[0] + name, size, mtime)
    if len(parts) <= 2 and (DVC_TEMP.match(name) or _MVC_CACHE_TEMP.match(name)):
        return StoredFile(path, None, size, mtime)
    return None


def _local_contents(base: Path) -> list[StoredFile]:
    """The objects and temp files of a local object store rooted at ``base`` (its files/md5)."""
    found = []
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            item = _classify(list(Path(full).relative_to(base).parts), full, st.st_size, st.st_mtime)
            if item is not None:
                found.append(item)
    return found


def cache_contents(root: Path) -> list[StoredFile]:
    """Every object and leftover temp file in the local cache (``files/md5``), with sizes."""
    with _repo(root) as repo:
        return _local_contents(Path(repo.cache.local.path))


def remote_contents(root: Path, remote: str) -> list[StoredFile]:
    """Every object (and, on a local-directory remote, leftover temp file) ``remote`` stores.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or it failed.
    """
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "gc")
        if odb.fs.protocol == "local":
            return _local_contents(Path(odb.path))
        try:
            listing = odb.fs.fs.find(odb.path, detail=True)  # the fsspec filesystem: sizes in one listing
        except FileNotFoundError:
            return []
        base = len(odb.fs.parts(odb.path))
        found = []
        for path, info in listing.items():
            modified = info.get("LastModified")
            mtime = modified.timestamp() if modified is not None else None
            item = _classify(list(odb.fs.parts(path)[base:]), path, int(info.get("size") or 0), mtime)
            if item is not None:
                found.append(item)
        return found


def listing_files(root: Path, md5s: Iterable[str], *, remote: str | None = None) -> tuple[set[str], set[str]]:
    """The oids of the files the ``.dir`` listings among ``md5s`` name, read from the local
    cache or else from ``remote``; and those listings that neither holds (or that are unreadable).
    """
    dirs = sorted({m for m in md5s if m.endswith(".dir")})
    files: set[str] = set()
    unknown: set[str] = set()
    if not dirs:
        return files, unknown
    with _repo(root, remote) as repo:
        cache = repo.cache.local
        odb = repo.cloud.get_remote_odb(remote, "gc") if remote else None
        for md5 in dirs:
            entries = _tree_entries(cache, md5) if cache.exists(md5) else None
            if entries is None and odb is not None:
                entries = _tree_entries(odb, md5)
            if entries is None:
                unknown.add(md5)
            else:
                files.update(oid for _, oid in entries)
    return files, unknown


def remove_from_cache(root: Path, paths: Iterable[str]) -> None:
    """Delete the cache files ``paths`` (as :func:`cache_contents` named them)."""
    with _repo(root) as repo:
        base = Path(repo.cache.local.path).resolve()
    for path in paths:
        full = Path(path)
        if base not in full.resolve().parents:  # never anything outside the cache
            continue
        with contextlib.suppress(FileNotFoundError):
            full.unlink()


def remove_from_remote(root: Path, remote: str, paths: Iterable[str]) -> None:
    """Delete the files ``paths`` (as :func:`remote_contents` named them) from ``remote``.

    Raises:
        RemoteError: the store refused or failed.
    """
    paths = list(paths)
    if not paths:
        return
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "gc")
        odb.fs.remove(paths)


def remote_uploads(root: Path, remote: str) -> list[Upload]:
    """The unfinished multipart uploads under an S3 remote's prefix (none for other remotes).

    Raises:
        RemoteError: the store refused or failed.
    """
    with _repo(root, remote) as repo:
        return _uploads_under(repo.cloud.get_remote_odb(remote, "gc"))


def abort_uploads(root: Path, remote: str, uploads: Iterable[Upload]) -> None:
    """Abort the multipart ``uploads`` on the S3 remote ``remote`` (their parts are freed).

    Raises:
        RemoteError: the store refused or failed.
    """
    uploads = list(uploads)
    if not uploads:
        return
    with _repo(root, remote) as repo:
        s3 = repo.cloud.get_remote_odb(remote, "gc").fs.fs
        for upload in uploads:
            _abort_upload(s3, upload)


__all__ = [
    "DVC_TEMP",
    "StoredFile",
    "abort_uploads",
    "cache_contents",
    "listing_files",
    "remote_contents",
    "remote_uploads",
    "remove_from_cache",
    "remove_from_remote",
]

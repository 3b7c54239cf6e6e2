"""Directory (sharded) versions on a ``tensors`` remote (issue 15).

A directory version (DVC md5 ``<hash>.dir``, e.g. a Hugging Face checkpoint of
``model-0000X-of-0000N.safetensors`` shards) is stored as its ``.dir`` listing, a small
plain DVC object (so ``dvc`` still sees which files the version holds), plus every file
it lists as a tensors-layout version keyed by the file's md5: a recipe and chunks. A
file's delta base is the file at the same relative path in the parent version's
listing, so a fine-tuned sharded checkpoint costs what changed and an unchanged shard
costs nothing.

Pull fetches the listing, rebuilds each file from its recipe into the DVC cache
(:func:`mvc.tensorsync.fetch` checks every md5), and leaves files without a recipe to
DVC's fetch; DVC's checkout then places the directory.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mvc import dvcintegrity, dvcstore, dvctensors, tensorspace, tensorsync
from mvc.errors import MissingObjectError
from mvc.progress import Progress
from mvc.tensorsync import Item

if TYPE_CHECKING:
    from mvc.workspace import Workspace

_OID = re.compile(r"[0-9a-f]{32}")


def is_dir(md5: str) -> bool:
    return md5.endswith(".dir")


def listing(root: Path, md5: str) -> dict[str, str] | None:
    """``relpath -> file md5`` of directory version ``md5`` from the local cache; None when its
    listing is not cached. Entries whose id is not a plain md5 are left out (never a path)."""
    try:
        files = dvcintegrity.cache_files(root, md5)
    except MissingObjectError:
        return None
    return {f.relpath: f.oid for f in files if f.relpath is not None and _OID.fullmatch(f.oid)}


def expand(root: Path, items: list[Item]) -> list[Item]:
    """``items`` with each directory version replaced by one item per file its cached listing
    names (in order, each file once); a directory whose listing is not cached is dropped.

    A file's parents are the files at the same relative path in the parents' listings
    (those cached), labelled with the parent version, so the delta base error names it.
    """
    out: list[Item] = []
    seen: set[str] = set()
    for it in items:
        if not is_dir(it.md5):
            if it.md5 not in seen:
                seen.add(it.md5)
                out.append(it)
            continue
        files = listing(root, it.md5)
        if files is None:
            continue
        parents = [(listing(root, pmd5) if is_dir(pmd5) else None, plabel) for pmd5, plabel in it.parents]
        for rel, oid in files.items():
            if oid in seen:
                continue
            seen.add(oid)
            bases = tuple((p[rel], plabel) for p, plabel in parents if p is not None and rel in p and p[rel] != oid)
            out.append(Item(oid, f"{it.label} file {rel}", bases, it.released))
    return out


def push(root: Path, items: list[Item], *, remote: str, jobs: int | None = None, progress: Progress | None = None) -> int:
    """:func:`mvc.tensorsync.push` that stores directory versions file by file; returns the objects uploaded.

    Each file goes first (a recipe and the chunks the remote lacks, a delta against the
    parent's file at the same path), the listing last: a directory version is on the
    remote once its listing is. A released directory version also gets every file's
    plain DVC object, so plain ``dvc pull`` serves it.

    Raises:
        MissingObjectError: a version's listing or a file is not in the local cache.
        RemoteError: the remote failed.
    """
    dirs = [it.md5 for it in items if is_dir(it.md5)]
    for md5 in dirs:
        if listing(root, md5) is None:
            label = next(it.label for it in items if it.md5 == md5)
            raise MissingObjectError(
                f"the weights of {label} ({md5[:8]}) are not in the local cache", hint="pull them first, or re-add them with `mvc add`"
            )
    count = tensorsync.push(root, expand(root, items), remote=remote, jobs=jobs, progress=progress)
    return count + dvctensors.push_listings(root, dirs, remote=remote)


def fetch(root: Path, items: list[Item], *, remote: str, jobs: int | None = None, progress: Progress | None = None) -> int:
    """:func:`mvc.tensorsync.fetch` that also rebuilds the files of directory versions.

    The listings the cache lacks are downloaded first (plain DVC objects), then every
    listed file the cache lacks is rebuilt from its recipe; files with no recipe are left
    to DVC's fetch, which runs next. Returns the files rebuilt.

    Raises:
        IntegrityError: a chunk is missing or corrupt, or a rebuilt file does not match its md5.
        RemoteError: the remote failed.
    """
    dirs = [it.md5 for it in items if is_dir(it.md5)]
    if dirs:
        dvctensors.fetch_listings(root, dirs, remote=remote)
    return tensorsync.fetch(root, expand(root, items), remote=remote, jobs=jobs, progress=progress)


def on_remote(root: Path, md5: str, *, remote: str) -> bool:
    """True when a tensors remote holds version ``md5``: for a directory, its listing and
    every file it lists (a recipe or the plain object)."""
    if not is_dir(md5):
        return tensorsync.on_remote(root, md5, remote=remote)
    files = listing(root, md5)
    if files is None:
        dvctensors.fetch_listings(root, [md5], remote=remote)
        files = listing(root, md5)
    if files is None or md5 not in dvctensors.listings_on_remote(root, [md5], remote=remote):
        return False
    if not dvcstore.missing_in_remote(root, [md5], remote=remote):
        return True  # every file as a plain object too (the listing is cached: its files count)
    return all(tensorsync.on_remote(root, oid, remote=remote) for oid in set(files.values()))


def is_file_oid(oid: str) -> bool:
    """True when ``oid`` (a listing entry's id) is a plain md5, never a path."""
    return bool(_OID.fullmatch(oid))


def file_hashes(root: Path, md5s: set[str]) -> set[str]:
    """``md5s`` plus the file md5s of every directory version among them whose listing is cached."""
    out = set(md5s)
    for md5 in md5s:
        if is_dir(md5):
            out |= set((listing(root, md5) or {}).values())
    return out


def storage(ws: Workspace, remote: str, *, name: str | None = None) -> tensorspace.StorageReport:
    """:func:`mvc.tensorspace.storage` with each directory version listed once, summed over its files.

    A file stored for an earlier version of the same model (an unchanged shard) counts as
    shared by the later one. Files of no directory version this repository records stay
    listed as they are.

    Raises:
        RemoteError: the remote failed. ModelNotFoundError: ``name`` has no version there.
    """
    from mvc import gitstore, history, pointer
    from mvc.errors import ModelNotFoundError
    from mvc.tensorspace import StorageTotals, VersionStorage

    report = tensorspace.storage(ws, remote)
    labels = history.version_labels(ws, gitstore.all_commits_touching(ws.root, f"*{pointer.SUFFIX}"))
    dirs = sorted((m for m in labels if is_dir(m)), key=lambda m: _order(labels[m], m))
    if dirs:
        missing = [m for m in dirs if listing(ws.root, m) is None]
        if missing:
            dvctensors.fetch_listings(ws.root, missing, remote=remote)
    by_md5 = {v.hash: v for v in report.versions}
    claimed: set[str] = set()
    counted: dict[str, set[str]] = {}  # model -> file md5s stored for an earlier version
    combined: list[VersionStorage] = []
    for md5 in dirs:
        files = listing(ws.root, md5)
        entries = [by_md5[oid] for oid in dict.fromkeys((files or {}).values()) if oid in by_md5]
        if not entries:
            continue
        model, _, number = labels[md5].rpartition(" v")
        seen = counted.setdefault(model, set())
        logical = stored = shared = release = 0
        for e in entries:
            logical += e.logical_bytes
            release += e.release_bytes
            if e.hash in seen:
                shared += e.logical_bytes
            else:
                stored, shared = stored + e.stored_bytes, shared + e.shared_bytes
            seen.add(e.hash)
            claimed.add(e.hash)
        combined.append(
            VersionStorage(
                name=model, version=f"v{number}", hash=md5, logical_bytes=logical, stored_bytes=stored,
                shared_bytes=shared, ratio=round(stored / logical, 4) if logical else 0.0, release_bytes=release,
            )
        )  # fmt: skip
    versions = [v for v in report.versions if v.hash not in claimed] + combined
    versions.sort(key=lambda v: (v.name, int(v.version[1:]) if v.version[1:].isdigit() else 0, v.hash))
    if name is not None:
        versions = [v for v in versions if v.name == name]
        if not versions:
            raise ModelNotFoundError(
                f"remote {remote!r} holds no version of {name!r} in the tensors layout", hint="push it with `mvc push`"
            )
    return replace(report, versions=tuple(versions), totals=StorageTotals.of(versions))


def _order(label: str, md5: str) -> tuple[str, int, str]:
    model, _, number = label.rpartition(" v")
    return model, int(number) if number.isdigit() else 0, md5


__all__ = ["expand", "fetch", "file_hashes", "is_file_oid", "listing", "on_remote", "push", "storage"]

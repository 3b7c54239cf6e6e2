"""Garbage collection: removing what no kept version needs, and the leftovers of interrupted work.

Kept are the versions that any pointer names in a commit reachable from a git ref (local
and remote-tracking branches, tags, the stash), from ``HEAD`` or ``MERGE_HEAD``, in the
index, in the work tree, or in a rollback (``.dvc/tmp/mvc-rollback.json``). Every object
such a pointer names stays, whatever its bytes (a corrupt object is ``mvc verify``'s
business), and so does every file of a kept directory listing. A kept listing found
neither in the cache nor in the remote keeps every file object: gc cannot tell which
ones it needs.

Temp files are removed only when older than ``older_than`` hours, so a command still
running in another terminal keeps its own.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mvc import documents, dvcgc, dvcstore, gitstore, rollback, tensorspace, tensorsync
from mvc.workspace import Workspace

# The hashes a pointer (``*.dvc``) or ``dvc.lock`` names: every ``md5:`` value, read as text so
# that a pointer with conflict markers, or one mvc could not parse, still keeps its objects.
_MD5 = re.compile(rb"\bmd5:[ \t]*['\"]?([0-9a-f]{32}(?:\.dir)?)(?![0-9a-zA-Z.])")
# files.replace_atomic: tempfile.mkstemp(prefix=".<name>.", suffix=files.TEMP_SUFFIX)
_MKSTEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Directories mvc stages weights in next to their target (rollback, get) and sign views in .dvc/tmp.
_STAGING_DIR = re.compile(r"^\.mvc-(checkout|get)-(\d+-)?[a-z0-9_]{8}$")  # get: .mvc-get-<pid>-<random>
_SIGN_DIR = re.compile(r"^mvc-sign-[a-z0-9_]{8}$")
DEFAULT_OLDER_THAN = 1.0  # hours


@dataclass(frozen=True)
class Removal:
    """One thing gc removed (or, in a dry run, would remove)."""

    where: str  # "cache" | "remote" | "work tree"
    kind: str  # "object" | "temp file" | "temp dir" | "upload"
    path: str  # file path, bucket/key, or (for an upload) bucket/key
    oid: str | None  # the object id of an object; the upload id of an upload
    size: int  # bytes (0 for an upload: its parts are not listed)


@dataclass(frozen=True)
class GcResult:
    """Outcome of ``gc``.

    ``removed`` lists each object, temp file and multipart upload removed, or with
    ``dry_run`` that would be; ``kept`` counts the objects the kept versions need;
    ``unknown_listings`` are kept ``.dir`` listings found nowhere (every file object was kept).
    """

    dry_run: bool
    cache: bool
    remote: str | None
    kept: int
    removed: tuple[Removal, ...]
    removed_bytes: int
    unknown_listings: tuple[str, ...]

    def count(self, kind: str, where: str | None = None) -> int:
        """How many removals of ``kind`` (in ``where``, if given)."""
        return sum(1 for r in self.removed if r.kind == kind and (where is None or r.where == where))


def kept_hashes(ws: Workspace) -> set[str]:
    """The hashes (``<md5>`` or ``<md5>.dir``) every kept pointer names."""
    texts = gitstore.kept_pointer_blobs(ws.root)
    texts += [path.read_bytes() for path in _work_tree_pointers(ws.root)]
    hashes = {m.group(1).decode() for text in texts for m in _MD5.finditer(text)}
    try:
        state = documents.load_json((ws.root / rollback.STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    if isinstance(state, dict):
        hashes |= {str(e["hash"]) for e in state.values() if isinstance(e, dict) and e.get("hash")}
    return hashes


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` of the work tree without ``.git`` and ``.dvc`` (any depth) and without following links."""
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".dvc")]
        yield Path(dirpath), dirs, files


def _work_tree_pointers(root: Path) -> list[Path]:
    return [
        d / name
        for d, _dirs, files in _walk(root)
        for name in files
        if (name.endswith(".dvc") or name == "dvc.lock") and (d / name).is_file() and not (d / name).is_symlink()
    ]


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size


def work_tree_temp(ws: Workspace, *, older_than: float) -> list[Removal]:
    """mvc's and DVC's temp files and staging dirs in the work tree and ``.dvc/tmp``, older
    than ``older_than`` hours: left by an interrupted add, pull, checkout, merge or sign."""
    cutoff = time.time() - older_than * 3600
    found: list[Path] = []
    for d, dirs, files in _walk(ws.root):
        staging = [name for name in dirs if _STAGING_DIR.match(name)]
        dirs[:] = [name for name in dirs if name not in staging]
        found += [d / name for name in staging]
        found += [d / name for name in files if _MKSTEMP.match(name) or dvcgc.DVC_TEMP.match(name)]
    tmp = ws.root / ".dvc" / "tmp"
    if tmp.is_dir():
        for entry in tmp.iterdir():
            if (entry.is_dir() and _SIGN_DIR.match(entry.name)) or (entry.is_file() and _MKSTEMP.match(entry.name)):
                found.append(entry)
    removals = []
    for path in sorted(found):
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            kind = "temp dir" if path.is_dir() and not path.is_symlink() else "temp file"
            removals.append(Removal("work tree", kind, path.relative_to(ws.root).as_posix(), None, _size(path)))
        except FileNotFoundError:
            continue
    return removals


def _plan_store(
    where: str, contents: list[dvcgc.StoredFile], keep: set[str], keep_all_files: bool, cutoff: float
) -> list[Removal]:
    removals = []
    for item in sorted(contents, key=lambda f: f.path):
        if item.oid is None:
            if item.mtime is None or item.mtime < cutoff:
                removals.append(Removal(where, "temp file", item.path, None, item.size))
        elif item.oid not in keep and not (keep_all_files and not item.oid.endswith(".dir")):
            removals.append(Removal(where, "object", item.path, item.oid, item.size))
    return removals


def collect(
    ws: Workspace,
    *,
    cache: bool = True,
    remote: str | None = None,
    dry_run: bool = False,
    older_than: float = DEFAULT_OLDER_THAN,
    confirm: Callable[[GcResult], bool] | None = None,
) -> GcResult:
    """Remove from the cache (and ``remote``) every object no kept version needs, and the
    temp files and multipart uploads older than ``older_than`` hours.

    Args:
        cache: clean the local cache and the work tree's temp files.
        remote: also clean this remote (objects, temp files of a directory remote, and
            unfinished S3 multipart uploads).
        dry_run: remove nothing; the result lists what would go.
        confirm: called with the plan before anything is removed; False removes nothing
            (the result is then returned as a dry run).

    Raises:
        RemoteNotFoundError / RemoteError: ``remote`` is unknown or failed.
        LockedError: another mvc or dvc process holds the repository.
    """
    cutoff = time.time() - older_than * 3600
    kept_recipes: frozenset[str] = frozenset()
    with dvcstore.lock(ws.root):
        hashes = kept_hashes(ws)
        files, unknown = dvcgc.listing_files(ws.root, hashes, remote=remote)
        keep = hashes | files
        removals: list[Removal] = []
        if cache:
            removals += _plan_store("cache", dvcgc.cache_contents(ws.root), keep, bool(unknown), cutoff)
            removals += work_tree_temp(ws, older_than=older_than)
        if remote is not None:
            removals += _plan_store("remote", dvcgc.remote_contents(ws.root, remote), keep, bool(unknown), cutoff)
            removals += [
                Removal("remote", "upload", u.key, u.upload_id, 0)
                for u in dvcgc.remote_uploads(ws.root, remote)
                if u.initiated < cutoff
            ]
            if tensorsync.layout(ws.root, remote) == tensorsync.TENSORS and not unknown:  # issue 15: recipes and chunks
                tensors = tensorspace.garbage(ws.root, remote, keep, cutoff=cutoff)
                kept_recipes = tensors.kept
                removals += [  # the files of kept directory versions keep their recipes too
                    Removal("remote", "object", g.path, f"{g.kind}:{g.id}", g.size) for g in tensors.items
                ]
        plan = GcResult(
            dry_run=True,
            cache=cache,
            remote=remote,
            kept=len(keep),
            removed=tuple(removals),
            removed_bytes=sum(r.size for r in removals),
            unknown_listings=tuple(sorted(unknown)),
        )
        if dry_run or (removals and confirm is not None and not confirm(plan)):
            return plan
        spared = _apply(ws, plan, kept_recipes)
        done = tuple(r for r in plan.removed if r not in spared)
        return replace(plan, dry_run=False, removed=done, removed_bytes=sum(r.size for r in done))


def _apply(ws: Workspace, plan: GcResult, kept_recipes: frozenset[str] = frozenset()) -> set[Removal]:
    """Remove what ``plan`` lists: directory listings last, so an interrupted gc leaves none
    whose files are gone while it remains. Returns the removals skipped: tensor chunks that a
    version pushed since the plan needs (``kept_recipes``: the recipes the plan read and kept)."""
    removed = sorted(plan.removed, key=lambda r: bool(r.oid and r.oid.endswith(".dir")))
    cache = [r.path for r in removed if r.where == "cache"]
    dvcgc.remove_from_cache(ws.root, cache)
    for r in removed:
        if r.where == "work tree":
            path = ws.root / r.path
            if r.kind == "temp dir":
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    spared: set[Removal] = set()
    if plan.remote is not None:
        tensors = [r for r in removed if r.oid and r.oid.startswith(("recipe:", "chunk:"))]
        if tensors:
            garbage = {tensorspace.Garbage(r.path, r.oid.partition(":")[0], r.oid.partition(":")[2], r.size): r for r in tensors if r.oid}
            kept = tensorspace.remove_garbage(ws.root, plan.remote, list(garbage), kept=kept_recipes)
            spared = {garbage[g] for g in kept}
        removed = [r for r in removed if r not in tensors]
        dvcgc.remove_from_remote(ws.root, plan.remote, [r.path for r in removed if r.where == "remote" and r.kind != "upload"])
        uploads = [dvcstore.Upload(r.path, r.oid or "", 0.0) for r in removed if r.kind == "upload"]
        dvcgc.abort_uploads(ws.root, plan.remote, uploads)
    return spared

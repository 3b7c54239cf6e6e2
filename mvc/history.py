"""A model's versions over git history, read from git objects (no checkout, no DVC).

One ``git log`` finds the commits that changed the pointer; one ``git cat-file --batch``
reads the pointer at all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mvc import documents, files, gitstore, pointer, settings
from mvc.errors import ModelNotFoundError, SchemaError
from mvc.manifest import Manifest, Parent
from mvc.pointer import Pointer
from mvc.workspace import Workspace, models


@dataclass(frozen=True)
class VersionRecord:
    """One version of a model as found in git history.

    ``commit`` is the commit that recorded the version (a merge commit that kept one
    side's pointer unchanged records none). ``branch`` is the branch the walk
    reached it from (only with ``all_branches``). ``key_metrics`` are the metrics named in
    the repository's ``key_metrics`` setting, or all metrics when none is set.
    """

    name: str
    version: int
    hash: str
    commit: str
    branch: str | None
    date: str
    author: str
    subject: str
    pointer: str
    parents: tuple[Parent, ...]
    key_metrics: dict[str, Any]
    manifest: Manifest
    outside_mvc: bool  # the weights were re-added by plain `dvc add` (manifest stale)


CACHE_FILE = ".dvc/tmp/mvc-pointer-docs.json"  # DVC and git ignore .dvc/tmp


class _Documents:
    """Loaded pointer documents by content digest, kept in :data:`CACHE_FILE`.

    Pure-Python YAML construction is most of `mvc log`'s time (~0.35 ms a pointer, 500
    versions: 0.2 s); a pointer blob never changes, so its loaded form is cached and the
    next log reads one JSON file instead.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / CACHE_FILE
        try:
            docs = documents.load_json(self.path.read_bytes())
        except (OSError, ValueError):
            docs = {}
        self.docs: dict[str, Any] = docs if isinstance(docs, dict) else {}
        self.added = False

    def parse(self, data: bytes, path: str) -> Pointer:
        """Like :func:`mvc.pointer.parse` (same errors), from the cache when it holds ``data``."""
        key = hashlib.blake2b(data, digest_size=16).hexdigest()
        doc = self.docs.get(key)
        if doc is None:
            doc = pointer.load_yaml(data, path)
            if _json_exact(doc):  # e.g. a YAML date would come back as a string: do not cache it
                self.docs[key] = doc
                self.added = True
        return pointer.from_data(doc, path)

    def save(self) -> None:
        if self.added:
            try:
                files.write_atomic(self.path, json.dumps(self.docs, separators=(",", ":")).encode())
            except OSError:  # a read-only checkout: the cache is only an optimisation
                pass


def _json_exact(value: Any) -> bool:
    """True when JSON gives ``value`` back unchanged (str keys; str, int, float, bool, None leaves)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _matches(ptr: Pointer, name: str) -> bool:
    return ptr.manifest is not None and name in (ptr.manifest.name, ptr.out, ptr.path)


def pointer_for(ws: Workspace, name: str, *, rev: str | None = None) -> str:
    """The pointer path of model ``name``: from the work tree, else from ``rev`` or any branch tip.

    Args:
        ws: the repository.
        name: model name, weights path or pointer path.
        rev: a commit to look in first when the work tree does not have the model.

    Returns:
        The pointer's path relative to the repository root.

    Raises:
        ModelNotFoundError: no model of that name anywhere; the message lists the known ones.
        SchemaError: a work-tree pointer is not valid YAML or from a newer mvc.
    """
    work = models(ws)
    for ptr in work:
        if _matches(ptr, name):
            return ptr.path
    revs = [rev] if rev else []
    revs += [sha for _, sha in gitstore.branches(ws.root)]
    for r in dict.fromkeys(revs):
        if gitstore.resolve_rev(ws.root, r) is None:
            continue
        paths = gitstore.list_files(ws.root, r, suffix=pointer.SUFFIX)
        for path, data in zip(paths, gitstore.read_blobs(ws.root, [(r, p) for p in paths]), strict=True):
            if data is None:
                continue
            try:
                ptr = pointer.parse(data, path)
            except SchemaError:
                continue
            if _matches(ptr, name):
                return path
    known = tuple(p.manifest.name for p in work if p.manifest)
    raise ModelNotFoundError.among(name, known, hint="see `mvc status` or `mvc log --all-branches`")


def walk(
    ws: Workspace,
    name: str,
    *,
    rev: str = "HEAD",
    all_branches: bool = False,
    remotes: bool = False,
    path: str | None = None,
) -> list[tuple[VersionRecord, Pointer]]:
    """Every committed version of ``name`` with its parsed pointer, newest first.

    See :func:`versions`.
    """
    path = path or pointer_for(ws, name, rev=None if all_branches else rev)
    commits = list({info.sha: (info, branch) for info, branch in gitstore.log_path(
        ws.root, path, rev=rev, all_branches=all_branches, remotes=remotes)}.values())
    # A merge commit that kept one side's pointer records no new version: read the
    # pointer at each merge's parents too (same cat-file batch) to recognise it.
    merge_parents = [p for info, _ in commits if len(info.parents) > 1 for p in info.parents]
    blobs = gitstore.read_blobs(ws.root, [(info.sha, path) for info, _ in commits] + [(p, path) for p in merge_parents])
    at = dict(zip([info.sha for info, _ in commits] + merge_parents, blobs, strict=True))
    keys = settings.load(ws.root).key_metrics
    docs = _Documents(ws.root)
    found: list[tuple[VersionRecord, Pointer]] = []
    for info, branch in commits:
        data = at[info.sha]
        if data is None:  # the pointer was deleted in this commit
            continue
        if len(info.parents) > 1 and any(at[p] == data for p in info.parents):
            continue
        ptr = docs.parse(data, path)
        m = ptr.effective
        if m is None:
            continue
        record = VersionRecord(
            name=m.name,
            version=m.version,
            hash=ptr.md5,
            commit=info.sha,
            branch=branch,
            date=info.date,
            # One source for who made a version (issue 17): the manifest's author, which
            # `mvc add` takes from the git identity; the commit's for a plain `dvc add`.
            author=m.author or f"{info.author} <{info.email}>",
            subject=info.subject,
            pointer=path,
            parents=m.parents,
            key_metrics={k: m.metrics[k] for k in keys if k in m.metrics} if keys else dict(m.metrics),
            manifest=m,
            outside_mvc=ptr.outside_mvc,
        )
        found.append((record, ptr))
    found = _unique_versions(ws.root, found, renumber=not all_branches)
    docs.save()
    return found


def merge_number(sides: Sequence[Pointer]) -> int:
    """The number of a version that merges ``sides`` (experiment promotion, a resolved
    conflict): one above the highest side, so it sorts after everything it merges."""
    return max(p.version for p in sides) + 1


def effective_number(ws: Workspace, ptr: Pointer) -> int:
    """The version number of ``ptr`` as ``mvc log`` numbers it on this branch.

    :attr:`Pointer.effective` owns the number a pointer records; along one branch a
    version whose number an ancestor already took (a rebase, a revert) is renumbered
    by :func:`_unique_versions`, and status, show, diff and add say the same.
    """
    return effective_numbers(ws, [ptr])[ptr.path]


def effective_numbers(ws: Workspace, ptrs: Sequence[Pointer]) -> dict[str, int]:
    """:func:`effective_number` of each of ``ptrs`` (by pointer path): one ``HEAD`` lookup,
    one read and at most one write of the kept numbers for all of them."""
    head = gitstore.head_commit(ws.root)
    if head is None:
        return {p.path: p.version for p in ptrs}
    numbers = _Numbers(ws.root, head)
    out = {}
    for ptr in ptrs:
        key = f"{ptr.path}:{ptr.md5}"
        number = numbers.get(key)
        if number is None:
            number = next((rec.version for rec in versions(ws, "", path=ptr.path) if rec.hash == ptr.md5), ptr.version)
            numbers.put(key, number)
        out[ptr.path] = number
    numbers.save()
    return out


NUMBERS_FILE = ".dvc/tmp/mvc-numbers.json"  # DVC and git ignore .dvc/tmp


class _Numbers:
    """:func:`effective_number`'s answers for one ``HEAD``, kept in :data:`NUMBERS_FILE`.

    The number depends only on the history ``HEAD`` reaches, so it is computed once per
    commit: ``mvc status`` with 20 models walked 20 histories (6 git processes each) on
    every run. A new ``HEAD`` starts the file afresh.
    """

    def __init__(self, root: Path, head: str) -> None:
        self.path = root / NUMBERS_FILE
        self.head = head
        try:
            doc = documents.load_json(self.path.read_bytes())
        except (OSError, ValueError):
            doc = {}
        numbers = doc.get("numbers") if isinstance(doc, dict) and doc.get("head") == head else None
        self.numbers: dict[str, int] = numbers if isinstance(numbers, dict) else {}
        self._changed = False

    def get(self, key: str) -> int | None:
        value = self.numbers.get(key)
        return value if isinstance(value, int) else None

    def put(self, key: str, number: int) -> None:
        self.numbers[key] = number
        self._changed = True

    def save(self) -> None:
        """Write the numbers back when :meth:`put` added any."""
        if not self._changed:
            return
        try:
            files.write_atomic(self.path, json.dumps({"head": self.head, "numbers": self.numbers}).encode())
        except OSError:  # a read-only checkout: the file is only an optimisation
            pass
        self._changed = False


def _unique_versions(
    root: Path, found: list[tuple[VersionRecord, Pointer]], *, renumber: bool
) -> list[tuple[VersionRecord, Pointer]]:
    """One record per version (newest first), numbered uniquely along one branch.

    A commit that re-records the weights of the version before it (``mvc eval --record``,
    ``mvc add`` adopting a plain ``dvc add``) is that same version with newer metadata:
    only the newest record is kept (issue 17). Along one branch (``renumber``), a version
    whose number an older, different version already has (after ``git revert`` then
    ``mvc add``, or a rebase onto a branch that made the same number) takes the
    branch's highest number + 1, and a version recorded again (a revert) keeps its number (issue 14).
    """
    kept: list[tuple[VersionRecord, Pointer]] = []
    number_of: dict[tuple[str, int], int] = {}  # (hash, recorded number) -> number along the branch
    taken: dict[int, list[tuple[str, str]]] = {}  # number -> (hash, commit) of the versions that have it
    for rec, ptr in reversed(found):
        if renumber:
            key = (rec.hash, rec.version)
            number = number_of.get(key)
            if number is None:
                number = rec.version
                # Two sides of a merge may both have a v4 (DESIGN.md): only an ancestor's
                # number is taken from this version.
                if any(h != rec.hash and gitstore.is_ancestor(root, c, rec.commit) for h, c in taken.get(number, ())):
                    number = max(taken) + 1
                number_of[key] = number
                taken.setdefault(number, []).append((rec.hash, rec.commit))
            if number != rec.version:
                rec = replace(rec, version=number, manifest=rec.manifest.evolve(version=number))
        if kept and kept[-1][0].hash == rec.hash and kept[-1][0].version == rec.version:
            kept[-1] = (rec, ptr)  # the same version re-recorded: the newer record wins
        else:
            kept.append((rec, ptr))
    kept.reverse()
    return kept


def versions(
    ws: Workspace,
    name: str,
    *,
    rev: str = "HEAD",
    all_branches: bool = False,
    remotes: bool = False,
    path: str | None = None,
) -> list[VersionRecord]:
    """Every committed version of ``name``, newest first.

    Args:
        ws: the repository.
        name: model name (or weights / pointer path).
        rev: whose history to walk (ignored with ``all_branches``).
        all_branches: walk every local branch (and with ``remotes`` every remote-tracking one).
        path: the pointer path, when the caller knows it already.

    Returns:
        One record per commit that recorded a version; a merge commit that kept one
        side's pointer unchanged adds no record.

    Raises:
        ModelNotFoundError: unknown model.
        SchemaError: a pointer in history is not valid YAML or from a newer mvc.
    """
    return [rec for rec, _ in walk(ws, name, rev=rev, all_branches=all_branches, remotes=remotes, path=path)]


def version_labels(ws: Workspace, commits: Sequence[str]) -> dict[str, str]:
    """``md5 -> "NAME vN"`` of every model version recorded at ``commits`` (one ``git cat-file --batch``)."""
    labels: dict[str, str] = {}
    with gitstore.blob_reader(ws.root) as blob:
        for commit in commits:
            for path in gitstore.list_files(ws.root, commit, suffix=pointer.SUFFIX):
                data = blob(commit, path)
                try:
                    ptr = pointer.parse(data, path) if data is not None else None
                except SchemaError:
                    continue
                if ptr is not None and ptr.manifest is not None and ptr.md5:
                    labels.setdefault(ptr.md5, f"{ptr.manifest.name} v{ptr.version}")
    return labels

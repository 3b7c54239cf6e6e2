"""A model's versions over git history, read from git objects (no checkout, no DVC).

One ``git log`` finds the commits that changed the pointer; one ``git cat-file --batch``
reads the pointer at each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mvc import gitstore, pointer
from mvc.errors import ModelNotFoundError, SchemaError
from mvc.manifest import Manifest
from mvc.workspace import Workspace, models


@dataclass(frozen=True)
class VersionRecord:
    """One version of a model as found in git history."""

    name: str
    version: int
    hash: str
    commit: str
    branch: str | None
    date: str
    author: str
    subject: str
    pointer: str
    manifest: Manifest
    outside_mvc: bool  # the weights were re-added by plain `dvc add` (manifest stale)

    @property
    def parents(self) -> tuple[str, ...]:
        """Parent versions as ``vN``."""
        return tuple(f"v{p.version}" for p in self.manifest.parents)


def pointer_for(ws: Workspace, name: str, *, rev: str | None = None) -> str:
    """The pointer path of model ``name``: from the work tree, else from ``rev`` or any branch tip.

    Raises:
        ModelNotFoundError: no model of that name anywhere.
    """
    for ptr in models(ws):
        assert ptr.manifest is not None
        if name in (ptr.manifest.name, ptr.out, ptr.path):
            return ptr.path
    revs = [rev] if rev else []
    revs += [sha for _, sha in gitstore.branches(ws.root)]
    with gitstore.blob_reader(ws.root) as read:
        for r in revs:
            if gitstore.resolve_rev(ws.root, r) is None:
                continue
            for path in gitstore.list_files(ws.root, r, suffix=pointer.SUFFIX):
                data = read(r, path)
                if data is None:
                    continue
                try:
                    ptr = pointer.parse(data, path)
                except SchemaError:
                    continue
                if ptr.manifest is not None and name in (ptr.manifest.name, ptr.out, ptr.path):
                    return path
    known = ", ".join(p.manifest.name for p in models(ws) if p.manifest) or "none yet"
    raise ModelNotFoundError(f"no model named {name!r} (models: {known})", hint="see `mvc status` or `mvc log --all-branches`")


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

    A commit whose pointer cannot be parsed is skipped only when it is not an
    mvc pointer; a newer-schema manifest raises :class:`SchemaError`.
    """
    path = path or pointer_for(ws, name, rev=None if all_branches else rev)
    commits = gitstore.log_path(ws.root, path, rev=rev, all_branches=all_branches, remotes=remotes)
    records: list[VersionRecord] = []
    seen: set[str] = set()
    with gitstore.blob_reader(ws.root) as read:
        for info, branch in commits:
            if info.sha in seen:
                continue
            seen.add(info.sha)
            data = read(info.sha, path)
            if data is None:  # the pointer was deleted in this commit
                continue
            ptr = pointer.parse(data, path)
            if ptr.manifest is None:
                continue
            m = ptr.manifest
            records.append(
                VersionRecord(
                    name=m.name,
                    version=m.version + (1 if ptr.outside_mvc else 0),
                    hash=ptr.md5,
                    commit=info.sha,
                    branch=branch,
                    date=info.date,
                    author=f"{info.author} <{info.email}>",
                    subject=info.subject,
                    pointer=path,
                    manifest=m,
                    outside_mvc=ptr.outside_mvc,
                )
            )
    return records

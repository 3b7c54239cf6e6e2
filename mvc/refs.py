"""The one resolver of model references.

Syntax: ``NAME`` (the work tree), ``NAME@vN`` (version number), ``NAME@latest``,
``NAME@vX.Y.Z`` (a registry release tag), ``NAME@STAGE`` (a registry stage, e.g. ``prod``),
``NAME@<git rev>`` (branch, tag, sha, ``HEAD~2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mvc import gitstore, history, pointer
from mvc.errors import AmbiguousRefError, ModelNotFoundError, RefNotFoundError, UsageError
from mvc.pointer import Pointer
from mvc.workspace import Workspace, find_model

VERSION_RE = re.compile(r"^v(\d+)$")
SEMVER_RE = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class Resolved:
    """A model version a ref points to."""

    name: str
    ref: str  # the text the user gave
    pointer: Pointer  # the pointer as recorded at ``commit`` (or in the work tree)
    commit: str | None  # None: the work tree

    @property
    def version(self) -> int:
        """The version number (plain `dvc add` re-adds count as one more)."""
        assert self.pointer.manifest is not None
        return self.pointer.manifest.version + (1 if self.pointer.outside_mvc else 0)

    @property
    def hash(self) -> str:
        """The content hash of the weights."""
        return self.pointer.md5


def split(ref: str) -> tuple[str, str | None]:
    """``"net@v3"`` -> ``("net", "v3")``; ``"net"`` -> ``("net", None)``.

    Raises:
        UsageError: empty name or empty part after ``@``.
    """
    name, sep, spec = ref.partition("@")
    if not name or (sep and not spec):
        raise UsageError(f"{ref!r} is not a model reference", hint="write NAME, NAME@v3, NAME@main or NAME@prod")
    return name, (spec if sep else None)


def resolve(ws: Workspace, ref: str) -> Resolved:
    """Resolve ``ref`` to one model version.

    Raises:
        ModelNotFoundError: unknown model.
        RefNotFoundError: unknown ref, or the model did not exist there.
        AmbiguousRefError: ``vN`` names different weights on several branches.
    """
    name, spec = split(ref)
    if spec is None:
        return Resolved(name=_name(find_model(ws, name)), ref=ref, pointer=find_model(ws, name), commit=None)
    path = history.pointer_for(ws, name)
    if spec == "latest":
        return _latest(ws, name, ref, path)
    match = VERSION_RE.match(spec)
    if match:
        return _by_number(ws, name, ref, path, int(match.group(1)))
    tagged = _registry_commit(ws, name, spec)
    if tagged is not None:
        return _at_commit(ws, name, ref, path, tagged, spec)
    sha = gitstore.resolve_rev(ws.root, spec)
    if sha is None:
        raise RefNotFoundError(
            f"{ref}: {spec!r} is not a version, stage, tag, branch or commit",
            hint=f"list versions with `mvc log {name} --all-branches`",
        )
    return _at_commit(ws, name, ref, path, sha, spec)


def _name(ptr: Pointer) -> str:
    assert ptr.manifest is not None
    return ptr.manifest.name


def _at_commit(ws: Workspace, name: str, ref: str, path: str, sha: str, spec: str) -> Resolved:
    data = gitstore.read_blob(ws.root, sha, path)
    if data is None:
        raise RefNotFoundError(
            f"{ref}: model {name!r} did not exist at {spec} ({sha[:8]})",
            hint=f"list its versions with `mvc log {name}`",
        )
    ptr = pointer.parse(data, path)
    if ptr.manifest is None:
        raise RefNotFoundError(f"{ref}: {path} at {spec} carries no mvc manifest", hint="pick a later commit")
    return Resolved(name=name, ref=ref, pointer=ptr, commit=sha)


def _record(ws: Workspace, ref: str, rec: history.VersionRecord) -> Resolved:
    return _at_commit(ws, rec.name, ref, rec.pointer, rec.commit, rec.commit)


def _latest(ws: Workspace, name: str, ref: str, path: str) -> Resolved:
    records = history.versions(ws, name, path=path)
    if not records:
        raise RefNotFoundError(f"{ref}: {name!r} has no committed version on this branch", hint="commit one with `mvc commit`")
    best = max(records, key=lambda r: r.version)
    return _record(ws, ref, best)


def _by_number(ws: Workspace, name: str, ref: str, path: str, number: int) -> Resolved:
    here = [r for r in history.versions(ws, name, path=path) if r.version == number]
    if here:
        return _record(ws, ref, here[0])
    everywhere = [r for r in history.versions(ws, name, path=path, all_branches=True) if r.version == number]
    distinct: dict[str, history.VersionRecord] = {}
    for rec in everywhere:
        distinct.setdefault(rec.hash, rec)
    if not distinct:
        raise RefNotFoundError(f"{ref}: {name!r} has no version {number}", hint=f"list its versions with `mvc log {name} --all-branches`")
    if len(distinct) > 1:
        listing = "; ".join(f"{r.hash[:8]} on {r.branch or '?'} ({r.commit[:8]})" for r in distinct.values())
        raise AmbiguousRefError(
            f"{ref} is ambiguous: v{number} exists with different weights: {listing}",
            hint=f"name one by branch or commit, e.g. {name}@{next(iter(distinct.values())).commit[:8]}",
        )
    return _record(ws, ref, next(iter(distinct.values())))


def _registry_commit(ws: Workspace, name: str, spec: str) -> str | None:
    """The commit a registry release tag or stage points to, or None."""
    if SEMVER_RE.match(spec):
        sha = gitstore.resolve_rev(ws.root, f"refs/tags/{name}@{spec}")
        if sha is None:
            raise RefNotFoundError(f"{name}@{spec}: no such release", hint=f"see `mvc registry {name}`")
        return sha
    try:
        from mvc import registry
    except ImportError:  # the registry arrives with the experiments issue
        return None
    return registry.stage_commit(ws, name, spec)


__all__ = ["ModelNotFoundError", "Resolved", "resolve", "split"]

"""The one resolver of model references.

Syntax: ``NAME`` (the work tree), ``NAME@vN`` (version number), ``NAME@latest``,
``NAME@vX.Y.Z`` (a registry release tag), ``NAME@STAGE`` (a registry stage, e.g. ``prod``),
``NAME@<git rev>`` (branch, tag, sha, ``HEAD~2``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mvc import gitstore, history, pointer
from mvc.errors import AmbiguousRefError, ModelNotFoundError, NotFoundError, RefNotFoundError, UsageError
from mvc.pointer import Pointer
from mvc.workspace import Workspace, find_model

VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class VersionRef:
    """A resolved version as results report it (diff sides, merge inputs)."""

    ref: str
    name: str
    version: int
    hash: str
    commit: str | None


@dataclass(frozen=True)
class Resolved:
    """A model version a ref points to."""

    name: str
    ref: str  # the text the user gave
    pointer: Pointer  # the pointer as recorded at ``commit`` (or in the work tree)
    commit: str | None  # None: the work tree
    number: int | None = None  # the number history gives it on this branch, when it differs

    @property
    def version(self) -> int:
        """The version number (:attr:`Pointer.effective`, renumbered along the branch by history)."""
        return self.number if self.number is not None else self.pointer.version

    @property
    def hash(self) -> str:
        """The content hash of the weights."""
        return self.pointer.md5

    def describe(self) -> VersionRef:
        """This version as results report it."""
        return VersionRef(ref=self.ref, name=self.name, version=self.version, hash=self.hash, commit=self.commit)


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

    Args:
        ws: the repository.
        ref: ``NAME``, ``NAME@vN``, ``NAME@latest``, ``NAME@vX.Y.Z``, ``NAME@STAGE`` or ``NAME@<git rev>``.

    Raises:
        UsageError: not a model reference.
        ModelNotFoundError: unknown model (the message lists the known ones).
        RefNotFoundError: unknown ref, or the model did not exist there.
        AmbiguousRefError: ``vN`` names different weights (on several branches, or on both
            sides of a merge); the message lists each with its hash, branch and commit.
        SchemaError: a pointer is not valid YAML or from a newer mvc.
    """
    return resolve_all(ws, [ref])[0]


def resolve_all(ws: Workspace, refs: Sequence[str]) -> list[Resolved]:
    """Resolve several refs, reading each model's history at most once (``mvc diff``).

    Raises:
        The errors of :func:`resolve`.
    """
    lookup = _Lookup(ws)
    out = []
    for ref in refs:
        try:
            out.append(lookup.resolve(ref))
        except (NotFoundError, AmbiguousRefError) as exc:  # the error names what it is about (issue 18)
            exc.ref = exc.ref or ref
            exc.name = exc.name or split(ref)[0]
            raise
    return out


class _Lookup:
    """One resolution session: pointer paths and history walks are read once and reused."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._paths: dict[str, str] = {}
        self._walks: dict[tuple[str, bool], list[tuple[history.VersionRecord, Pointer]]] = {}

    def path(self, name: str) -> str:
        if name not in self._paths:
            self._paths[name] = history.pointer_for(self.ws, name)
        return self._paths[name]

    def walk(self, name: str, *, all_branches: bool = False) -> list[tuple[history.VersionRecord, Pointer]]:
        key = (name, all_branches)
        if key not in self._walks:
            self._walks[key] = history.walk(self.ws, name, path=self.path(name), all_branches=all_branches)
        return self._walks[key]

    def resolve(self, ref: str) -> Resolved:
        name, spec = split(ref)
        if spec is None:
            ptr = find_model(self.ws, name)
            return Resolved(name=_name(ptr), ref=ref, pointer=ptr, commit=None, number=history.effective_number(self.ws, ptr))
        path = self.path(name)
        if spec == "latest":
            return self._latest(name, ref)
        match = VERSION_RE.match(spec)
        if match:
            return self._by_number(name, ref, int(match.group(1)))
        tagged = _registry_commit(self.ws, name, spec)
        if tagged is not None:
            return _at_commit(self.ws, name, ref, path, tagged, spec)
        sha = gitstore.resolve_rev(self.ws.root, spec)
        if sha is None:
            raise RefNotFoundError(
                f"{ref}: {spec!r} is not a version, stage, tag, branch or commit",
                hint=f"list versions with `mvc log {name} --all-branches`",
            )
        return _at_commit(self.ws, name, ref, path, sha, spec)

    def _latest(self, name: str, ref: str) -> Resolved:
        """The highest version on this branch; of equal numbers, the one HEAD records, else the newest."""
        found = self.walk(name)
        if not found:
            raise RefNotFoundError(f"{ref}: {name!r} has no committed version on this branch", hint="commit one with `mvc commit`")
        top = max(rec.version for rec, _ in found)
        best = [(rec, ptr) for rec, ptr in found if rec.version == top]
        head = gitstore.read_blob(self.ws.root, "HEAD", self.path(name))
        head_md5 = pointer.parse(head, self.path(name)).md5 if head is not None else None
        rec, ptr = next(((r, p) for r, p in best if r.hash == head_md5), best[0])
        return Resolved(name=rec.name, ref=ref, pointer=ptr, commit=rec.commit, number=rec.version)

    def _by_number(self, name: str, ref: str, number: int) -> Resolved:
        here = _distinct(self.walk(name), number)
        candidates = here or _distinct(self.walk(name, all_branches=True), number)
        if not candidates:
            raise RefNotFoundError(f"{ref}: {name!r} has no version {number}", hint=f"list its versions with `mvc log {name} --all-branches`")
        if len(candidates) > 1:
            branch_of = {rec.commit: rec.branch for rec, _ in self.walk(name, all_branches=True)}
            listing = "; ".join(
                f"{rec.hash[:8]} on {branch_of.get(rec.commit) or 'no branch'} (commit {rec.commit[:8]})" for rec, _ in candidates
            )
            first = candidates[0][0]
            raise AmbiguousRefError(
                f"{ref} is ambiguous: v{number} exists with different weights: {listing}",
                hint=f"name one by branch or commit, e.g. {name}@{branch_of.get(first.commit) or first.commit[:8]}",
                candidates=tuple(f"{name}@{branch_of.get(rec.commit) or rec.commit[:8]}" for rec, _ in candidates),
            )
        rec, ptr = candidates[0]
        return Resolved(name=rec.name, ref=ref, pointer=ptr, commit=rec.commit, number=rec.version)


def _distinct(
    found: list[tuple[history.VersionRecord, Pointer]], number: int
) -> list[tuple[history.VersionRecord, Pointer]]:
    """The records of version ``number``, one per content hash (the newest record of each:
    metrics recorded later on the same version win, issue 17)."""
    distinct: dict[str, tuple[history.VersionRecord, Pointer]] = {}
    for rec, ptr in found:
        if rec.version == number:
            distinct.setdefault(rec.hash, (rec, ptr))
    return list(distinct.values())


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
    return Resolved(name=_name(ptr), ref=ref, pointer=ptr, commit=sha)


def _registry_commit(ws: Workspace, name: str, spec: str) -> str | None:
    """The commit a registry release tag or stage points to, or None."""
    from mvc import registry  # imported here: registry imports this module

    if registry.SEMVER_RE.match(spec):  # GTO's release pattern, owned by the registry
        sha = gitstore.resolve_rev(ws.root, f"refs/tags/{name}@{spec}")
        if sha is None:
            raise RefNotFoundError(f"{name}@{spec}: no such release", hint=f"see `mvc registry {name}`")
        return sha
    return registry.stage_commit(ws, name, spec)


__all__ = ["ModelNotFoundError", "Resolved", "resolve", "resolve_all", "split"]

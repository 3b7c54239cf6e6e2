"""Experiments: one git branch ``exp/NAME`` each, listed and compared from git objects.

An experiment starts with a commit on its branch that adds ``.mvc/experiments/NAME.json``
(base commit, base branch, intended params). Listing reads that record and every model
pointer at each branch tip through one ``git cat-file --batch``: no checkout, no DVC.
Commands that move the work tree to another commit also sync the weights
(:func:`sync_worktree`) and refuse to overwrite weights that no version records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mvc import documents, dvcstore, files, gitstore, history, pointer, rollback, settings, sync, workspace
from mvc.errors import (
    ConflictError,
    MissingObjectError,
    MvcError,
    RefNotFoundError,
    SchemaError,
    UsageError,
)
from mvc.manifest import Parent
from mvc.pointer import Pointer
from mvc.workspace import Workspace

PREFIX = "exp/"
RECORD_DIR = ".mvc/experiments"
SCHEMA = 1


@dataclass(frozen=True)
class ExperimentModel:
    """One model as an experiment branch's tip records it."""

    name: str
    version: int
    hash: str
    pointer: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    outside_mvc: bool


@dataclass(frozen=True)
class Experiment:
    """One experiment branch, read from git objects."""

    name: str
    branch: str  # "exp/NAME", or "origin/exp/NAME" for a remote one
    remote: str | None  # the git remote of a remote-tracking branch
    commit: str  # the branch tip
    last_activity: str  # the tip's committer date (ISO 8601)
    base: str | None  # the commit the experiment started from (None: not started by mvc)
    base_branch: str | None
    params: dict[str, Any]  # the intended params given to `mvc exp new`
    created: str | None
    author: str | None
    current: bool  # checked out now
    models: tuple[ExperimentModel, ...] = ()
    key_metrics: dict[str, Any] = field(default_factory=dict)  # the `key_metrics` setting's, else all

    def metric(self, key: str) -> Any:
        """The value of metric ``key`` (or ``MODEL.key``) at the tip, or None."""
        model, dot, short = key.partition(".")
        for m in self.models:
            if dot and m.name == model and short in m.metrics:
                return m.metrics[short]
        for m in self.models:
            if key in m.metrics:
                return m.metrics[key]
        return None


@dataclass(frozen=True)
class SyncReport:
    """What syncing the work-tree weights to the pointers did."""

    updated: tuple[str, ...] = ()  # weight paths replaced or created
    kept: tuple[str, ...] = ()  # weight paths left alone: they hold changes no version records
    missing: tuple[str, ...] = ()  # weight paths whose weights are in no cache or remote
    errors: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ValueRow:
    """One param or metric across several experiments (``model`` None: the experiment's own params)."""

    key: str
    model: str | None
    values: tuple[Any, ...]
    differs: bool


@dataclass(frozen=True)
class Promoted:
    """A model version made on the target branch by promoting an experiment."""

    name: str
    version: int
    hash: str
    pointer: str
    parents: tuple[Parent, ...]


# ---- names and records ----------------------------------------------------------------


def branch_of(name: str) -> str:
    """The branch of experiment ``name``: ``exp/NAME`` (``exp/`` may be given already)."""
    return name if name.startswith(PREFIX) else PREFIX + name


def name_of(branch: str) -> str:
    """``exp/NAME`` or ``origin/exp/NAME`` -> ``NAME``."""
    return branch.split(PREFIX, 1)[1] if PREFIX in branch else branch


def record_path(name: str) -> str:
    """Where the experiment's record lives on its branch."""
    return f"{RECORD_DIR}/{name}.json"


def check_name(ws: Workspace, name: str) -> str:
    """Validate a new experiment's name and return its branch.

    Raises:
        UsageError: ``exp/NAME`` is not a valid git branch name.
        ConflictError: the experiment exists (locally or on a git remote).
    """
    name = name_of(name)
    branch = branch_of(name)
    if not name or name.endswith((".json", "/")) or not gitstore.valid_branch_name(ws.root, branch):
        raise UsageError(
            f"{name!r} is not a valid experiment name ({branch!r} is not a valid git branch name)",
            hint="use letters, digits, '-', '_' and '.', e.g. `mvc exp new lr-0.01`",
        )
    if gitstore.resolve_rev(ws.root, f"refs/heads/{branch}") is not None:
        raise ConflictError(
            f"experiment {name!r} exists already (branch {branch})",
            hint=f"switch to it with `mvc exp switch {name}`, or pick another name",
        )
    for ref in gitstore.branch_refs(ws.root, ["refs/remotes/"]):
        if ref.name.split("/", 1)[-1] == branch:
            raise ConflictError(
                f"experiment {name!r} exists already on git remote {ref.name.split('/', 1)[0]!r}",
                hint=f"check it out with `git checkout {branch}`, or pick another name",
            )
    return branch


def _record_json(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _parse_record(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        record = documents.load_json(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) and int(record.get("schema", SCHEMA)) <= SCHEMA else {}


# ---- reading experiments from git objects ----------------------------------------------


def _experiment_refs(ws: Workspace, *, remote: bool) -> list[gitstore.RefInfo]:
    refs = gitstore.branch_refs(ws.root, ["refs/heads/exp/"] + (["refs/remotes/"] if remote else []))
    return [r for r in refs if r.ref.startswith("refs/heads/") or r.name.split("/", 1)[-1].startswith(PREFIX)]


def _candidate_pointers(ws: Workspace, tips: list[str]) -> list[str]:
    """Pointer paths that may exist at ``tips``: HEAD's, plus those the tips' own commits touched."""
    head = gitstore.head_commit(ws.root)
    at_head = gitstore.list_files(ws.root, "HEAD", suffix=pointer.SUFFIX) if head else []
    touched = gitstore.paths_changed(ws.root, tips, ["HEAD"] if head else [], f"*{pointer.SUFFIX}")
    return sorted(set(at_head) | touched)


def read(ws: Workspace, *, remote: bool = False, names: list[str] | None = None) -> list[Experiment]:
    """Every experiment branch (and with ``remote`` the remote-tracking ones), from git objects.

    Args:
        ws: the repository.
        remote: include ``<remote>/exp/*`` remote-tracking branches.
        names: only these experiments.
    """
    refs = _experiment_refs(ws, remote=remote)
    if names is not None:
        wanted = {name_of(n) for n in names}
        refs = [r for r in refs if name_of(r.name) in wanted]
    if not refs:
        return []
    paths = _candidate_pointers(ws, [r.sha for r in refs])
    current = gitstore.current_branch(ws.root)
    keys = settings.load(ws.root).key_metrics
    found = []
    with gitstore.blob_reader(ws.root) as blob:
        for ref in refs:
            name = name_of(ref.name)
            record = _parse_record(blob(ref.sha, record_path(name)))
            models = tuple(_models_at(blob, ref.sha, paths))
            found.append(
                Experiment(
                    name=name,
                    branch=ref.name,
                    remote=None if ref.ref.startswith("refs/heads/") else ref.name.split("/", 1)[0],
                    commit=ref.sha,
                    last_activity=ref.date,
                    base=record.get("base"),
                    base_branch=record.get("base_branch"),
                    params=dict(record.get("params") or {}),
                    created=record.get("created"),
                    author=record.get("author"),
                    current=ref.ref == f"refs/heads/{current}",
                    models=models,
                    key_metrics=_key_metrics(models, keys),
                )
            )
    return found


def _key_metrics(models: tuple[ExperimentModel, ...], keys: tuple[str, ...]) -> dict[str, Any]:
    """The metrics named in ``keys`` (``MODEL.key`` or ``key``), else all; model-prefixed when several models."""
    several = len(models) > 1
    out: dict[str, Any] = {}
    for m in models:
        for k, v in m.metrics.items():
            if not keys or k in keys or f"{m.name}.{k}" in keys:
                out[f"{m.name}.{k}" if several else k] = v
    return out


def _models_at(blob: Any, rev: str, paths: list[str]) -> list[ExperimentModel]:
    models = []
    for path in paths:
        data = blob(rev, path)
        if data is None:
            continue
        try:
            ptr = pointer.parse(data, path)
        except SchemaError:
            continue
        if ptr.manifest is None:
            continue
        m = ptr.manifest
        models.append(
            ExperimentModel(
                name=m.name,
                version=ptr.version,
                hash=ptr.md5,
                pointer=path,
                params=dict(m.params),
                metrics=dict(m.metrics),
                outside_mvc=ptr.outside_mvc,
            )
        )
    return sorted(models, key=lambda m: m.name)


def get(ws: Workspace, name: str) -> Experiment:
    """The local experiment ``name``.

    Raises:
        RefNotFoundError: no such experiment branch.
    """
    found = [e for e in read(ws, names=[name]) if e.remote is None]
    if not found:
        names = tuple(e.name for e in read(ws))
        raise RefNotFoundError(
            f"no experiment named {name_of(name)!r} (experiments: {', '.join(names) or 'none yet'})",
            hint="list them with `mvc exp list` (add --git-remotes for the git remotes' ones)",
            name=name_of(name),
            candidates=names,
        )
    return found[0]


def parse_sort(spec: str) -> tuple[str, bool]:
    """``"acc"`` / ``"acc:asc"`` / ``"net.loss:desc"`` -> (key, descending).

    Raises:
        UsageError: the order is neither asc nor desc, or the key is empty.
    """
    key, _, order = spec.partition(":")
    if not key or order not in ("", "asc", "desc"):
        raise UsageError(f"--sort {spec!r} is not METRIC[:asc|desc]", hint="e.g. --sort acc or --sort loss:asc")
    return key, order != "asc"


def sort(experiments: list[Experiment], spec: str | None) -> list[Experiment]:
    """Sort by a metric (experiments without a numeric value last), or by last activity, newest first."""
    if not spec:
        return sorted(experiments, key=lambda e: e.last_activity, reverse=True)
    key, descending = parse_sort(spec)

    def number(e: Experiment) -> float | None:
        value = e.metric(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    scored = [e for e in experiments if number(e) is not None]
    rest = [e for e in experiments if number(e) is None]
    scored.sort(key=lambda e: number(e) or 0.0, reverse=descending)
    return scored + sorted(rest, key=lambda e: e.last_activity, reverse=True)


def value_rows(experiments: list[Experiment]) -> tuple[tuple[ValueRow, ...], tuple[ValueRow, ...]]:
    """Params and metrics of ``experiments`` side by side: (params, metrics)."""

    def rows(sources: list[tuple[str | None, list[dict[str, Any]]]]) -> list[ValueRow]:
        out = []
        for model, dicts in sources:
            for key in sorted({k for d in dicts for k in d}):
                values = tuple(d.get(key) for d in dicts)
                out.append(ValueRow(key=key, model=model, values=values, differs=len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1))
        return out

    model_names = sorted({m.name for e in experiments for m in e.models})

    def of(e: Experiment, name: str) -> ExperimentModel | None:
        return next((m for m in e.models if m.name == name), None)

    params = rows([(None, [e.params for e in experiments])])
    def params_of(e: Experiment, name: str) -> dict[str, Any]:
        m = of(e, name)
        return dict(m.params) if m else {}

    def metrics_of(e: Experiment, name: str) -> dict[str, Any]:
        m = of(e, name)
        return dict(m.metrics) if m else {}

    params += rows([(n, [params_of(e, n) for e in experiments]) for n in model_names])
    metrics = rows([(n, [metrics_of(e, n) for e in experiments]) for n in model_names])
    return tuple(params), tuple(metrics)


# ---- moving the work tree ---------------------------------------------------------------


def sync_worktree(ws: Workspace, *, remote: str | None = None, keep_unrecorded: bool = True) -> SyncReport:
    """Make the work-tree weights match the pointers, fetching what the cache lacks.

    Weights holding changes that no version records are kept (``keep_unrecorded``) and
    reported, never overwritten; weights in no cache and no remote are reported too.
    """
    ptrs = workspace.models(ws)
    if not ptrs:
        return SyncReport()
    unsaved = set(dvcstore.unsaved_outputs(ws.root, [p.path for p in ptrs])) if keep_unrecorded else set()
    kept = {p.out for p in ptrs if p.path in unsaved}
    todo = [p for p in ptrs if p.path not in unsaved]
    missing: list[str] = []
    errors: list[str] = []
    ready = []
    for ptr in todo:
        try:
            sync.ensure_cached(ws, ptr, None, remote=remote)
            ready.append(ptr)
        except MissingObjectError:
            missing.append(ptr.out)
        except MvcError as exc:
            errors.append(f"{ptr.out}: {exc.message}")
    changes = sync.checkout(ws, ready) if ready else {}
    updated = tuple(changes.get("added", [])) + tuple(changes.get("modified", []))
    return SyncReport(updated=updated, kept=tuple(sorted(kept)), missing=tuple(missing), errors=tuple(errors))


def guard_unrecorded(ws: Workspace, target: str, *, force: bool) -> None:
    """Refuse to move to commit ``target`` when it would overwrite weights no version records.

    Only models whose pointer differs at ``target`` matter: the others keep their weights.

    Raises:
        ConflictError: such weights exist and ``force`` is False.
    """
    if force:
        return
    at_risk = [p for p in workspace.models(ws) if gitstore.read_blob(ws.root, target, p.path) != (ws.root / p.path).read_bytes()]
    rollback.refuse_unsaved(ws, at_risk)


# ---- changing experiments ---------------------------------------------------------------


def create(
    ws: Workspace,
    name: str,
    *,
    base: str | None = None,
    params: dict[str, Any] | None = None,
    remote: str | None = None,
    force: bool = False,
) -> tuple[Experiment, SyncReport]:
    """Create branch ``exp/NAME`` at ``base`` (default HEAD), switch to it and commit its record.

    Raises:
        UsageError: invalid name. ConflictError: it exists, or unrecorded weights would be lost.
        RefNotFoundError: ``base`` does not resolve.
    """
    branch = check_name(ws, name)
    name = name_of(name)
    head = gitstore.head_commit(ws.root)
    if head is None:
        raise ConflictError("this repository has no commit yet", hint="commit something first (`mvc commit -m MSG`)")
    start = gitstore.resolve_rev(ws.root, base or "HEAD")
    if start is None:
        raise RefNotFoundError(f"--from {base!r} is not a branch, tag or commit", hint="check `git log` or `git branch`")
    guard_unrecorded(ws, start, force=force)
    current = gitstore.current_branch(ws.root)
    base_branch = base if base and gitstore.resolve_rev(ws.root, f"refs/heads/{base}") else current
    record = {
        "schema": SCHEMA,
        "name": name,
        "base": start,
        "base_ref": base or (current or "HEAD"),
        "base_branch": base_branch,
        "params": dict(params or {}),
        "created": files.utc_now(),
        "author": gitstore.identity(ws.root),
    }
    gitstore.create_branch(ws.root, branch, start)
    try:
        path = record_path(name)
        files.write_atomic(ws.root / path, _record_json(record))
        gitstore.stage(ws.root, [path])
        gitstore.commit(ws.root, f"mvc: start experiment {name}", only=[path])
    except BaseException:
        gitstore.checkout_branch(ws.root, current or head, force=True)
        gitstore.delete_branch(ws.root, branch)
        raise
    report = sync_worktree(ws, remote=remote, keep_unrecorded=not force) if start != head else SyncReport()
    return get(ws, name), report


def switch(ws: Workspace, name: str, *, remote: str | None = None, force: bool = False) -> tuple[Experiment, SyncReport]:
    """Check out experiment ``name`` (or any branch given as ``exp/...``) and sync its weights.

    Raises:
        RefNotFoundError: no such experiment.
        ConflictError: unrecorded weights or uncommitted pointers would be overwritten.
    """
    remote_exp = None if read(ws, names=[name]) else _remote_only(ws, name)
    exp = remote_exp or get(ws, name)
    guard_unrecorded(ws, exp.commit, force=force)
    if remote_exp is not None:  # a fresh clone: make the local branch from the remote one, as `git switch` does
        gitstore.track_branch(ws.root, branch_of(remote_exp.name), remote_exp.branch)
        exp = get(ws, remote_exp.name)
    gitstore.checkout_branch(ws.root, exp.branch, force=force)
    return get(ws, exp.name), sync_worktree(ws, remote=remote, keep_unrecorded=not force)


def _remote_only(ws: Workspace, name: str) -> Experiment | None:
    """The remote-tracking branch of experiment ``name`` when no local branch exists (origin's first).

    Raises:
        UsageError: several git remotes have it and none is ``origin``.
    """
    found = [e for e in read(ws, remote=True, names=[name]) if e.remote is not None]
    if len(found) > 1:
        found = [e for e in found if e.remote == "origin"] or found
    if len(found) > 1:
        listing = ", ".join(e.branch for e in found)
        raise UsageError(
            f"experiment {name_of(name)!r} is on several git remotes ({listing})",
            hint=f"pick one with `git switch -c {branch_of(name_of(name))} REMOTE/{branch_of(name_of(name))}`, then `mvc exp switch {name_of(name)}`",
        )
    return found[0] if found else None


def remove(ws: Workspace, name: str, *, force: bool = False) -> tuple[Experiment, bool]:
    """Delete the branch of experiment ``name``; returns (experiment, whether it was merged).

    Its weights stay in the cache and the remote until garbage collection.

    Raises:
        ConflictError: it is checked out, or it has unmerged work (without ``force``).
    """
    exp = get(ws, name)
    if exp.current:
        raise ConflictError(
            f"experiment {exp.name!r} is checked out",
            hint=f"switch away first (`git checkout {exp.base_branch or 'main'}`), then remove it",
        )
    merged = is_merged(ws, exp)
    if not merged and not force:
        raise ConflictError(
            f"experiment {exp.name!r} has work that no other branch holds",
            hint=f"promote it with `mvc exp promote {exp.name}`, or pass --force to delete it anyway",
        )
    gitstore.delete_branch(ws.root, exp.branch)
    return exp, merged


def is_merged(ws: Workspace, exp: Experiment) -> bool:
    """True when every change on the experiment (beyond its own record) is on another local branch."""
    others = [r.sha for r in gitstore.branch_refs(ws.root, ["refs/heads/"]) if r.name != exp.branch]
    changed = gitstore.paths_changed(ws.root, [exp.commit], others, ".")
    return not (changed - {record_path(exp.name)})


def promote(
    ws: Workspace, name: str, *, into: str | None = None, remote: str | None = None, force: bool = False
) -> tuple[Experiment, str, str, tuple[Promoted, ...], SyncReport]:
    """Merge experiment ``name`` into branch ``into`` (default: its base branch, else main).

    Each model the experiment changed becomes a new version on the target whose
    parents are the experiment's version (and the target's own, when it changed too);
    pointer conflicts take the experiment's side.

    Returns:
        (experiment, target branch, merge commit, promoted versions, weight sync report).

    Raises:
        RefNotFoundError: no such experiment or target branch.
        ConflictError: already merged, or conflicts outside model pointers (merge aborted).
    """
    exp = get(ws, name)
    target = into or exp.base_branch or "main"
    target_sha = gitstore.resolve_rev(ws.root, f"refs/heads/{target}")
    if target_sha is None:
        raise RefNotFoundError(f"--into {target!r}: no such local branch", hint="name the branch to merge into with --into")
    if gitstore.is_ancestor(ws.root, exp.commit, target_sha):
        raise ConflictError(f"experiment {exp.name!r} is already merged into {target}", hint="nothing to promote")
    if gitstore.current_branch(ws.root) != target:
        guard_unrecorded(ws, target_sha, force=force)
        gitstore.checkout_branch(ws.root, target, force=force)
    base = gitstore.merge_base(ws.root, target_sha, exp.commit)
    changed = _changed_models(ws, base, exp.commit)
    conflicts = gitstore.merge(ws.root, exp.branch, message=f"mvc: promote experiment {exp.name} into {target}")
    other = [p for p in conflicts if p not in changed]
    if other:
        gitstore.abort_merge(ws.root)
        raise ConflictError(
            f"promoting {exp.name!r} into {target} conflicts in {', '.join(other)}",
            hint=f"merge by hand: `git merge {exp.branch}`, fix those files (`mvc resolve NAME` for models), then commit",
        )
    promoted = []
    with gitstore.blob_reader(ws.root) as blob:
        for path, theirs in changed.items():
            ours_data = blob(target_sha, path)
            ours = pointer.parse(ours_data, path) if ours_data is not None else None
            base_data = blob(base, path) if base else None
            files.write_atomic(ws.root / path, blob(exp.commit, path) or b"")
            promoted.append(_promote_version(ws, path, theirs, ours, ours_data != base_data, exp))
    gitstore.stage(ws.root, list(changed))
    commit = gitstore.commit(ws.root, f"mvc: promote experiment {exp.name} into {target}")
    return exp, target, commit, tuple(promoted), sync_worktree(ws, remote=remote, keep_unrecorded=not force)


def _changed_models(ws: Workspace, base: str | None, tip: str) -> dict[str, Pointer]:
    """Model pointers at ``tip`` that differ from ``base``: {path: pointer at tip}."""
    out = {}
    with gitstore.blob_reader(ws.root) as blob:
        for path in gitstore.list_files(ws.root, tip, suffix=pointer.SUFFIX):
            data = blob(tip, path)
            if data is None or (base and blob(base, path) == data):
                continue
            try:
                ptr = pointer.parse(data, path)
            except SchemaError:
                continue
            if ptr.manifest is not None:
                out[path] = ptr
    return out


def _promote_version(ws: Workspace, path: str, theirs: Pointer, ours: Pointer | None, ours_changed: bool, exp: Experiment) -> Promoted:
    """Write the promoted version's manifest into the (merged) pointer at ``path``."""
    tm = theirs.manifest
    assert tm is not None
    their_version = theirs.version
    parents = [Parent(hash=theirs.md5, version=their_version)]
    sides = [theirs]
    if ours is not None and ours.manifest is not None:
        sides.append(ours)
        if ours_changed and ours.md5 != theirs.md5:
            parents.append(Parent(hash=ours.md5, version=ours.version))
    manifest = tm.evolve(
        version=history.merge_number(sides),
        hash=theirs.md5,
        parents=tuple(parents),
        created=files.utc_now(),
        author=gitstore.identity(ws.root),
        message=f"promote experiment {exp.name}",
        experiment=exp.name,
        extra={**tm.extra, "promoted_from": {"experiment": exp.name, "commit": exp.commit, "version": their_version}},
        **({"index": None, "tensors": None} if theirs.outside_mvc else {}),
    )
    pointer.write_manifest(ws.root, path, manifest)
    return Promoted(name=manifest.name, version=manifest.version, hash=theirs.md5, pointer=path, parents=manifest.parents)

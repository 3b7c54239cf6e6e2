"""The public Python API of mvc. The CLI is a thin layer over these functions.

Every function takes the repository (``repo``, any path inside it) first, then the
model, with options keyword-only. Functions return frozen dataclasses and never print.

Example::

    import mvc
    mvc.init(".")
    v = mvc.add("models/net.safetensors", params={"lr": 0.01}, metrics={"acc": 0.91})
    mvc.commit(message="train net v1")
    mvc.push()
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mvc import diff as diffing
from mvc import dvcstore, gitstore, history, lineage, refs, rollback, settings, sync, versioning, workspace
from mvc.diff import Diff
from mvc.history import VersionRecord
from mvc.errors import ConflictError, UsageError
from mvc.manifest import Manifest, Parent
from mvc.pointer import Pointer
from mvc.progress import Progress
from mvc.sync import ModelStatus

PathLike = str | Path


@dataclass(frozen=True)
class Version:
    """One model version as the API returns it."""

    name: str
    version: int
    hash: str
    path: str  # weights, relative to the repo root
    pointer: str  # the .dvc file, relative to the repo root
    manifest: Manifest
    commit: str | None = None  # the commit that recorded it, when known


@dataclass(frozen=True)
class InitResult:
    """What ``init`` set up."""

    root: str
    created_git: bool
    created_dvc: bool
    created_settings: bool
    remote: str | None
    remote_url: str | None


@dataclass(frozen=True)
class AddResult:
    """Outcome of ``add``: the version now recorded, and whether it is new."""

    version: Version
    created: bool
    staged: tuple[str, ...]


@dataclass(frozen=True)
class CommitResult:
    """The commit that recorded model changes."""

    commit: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class PushResult:
    """Outcome of ``push``."""

    remote: str
    transferred: int
    models: tuple[str, ...]


@dataclass(frozen=True)
class PullResult:
    """Outcome of ``pull``."""

    remote: str
    fetched: int
    added: tuple[str, ...]
    modified: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True)
class CheckoutResult:
    """Work-tree files changed by ``checkout``."""

    added: tuple[str, ...]
    modified: tuple[str, ...]
    deleted: tuple[str, ...]
    models: tuple[str, ...]


def _version(ptr: Pointer, commit: str | None = None) -> Version:
    assert ptr.manifest is not None
    return Version(
        name=ptr.manifest.name,
        version=ptr.manifest.version,
        hash=ptr.md5,
        path=ptr.out,
        pointer=ptr.path,
        manifest=ptr.manifest,
        commit=commit,
    )


def init(repo: PathLike = ".", *, git: bool = False, remote: str | None = None) -> InitResult:
    """Set up mvc in a git repository: DVC, mvc settings and a default local remote.

    Safe to run twice: existing DVC set-up, settings and remotes are kept.

    Args:
        repo: a directory inside the git repository (created with ``git=True``).
        git: run ``git init`` first when ``repo`` is not a git repository.
        remote: directory for the default local remote (when the repo has no remote yet).

    Raises:
        NotARepoError: not a git repository and ``git`` is False.
    """
    path = Path(repo)
    created_git = False
    if git and not gitstore.is_repo(path):
        gitstore.init_repo(path)
        created_git = True
    ws = workspace.Workspace(root=gitstore.find_root(path)) if path.exists() else workspace.open_workspace(path)
    root = ws.root
    created_dvc = not dvcstore.is_initialized(root)
    dvcstore.init(root)
    created_settings = not settings.is_mvc_repo(root)
    if created_settings:
        settings.save(root, settings.Settings())
    existing = dvcstore.remotes(root)
    name: str | None = None
    url: str | None = None
    if not existing:
        target = Path(remote).expanduser().resolve() if remote else workspace.default_remote_dir(root)
        target.mkdir(parents=True, exist_ok=True)
        name, url = "local", str(target)
        dvcstore.add_remote(root, name, url, default=True)
    else:
        default = next((r for r in existing if r.default), existing[0])
        name, url = default.name, default.url
        if remote:
            raise ConflictError(
                f"this repository has a remote already ({default.name}: {default.url})",
                hint="add another with `mvc remote add NAME URL --default`",
            )
    gitstore.stage(root, [p for p in (".dvc/config", ".dvc/.gitignore", ".dvcignore", settings.CONFIG_FILE) if (root / p).exists()])
    return InitResult(
        root=str(root),
        created_git=created_git,
        created_dvc=created_dvc,
        created_settings=created_settings,
        remote=name,
        remote_url=url,
    )


def add(
    path: PathLike,
    *,
    repo: PathLike | None = None,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    params_files: list[PathLike] | None = None,
    metrics: dict[str, Any] | None = None,
    metrics_files: list[PathLike] | None = None,
    datasets: list[PathLike] | None = None,
    message: str = "",
    labels: list[str] | None = None,
    step: int | None = None,
    experiment: str | None = None,
    progress: Progress | None = None,
) -> AddResult:
    """Track weights (a file or a checkpoint directory) as a new version of a model.

    Re-adding unchanged weights records nothing (``created`` is False).

    Args:
        path: the weights.
        repo: the repository (default: the one containing ``path``).
        name: the model name (default: the file name without its suffix).
        params / metrics: values to record; ``*_files`` are YAML/JSON mappings merged first.
        datasets: DVC-tracked data sets the model was trained on.

    Raises:
        PathNotFoundError, UsageError, CorruptFileError, LockedError, NotARepoError.
    """
    start = Path(repo) if repo is not None else Path(path).expanduser().resolve().parent
    ws = workspace.open_workspace(start if start.exists() else ".")
    all_params = lineage.collect(None, list(params_files or []), option="--param")
    all_params.update(params or {})
    all_metrics = lineage.collect(None, list(metrics_files or []), option="--metric")
    all_metrics.update(metrics or {})
    request = versioning.VersionRequest(
        name=name,
        params=all_params,
        metrics=all_metrics,
        datasets=lineage.dataset_refs(ws.root, [str(d) for d in datasets or []]),
        message=message,
        labels=tuple(labels or ()),
        step=step,
        experiment=experiment,
    )
    rec = versioning.record(ws, path, request, progress=progress)
    return AddResult(version=_version(rec.pointer), created=rec.created, staged=rec.staged)


def commit(repo: PathLike = ".", *, message: str) -> CommitResult:
    """Commit the model changes (pointers, their .gitignore files, mvc's own files).

    Other staged or unstaged work is left out of the commit.

    Raises:
        UsageError: empty message.
        ConflictError: no model change to commit.
    """
    if not message.strip():
        raise UsageError("the commit message is empty", hint='pass one with -m "what changed"')
    ws = workspace.open_workspace(repo)
    paths = [p for p in gitstore.changed_paths(ws.root) if _mvc_owned(p)]
    if not paths:
        raise ConflictError("no model changes to commit", hint="record weights with `mvc add PATH` first")
    gitstore.stage(ws.root, paths)
    sha = gitstore.commit(ws.root, message, only=paths)
    return CommitResult(commit=sha, paths=tuple(paths))


def _mvc_owned(path: str) -> bool:
    return path.endswith((".dvc", ".gitignore")) or path.startswith((".mvc/", ".dvc/")) or path == ".dvcignore"


def models(repo: PathLike = ".") -> list[Version]:
    """Every model in the work tree at its current version."""
    ws = workspace.open_workspace(repo)
    return [_version(p) for p in workspace.models(ws)]


def status(
    repo: PathLike = ".", names: list[str] | None = None, *, remote: str | None = None, check_remote: bool = True
) -> list[ModelStatus]:
    """Where each model stands: version, work tree, cache and remote in sync or not."""
    ws = workspace.open_workspace(repo)
    return sync.status(ws, workspace.select(ws, names), remote=remote, check_remote=check_remote)


def push(
    repo: PathLike = ".",
    names: list[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Upload the weights of the named models (all models by default) to the remote.

    Raises:
        RemoteNotFoundError: no such remote, or no default remote.
        RemoteError: the remote refused or could not be reached.
    """
    ws = workspace.open_workspace(repo)
    ptrs = workspace.select(ws, names)
    rname, count = sync.push(ws, ptrs, remote=remote, jobs=jobs, progress=progress)
    return PushResult(remote=rname, transferred=count, models=tuple(p.manifest.name for p in ptrs if p.manifest))


def pull(
    repo: PathLike = ".",
    names: list[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Download the weights of the named models (all by default) and put them in the work tree.

    Raises:
        MissingObjectError: the remote lacks some objects.
        RemoteError / RemoteNotFoundError.
    """
    ws = workspace.open_workspace(repo)
    ptrs = workspace.select(ws, names)
    rname, fetched, changes = sync.pull(ws, ptrs, remote=remote, jobs=jobs, progress=progress)
    return PullResult(
        remote=rname,
        fetched=fetched,
        added=tuple(changes.get("added", ())),
        modified=tuple(changes.get("modified", ())),
        models=tuple(p.manifest.name for p in ptrs if p.manifest),
    )


def checkout(
    repo: PathLike = ".",
    refs_: list[str] | None = None,
    *,
    remote: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> CheckoutResult:
    """Put weights in the work tree: ``NAME`` as the current commit records, ``NAME@REF`` an older version.

    ``NAME@REF`` is a rollback: the branch does not move and the pointer is not changed;
    ``mvc status`` shows the model as rolled back, and ``checkout NAME`` returns.

    Raises:
        MissingObjectError: weights in neither the cache nor the remote.
        ConflictError: the work-tree weights hold unrecorded changes (pass ``force``).
    """
    ws = workspace.open_workspace(repo)
    plain: list[str] = []
    rolled: list[str] = []
    names: list[str] = []
    for ref in refs_ or []:
        name, spec = refs.split(ref)
        if spec is None:
            plain.append(name)
            continue
        res = refs.resolve(ws, ref)
        names.append(res.name)
        sync.ensure_cached(ws, res.pointer, res.commit, remote=remote, progress=progress)
        work = workspace.find_model(ws, res.name)
        if work.md5 == res.hash:
            plain.append(res.name)
            continue
        rollback.place(ws, res, force=force)
        rolled.append(work.out)
    changes: dict[str, list[str]] = {}
    if plain or not refs_:
        ptrs = workspace.select(ws, plain or None)
        changes = sync.checkout(ws, ptrs)
        names += [p.manifest.name for p in ptrs if p.manifest]
    return CheckoutResult(
        added=tuple(changes.get("added", ())),
        modified=tuple(changes.get("modified", ())) + tuple(rolled),
        deleted=tuple(changes.get("deleted", ())),
        models=tuple(names),
    )


def remote_add(
    name: str,
    url: str,
    *,
    repo: PathLike = ".",
    default: bool = False,
    force: bool = False,
    options: dict[str, Any] | None = None,
) -> dvcstore.RemoteConfig:
    """Add a remote (``s3://``, ``gs://``, or a local directory). Secrets go to ``.dvc/config.local``."""
    ws = workspace.open_workspace(repo)
    dvcstore.add_remote(ws.root, name, url, options=options, default=default, force=force)
    gitstore.stage(ws.root, [".dvc/config"])
    return next(r for r in dvcstore.remotes(ws.root) if r.name == name)


def remote_list(repo: PathLike = ".") -> list[dvcstore.RemoteConfig]:
    """The remotes of the repository (no secrets)."""
    return dvcstore.remotes(workspace.open_workspace(repo).root)


def remote_default(name: str, *, repo: PathLike = ".") -> None:
    """Make ``name`` the default remote."""
    ws = workspace.open_workspace(repo)
    dvcstore.set_default_remote(ws.root, name)
    gitstore.stage(ws.root, [".dvc/config"])


def remote_remove(name: str, *, repo: PathLike = ".") -> None:
    """Remove the remote ``name`` (its objects stay where they are)."""
    ws = workspace.open_workspace(repo)
    dvcstore.remove_remote(ws.root, name)
    gitstore.stage(ws.root, [".dvc/config"])


# ---- history, show, diff, restore (issue 4) -------------------------------------------


def log(repo: PathLike = ".", name: str | None = None, *, all_branches: bool = False) -> list[VersionRecord]:
    """Every committed version of ``name`` (all models when None), newest first.

    Reads manifests from git objects only: no checkout, no DVC.
    """
    ws = workspace.open_workspace(repo)
    names = [name] if name else [p.manifest.name for p in workspace.models(ws) if p.manifest]
    records: list[VersionRecord] = []
    for n in names:
        records += history.versions(ws, n, all_branches=all_branches)
    records.sort(key=lambda r: (r.date, r.version), reverse=True)
    return records


@dataclass(frozen=True)
class VersionDetail:
    """What ``show`` reports about one version."""

    ref: str
    name: str
    version: int
    hash: str
    path: str
    commit: str | None
    outside_mvc: bool
    manifest: Manifest


def show(repo: PathLike = ".", ref: str = "", *, rebuild_index: bool = True) -> VersionDetail:
    """The full manifest of ``ref`` (``NAME``, ``NAME@v3``, ``NAME@main`` ...).

    A work-tree version re-added by plain ``dvc add`` gets its tensor index rebuilt
    from the weights (``rebuild_index``), since its manifest no longer describes them.
    """
    ws = workspace.open_workspace(repo)
    res = refs.resolve(ws, ref)
    manifest = res.pointer.manifest
    assert manifest is not None
    if res.pointer.outside_mvc and res.commit is None and rebuild_index:
        manifest = versioning.refresh_index(ws, res.pointer)
    return VersionDetail(
        ref=ref,
        name=res.name,
        version=res.version,
        hash=res.hash,
        path=res.pointer.out,
        commit=res.commit,
        outside_mvc=res.pointer.outside_mvc,
        manifest=manifest,
    )


def diff(
    repo: PathLike = ".",
    a: str = "",
    b: str = "",
    *,
    stats: bool = False,
    remote: str | None = None,
    include_unchanged: bool = False,
    progress: Progress | None = None,
) -> Diff:
    """Compare two versions (any refs, also of two models).

    Reads only the two manifests and tensor indexes; with ``stats`` it also streams
    the changed tensors (fetching the weights when needed) for L2 / cosine figures.
    """
    import tempfile

    ws = workspace.open_workspace(repo)
    ra, rb = refs.resolve(ws, a), refs.resolve(ws, b)
    result = diffing.compare(ws, ra, rb, include_unchanged=include_unchanged)
    if not stats or result.summary is None:
        return result
    names = [t.name for t in result.tensors if t.status == "content"]
    if not names:
        return result
    with tempfile.TemporaryDirectory(prefix="mvc-diff-") as tmp:
        pa = sync.materialize(ws, ra.pointer, ra.commit, Path(tmp) / "a" / Path(ra.pointer.out).name, remote=remote, progress=progress)
        pb = sync.materialize(ws, rb.pointer, rb.commit, Path(tmp) / "b" / Path(rb.pointer.out).name, remote=remote, progress=progress)
        figures = diffing.tensor_stats(pa, pb, names)
    return replace(result, stats=figures)


def restore(
    repo: PathLike = ".", ref: str = "", *, message: str = "", remote: str | None = None, force: bool = False
) -> AddResult:
    """Make an old version the new head: a new version with the old weights, parent the current one.

    History is never rewritten. Stage-only, like ``add``; commit with ``commit``.
    """
    ws = workspace.open_workspace(repo)
    res = refs.resolve(ws, ref)
    current = workspace.find_model(ws, res.name)
    assert current.manifest is not None
    if res.hash == current.md5:
        raise ConflictError(f"{ref} is already the current version of {res.name}", hint="nothing to restore")
    sync.ensure_cached(ws, res.pointer, res.commit, remote=remote)
    rollback.place(ws, res, force=force)
    old = res.pointer.manifest
    assert old is not None
    request = versioning.VersionRequest(
        name=res.name,
        params=old.params,
        metrics=old.metrics,
        datasets=old.datasets,
        message=message or f"restore v{res.version} ({res.hash[:8]})",
        labels=old.labels,
        extra={"restored_from": {"version": res.version, "hash": res.hash, "ref": ref}},
        parents=(Parent(hash=current.md5, version=current.manifest.version),),
    )
    rec = versioning.record(ws, ws.root / current.out, request)
    rollback.clear(ws, [current.path])
    return AddResult(version=_version(rec.pointer), created=rec.created, staged=rec.staged)


# ---- issue 3: cloud remotes, get ----
# (end of issue 3: cloud remotes, get)


# ---- issue 5: experiments, git integration, registry ----
# (end of issue 5: experiments, git integration, registry)


# ---- issue 6: evaluation ----
# (end of issue 6: evaluation)


# ---- issue 7: merge ----
# (end of issue 7: merge)


# ---- issue 10: training integration ----
# (end of issue 10: training integration)


# ---- issue 11: verify, sign ----
# (end of issue 11: verify, sign)


RemoteConfig = dvcstore.RemoteConfig

__all__ = [
    "AddResult",
    "Diff",
    "VersionDetail",
    "VersionRecord",
    "diff",
    "log",
    "restore",
    "show",
    "CheckoutResult",
    "CommitResult",
    "InitResult",
    "ModelStatus",
    "PullResult",
    "PushResult",
    "RemoteConfig",
    "Version",
    "add",
    "checkout",
    "commit",
    "init",
    "models",
    "pull",
    "push",
    "remote_add",
    "remote_default",
    "remote_list",
    "remote_remove",
    "status",
]

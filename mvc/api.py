"""The public Python API of mvc. The CLI is a thin layer over these functions.

One signature rule: the subject comes first (the path for ``add``, a ``NAME[@REF]`` or a
list of them for the rest), then keyword-only options, ``repo`` (any path inside the
repository, default the current directory) among them. A keyword is named after its CLI
flag (``--all-versions`` is ``all_versions=``; a repeatable flag takes the plural, ``--param``
is ``params=``; ``--no-verify`` is ``verify=False``). Functions return frozen dataclasses and
never print; errors are :class:`mvc.errors.MvcError` subclasses carrying ``ref``, ``name``,
``remote``, ``path`` and ``candidates`` as fields.

Example::

    import mvc
    mvc.init(".")
    v = mvc.add("models/net.safetensors", params={"lr": 0.01}, metrics={"acc": 0.91})
    mvc.commit("train net v1")
    mvc.push("net")
    mvc.show("net@v1").manifest.metrics
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import ConflictError, UsageError
from mvc.manifest import Manifest, Parent
from mvc.pointer import Pointer
from mvc.progress import Progress


class _LazyModule:
    """A domain module imported on first attribute access.

    ``mvc diff`` needs a handful of modules, ``mvc merge`` others: importing all of
    them up front cost 0.2 s of every command's start-up.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def _lazy(name: str) -> Any:
    return _LazyModule(name)


if TYPE_CHECKING:
    # The type checker sees the real modules: typed ``Any``, a call to a function that
    # does not exist (``refresh_index``) once passed unseen (issue 14).
    from mvc import (
        cleanup,
        evaluation,
        experiments,
        getting,
        history,
        hooks,
        lineage,
        mergeconfig,
        merging,
        project,
        publishing,
        rollback,
        settings,
        signing,
        sync,
        tensorread,
        verification,
        versioning,
        workspace,
    )
    from mvc import comparison as diffing
    from mvc import refs as refnames
    from mvc import registry as registering
    from mvc import report as reporting
else:
    cleanup = _lazy("mvc.cleanup")
    diffing = _lazy("mvc.comparison")
    evaluation = _lazy("mvc.evaluation")
    experiments = _lazy("mvc.experiments")
    getting = _lazy("mvc.getting")
    history = _lazy("mvc.history")
    hooks = _lazy("mvc.hooks")
    lineage = _lazy("mvc.lineage")
    mergeconfig = _lazy("mvc.mergeconfig")
    merging = _lazy("mvc.merging")
    project = _lazy("mvc.project")
    publishing = _lazy("mvc.publishing")
    refnames = _lazy("mvc.refs")
    registering = _lazy("mvc.registry")
    reporting = _lazy("mvc.report")
    rollback = _lazy("mvc.rollback")
    settings = _lazy("mvc.settings")
    signing = _lazy("mvc.signing")
    sync = _lazy("mvc.sync")
    tensorread = _lazy("mvc.tensorread")
    verification = _lazy("mvc.verification")
    versioning = _lazy("mvc.versioning")
    workspace = _lazy("mvc.workspace")

if TYPE_CHECKING:
    from collections.abc import Callable

    from mvc.cleanup import GcResult
    from mvc.comparison import Diff
    from mvc.evaluation import Comparison, EvalFailedError, EvalFunctionNotFoundError, EvalRow, EvalSpec
    from mvc.experiments import Experiment, Promoted, SyncReport, ValueRow
    from mvc.getting import GetResult
    from mvc.history import VersionRecord
    from mvc.hooks import HookInstall, Resolution
    from mvc.merging import MergeInput
    from mvc.project import InitResult, Remote, RemoteOption
    from mvc.publishing import PromoteResult, PushResult, RegistryPushResult, TagResult, UnassignResult
    from mvc.registry import ModelRegistry, Release, StageEntry
    from mvc.sync import ModelStatus
    from mvc.training import LoggedVersion, RunResult, UploadFailure, UploadReport
    from mvc.verification import VerifyResult, VersionCheck
    from mvc.versioning import CommitResult

# Types re-exported from domain modules, loaded when first asked for (PEP 562).
_REEXPORTS: dict[str, tuple[str, str]] = {
    "Comparison": ("mvc.evaluation", "Comparison"),
    "Diff": ("mvc.comparison", "Diff"),
    "EvalFailedError": ("mvc.evaluation", "EvalFailedError"),
    "EvalFunctionNotFoundError": ("mvc.evaluation", "EvalFunctionNotFoundError"),
    "EvalRow": ("mvc.evaluation", "EvalRow"),
    "EvalSpec": ("mvc.evaluation", "EvalSpec"),
    "Experiment": ("mvc.experiments", "Experiment"),
    "GcResult": ("mvc.cleanup", "GcResult"),
    "GetResult": ("mvc.getting", "GetResult"),
    "HookInstall": ("mvc.hooks", "HookInstall"),
    "LoggedVersion": ("mvc.training", "LoggedVersion"),
    "MergeInput": ("mvc.merging", "MergeInput"),
    "ModelRegistry": ("mvc.registry", "ModelRegistry"),
    "ModelStatus": ("mvc.sync", "ModelStatus"),
    "Promoted": ("mvc.experiments", "Promoted"),
    "Release": ("mvc.registry", "Release"),
    "Removal": ("mvc.cleanup", "Removal"),
    "PartialFile": ("mvc.tensorsync", "PartialFile"),
    "StorageReport": ("mvc.tensorspace", "StorageReport"),
    "PromoteResult": ("mvc.publishing", "PromoteResult"),
    "PushResult": ("mvc.publishing", "PushResult"),
    "RegistryPushResult": ("mvc.publishing", "RegistryPushResult"),
    "TagResult": ("mvc.publishing", "TagResult"),
    "UnassignResult": ("mvc.publishing", "UnassignResult"),
    "CommitResult": ("mvc.versioning", "CommitResult"),
    "InitResult": ("mvc.project", "InitResult"),
    "Remote": ("mvc.project", "Remote"),
    "RemoteOption": ("mvc.project", "RemoteOption"),
    "Resolution": ("mvc.hooks", "Resolution"),
    "RunResult": ("mvc.training", "RunResult"),
    "StageEntry": ("mvc.registry", "StageEntry"),
    "SyncReport": ("mvc.experiments", "SyncReport"),
    "UploadFailure": ("mvc.training", "UploadFailure"),
    "UploadReport": ("mvc.training", "UploadReport"),
    "ValueRow": ("mvc.experiments", "ValueRow"),
    "VerifyResult": ("mvc.verification", "VerifyResult"),
    "VersionCheck": ("mvc.verification", "VersionCheck"),
    "VersionRecord": ("mvc.history", "VersionRecord"),
    "DetachedHeadWarning": ("mvc.training", "DetachedHeadWarning"),
    # What the CLI needs besides the API functions: it imports no domain module (issue 18).
    "merge_pointers": ("mvc.hooks", "merge_pointers"),
    "parse_pairs": ("mvc.lineage", "parse_pairs"),
    "parse_weights": ("mvc.mergeconfig", "parse_weights"),
    "run_hook": ("mvc.hooks", "run_hook"),
    "sync_messages": ("mvc.hooks", "sync_messages"),
}


def __getattr__(name: str) -> Any:
    target = _REEXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'mvc.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value



PathLike = str | Path


def _items(refs: str | Sequence[str] | None) -> list[str]:
    """``refs`` as a list: one ``NAME[@REF]`` string is a list of one (``mvc.push("net")``)."""
    if refs is None:
        return []
    return [refs] if isinstance(refs, str) else list(refs)


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
class AddResult:
    """Outcome of ``add``: the version now recorded, and whether it is new."""

    version: Version
    created: bool
    staged: tuple[str, ...]


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
    manifest = ptr.effective
    assert manifest is not None
    return Version(
        name=manifest.name,
        version=manifest.version,
        hash=ptr.md5,
        path=ptr.out,
        pointer=ptr.path,
        manifest=manifest,
        commit=commit,
    )


def init(repo: PathLike = ".", *, git: bool = False, remote: str | None = None) -> InitResult:
    """Set up mvc in a git repository: DVC, mvc settings and a default local remote.

    Example::

        result = mvc.init("fresh-project", git=True)  # git init too; a local default remote
        print(result.remote)

    Safe to run twice: existing DVC set-up, settings and remotes are kept.

    Args:
        repo: a directory inside the git repository (created with ``git=True``).
        git: run ``git init`` first when ``repo`` is not a git repository.
        remote: directory for the default local remote (when the repo has no remote yet).

    Raises:
        NotARepoError: not a git repository and ``git`` is False.
    """
    return project.init(Path(repo), git=git, remote=remote)


def add(
    path: PathLike,
    *,
    repo: PathLike | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    params_files: Sequence[PathLike] | None = None,
    metrics: Mapping[str, Any] | None = None,
    metrics_files: Sequence[PathLike] | None = None,
    datasets: Sequence[PathLike] | None = None,
    message: str = "",
    labels: Sequence[str] | None = None,
    step: int | None = None,
    experiment: str | None = None,
    progress: Progress | None = None,
    sign_key: PathLike | None = None,
    sign_password: bytes | None = None,
) -> AddResult:
    """Track weights (a file or a checkpoint directory) as a new version of a model.

    Example::

        result = mvc.add("models/net.safetensors", params={"lr": 0.01}, metrics={"acc": 0.93})
        print(result.version.name, result.version.version, result.version.hash)

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
    if sign_key is not None:  # a bad key fails before anything is recorded (issue 14)
        signing.load_private_key(sign_key, sign_password)
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
    result = AddResult(version=_version(rec.pointer), created=rec.created, staged=rec.staged)
    return _sign_added(ws, result, sign_key, sign_password) if sign_key is not None else result


def check_addable(paths: Sequence[PathLike]) -> None:
    """Refuse damaged weights among ``paths`` before any is added (``mvc add A B``: all or nothing).

    Reads only headers (safetensors, gguf, npz; each such file of a directory).

    Example::

        mvc.check_addable(["models/net.safetensors"])  # CorruptFileError names a damaged file
        print("every header reads")

    Raises:
        CorruptFileError: a weight file is damaged.
    """
    versioning.check_readable([Path(p) for p in paths])


def commit(message: str, *, repo: PathLike = ".") -> CommitResult:
    """Commit the model changes (pointers, their .gitignore files, mvc's own files).

    Example::

        mvc.add("models/net.safetensors", metrics={"acc": 0.94})
        print(mvc.commit("net: acc 0.94").commit)

    Other staged or unstaged work is left out of the commit.

    Raises:
        UsageError: empty message.
        ConflictError: no model change to commit.
    """
    return versioning.commit_models(workspace.open_workspace(repo), message)


def models(*, repo: PathLike = ".") -> list[Version]:
    """Every model in the work tree at its current version.

    Example::

        print([(v.name, v.version) for v in mvc.models()])
    """
    ws = workspace.open_workspace(repo)
    return [_version(p) for p in workspace.models(ws)]


def status(
    names: str | Sequence[str] | None = None, *, repo: PathLike = ".", remote: str | None = None, check_remote: bool = True
) -> list[ModelStatus]:
    """Where each model stands: version, work tree, cache and remote in sync or not.

    Example::

        for row in mvc.status("net"):
            print(row)
    """
    ws = workspace.open_workspace(repo)
    return sync.status(ws, workspace.select(ws, _items(names) or None), remote=remote, check_remote=check_remote)


def push(
    refs: str | Sequence[str] | None = None,
    *,
    repo: PathLike = ".",
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    all_versions: bool = False,
) -> PushResult:
    """Upload the weights of the named models (all models by default) to the remote.

    Example::

        mvc.push("net")                          # the work tree's version
        mvc.push("net@v1")                       # a committed version
        print(mvc.push(all_versions=True).versions)  # every committed version

    Args:
        refs: ``NAME`` (the work tree's version) or ``NAME@REF`` (any committed version:
            ``net@v1``, ``net@main``, ``net@<sha>``); none: every model's work-tree version.
        all_versions: also every version any commit reachable from a branch or tag
            records (versions committed but never pushed included).

    Versions named by ref or ``all_versions`` that are in neither the local cache nor
    the remote are skipped and listed in ``missing``; the rest are uploaded.

    Raises:
        RemoteNotFoundError: no such remote, or no default remote.
        RemoteError: the remote refused or could not be reached.
        ModelNotFoundError / RefNotFoundError: a name or ref does not resolve.
    """
    return publishing.push(workspace.open_workspace(repo), _items(refs), remote=remote, jobs=jobs, progress=progress, all_versions=all_versions)


def pull(
    names: str | Sequence[str] | None = None,
    *,
    repo: PathLike = ".",
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    require_signed: bool | None = None,
    trusted_keys: PathLike | None = None,
    verify: bool = True,
    force: bool = False,
) -> PullResult:
    """Download the weights of the named models (all by default) and put them in the work tree.

    Example::

        print(mvc.pull("net").fetched)

    Every downloaded object is re-hashed before checkout; ``verify=False`` skips that
    pass (one md5 over the bytes) for a remote the user trusts. Work-tree weights that
    no version records are never overwritten unless ``force``.

    Raises:
        ConflictError: work-tree weights hold unrecorded changes (pass ``force``).
        MissingObjectError: the remote lacks some objects.
        IntegrityError: a downloaded object does not match its hash.
        RemoteError / RemoteNotFoundError.
    """
    ws = workspace.open_workspace(repo)
    ptrs = workspace.select(ws, _items(names) or None)
    if verification.signing_required(ws, require_signed):
        verification.require_signed(ws, verification.pointer_targets(ptrs), trusted_keys=trusted_keys, remote=remote, progress=progress)
    rname, fetched, changes = sync.pull(ws, ptrs, remote=remote, jobs=jobs, progress=progress, verify=verify, force=force)
    return PullResult(
        remote=rname,
        fetched=fetched,
        added=tuple(changes.get("added", ())),
        modified=tuple(changes.get("modified", ())),
        models=tuple(p.manifest.name for p in ptrs if p.manifest),
    )


def checkout(
    refs: str | Sequence[str] | None = None,
    *,
    repo: PathLike = ".",
    remote: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    require_signed: bool | None = None,
    trusted_keys: PathLike | None = None,
) -> CheckoutResult:
    """Put weights in the work tree: ``NAME`` as the current commit records, ``NAME@REF`` an older version.

    Example::

        print(mvc.checkout("net@v1").modified)  # roll the work tree back to v1 (the branch stays)
        mvc.checkout("net")                     # back to the version the commit records

    ``NAME@REF`` is a rollback: the branch does not move and the pointer is not changed;
    ``mvc status`` shows the model as rolled back, and ``checkout NAME`` returns.

    Args:
        repo: the repository.
        refs: ``NAME`` or ``NAME@REF`` items; none: every model as the commit records it.
        remote: where to fetch a rolled-back version's weights from when the cache lacks them.
        force: overwrite work-tree weights that hold changes no version records.

    Raises:
        ModelNotFoundError, RefNotFoundError, AmbiguousRefError: a bad ref.
        MissingObjectError: weights in neither the cache nor the remote.
        ConflictError: the work-tree weights hold unrecorded changes (pass ``force``);
            nothing is changed then.
    """
    ws = workspace.open_workspace(repo)
    if verification.signing_required(ws, require_signed):
        verification.require_signed_refs(ws, _items(refs), trusted_keys=trusted_keys, remote=remote, progress=progress)
    plain: list[str] = []
    targets: list[tuple[refnames.Resolved, Pointer]] = []  # (version to roll back to, work-tree pointer)
    for ref in _items(refs):
        name, spec = refnames.split(ref)
        if spec is None:
            plain.append(name)
            continue
        res = refnames.resolve(ws, ref)
        work = workspace.find_model(ws, res.name)
        if work.md5 == res.hash:  # the version the commit records: a plain checkout, fetched if need be
            sync.ensure_cached(ws, res.pointer, res.commit, remote=remote, progress=progress)
            plain.append(res.name)
        else:
            targets.append((res, work))
    ptrs = workspace.select(ws, plain or None) if plain or not _items(refs) else []
    if not force:  # check everything before touching anything
        rollback.refuse_unsaved(ws, ptrs + [work for _, work in targets])
    rolled: list[str] = []
    for res, work in targets:
        sync.ensure_cached(ws, res.pointer, res.commit, remote=remote, progress=progress)
        rollback.place(ws, res, force=True)
        rolled.append(work.out)
    changes = sync.checkout(ws, ptrs) if ptrs else {}
    names = [res.name for res, _ in targets] + [p.manifest.name for p in ptrs if p.manifest]
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
    options: Mapping[str, Any] | None = None,
    layout: str = "full",
) -> Remote:
    """Add a remote (``s3://``, ``gs://``, or a local directory). Secrets go to ``.dvc/config.local``.

    Example::

        print(mvc.remote_add("backup", "../backup-store"))
    """
    return project.add_remote(workspace.open_workspace(repo), name, url, default=default, force=force, options=options, layout=layout)


def remote_list(*, repo: PathLike = ".") -> list[Remote]:
    """The remotes of the repository (no secrets).

    Example::

        print([(r.name, r.url, r.default) for r in mvc.remote_list()])
    """
    return project.remotes(workspace.open_workspace(repo))


def remote_default(name: str, *, repo: PathLike = ".") -> None:
    """Make ``name`` the default remote.

    Example::

        mvc.remote_add("backup", "../backup-store")
        mvc.remote_default("backup")
        print([r.name for r in mvc.remote_list() if r.default])  # ['backup']
    """
    project.set_default_remote(workspace.open_workspace(repo), name)


def remote_remove(name: str, *, repo: PathLike = ".") -> None:
    """Remove the remote ``name`` (its objects stay where they are).

    Example::

        mvc.remote_add("old", "../old-store")
        mvc.remote_remove("old")
        print([r.name for r in mvc.remote_list()])
    """
    project.remove_remote(workspace.open_workspace(repo), name)


# ---- history, show, diff, restore (issue 4) -------------------------------------------


def log(name: str | None = None, *, repo: PathLike = ".", all_branches: bool = False) -> list[VersionRecord]:
    """Every committed version of ``name`` (all models when None), newest first.

    Example::

        for record in mvc.log("net"):
            print(record.version, record.hash[:8], record.subject)

    Reads manifests from git objects only: no checkout, no DVC.

    Args:
        repo: the repository.
        name: model name; None lists every model of the work tree.
        all_branches: walk every local branch, not only the current one (records get ``branch``).

    Raises:
        ModelNotFoundError: unknown model (the message lists the known ones).
        SchemaError: a pointer is not valid YAML or from a newer mvc.
    """
    ws = workspace.open_workspace(repo)
    names = [name] if name else [p.manifest.name for p in workspace.models(ws) if p.manifest]
    records: list[VersionRecord] = []
    for n in names:
        records += history.versions(ws, n, all_branches=all_branches)
    if len(names) > 1:  # one model's records are in git's order already
        records.sort(key=lambda r: r.date, reverse=True)
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
    signed_by: tuple[str, ...] = ()  # claimed signers; `mvc verify --signatures` checks them


def show(ref: str, *, repo: PathLike = ".", rebuild_index: bool = True) -> VersionDetail:
    """The full manifest of ``ref`` (``NAME``, ``NAME@v3``, ``NAME@main`` ...).

    Example::

        print(mvc.show("net@v2").manifest.metrics)

    A work-tree version re-added by plain ``dvc add`` gets its tensor index rebuilt
    from the weights (``rebuild_index``), since its manifest no longer describes them.

    Raises:
        ModelNotFoundError, RefNotFoundError, AmbiguousRefError: a bad ref.
        SchemaError: the pointer is not valid YAML or from a newer mvc.
    """
    ws = workspace.open_workspace(repo)
    res = refnames.resolve(ws, ref)
    manifest = res.pointer.effective
    assert manifest is not None
    if res.pointer.outside_mvc and rebuild_index:
        manifest = versioning.refresh_index(ws, res.pointer)
    if manifest.version != res.version:
        manifest = manifest.evolve(version=res.version)
    return VersionDetail(
        ref=ref,
        name=res.name,
        version=res.version,
        hash=res.hash,
        path=res.pointer.out,
        commit=res.commit,
        outside_mvc=res.pointer.outside_mvc,
        manifest=manifest,
        signed_by=signing.signed_by(ws.root, res.hash),
    )


def diff(
    a: str,
    b: str,
    *,
    repo: PathLike = ".",
    stats: bool = False,
    remote: str | None = None,
    all_tensors: bool = False,
    progress: Progress | None = None,
) -> Diff:
    """Compare two versions (any refs, also of two models).

    Example::

        d = mvc.diff("net@v1", "net@v2", stats=True)
        print(d)

    Reads only the two manifests and tensor indexes; with ``stats`` it also streams
    the tensors that changed in content or dtype (fetching the weights from ``remote``
    when the cache lacks them; from a tensors remote only those tensors' chunks) for
    L2 / relative change / cosine figures.

    Raises:
        ModelNotFoundError, RefNotFoundError, AmbiguousRefError: a bad ref.
        SchemaError: a pointer or tensor index is malformed or from a newer mvc.
        MissingObjectError: ``stats`` needs weights that no cache or remote has.
    """
    import tempfile

    ws = workspace.open_workspace(repo)
    ra, rb = refnames.resolve_all(ws, [a, b])
    result = diffing.compare(ws, ra, rb, include_unchanged=all_tensors)
    names = diffing.stats_candidates(result) if stats else []
    if not names:
        return result
    with tempfile.TemporaryDirectory(prefix="mvc-diff-") as tmp:
        # A side only a tensors remote holds is read from its changed tensors' chunks (issue 15).
        pa, pb = tensorread.stats_inputs(ws, [ra, rb], names, Path(tmp), remote=remote, progress=progress)
        figures, skipped = diffing.tensor_stats(pa, pb, names)
    return replace(result, stats=figures, notes=result.notes + skipped)


def restore(
    ref: str, *, repo: PathLike = ".", message: str = "", remote: str | None = None, force: bool = False
) -> AddResult:
    """Make an old version the new head: a new version with the old weights, parent the current one.

    Example::

        result = mvc.restore("net@v1", message="back to v1")
        print(result.version.version)

    History is never rewritten. Stage-only, like ``add``; commit with ``commit``. The new
    version keeps the old one's params, metrics, data sets and labels, and records
    ``extra.restored_from``.

    Raises:
        ModelNotFoundError, RefNotFoundError, AmbiguousRefError: a bad ref.
        ConflictError: ``ref`` is the current version already (and the work-tree weights
            are its), or the work-tree weights hold unrecorded changes (pass ``force``).

    ``ref`` naming the current version while its work-tree weights were changed or
    deleted puts the recorded weights back (``created`` is False).
        MissingObjectError: the old weights are in no cache or remote.
    """
    ws = workspace.open_workspace(repo)
    res = refnames.resolve(ws, ref)
    current = refnames.resolve(ws, res.name)
    if res.hash == current.hash:
        work = current.pointer
        if sync.weights_match(ws, work):
            raise ConflictError(f"{ref} is already the current version of {res.name}", hint="nothing to restore")
        # The work-tree weights changed (or went missing): bring back what the version
        # records, as `git restore` does for a file (issue 17); no new version.
        if not force:
            rollback.refuse_unsaved(ws, [work])
        sync.ensure_cached(ws, work, None, remote=remote)
        sync.checkout(ws, [work])
        return AddResult(version=_version(work), created=False, staged=())
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
        parents=(Parent(hash=current.hash, version=current.version),),
    )
    rec = versioning.record(ws, ws.root / current.pointer.out, request)
    rollback.clear(ws, [current.pointer.path])
    return AddResult(version=_version(rec.pointer), created=rec.created, staged=rec.staged)


# ---- issue 3: cloud remotes, get ----



def remote_modify(
    name: str, option: str, value: str | None = None, *, repo: PathLike = ".", local: bool = False
) -> RemoteOption:
    """Set one option of a remote (``value=None`` unsets it), e.g. credentials or ``endpointurl``.

    Example::

        print(mvc.remote_modify("local", "jobs", "8"))

    Secrets (``access_key_id``, ``secret_access_key``, ``credentialpath``, ...) always go to
    ``.dvc/config.local``; so does any option with ``local``, e.g. a per-machine endpoint.

    Raises:
        RemoteNotFoundError: no such remote.
        UsageError: the option does not apply to the remote's URL scheme.
    """
    return project.modify_remote(workspace.open_workspace(repo), name, option, value, local=local)


def get(
    url: PathLike,
    ref: str,
    *,
    out: PathLike = ".",
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    require_signed: bool = False,
    trusted_keys: PathLike | None = None,
) -> GetResult:
    """Fetch one model version's weights from a git repository (path or URL) into ``out``.

    Example::

        result = mvc.get(".", "net@v1", out="downloads")
        print(result)

    No work tree of the repository is made (like ``dvc get``): it is cloned without a
    checkout into a temporary directory, ``ref`` (``NAME`` or ``NAME@v3|@tag|@branch``)
    is resolved from git objects, and the weights come from the repository's remote,
    re-hashed on arrival (rebuilt from chunks and md5-checked on a tensors remote).
    Credentials come from the environment (e.g. ``AWS_*``).

    Raises:
        NotARepoError, ModelNotFoundError, RefNotFoundError, ConflictError (``out`` holds
        the file; pass ``force``), RemoteNotFoundError, RemoteError, MissingObjectError,
        IntegrityError.
    """
    policy = settings.signing_policy(None)  # MVC_REQUIRE_SIGNED / MVC_TRUSTED_KEYS bind `get` too
    if policy.enforced_by is not None:
        require_signed = True
    if require_signed:
        trusted_keys = settings.trusted_keys_dir(policy, trusted_keys)
    return getting.get(
        str(url),
        ref,
        out=Path(out),
        remote=remote,
        jobs=jobs,
        force=force,
        progress=progress,
        require_signed=require_signed,
        trusted_keys=Path(trusted_keys) if trusted_keys is not None else None,
    )


# (end of issue 3: cloud remotes, get)


# ---- issue 5: experiments, git integration, registry ----



@dataclass(frozen=True)
class ExperimentResult:
    """An experiment that ``exp_new`` / ``exp_switch`` checked out, and what its weight sync did."""

    experiment: Experiment
    sync: SyncReport


@dataclass(frozen=True)
class ExperimentComparison:
    """Experiments side by side: params, metrics, and tensor diffs from the first to each other."""

    experiments: tuple[Experiment, ...]
    params: tuple[ValueRow, ...]
    metrics: tuple[ValueRow, ...]
    diffs: tuple[Diff, ...]


@dataclass(frozen=True)
class ExperimentPromotion:
    """Outcome of ``exp_promote``: the merge commit and the versions it made."""

    experiment: str
    branch: str
    target: str
    commit: str
    versions: tuple[Promoted, ...]
    sync: SyncReport


@dataclass(frozen=True)
class ExperimentRemoval:
    """Outcome of ``exp_remove``."""

    experiment: str
    branch: str
    commit: str
    merged: bool


def exp_new(
    name: str,
    *,
    repo: PathLike = ".",
    base: str | None = None,
    params: Mapping[str, Any] | None = None,
    remote: str | None = None,
    force: bool = False,
) -> ExperimentResult:
    """Start experiment ``name``: branch ``exp/NAME`` from ``base`` (default HEAD), switched to.

    Example::

        print(mvc.exp_new("wd-0.1", params={"weight_decay": 0.1}).experiment.branch)

    Commits ``.mvc/experiments/NAME.json`` (base and intended ``params``) on the branch and
    syncs the weights when the base differs from HEAD.

    Raises:
        UsageError: ``exp/NAME`` is not a valid branch name.
        ConflictError: the experiment exists, or weights no version records would be lost.
    """
    ws = workspace.open_workspace(repo)
    exp, report = experiments.create(ws, name, base=base, params=dict(params) if params is not None else None, remote=remote, force=force)
    return ExperimentResult(experiment=exp, sync=report)


def exp_list(*, repo: PathLike = ".", git_remotes: bool = False, sort: str | None = None) -> list[Experiment]:
    """Every experiment branch with its base, models, metrics and last activity.

    Example::

        print([e.name for e in mvc.exp_list(sort="acc")])

    Reads git objects only (no checkout, no DVC).

    Args:
        git_remotes: include the git remotes' ``exp/*`` branches (as last fetched).
        sort: ``METRIC[:asc|desc]`` (default desc; ``MODEL.METRIC`` picks a model);
            default: last activity, newest first.

    Raises:
        UsageError: a malformed ``sort``.
    """
    ws = workspace.open_workspace(repo)
    return experiments.sort(experiments.read(ws, remote=git_remotes), sort)


def exp_switch(name: str, *, repo: PathLike = ".", remote: str | None = None, force: bool = False) -> ExperimentResult:
    """Check out experiment ``name`` and sync its weights (fetching what the cache lacks).

    Example::

        print(mvc.exp_switch("lr-0.1").experiment.branch)

    Raises:
        RefNotFoundError: no such experiment.
        ConflictError: weights that no version records would be overwritten (pass ``force``).
    """
    ws = workspace.open_workspace(repo)
    exp, report = experiments.switch(ws, name, remote=remote, force=force)
    return ExperimentResult(experiment=exp, sync=report)


def exp_compare(names: Sequence[str], *, repo: PathLike = ".") -> ExperimentComparison:
    """Params and metrics of several experiments side by side, with tensor diffs from the first.

    Example::

        print(mvc.exp_compare(["lr-0.1", "lr-0.01"]).metrics)

    Raises:
        UsageError: fewer than two experiments. RefNotFoundError: an unknown experiment.
    """
    names = _items(names)
    if len(names) < 2:
        raise UsageError("compare needs at least two experiments", hint="e.g. `mvc exp compare lr-0.1 lr-0.01`")
    ws = workspace.open_workspace(repo)
    chosen = [experiments.get(ws, n) for n in names]
    params, metrics = experiments.value_rows(chosen)
    diffs = []
    first = chosen[0]
    for other in chosen[1:]:
        for model in first.models:
            if any(m.name == model.name for m in other.models):
                a = refnames.resolve(ws, f"{model.name}@{first.commit}")
                b = refnames.resolve(ws, f"{model.name}@{other.commit}")
                diffs.append(diffing.compare(ws, a, b))
    return ExperimentComparison(experiments=tuple(chosen), params=params, metrics=metrics, diffs=tuple(diffs))


def exp_promote(
    name: str, *, repo: PathLike = ".", into: str | None = None, remote: str | None = None, force: bool = False
) -> ExperimentPromotion:
    """Merge experiment ``name`` into ``into`` (default: the branch it started from, else main).

    Example::

        print(mvc.exp_promote("lr-0.1").versions)

    Each model the experiment changed becomes a new version there whose parents include
    the experiment's version; the merge is committed and the weights synced.

    Raises:
        RefNotFoundError: no such experiment or branch.
        ConflictError: already merged; conflicts outside model pointers (merge aborted).
    """
    ws = workspace.open_workspace(repo)
    exp, target, commit, versions, report = experiments.promote(ws, name, into=into, remote=remote, force=force)
    return ExperimentPromotion(experiment=exp.name, branch=exp.branch, target=target, commit=commit, versions=versions, sync=report)


def exp_remove(name: str, *, repo: PathLike = ".", force: bool = False) -> ExperimentRemoval:
    """Delete experiment ``name``'s branch; its weights stay in the remote until garbage collection.

    Example::

        print(mvc.exp_remove("lr-0.01", force=True).merged)

    Raises:
        ConflictError: it is checked out, or has unmerged work (pass ``force``).
    """
    ws = workspace.open_workspace(repo)
    exp, merged = experiments.remove(ws, name, force=force)
    return ExperimentRemoval(experiment=exp.name, branch=exp.branch, commit=exp.commit, merged=merged)


def install_hooks(*, repo: PathLike = ".") -> list[HookInstall]:
    """Install git hooks that sync weights on checkout/merge and push them before ``git push``.

    Example::

        print(mvc.install_hooks())

    Also (re)writes the merge-driver config. Idempotent; existing hooks keep working.
    """
    return hooks.install(workspace.open_workspace(repo))


def resolve(name: str, *, take: str, repo: PathLike = ".", remote: str | None = None, force: bool = False) -> Resolution:
    """Settle a merge conflict on model ``name`` with ``take`` = ``ours``, ``theirs`` or a REF.

    Example::

        # after `git merge exp/lr-0.01` stopped on a conflict in net's pointer
        print(mvc.resolve("net", take="theirs").next_step)

    Records a merge version (parents: both sides), checks its weights out and stages the
    pointer; then finish with ``Resolution.next_step`` (``git commit``, ``git rebase --continue``,
    ``git cherry-pick --continue`` or ``git revert --continue``).

    Raises:
        ConflictError: no conflict on that model; unrecorded weights (pass ``force``).
    """
    ws = workspace.open_workspace(repo)
    return hooks.resolve(ws, name, take, remote=remote, force=force)


def tag(
    ref: str,
    release: str,
    *,
    repo: PathLike = ".",
    message: str = "",
    push: bool = False,
    remote: str | None = None,
    git_remote: str = "origin",
) -> TagResult:
    """Register the version ``ref`` names as release ``release`` (annotated tag ``NAME@vX.Y.Z``).

    Example::

        print(mvc.tag("net@v2", "v1.1.0", message="better acc").tag)

    With ``push`` the weights go to the (DVC) remote, then the tag to ``git_remote``.

    Raises:
        UsageError: not ``vX.Y.Z``. ConflictError: the tag exists; the version is released
        already or not committed.
    """
    return publishing.tag(workspace.open_workspace(repo), ref, release, message=message, push=push, remote=remote, git_remote=git_remote)


def promote(
    ref: str,
    *,
    stage: str,
    repo: PathLike = ".",
    release: str | None = None,
    message: str = "",
    push: bool = False,
    remote: str | None = None,
    git_remote: str = "origin",
) -> PromoteResult:
    """Assign ``stage`` to the version ``ref`` names (annotated tag ``NAME#STAGE#N``).

    Example::

        print(mvc.promote("net@v2", stage="staging").tag)

    The version's weights must be in the remote (``push`` uploads them first, and pushes
    the tags to ``git_remote`` after). A version without a release is registered first,
    as ``gto assign`` does (``release``, or the next patch number).

    Raises:
        ConflictError: the weights are not in the remote; the version holds the stage already.
        RemoteNotFoundError: no (default) remote.
    """
    return publishing.promote(
        workspace.open_workspace(repo), ref, stage, release=release, message=message, push=push, remote=remote, git_remote=git_remote
    )


@dataclass(frozen=True)
class RenameResult:
    """Outcome of ``rename``: the pointer now names the model ``new`` (staged; no new weights)."""

    old: str
    new: str
    version: int
    hash: str
    pointer: str


def rename(old: str, new: str, *, repo: PathLike = ".") -> RenameResult:
    """Rename model ``old`` to ``new``: rewrite the name in its pointer's manifest and stage it.

    Example::

        print(mvc.rename("net", "classifier"))
        mvc.commit("rename net to classifier")

    The weights, version number and history stay; commit the change (``mvc commit``).
    Releases and stages already registered keep the old name (tags never move).

    Raises:
        ModelNotFoundError: no model ``old``. UsageError: ``new`` is not a valid model
        name, or another model has it.
    """
    ws = workspace.open_workspace(repo)
    old_name, ptr = registering.rename(ws, old, new)
    assert ptr.manifest is not None
    return RenameResult(old=old_name, new=ptr.manifest.name, version=ptr.version, hash=ptr.md5, pointer=ptr.path)


def unassign(name: str, *, stage: str, repo: PathLike = ".", message: str = "", push: bool = False, git_remote: str = "origin") -> UnassignResult:
    """Take ``stage`` off the version that holds it (annotated tag ``NAME#STAGE!#N``).

    Example::

        print(mvc.unassign("net", stage="prod").tag)

    Raises:
        RefNotFoundError: no version holds that stage.
    """
    return publishing.unassign(workspace.open_workspace(repo), name, stage, message=message, push=push, git_remote=git_remote)


def registry_show(name: str | None = None, *, repo: PathLike = ".") -> list[ModelRegistry]:
    """Releases and current stages of every model in the registry (or of ``name``), from git tags.

    Example::

        print(mvc.registry_show("net"))
    """
    ws = workspace.open_workspace(repo)
    return registering.show(ws, name)


def push_registry(
    names: str | Sequence[str] | None = None, *, repo: PathLike = ".", remote: str | None = None, git_remote: str = "origin"
) -> RegistryPushResult:
    """Upload the weights every registry tag points to, then push the tags to ``git_remote``.

    Example::

        print(mvc.push_registry(git_remote="origin").tags)

    Raises:
        RemoteNotFoundError: no such DVC or git remote. MissingObjectError: weights in
        neither the cache nor the remote. RemoteError: an upload or the git push failed.
    """
    return publishing.push_registry(workspace.open_workspace(repo), _items(names), remote=remote, git_remote=git_remote)


# (end of issue 5: experiments, git integration, registry)


# ---- issue 6: evaluation ----
# The domain module is ``mvc.evaluation`` (a noun): a submodule named ``mvc.evaluate``
# would shadow this function as the package attribute ``mvc.evaluate`` once imported.


@dataclass(frozen=True)
class EvalResult:
    """Outcome of ``evaluate``: the leaderboard, paired comparisons and what was written.

    ``rows`` holds every version (ranked successes first, then failures, rank None);
    ``failures`` repeats the failed ones; ``saved`` is the results folder
    ``.mvc/evals/<eval hash>`` relative to the repo root.
    """

    eval_hash: str
    spec: EvalSpec
    sort: str | None
    descending: bool
    rows: tuple[EvalRow, ...]
    comparisons: tuple[Comparison, ...]
    failures: tuple[EvalRow, ...]
    saved: str
    written: tuple[str, ...]  # results files written (and staged) by this run
    recorded: tuple[str, ...]  # pointers whose manifest got the metrics (``record``)
    notes: tuple[str, ...]
    report: str | None


def evaluate(
    refs: str | Sequence[str] | None = None,
    *,
    repo: PathLike = ".",
    cmd: str | None = None,
    fn: str | Any | None = None,
    model: str | None = None,
    all_experiments: bool = False,
    versions: str | None = None,
    jobs: int = 1,
    folds: int = 1,
    per_example: str | None = None,
    sort: str | None = None,
    timeout: float | None = None,
    force: bool = False,
    record: bool = False,
    remote: str | None = None,
    report: PathLike | None = None,
    progress: Progress | None = None,
    executor: str = "local",
    address: str | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
) -> EvalResult:
    """Run one evaluation against several versions and rank them.

    Example::

        res = mvc.evaluate(["net@v1", "net@v2"], cmd="python eval.py {weights}")
        print([(row.ref, row.metrics) for row in res.rows])

    Each version is copied from the cache (fetched from the remote when needed) into its
    own temp dir; the work tree is never touched. Results are saved under
    ``.mvc/evals/<eval hash>/<content hash>.json``, each fold as it finishes, and staged;
    (version, fold) pairs already evaluated the same way are read from there unless
    ``force``. A failing version is reported in the result and does not stop the others.

    Args:
        refs: ``NAME@REF`` refs (with ``model``, a bare ``REF`` means ``model@REF``).
        cmd: shell command template with ``{weights}`` (and ``{out}``, ``{fold}``); it writes
            a JSON object of metrics to ``{out}`` or prints one as its last stdout line.
        fn: ``"pkg.module:function"`` (imported from the repo root) or a callable, called
            with the weights path (and ``fold=`` when it takes one), returning a dict.
        model: the model for ``all_experiments`` / ``versions`` (default: the first ref's).
        all_experiments: also evaluate the latest version on every ``exp/*`` branch.
        versions: also evaluate ``vA..vB`` (inclusive).
        jobs: versions evaluated in parallel.
        folds: runs per version (``{fold}`` = 0..K-1); metrics get a mean and a std.
        per_example: key of a per-example score list: the best version is compared with
            each other one by paired bootstrap (interval of the difference, p-value).
        sort: ``METRIC[:asc|desc]`` (default: the first key metric or first metric reported;
            names like ``loss`` / ``error`` sort ascending).
        timeout: seconds per run; a version that overruns fails, the others go on.
        force: re-run versions whose results are saved.
        record: write the mean metrics into the manifest of the work-tree version.
        remote: remote to fetch missing weights from (default: the default remote).
        report: write an HTML report (``.html``) with a chart per metric.
        progress: called as ``progress(version, runs, total)`` as each fold's run ends
            (with ``executor="ray"``: ``progress(cluster, tasks, total)``, the cluster's
            address and number of workers as the task name).
        executor: ``"local"`` (processes on this machine, ``jobs`` versions at a time) or
            ``"ray"``: each (version, fold) is a task on a Ray cluster whose workers fetch
            the weights from ``remote`` by hash (the ``ray`` extra).
        address: the Ray cluster: ``ray://HOST:10001``, ``HOST:6379``, or ``auto`` (default).
        cpus_per_task: CPUs Ray reserves per task.
        gpus_per_task: GPUs Ray reserves per task.

    Raises:
        UsageError: no or two evaluations, no ``{weights}``, bad range, sort or report
            path, unknown executor, Ray options without Ray, Ray not installed.
        EvalFunctionNotFoundError: ``fn`` cannot be imported.
        RefNotFoundError, ModelNotFoundError, AmbiguousRefError: a ref does not resolve.
        RemoteNotFoundError: ``executor="ray"`` and no remote.
        RemoteError: the Ray cluster cannot be reached.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})", hint="e.g. --jobs 4")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be positive (got {timeout:g})", hint="give seconds, e.g. --timeout 600")
    evaluation.parse_sort(sort)
    report_path = reporting.check_path(report) if report is not None else None
    ws = workspace.open_workspace(repo)
    spec, runner = evaluation.make_spec(ws.root, cmd=cmd, fn=fn, folds=folds, per_example=per_example)
    targets, notes = evaluation.plan(ws, _items(refs), model=model, all_experiments=all_experiments, versions=versions)
    from mvc import executors

    with executors.open_executor(
        executor, jobs=jobs, address=address, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task
    ) as pool:
        outcomes, written = evaluation.run(
            ws, targets, spec, runner, jobs=jobs, timeout=timeout, force=force, remote=remote, progress=progress,
            executor=pool,
        )
    board = evaluation.rank(ws, outcomes, sort=sort, per_example=per_example)
    recorded: list[str] = []
    if record:
        recorded, record_notes = evaluation.record_metrics(ws, board.rows)
        notes += record_notes
    board = replace(board, notes=(*notes, *board.notes))
    if report_path is not None:
        reporting.write_html(report_path, spec, board)
    return EvalResult(
        eval_hash=spec.hash,
        spec=spec,
        sort=board.sort,
        descending=board.descending,
        rows=board.rows,
        comparisons=board.comparisons,
        failures=tuple(r for r in board.rows if r.status == "failed"),
        saved=f"{evaluation.EVALS_DIR}/{spec.hash}",
        written=tuple(written),
        recorded=tuple(recorded),
        notes=board.notes,
        report=None if report_path is None else str(report_path),
    )


# (end of issue 6: evaluation)


# ---- issue 7: merge ----



@dataclass(frozen=True)
class MergeResult:
    """Outcome of ``merge``: the merged file, how it was made, and the version it became (``add``)."""

    path: str
    method: str
    inputs: tuple[MergeInput, ...]
    base: MergeInput | None
    weights: tuple[float, ...]  # effective weights, one per input (none for slerp)
    params: dict[str, float]  # every parameter of the method, defaults included
    dtype: str | None  # output dtype asked for; None: each tensor kept its dtype
    tensors: int
    merged: int  # tensors computed by the method
    copied: int  # tensors copied as stored (identical in every input, single holder, integer)
    bytes: int
    notes: tuple[str, ...]  # warnings (weights not summing to 1, tensors only some models hold ...)
    version: Version | None = None  # with ``add``
    created: bool = False  # with ``add``: False when the merge equals the current version
    staged: tuple[str, ...] = ()
    resolved_conflict: bool = False  # ``add`` replaced a pointer git left conflicted


def merge(
    refs: Sequence[str],
    *,
    repo: PathLike = ".",
    method: str | None = None,
    weights: Sequence[float] | None = None,
    base: str | None = None,
    params: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    out: PathLike | None = None,
    add: bool = False,
    name: str | None = None,
    message: str = "",
    config: PathLike | None = None,
    allow_missing: bool = False,
    normalize: bool = False,
    remote: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> MergeResult:
    """Merge model versions into a new safetensors file, streaming one tensor at a time.

    Example::

        res = mvc.merge(["net@v1", "net@v2"], method="slerp", params={"t": 0.5}, out="models/soup.safetensors")
        print(res.merged, res.notes)

    Methods: ``linear`` (weighted average; uniform by default: a model soup),
    ``task-arithmetic`` (``base + scale * sum w_i (m_i - base)``), ``slerp`` (two
    models, ``params={"t": 0.3}``), ``ties`` (``params={"density": 0.2}``). See
    :mod:`mvc.merging` for which value a tensor gets in each case, and
    :mod:`mvc.mergeconfig` for the ``config`` file (values given here win over it).

    Args:
        refs: the versions to merge (``NAME@v3``, ``NAME@main``, ``NAME@MERGE_HEAD`` ...).
        method: default the config's, else ``linear``.
        weights: one per input (linear: default uniform; task-arithmetic, ties: default 1).
        base: the version the inputs were fine-tuned from (task-arithmetic, ties).
        dtype: ``float32``, ``float16`` or ``bfloat16`` for floating tensors (default:
            each tensor's own dtype; needed when the inputs' dtypes differ).
        out: the output ``.safetensors`` file (relative to the current directory).
        add: record the output as a new version of ``name`` (default: the first input's
            model), its parents the inputs; a pointer left conflicted by ``git merge``
            at that path is resolved by it. Stage-only, like ``add``.
        allow_missing: keep tensors only some inputs hold instead of failing.
        normalize: scale linear / task-arithmetic weights to sum to 1.
        force: overwrite weights at ``out`` that no version records.

    Raises:
        UsageError: bad method, parameter, weights or output; an opaque model; slerp of
            other than two models.
        ConflictError: the models' tensor names, shapes or dtypes do not match; ``out``
            holds weights no version records (pass ``force``).
        ModelNotFoundError, RefNotFoundError, MissingObjectError.
    """
    ws = workspace.open_workspace(repo)
    cfg = mergeconfig.combine(
        mergeconfig.load(config) if config is not None else None,
        inputs=tuple(refs),
        method=method,
        weights=tuple(weights) if weights is not None else None,
        base=base,
        params=params,
        dtype=dtype,
        normalize=normalize,
        allow_missing=allow_missing,
        output=str(out) if out is not None else None,
    )
    cfg, notes = mergeconfig.complete(cfg)
    target = merging.output_path(cfg)
    model = merging.target_name(ws, cfg, target, name) if add else None
    if not force:
        merging.refuse_overwrite(ws, target, add=add)
    outcome = merging.run(ws, cfg, target, notes=notes, remote=remote, progress=progress)
    fields = dict(vars(outcome))
    if model is None:
        return MergeResult(**fields)
    rec, conflicted = merging.record(ws, target, outcome, cfg, name=model, message=message, progress=progress)
    return MergeResult(**fields, version=_version(rec.pointer), created=rec.created, staged=rec.staged, resolved_conflict=conflicted)


# (end of issue 7: merge)


# ---- issue 10: training integration ----



def log_model(
    path: PathLike,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    datasets: Sequence[PathLike] | None = None,
    step: int | None = None,
    message: str = "",
    commit: bool = True,
    push: bool = False,
    repo: PathLike | None = None,
) -> LoggedVersion:
    """Version weights from training code: ``mvc add`` + a commit of mvc's files + an upload.

    Example::

        v = mvc.log_model("models/net.safetensors", metrics={"loss": 0.31}, step=10)
        print(v.name, v.version, v.created)

    Unchanged weights make no new version and no commit. The commit (``commit=True``,
    on the current branch) holds only the pointer, its ``.gitignore`` and the tensor
    index: the user's other staged or unstaged work is never committed. On an
    ``exp/NAME`` branch the manifest records the experiment ``NAME``.

    Args:
        path: the weights (a file or a checkpoint directory), inside the repository.
        name: the model name (default: the current one, else the file name).
        params / metrics: hyperparameters and metrics (numpy/torch scalars are fine).
        datasets: DVC-tracked data sets the model was trained on.
        step: the epoch or global step, recorded in the manifest.
        message: the version's message (and commit message; default ``mvc: NAME vN``).
        commit: commit mvc's files on the current branch.
        push: upload the weights to the default remote in a background thread; see :func:`wait`.
        repo: the repository (default: the one holding ``path``).

    Returns:
        The version: name, number, content hash, commit sha (or None), whether it is new.

    Raises:
        NotARepoError: ``path`` is in no mvc repository.
        UsageError: ``path`` is outside ``repo``, or the name is taken.
        PathNotFoundError, CorruptFileError.
        LockedError: the git index stayed locked (after ~2 s of retries): the version is
            recorded locally but not committed; DVC's lock is held by another process.
    """
    from mvc import training

    return training.log_model(
        path,
        name=name,
        params=params,
        metrics=metrics,
        datasets=datasets,
        step=step,
        message=message,
        commit=commit,
        push=push,
        repo=repo,
    )


def wait() -> UploadReport:
    """Wait for the uploads ``log_model(push=True)`` queued, and report them.

    Example::

        mvc.log_model("models/net.safetensors", metrics={"loss": 0.30}, push=True)
        print(mvc.wait())  # raises if a background upload failed

    At interpreter exit mvc waits too, and prints failures to stderr.

    Raises:
        RemoteError: some uploads failed; the versions stay recorded and committed
            locally (upload them later with ``push``).
    """
    from mvc import training

    return training.wait()


def check_weights_path(path: PathLike, *, repo: PathLike | None = None) -> str:
    """Check that weights at ``path`` (existing or not yet) can be versioned; return it repo-relative.

    Example::

        print(mvc.check_weights_path("models/net.safetensors"))

    Training callbacks call this when they are created, so a wrong path fails before training.

    Raises:
        NotARepoError: no mvc repository there.
        UsageError: ``path`` is outside the repository.
    """
    from mvc import training

    _, rel = training.locate(path, repo)
    return rel


def run(
    command: list[str],
    *,
    repo: PathLike = ".",
    experiment: str | None = None,
    params_file: PathLike | None = None,
    metrics_file: PathLike | None = None,
    outs: Sequence[PathLike] | None = None,
    name: str | None = None,
    force: bool = False,
) -> RunResult:
    """Run a training command and version what it wrote (``mvc run``).

    Example::

        result = mvc.run(["python", "train.py"], outs=["models/net.safetensors"], metrics_file="metrics.json")
        print(result)

    With ``experiment`` it first creates (``exp_new``) or switches to (``exp_switch``,
    ``force`` discarding unrecorded weights) the experiment's branch ``exp/NAME``. The
    command runs in the current directory with the terminal's stdout/stderr. If it
    fails, nothing is versioned and ``returncode`` says how it ended. Otherwise every
    tracked model whose weights the command wrote, plus ``outs`` (new models, the
    first one named ``name``), becomes a new version with the params and metrics read
    from the files, and mvc's files are committed as ``mvc run: CMD``.

    Raises:
        NotARepoError, UsageError (bad --exp / --out / --name), NotFoundError (the command
        or a file is missing), ConflictError (switching would lose unrecorded weights).
    """
    from mvc import training

    ws = workspace.open_workspace(repo)
    return training.run(
        ws,
        command,
        experiment=experiment,
        params_file=params_file,
        metrics_file=metrics_file,
        outs=list(outs or []),
        name=name,
        force=force,
    )


# (end of issue 10: training integration)


# ---- issue 11: verify, sign ----



@dataclass(frozen=True)
class SignResult:
    """Outcome of ``sign``: the version signed and the signature file (staged)."""

    name: str
    version: int
    hash: str
    signature_file: str
    signer: str
    key: str  # sha256 of the signer's public key


def verify(
    refs: str | Sequence[str] | None = None,
    *,
    repo: PathLike = ".",
    remote: str | None = None,
    all_versions: bool = False,
    repair: bool = False,
    signatures: bool = False,
    trusted_keys: PathLike | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Re-hash versions' weights (work tree, cache) against their pointers; check remote and signatures.

    Example::

        result = mvc.verify("net", remote="local")
        print(result.error())  # None: everything checks out

    Every byte is read again (no trust in mtimes). ``result.error()`` sums up problems.

    Args:
        refs: ``NAME`` (the work-tree version) or ``NAME@REF``; default every model.
        remote: also check that this remote holds every object, intact where it can tell
            (a directory remote is re-hashed; S3 ETag / GCS md5 compared; sizes compared).
        all_versions: every committed version of the models, on any branch.
        repair: delete corrupt cache objects and fetch them again from the remote (``remote``
            or the default one); overwrite corrupt remote objects with a good cache copy.
        signatures: check that a trusted key signed each version's bytes.
        trusted_keys: directory of trusted ECDSA public keys (default: the repo setting).

    Raises:
        ModelNotFoundError / RefNotFoundError: a ref does not resolve.
        RemoteNotFoundError: ``remote`` / ``repair`` without a usable remote.
        UsageError / PathNotFoundError: ``signatures`` without usable trusted keys.
    """
    ws = workspace.open_workspace(repo)
    items = verification.targets(ws, _items(refs) or None, all_versions=all_versions)
    return verification.verify(
        ws,
        items,
        remote=remote,
        check_remote=remote is not None,
        trusted_keys=trusted_keys,
        check_signatures=signatures,
        repair=repair,
        progress=progress,
    )


def sign(
    ref: str, *, key: PathLike, repo: PathLike = ".", password: bytes | None = None, remote: str | None = None
) -> SignResult:
    """Sign the weights of ``ref`` with an ECDSA private key (OpenSSF model signing, offline).

    Example::

        print(mvc.sign("net@v2", key="me.pem").signer)

    The bundle goes to ``.mvc/signatures/<md5[:2]>/<md5>.json`` (staged; commit it with
    ``commit``). Missing weights are fetched from the remote into the cache first.

    Raises:
        PathNotFoundError / UsageError: key missing, unreadable, not ECDSA, passphrase missing or wrong.
        MissingObjectError: weights in neither the cache nor the remote.
        IntegrityError: the cached weights no longer match their hash.
    """
    ws = workspace.open_workspace(repo)
    res = refnames.resolve(ws, ref)
    signing.load_private_key(key, password)  # a bad key fails before any download
    sync.ensure_cached(ws, res.pointer, res.commit, remote=remote)
    sig, rel = signing.sign(ws.root, name=res.name, version=res.version, md5=res.hash, key_path=key, password=password)
    return SignResult(name=res.name, version=res.version, hash=res.hash, signature_file=rel, signer=sig.signer, key=sig.key)


def _sign_added(ws: workspace.Workspace, result: AddResult, key: PathLike, password: bytes | None) -> AddResult:
    """``add(sign_key=...)``: sign the version just recorded and stage its signature."""
    v = result.version
    _, rel = signing.sign(ws.root, name=v.name, version=v.version, md5=v.hash, key_path=key, password=password)
    return replace(result, staged=(*result.staged, rel))


# (end of issue 11: verify, sign)



__all__ = [
    "ExperimentComparison",
    "ExperimentPromotion",
    "ExperimentRemoval",
    "ExperimentResult",
    "Experiment",
    "HookInstall",
    "ModelRegistry",
    "PromoteResult",
    "RegistryPushResult",
    "Release",
    "Resolution",
    "StageEntry",
    "TagResult",
    "UnassignResult",
    "exp_compare",
    "exp_list",
    "exp_new",
    "exp_promote",
    "exp_remove",
    "exp_switch",
    "install_hooks",
    "promote",
    "push_registry",
    "registry_show",
    "resolve",
    "tag",
    "unassign",
    "MergeInput",
    "MergeResult",
    "merge",
    "SignResult",
    "VerifyResult",
    "VersionCheck",
    "sign",
    "verify",
    "LoggedVersion",
    "RunResult",
    "UploadFailure",
    "UploadReport",
    "check_weights_path",
    "check_addable",
    "log_model",
    "run",
    "wait",
    "AddResult",
    "Comparison",
    "Diff",
    "EvalFailedError",
    "EvalFunctionNotFoundError",
    "EvalResult",
    "EvalRow",
    "EvalSpec",
    "evaluate",
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
    "Remote",
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
    "GetResult",
    "RemoteOption",
    "get",
    "remote_modify",
    "status",
]


def gc(
    *,
    repo: PathLike = ".",
    cache: bool = True,
    remote: str | None = None,
    dry_run: bool = False,
    older_than: float = 1.0,
    confirm: Callable[[GcResult], bool] | None = None,
) -> GcResult:
    """Remove what no kept version needs from the cache (and ``remote``), and the leftovers of
    interrupted commands (temp files, unfinished S3 multipart uploads).

    Kept is every version a pointer names in any commit reachable from a branch (local or
    remote-tracking), a tag or ``HEAD``, in the index, in the work tree or in a rollback.

    Example::

        plan = mvc.gc(dry_run=True)
        print(plan.removed_bytes, "bytes would be freed")

    Args:
        cache: clean the local cache and the work tree's temp files.
        remote: also clean this remote: unneeded objects, temp files of a directory
            remote, unfinished S3 multipart uploads.
        dry_run: remove nothing; the result lists what would go.
        older_than: temp files and uploads younger than this many hours are left alone
            (a command may still be writing them).
        confirm: called with the plan before anything is removed; returning False
            removes nothing (the plan comes back as a dry run).

    Raises:
        RemoteNotFoundError / RemoteError: ``remote`` is unknown or failed.
        LockedError: another mvc or dvc process holds the repository.
        UsageError: ``older_than`` is negative.
    """
    if older_than < 0:
        raise UsageError(f"older_than must be 0 or more hours, not {older_than}", hint="pass --older-than 0 to clean every temp file")
    ws = workspace.open_workspace(repo)
    return cleanup.collect(ws, cache=cache, remote=remote, dry_run=dry_run, older_than=older_than, confirm=confirm)


# ---- the tensors remote layout (issue 15) ----------------------------------------------

if TYPE_CHECKING:
    from mvc.tensorspace import StorageReport
    from mvc.tensorsync import PartialFile


def push_full(
    refs: str | Sequence[str] | None = None, *, repo: PathLike = ".", remote: str | None = None, jobs: int | None = None
) -> PushResult:
    """Upload the plain DVC objects of the named versions (``NAME`` or ``NAME@REF``), whatever the remote's layout.

    Example::

        print(mvc.push_full("net@v1", remote="tensors").versions)

    For a ``tensors`` remote this makes a version pullable by plain ``dvc pull``; releases
    get it on every push anyway.

    Raises:
        RemoteNotFoundError / RemoteError, ModelNotFoundError / RefNotFoundError.
        MissingObjectError: a version's weights are not in the local cache.
    """
    return publishing.push_full(workspace.open_workspace(repo), _items(refs), remote=remote, jobs=jobs)


def storage(name: str | None = None, *, repo: PathLike = ".", remote: str | None = None) -> StorageReport:
    """What each version costs on a ``tensors`` remote: logical size, bytes stored, bytes shared.

    Example::

        report = mvc.storage("net", remote="tensors")
        print(report.totals)

    Raises:
        RemoteNotFoundError / RemoteError. ModelNotFoundError: ``name`` has no version there.
    """
    return sync.storage(workspace.open_workspace(repo), name, remote=remote)


def pull_tensors(
    ref: str,
    patterns: Sequence[str],
    *,
    repo: PathLike = ".",
    out: PathLike | None = None,
    remote: str | None = None,
    jobs: int | None = None,
) -> PartialFile:
    """Write a safetensors file holding only the tensors of ``ref`` whose names match ``patterns``.

    Example::

        part = mvc.pull_tensors("net@v2", ["layer1.*"], out="layer1.safetensors", remote="tensors")
        print(part)

    Reads only the chunks of those tensors from a ``tensors`` remote; the work tree and
    the cache are not touched. ``out`` defaults to ``<weights>.partial.safetensors`` beside
    the model's weights.

    Raises:
        UsageError: the remote does not use the tensors layout, or the version is not safetensors.
        NotFoundError: no tensor matches; the version is not on the remote.
        IntegrityError: a chunk is missing or corrupt.
    """
    return sync.pull_tensors(
        workspace.open_workspace(repo), ref, patterns, out=Path(out) if out is not None else None, remote=remote, jobs=jobs
    )

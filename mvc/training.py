"""Versioning from training code: ``log_model``, the background upload queue, and ``mvc run``.

A training loop calls :func:`log_model` after each save: the weights become a new version
exactly as ``mvc add`` makes one, and the commit holds only mvc's files (``git commit
--only``), so the user's other staged or unstaged work never ends up in it. Uploads go to
one background worker so training goes on; :func:`wait` (and interpreter exit) collects
their outcome.
"""

from __future__ import annotations

import atexit
import enum
import os
import queue
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mvc import dvcpush, gitstore, lineage, sync, versioning, workspace
from mvc.errors import (
    LockedError,
    MvcError,
    NotFoundError,
    PathNotFoundError,
    RemoteError,
    RemoteNotFoundError,
    UsageError,
    counted,
)
from mvc.workspace import Workspace

EXPERIMENT_PREFIX = "exp/"  # as mvc.experiments names branches

# One mvc operation at a time from the training side of this process: DVC's repo object
# (dvcstore.lock) and its log silencing are process-wide state.
_work_lock = threading.RLock()


@dataclass(frozen=True)
class LoggedVersion:
    """The version ``log_model`` recorded (or found unchanged)."""

    name: str
    version: int
    hash: str
    commit: str | None  # None: not committed (commit=False, or unchanged weights)
    created: bool  # False: the weights were unchanged, no new version


@dataclass(frozen=True)
class UploadFailure:
    """A background upload that failed."""

    version: LoggedVersion
    error: str


@dataclass(frozen=True)
class UploadReport:
    """Outcome of the background uploads finished since the last :func:`wait`."""

    uploaded: tuple[LoggedVersion, ...]
    failed: tuple[UploadFailure, ...]


@dataclass(frozen=True)
class RunResult:
    """Outcome of ``mvc run``."""

    command: tuple[str, ...]
    returncode: int
    branch: str | None
    versions: tuple[LoggedVersion, ...]  # every path versioned (created or unchanged)
    commit: str | None


def locate(path: str | Path, repo: str | Path | None = None) -> tuple[Workspace, str]:
    """The repository that will version ``path`` and the path relative to its root.

    ``path`` need not exist yet. Without ``repo``, the repository holding ``path``; if
    ``path`` lies in none, the one holding the current directory (so the error names it).

    Raises:
        NotARepoError: no git/mvc repository there.
        UsageError: ``path`` is outside the repository.
    """
    full = Path(path).expanduser().resolve()
    if repo is None:
        probe = full
        while not probe.exists():
            probe = probe.parent
        repo = probe if gitstore.is_repo(probe) else "."
    ws = workspace.open_workspace(repo)
    return ws, ws.rel(full)


def experiment_of(ws: Workspace) -> str | None:
    """The experiment name when the checked-out branch is ``exp/NAME``."""
    branch = gitstore.current_branch(ws.root)
    if branch and branch.startswith(EXPERIMENT_PREFIX):
        return branch[len(EXPERIMENT_PREFIX) :]
    return None


def plain(value: Any) -> Any:
    """``value`` made YAML/JSON-safe: numpy/torch scalars to numbers, paths and enums to text.

    Arrays become lists; anything else unknown becomes its ``str``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    for attr in ("item", "tolist"):  # numpy / torch scalars, then arrays
        method = getattr(value, attr, None)
        if callable(method):
            try:
                return plain(method())
            except (TypeError, ValueError, RuntimeError):
                continue
    return str(value)


def log_model(
    path: str | Path,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    datasets: Sequence[str | Path] | None = None,
    step: int | None = None,
    message: str = "",
    commit: bool = True,
    push: bool = False,
    repo: str | Path | None = None,
) -> LoggedVersion:
    """Version the weights at ``path`` as ``mvc add`` does, commit mvc's files, queue the upload.

    See :func:`mvc.api.log_model`.
    """
    ws, rel = locate(path, repo)
    request = versioning.VersionRequest(
        name=name,
        params=plain(dict(params or {})),
        metrics=plain(dict(metrics or {})),
        datasets=lineage.dataset_refs(ws.root, [str(d) for d in datasets or []]),
        message=message,
        step=step,
        experiment=experiment_of(ws),
    )
    with _work_lock:
        rec = _record(ws, rel, request)
        logged = _logged(rec)
        if rec.created and commit:
            text = message or f"mvc: {logged.name} v{logged.version}" + (f" (step {step})" if step is not None else "")
            logged = replace(logged, commit=_commit(ws, [rec], text))
        if rec.created and push:
            _uploader.submit(ws, logged)
    return logged


def _record(ws: Workspace, rel: str, request: versioning.VersionRequest) -> versioning.Recorded:
    try:
        return versioning.record(ws, ws.root / rel, request)
    except LockedError as exc:
        if "git index" not in exc.message:
            raise  # DVC's lock: nothing was written
        raise LockedError(
            f"{rel}: the new version is recorded in {rel}.dvc but not committed (nor staged): "
            "the git index is locked by another process (.git/index.lock)",
            hint="when the other git command is done, run `mvc commit -m MSG` (or remove a stale .git/index.lock)",
        ) from exc


def _logged(rec: versioning.Recorded) -> LoggedVersion:
    manifest = rec.pointer.manifest
    assert manifest is not None
    return LoggedVersion(name=manifest.name, version=manifest.version, hash=rec.pointer.md5, commit=None, created=rec.created)


class DetachedHeadWarning(UserWarning):
    """A version was committed onto a detached HEAD: no branch holds it yet (issue 17).

    A warning, not an error: failing a checkpoint save hours into training would lose
    more than it protects. The commit is reachable from HEAD until the next
    ``git checkout``; ``git switch -c NAME`` keeps it on a branch.
    """


def _warn_if_detached(ws: Workspace, records: list[versioning.Recorded]) -> None:
    if gitstore.current_branch(ws.root) is not None:
        return
    import warnings

    labels = ", ".join(f"{v.name} v{v.version}" for v in map(_logged, records))
    warnings.warn(
        DetachedHeadWarning(
            f"{labels} committed onto a detached HEAD: no branch holds it, and checking out a branch "
            "leaves it behind; keep it with `git switch -c NAME`"
        ),
        stacklevel=5,  # the caller of mvc.log_model / mvc.api.run
    )


def _commit(ws: Workspace, records: Iterable[versioning.Recorded], message: str) -> str:
    """Commit exactly the files ``records`` staged; never half a commit.

    Warns (:class:`DetachedHeadWarning`) when HEAD is detached.
    """
    records = list(records)
    _warn_if_detached(ws, records)
    paths = sorted({p for r in records for p in r.staged if (ws.root / p).exists() or p.endswith(".dvc")})
    try:
        return gitstore.commit(ws.root, message, only=paths)
    except LockedError as exc:
        labels = ", ".join(f"{v.name} v{v.version}" for v in map(_logged, records))
        raise LockedError(
            f"{labels} recorded and staged but not committed: the git index is locked by another process (.git/index.lock)",
            hint="when the other git command is done, run `mvc commit -m MSG` (or remove a stale .git/index.lock)",
        ) from exc


# ---- background uploads ------------------------------------------------------------


class _Uploader:
    """One daemon worker draining a queue of versions to upload to the default remote."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Path, LoggedVersion, str | None, str | None]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._uploaded: list[LoggedVersion] = []
        self._failed: list[UploadFailure] = []
        self._exit_hook = False

    def submit(self, ws: Workspace, version: LoggedVersion) -> None:
        """Queue ``version`` for upload to the default remote (named now, in the caller's thread)."""
        try:
            remote: str | None = sync.remote_name(ws, None)
            problem = None
        except RemoteNotFoundError as exc:
            remote, problem = None, exc.message
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="mvc-upload", daemon=True)
                self._thread.start()
            if not self._exit_hook:
                atexit.register(_report_at_exit)
                self._exit_hook = True
        self._queue.put((ws.root, version, remote, problem))

    def _work(self) -> None:
        # Only dvcpush.push_objects runs here: dvcstore calls swap process-wide
        # state (DVC's log levels, sys.stdout) and must stay on the training thread.
        while True:
            root, version, remote, problem = self._queue.get()
            try:
                if remote is None:
                    raise RemoteNotFoundError(problem or "no remote")
                dvcpush.push_objects(root, [version.hash], remote=remote)
                with self._lock:
                    self._uploaded.append(version)
            except Exception as exc:  # every failure is reported by wait(), none kills the worker
                text = exc.message if isinstance(exc, MvcError) else f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._failed.append(UploadFailure(version=version, error=text))
            finally:
                self._queue.task_done()

    def wait(self) -> UploadReport:
        self._queue.join()
        with self._lock:
            report = UploadReport(uploaded=tuple(self._uploaded), failed=tuple(self._failed))
            self._uploaded.clear()
            self._failed.clear()
        return report


_uploader = _Uploader()


def wait() -> UploadReport:
    """Wait for every queued upload; see :func:`mvc.api.wait`.

    Raises:
        RemoteError: some uploads failed (the message lists them).
    """
    report = _uploader.wait()
    if report.failed:
        raise upload_error(report.failed)
    return report


def upload_error(failed: Sequence[UploadFailure]) -> RemoteError:
    """One error naming every failed upload."""
    listing = "; ".join(f"{f.version.name} v{f.version.version} ({f.version.hash[:8]}): {f.error}" for f in failed)
    return RemoteError(
        f"{counted(len(failed), 'background upload')} failed: {listing}",
        hint="the versions are recorded (and committed) locally: upload them with `mvc push` once the remote works",
    )


def _report_at_exit() -> None:
    """At interpreter exit: finish pending uploads and print failures to stderr."""
    report = _uploader.wait()
    if report.failed:
        err = upload_error(report.failed)
        sys.stderr.write(f"mvc: error: {err.message}\nmvc: hint: {err.hint}\n")


# ---- mvc run -------------------------------------------------------------------------


class CommandNotFoundError(NotFoundError):
    """``mvc run``'s command does not exist: exit 127, as a shell does (issue 17)."""

    exit_code = 127


class CommandNotExecutableError(UsageError):
    """``mvc run``'s command cannot be executed: exit 126, as a shell does."""

    exit_code = 126


def run(
    ws: Workspace,
    command: Sequence[str],
    *,
    experiment: str | None = None,
    params_file: str | Path | None = None,
    metrics_file: str | Path | None = None,
    outs: Sequence[str | Path] = (),
    name: str | None = None,
    force: bool = False,
) -> RunResult:
    """Run a training command, then version the weights it wrote and commit mvc's files.

    See :func:`mvc.api.run`.
    """
    if isinstance(command, str):
        command = shlex.split(command)
    if not command:
        raise UsageError("no command to run", hint="put it after --, e.g. `mvc run -- python train.py`")
    if name is not None and len(outs) != 1:
        raise UsageError("--name needs exactly one --out", hint="name a new model: `mvc run --out PATH --name N -- CMD`")
    out_rels = [ws.rel(o) for o in outs]
    branch = switch_experiment(ws, experiment, force=force) if experiment else gitstore.current_branch(ws.root)
    tracked = [p.out for p in workspace.models(ws)]
    before = {out: _signature(ws.root / out) for out in tracked}
    try:
        returncode = subprocess.call(list(command))
    except FileNotFoundError:
        raise CommandNotFoundError(f"{command[0]}: command not found", hint="check the command after --") from None
    except PermissionError:
        raise CommandNotExecutableError(
            f"{command[0]}: permission denied", hint="make it executable or run it through its interpreter"
        ) from None
    if returncode < 0:  # killed by a signal: report it as a shell does, 128 + the signal (issue 14)
        returncode = 128 - returncode
    if returncode != 0:
        return RunResult(command=tuple(command), returncode=returncode, branch=branch, versions=(), commit=None)
    changed = [out for out in tracked if _signature(ws.root / out) != before[out] and (ws.root / out).exists()]
    for rel in out_rels:
        if not (ws.root / rel).exists():
            raise PathNotFoundError(f"--out {rel}: the command did not write it", hint="check the path the command saves to", path=rel)
    params = lineage.read_mapping_file(params_file, option="--params-file") if params_file else {}
    metrics = lineage.read_mapping_file(metrics_file, option="--metrics-file") if metrics_file else {}
    text = "mvc run: " + " ".join(shlex.join(command).split())  # one line, whatever the script
    base = versioning.VersionRequest(params=params, metrics=metrics, message=text, experiment=experiment_of(ws))
    with _work_lock:
        records = [_record(ws, rel, base) for rel in changed if rel not in out_rels]
        records += [_record(ws, rel, replace(base, name=name)) for rel in out_rels]
        created = [r for r in records if r.created]
        sha = _commit(ws, created, text) if created else None
    versions = tuple(replace(_logged(r), commit=sha if r.created else None) for r in records)
    return RunResult(command=tuple(command), returncode=0, branch=branch, versions=versions, commit=sha)


def switch_experiment(ws: Workspace, experiment: str, *, force: bool = False) -> str:
    """Make ``exp/NAME`` the checked-out branch: created from HEAD (``mvc exp new``) or switched to.

    Raises:
        UsageError: a name git cannot use as a branch.
        ConflictError: switching would overwrite weights with unrecorded changes (``force``
            discards them), or git refused.
    """
    from mvc import experiments

    branch = experiments.branch_of(experiment)
    if gitstore.current_branch(ws.root) == branch:
        return branch
    if gitstore.resolve_rev(ws.root, f"refs/heads/{branch}") is None:
        experiments.create(ws, experiment, force=force)
    else:
        experiments.switch(ws, experiment, force=force)
    return branch


def _signature(path: Path) -> tuple[Any, ...] | None:
    """What changes when a program writes ``path`` (a file, or every file under a directory)."""
    try:
        if path.is_file():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns, st.st_ino)
        if path.is_dir():
            return tuple(
                (p.relative_to(path).as_posix(), *_signature(p))  # type: ignore[misc]
                for p in sorted(path.rglob("*"))
                if p.is_file()
            )
    except OSError:
        return None
    return None

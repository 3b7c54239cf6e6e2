"""Sending versions and releases out: ``push`` of models and committed versions, and the
registry's release flow (``tag``, ``promote``, ``unassign``, ``push_registry``) with the
weights uploaded before the git tags that name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mvc import dvcstore, gitstore, history, hooks, refs, registry, sync, tensorsync, verification, workspace
from mvc.errors import ConflictError, MissingObjectError, RemoteNotFoundError
from mvc.pointer import SUFFIX as POINTER_SUFFIX
from mvc.progress import Progress
from mvc.workspace import Workspace


@dataclass(frozen=True)
class PushResult:
    """Outcome of ``push``."""

    remote: str
    transferred: int
    models: tuple[str, ...]
    versions: tuple[str, ...] = ()  # "NAME vN" of the versions named by NAME@REF / all_versions
    missing: tuple[str, ...] = ()  # of those, the ones in neither the local cache nor the remote


@dataclass(frozen=True)
class TagResult:
    """A release registered by ``tag``."""

    name: str
    release: str
    tag: str
    commit: str
    version: int
    hash: str
    pushed: bool


@dataclass(frozen=True)
class PromoteResult:
    """A stage assigned by ``promote`` (and the release registered on the way, if any)."""

    name: str
    stage: str
    tag: str
    commit: str
    version: int
    hash: str
    release: str
    release_tag: str | None
    remote: str
    pushed: bool


@dataclass(frozen=True)
class UnassignResult:
    """A stage taken off its version by ``unassign``."""

    name: str
    stage: str
    tag: str
    commit: str
    pushed: bool


@dataclass(frozen=True)
class RegistryPushResult:
    """Outcome of ``push_registry``: weights uploaded, then tags pushed to the git remote."""

    remote: str
    transferred: int
    git_remote: str
    tags: tuple[str, ...]


def push(
    ws: Workspace,
    items: Sequence[str],
    *,
    remote: str | None,
    jobs: int | None,
    progress: Progress | None,
    all_versions: bool,
) -> PushResult:
    """Upload ``NAME`` (work-tree) and ``NAME@REF`` versions, and with ``all_versions`` every
    committed one; see :func:`mvc.api.push`."""
    plain = [n for n in items if refs.split(n)[1] is None]
    pinned = [refs.resolve(ws, n) for n in items if refs.split(n)[1] is not None]
    ptrs = workspace.select(ws, plain) if plain or not pinned else []
    verification.check_before_push(ws, ptrs)
    rname = sync.remote_name(ws, remote)
    labels = {res.hash: f"{res.name} v{res.version}" for res in pinned}
    # A tensors remote stores a version as a delta against its parent when the parent is
    # there already (issue 15): the work-tree versions, usually the newest, go last.
    last = bool(pinned or all_versions) and tensorsync.layout(ws.root, rname) == tensorsync.TENSORS
    count = 0
    if ptrs and not last:
        rname, count = sync.push(ws, ptrs, remote=rname, jobs=jobs, progress=progress)
    if all_versions:
        wanted = {p.manifest.name for p in ptrs if p.manifest} | {res.name for res in pinned} if items else None
        commits = gitstore.all_commits_touching(ws.root, f"*{POINTER_SUFFIX}")
        for md5, label in history.version_labels(ws, commits).items():
            if wanted is None or label.rsplit(" v", 1)[0] in wanted:
                labels.setdefault(md5, label)
        for p in ptrs:  # uploaded on their own
            labels.pop(p.md5, None)
    missing: tuple[str, ...] = ()
    if labels:
        pushed = sync.push_versions(ws, labels, remote=rname, jobs=jobs, progress=progress)
        count, missing = count + pushed.transferred, pushed.missing
    if ptrs and last:
        count += sync.push(ws, ptrs, remote=rname, jobs=jobs, progress=progress)[1]
    names_ = [p.manifest.name for p in ptrs if p.manifest] + [res.name for res in pinned]
    return PushResult(
        remote=rname,
        transferred=count,
        models=tuple(dict.fromkeys(names_ + [label.rsplit(" v", 1)[0] for label in labels.values()])),
        versions=tuple(sorted(set(labels.values()))),
        missing=missing,
    )


def check_git_remote(ws: Workspace, git_remote: str) -> None:
    if git_remote not in gitstore.git_remotes(ws.root):
        raise RemoteNotFoundError(
            f"no git remote named {git_remote!r}", hint=f"add it with `git remote add {git_remote} URL`", remote=git_remote
        )


def push_tags(ws: Workspace, tags: list[str], commits: list[str], *, remote: str | None, git_remote: str) -> tuple[str, int]:
    check_git_remote(ws, git_remote)
    rname, count = hooks.push_commits(ws, commits, remote=remote)
    gitstore.push_refs(ws.root, git_remote, [f"refs/tags/{t}" for t in tags])
    return rname, count


def tag(ws: Workspace, ref: str, release: str, *, message: str, push: bool, remote: str | None, git_remote: str) -> TagResult:
    """Register ``ref``'s version as ``release``; see :func:`mvc.api.tag`."""
    if push:
        check_git_remote(ws, git_remote)
    registry.check_release(release)  # before the ref: a bad release number is the first error
    res, tag_, commit = registry.register(ws, refs.resolve(ws, ref), release, message=message)
    if push:
        push_tags(ws, [tag_], [commit], remote=remote, git_remote=git_remote)
    return TagResult(name=res.name, release=release, tag=tag_, commit=commit, version=res.version, hash=res.hash, pushed=push)


def promote(
    ws: Workspace, ref: str, stage: str, *, release: str | None, message: str, push: bool, remote: str | None, git_remote: str
) -> PromoteResult:
    """Assign ``stage`` to ``ref``'s version; see :func:`mvc.api.promote`."""
    res = refs.resolve(ws, ref)
    registry.check_stage(stage)
    commit = registry.version_commit(ws, res)
    rname = sync.remote_name(ws, remote)
    if push:
        check_git_remote(ws, git_remote)
        hooks.push_commits(ws, [commit], remote=rname)
        _push_release_object(ws, res.hash, rname)
    if dvcstore.missing_in_remote(ws.root, [res.hash], remote=rname):
        raise ConflictError(
            f"the weights of {res.name} v{res.version} ({res.hash[:8]}) are not in remote {rname!r}",
            hint=f"upload them first: `mvc promote {ref} --stage {stage} --push` (or `mvc push` while that version is checked out)",
        )
    tag_, release_tag, release_name = registry.assign(ws, res, commit, stage, release=release, message=message)
    if push:
        # The stage tag names a release: push that release's tag too, new or not (issue 14).
        release_ref = release_tag or f"{registry.tag_name(res.name)}@{release_name}"
        push_tags(ws, [release_ref, tag_], [commit], remote=rname, git_remote=git_remote)
    return PromoteResult(
        name=res.name,
        stage=stage,
        tag=tag_,
        commit=commit,
        version=res.version,
        hash=res.hash,
        release=release_name,
        release_tag=release_tag,
        remote=rname,
        pushed=push,
    )


def unassign(ws: Workspace, name: str, stage: str, *, message: str, push: bool, git_remote: str) -> UnassignResult:
    """Take ``stage`` off the version holding it; see :func:`mvc.api.unassign`."""
    if push:
        check_git_remote(ws, git_remote)
    tag_, commit = registry.unassign(ws, name, stage, message=message)
    if push:
        push_tags(ws, [tag_], [], remote=None, git_remote=git_remote)
    return UnassignResult(name=name, stage=stage, tag=tag_, commit=commit, pushed=push)


def push_registry(ws: Workspace, wanted: Sequence[str], *, remote: str | None, git_remote: str) -> RegistryPushResult:
    """Upload what every registry tag names, then push the tags; see :func:`mvc.api.push_registry`."""
    evs = [e for e in registry.events(ws) if not wanted or e.artifact in wanted]
    commits = list(dict.fromkeys(e.commit for e in evs))
    rname, count = push_tags(ws, [e.tag for e in evs], commits, remote=remote, git_remote=git_remote) if evs else (sync.remote_name(ws, remote), 0)
    return RegistryPushResult(remote=rname, transferred=count, git_remote=git_remote, tags=tuple(e.tag for e in evs))


def push_full(ws: Workspace, items: Sequence[str], *, remote: str | None, jobs: int | None) -> PushResult:
    """Upload the plain DVC objects of ``NAME`` / ``NAME@REF`` versions, whatever the remote's
    layout (issue 15: a tensors remote then serves them to plain ``dvc pull``).

    Raises:
        MissingObjectError: a version's weights are not in the local cache.
    """
    rname = sync.remote_name(ws, remote)
    plain = [n for n in items if refs.split(n)[1] is None]
    pinned = [refs.resolve(ws, n) for n in items if refs.split(n)[1] is not None]
    ptrs = workspace.select(ws, plain) if plain or not pinned else []
    labels = {p.md5: f"{p.manifest.name} v{p.version}" for p in ptrs if p.manifest and p.md5}
    labels.update({res.hash: f"{res.name} v{res.version}" for res in pinned})
    lost = [m for m in labels if not dvcstore.has_object(ws.root, m)]
    if lost:
        raise MissingObjectError(
            f"the weights of {labels[lost[0]]} ({lost[0][:8]}) are not in the local cache",
            hint=f"pull them first: `mvc pull {labels[lost[0]].replace(' v', '@v', 1)}`",
        )
    count = tensorsync.push_full(ws.root, sorted(labels), remote=rname, jobs=jobs)
    return PushResult(
        remote=rname,
        transferred=count,
        models=tuple(dict.fromkeys(label.rsplit(" v", 1)[0] for label in labels.values())),
        versions=tuple(sorted(set(labels.values()))),
    )


def _push_release_object(ws: Workspace, md5: str, remote: str) -> None:
    """A version about to get a stage also gets the plain DVC object on a tensors remote (issue 15)."""
    if tensorsync.layout(ws.root, remote) == tensorsync.TENSORS and dvcstore.has_object(ws.root, md5):
        tensorsync.push_full(ws.root, [md5], remote=remote)

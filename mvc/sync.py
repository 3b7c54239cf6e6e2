"""Moving weights between the work tree, the local cache and a remote; and where they are."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mvc import dvcintegrity, dvcpush, dvcremotes, dvcstore, gitstore, history, pointer, rollback, tensordirs, tensorspace, tensorsync
from mvc.errors import ConflictError, IntegrityError, MissingObjectError, RemoteError, RemoteNotFoundError, UsageError
from mvc.pointer import Pointer
from mvc.progress import Progress, models_label
from mvc.workspace import Workspace


@dataclass(frozen=True)
class ModelStatus:
    """Where one model stands."""

    name: str
    path: str
    version: int
    hash: str
    committed: bool  # the pointer in the work tree equals the one at HEAD
    workspace: str  # ok | modified | missing | added outside mvc
    cache: str  # ok | missing
    remote: str  # ok | missing | no remote | not checked | unreachable | denied
    remote_name: str | None


def remote_name(ws: Workspace, remote: str | None) -> str:
    """``remote`` or the default remote's name.

    Raises:
        RemoteNotFoundError: no such remote / no default remote.
    """
    configured = {r.name: r for r in dvcremotes.remotes(ws.root)}
    if remote is not None:
        if remote not in configured:
            names = ", ".join(sorted(configured)) or "none"
            raise RemoteNotFoundError(
                f"no remote named {remote!r} (remotes: {names})",
                hint="list them with `mvc remote list`",
                remote=remote,
                candidates=tuple(sorted(configured)),
            )
        return remote
    for r in configured.values():
        if r.default:
            return r.name
    raise RemoteNotFoundError(
        "no remote is set for this repository",
        hint="add one: `mvc remote add NAME URL --default`",
    )


def status(ws: Workspace, ptrs: list[Pointer], *, remote: str | None = None, check_remote: bool = True) -> list[ModelStatus]:
    """The status of each model in ``ptrs``."""
    with dvcstore.session(ws.root):
        return _status(ws, ptrs, remote=remote, check_remote=check_remote)


def _status(ws: Workspace, ptrs: list[Pointer], *, remote: str | None, check_remote: bool) -> list[ModelStatus]:
    try:
        rname: str | None = remote_name(ws, remote)
    except RemoteNotFoundError:
        if remote is not None:
            raise
        rname = None
    states = dvcstore.object_status(ws.root, {p.path: p.md5 for p in ptrs}, remote=rname, check_remote=False, outs={p.path: p.out for p in ptrs})
    # The remote is asked apart, within a few seconds: an unreachable or denied default
    # remote marks its column and leaves the local state shown; a remote the user named
    # with --remote fails the command (exit 5).
    presence = None
    if check_remote and rname is not None and ptrs:
        presence = dvcstore.remote_presence(ws.root, [p.md5 for p in ptrs if p.md5], remote=rname)
        if presence.error is not None and remote is not None:
            raise presence.error
        if presence.state == "ok" and tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:  # issue 15
            held = {p.md5 for p in ptrs if p.md5 and p.md5 not in presence.present and tensordirs.on_remote(ws.root, p.md5, remote=rname)}
            presence = replace(presence, present=presence.present | held)
    head = gitstore.head_commit(ws.root)
    conflicted = set(gitstore.unmerged_paths(ws.root)) if head is not None else set()
    same = gitstore.unchanged_since(ws.root, "HEAD", [p.path for p in ptrs]) if head is not None else set()
    numbers = history.effective_numbers(ws, ptrs)
    out = []
    for ptr in ptrs:
        assert ptr.manifest is not None
        st = states[ptr.path]
        committed = ptr.path in same
        workspace = "added outside mvc" if ptr.outside_mvc else st.workspace
        if not (ws.root / ptr.out).exists():
            workspace = "missing"  # a fresh clone before `mvc pull`: DVC says "not in cache" (issue 14)
        if ptr.path in conflicted:
            workspace = "conflict"  # a merge left the pointer unresolved (issue 17)
        if workspace == "modified":
            rb = rollback.current(ws, ptr.path, ptr.out)
            if rb is not None:
                workspace = f"rolled back to v{rb.version}"
        if rname is None:
            remote_state = "no remote"
        elif presence is None:
            remote_state = "not checked"
        elif presence.state != "ok":
            remote_state = presence.state
        else:
            remote_state = "ok" if ptr.md5 in presence.present else "missing"
        out.append(
            ModelStatus(
                name=ptr.manifest.name,
                path=ptr.out,
                version=numbers[ptr.path],
                hash=ptr.md5,
                committed=committed,
                workspace=workspace,
                cache="ok" if st.in_cache else "missing",
                remote=remote_state,
                remote_name=rname,
            )
        )
    return out


def push(ws: Workspace, ptrs: list[Pointer], *, remote: str | None, jobs: int | None, progress: Progress | None) -> tuple[str, int]:
    """Upload the weights of ``ptrs``; return (remote name, objects uploaded)."""
    rname = remote_name(ws, remote)
    if tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:  # issue 15
        released = tensorsync.released_hashes(ws)
        items = [tensorsync.item(p, released) for p in ptrs if p.md5]
        return rname, tensordirs.push(ws.root, items, remote=rname, jobs=jobs, progress=progress)  # directories file by file
    uncached = [p for p in ptrs if p.md5 and not dvcstore.has_object(ws.root, p.md5)]
    result = dvcstore.push(ws.root, [p.path for p in ptrs], remote=rname, jobs=jobs, progress=progress, label=_bar_label(ptrs))
    # DVC skips (with a warning nobody sees) weights it cannot find: neither here nor there is a failure.
    lost = dvcstore.missing_in_remote(ws.root, [p.md5 for p in uncached], remote=rname) if uncached else set()
    if lost:
        listing = ", ".join(f"{_label(p)} ({p.md5[:8]})" for p in uncached if p.md5 in lost)
        raise MissingObjectError(
            f"the weights of {listing} are in neither the local cache nor remote {rname!r}; the others were pushed",
            hint="pull them from a remote that has them (`mvc pull --remote R`), or re-add the weights with `mvc add PATH`",
        )
    return rname, result.transferred


def pull(
    ws: Workspace,
    ptrs: list[Pointer],
    *,
    remote: str | None,
    jobs: int | None,
    progress: Progress | None,
    verify: bool = True,
    force: bool = False,
) -> tuple[str, int, dict[str, list[str]]]:
    """Download the weights of ``ptrs`` and check them out; return (remote, fetched, changes).

    Raises:
        MissingObjectError: some weights are in neither the cache nor the remote; the
            others are still checked out.
        IntegrityError: a downloaded object does not match its hash (with ``verify``).
        ConflictError: work-tree weights hold changes no version records (without
            ``force``); nothing is downloaded or changed then (issue 14).
    """
    with dvcstore.lock(ws.root):  # one DVC repo for the remote's name, fetch, status and checkout
        rname = remote_name(ws, remote)
        if not force:
            rollback.refuse_unsaved(ws, ptrs)
        # Cached objects mvc never verified (fetched by plain DVC, by an interrupted pull,
        # or changed since) are re-hashed; bad ones go, so the fetch brings good copies.
        dropped = set(dvcintegrity.drop_corrupt(ws.root, [p.md5 for p in ptrs if p.md5])) if verify else set()
        rebuilt = 0
        if tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:  # issue 15: chunks first, DVC for the rest
            rebuilt = tensordirs.fetch(ws.root, [tensorsync.item(p) for p in ptrs], remote=rname, jobs=jobs, progress=progress)
        fetched = dvcstore.fetch(
            ws.root, [p.path for p in ptrs], remote=rname, jobs=jobs, progress=progress, verify=verify, label=_bar_label(ptrs)
        )
        _refuse_unsafe_listings(ws, ptrs)
        states = dvcstore.object_status(ws.root, {p.path: p.md5 for p in ptrs}, check_remote=False)
        present = [p for p in ptrs if states[p.path].in_cache]
        missing = [p for p in ptrs if not states[p.path].in_cache]
        changes = dvcstore.checkout(ws.root, [p.path for p in present]) if present else {}
    lost = [p for p in missing if dropped & dvcstore.object_ids(ws.root, p.md5)]
    if lost:
        raise IntegrityError(
            f"the cached weights of {_label(lost[0])} ({lost[0].md5[:8]}) were corrupt and remote {rname!r} has no "
            "copy; nothing was checked out for it",
            hint="push a good copy from a machine that has the weights (`mvc push`), or re-add them with `mvc add`",
        )
    if missing and tensorsync.layout(ws.root, rname) == tensorsync.FULL:
        with contextlib.suppress(RemoteError):
            tensorsync.refuse_tensors_remote(ws.root, rname)  # issue 15: the remote holds the tensors layout
    if missing:
        listing = ", ".join(f"{_label(p)} ({p.md5[:8]})" for p in missing)
        raise MissingObjectError(
            f"the weights of {listing} are in neither the local cache nor remote {rname!r}",
            hint="push them from the machine that added them (`mvc push`), or pull from another remote with --remote",
        )
    return rname, fetched.transferred + rebuilt, changes


def weights_match(ws: Workspace, ptr: Pointer) -> bool:
    """True when the work-tree weights of ``ptr`` are the ones it records."""
    if not (ws.root / ptr.out).exists():
        return False
    return dvcstore.object_status(ws.root, {ptr.path: ptr.md5}, check_remote=False)[ptr.path].workspace == "ok"


def _refuse_unsafe_listings(ws: Workspace, ptrs: list[Pointer]) -> None:
    """Refuse a directory version whose listing names a path outside its directory (before any write).

    Raises:
        IntegrityError: such a listing, naming the model and the entry.
    """
    for ptr in ptrs:
        entry = dvcstore.unsafe_listing_entry(ws.root, ptr.md5) if ptr.md5 else None
        if entry is not None:
            raise dvcstore.unsafe_listing_error(f"{_label(ptr)}", ptr.md5, entry)


def _label(ptr: Pointer) -> str:
    return f"{ptr.manifest.name} v{ptr.manifest.version}" if ptr.manifest else ptr.out


def _bar_label(ptrs: list[Pointer]) -> str:
    """What a transfer's progress bar names: ``clf v3``, or ``3 models``."""
    return models_label([_label(p) for p in ptrs])


def checkout(ws: Workspace, ptrs: list[Pointer]) -> dict[str, list[str]]:
    """Make the work-tree weights of ``ptrs`` match their pointers (from the cache).

    Raises:
        IntegrityError: a directory listing names a path outside its directory, or a
            cache object mvc has not verified no longer matches its hash.
    """
    _refuse_unsafe_listings(ws, ptrs)
    for ptr in ptrs:
        bad = dvcintegrity.corrupt_in_cache(ws.root, [ptr.md5]) if ptr.md5 else []
        if bad:
            raise IntegrityError(
                f"cache object {bad[0][:8]} of {_label(ptr)} no longer matches its hash; nothing was checked out",
                hint=f"fetch a good copy with `mvc verify {ptr.manifest.name if ptr.manifest else ptr.out} --repair`",
            )
    changes = dvcstore.checkout(ws.root, [p.path for p in ptrs])
    rollback.clear(ws, [p.path for p in ptrs])
    return changes


@dataclass(frozen=True)
class PushedVersions:
    """Outcome of :func:`push_versions`."""

    remote: str
    transferred: int  # objects uploaded
    missing: tuple[str, ...]  # "NAME vN (md5[:8])" of versions in neither the cache nor the remote


def push_versions(
    ws: Workspace, labels: dict[str, str], *, remote: str | None, jobs: int | None = None, progress: Progress | None = None
) -> PushedVersions:
    """Upload the weights of versions given by content hash (``md5 -> "NAME vN"``) that the remote lacks.

    Any version, not only the work tree's: ``mvc push NAME@v1``, ``--all-versions`` and
    the pre-push hook. Versions in neither the local cache nor the remote are skipped and
    returned in ``missing``; the others are still uploaded.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or the upload failed.
        IntegrityError: a cache object no longer matches its hash (nothing of it is uploaded).
    """
    rname = remote_name(ws, remote)
    if labels and tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:  # issue 15
        from mvc import tensorplan

        released = tensorsync.released_hashes(ws)
        here = [m for m in sorted(labels) if dvcstore.has_object(ws.root, m)]
        items = tensorplan.push_items(ws, here, labels, released)  # with their parents: stored as deltas
        gone = tuple(f"{labels[m]} ({m[:8]})" for m in sorted(set(labels) - set(here)) if not tensordirs.on_remote(ws.root, m, remote=rname))
        return PushedVersions(remote=rname, transferred=tensordirs.push(ws.root, items, remote=rname, jobs=jobs), missing=gone)
    absent = dvcstore.missing_in_remote(ws.root, labels, remote=rname) if labels else set()
    local = [m for m in sorted(absent) if dvcstore.has_object(ws.root, m)]
    lost = tuple(f"{labels[m]} ({m[:8]})" for m in sorted(absent - set(local)))
    label = models_label([labels[m] for m in local])
    count = dvcpush.push_objects(ws.root, local, remote=rname, jobs=jobs, progress=progress, label=label).transferred if local else 0
    return PushedVersions(remote=rname, transferred=count, missing=lost)


__all__ = ["ModelStatus", "PushedVersions", "checkout", "pointer", "pull", "push", "push_versions", "remote_name", "status"]


def ensure_cached(
    ws: Workspace, ptr: Pointer, commit: str | None, *, remote: str | None = None, progress: Progress | None = None
) -> None:
    """Make sure the local cache holds the weights ``ptr`` records, fetching them if needed.

    Raises:
        MissingObjectError: in neither the cache nor the remote.
    """
    if dvcstore.has_object(ws.root, ptr.md5):
        return
    try:
        rname: str | None = remote_name(ws, remote)
    except RemoteNotFoundError:
        rname = None
    if rname is not None and tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:  # issue 15
        tensordirs.fetch(ws.root, [tensorsync.item(ptr)], remote=rname, progress=progress)
    if rname is not None and not dvcstore.has_object(ws.root, ptr.md5):
        if commit is not None:
            dvcstore.fetch_at(ws.root, ptr.path, commit, remote=rname, progress=progress, label=_label(ptr))
        else:
            dvcstore.fetch(ws.root, [ptr.path], remote=rname, progress=progress, label=_label(ptr))
    if not dvcstore.has_object(ws.root, ptr.md5):
        where = f"remote {rname!r}" if rname else "any remote (none is set)"
        raise MissingObjectError(
            f"the weights of {_label(ptr)} ({ptr.md5[:8]}) are in neither the local cache nor {where}",
            hint="push them from the machine that added them (`mvc push`)",
        )


def materialize(
    ws: Workspace,
    ptr: Pointer,
    commit: str | None,
    dest: Path,
    *,
    remote: str | None = None,
    verify: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Write the weights ``ptr`` records into ``dest`` (a new file or directory) from the cache.

    Fetches from the remote when needed; never touches the user's work tree.
    Returns the path of the weights inside ``dest``'s parent (``dest`` itself).
    """
    ensure_cached(ws, ptr, commit, remote=remote, progress=progress)
    return dvcstore.export(ws.root, ptr.md5, dest, verify=verify)


def storage(ws: Workspace, name: str | None, *, remote: str | None) -> tensorspace.StorageReport:
    """What each version costs on a ``tensors`` remote (issue 15)."""
    return tensordirs.storage(ws, remote_name(ws, remote), name=name)  # directory versions summed over their files


def pull_tensors(
    ws: Workspace, ref: str, patterns: Sequence[str], *, out: Path | None, remote: str | None, jobs: int | None
) -> tensorsync.PartialFile:
    """Write a safetensors file of ``ref``'s tensors matching ``patterns``, from their chunks only.

    Raises:
        UsageError: the remote does not use the tensors layout.
    """
    from mvc import refs

    rname = remote_name(ws, remote)
    if tensorsync.layout(ws.root, rname) != tensorsync.TENSORS:
        raise UsageError(
            f"--tensors reads a remote with the tensors layout; {rname!r} uses the full layout",
            hint="pull the whole version, or name a tensors remote with --remote",
        )
    res = refs.resolve(ws, ref)
    item = replace(tensorsync.item(res.pointer), label=f"{res.name} v{res.version}")
    weights = ws.root / res.pointer.out
    dest = out if out is not None else weights.with_name(f"{weights.stem}.partial.safetensors")
    _check_partial_dest(ws, dest, f"--out {out}" if out is not None else f"the partial file {dest}")
    from mvc import comparison

    index = comparison.load_indexes(ws, [res])[0]  # from git: what each tensor must be
    return tensorsync.pull_tensors(ws.root, item, list(patterns), dest, remote=rname, jobs=jobs, index=index)


def _check_partial_dest(ws: Workspace, dest: Path, shown: str) -> None:
    """Refuse to write a partial file over a directory, tracked weights, a pointer or mvc's,
    DVC's or git's own files: a partial file there would replace (and lose) what they hold.

    Raises:
        UsageError: ``dest`` is a directory. ConflictError: ``dest`` is something mvc keeps.
    """
    if dest.is_dir():
        raise UsageError(f"{shown} is a directory", hint="name the file to write, e.g. `--out DIR/part.safetensors`")
    try:
        rel = dest.resolve().relative_to(ws.root.resolve())
    except ValueError:
        return  # outside the repository: the user's own file
    hint = "write it elsewhere with `--out PATH` (the default is WEIGHTS.partial.safetensors)"
    if rel.parts[0] in (".git", ".dvc", ".mvc") or rel.name.endswith(pointer.SUFFIX):
        raise ConflictError(f"{shown} is a file git, DVC or mvc keeps", hint=hint)
    for i in range(1, len(rel.parts) + 1):
        outer = "/".join(rel.parts[:i])
        if (ws.root / pointer.pointer_path(outer)).is_file():
            raise ConflictError(f"{shown} would overwrite the tracked weights {outer}", hint=hint)

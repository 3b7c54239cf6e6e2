"""Moving weights between the work tree, the local cache and a remote; and where they are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvc import dvcstore, gitstore, pointer, rollback
from mvc.errors import MissingObjectError, RemoteNotFoundError
from mvc.pointer import Pointer
from mvc.progress import Progress
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
    remote: str  # ok | missing | no remote | not checked
    remote_name: str | None


def remote_name(ws: Workspace, remote: str | None) -> str:
    """``remote`` or the default remote's name.

    Raises:
        RemoteNotFoundError: no such remote / no default remote.
    """
    configured = {r.name: r for r in dvcstore.remotes(ws.root)}
    if remote is not None:
        if remote not in configured:
            names = ", ".join(sorted(configured)) or "none"
            raise RemoteNotFoundError(f"no remote named {remote!r} (remotes: {names})", hint="list them with `mvc remote list`")
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
    try:
        rname: str | None = remote_name(ws, remote)
    except RemoteNotFoundError:
        if remote is not None:
            raise
        rname = None
    states = dvcstore.object_status(
        ws.root, {p.path: p.md5 for p in ptrs}, remote=rname, check_remote=check_remote and rname is not None
    )
    head = gitstore.head_commit(ws.root)
    out = []
    for ptr in ptrs:
        assert ptr.manifest is not None
        st = states[ptr.path]
        committed = head is not None and gitstore.read_blob(ws.root, "HEAD", ptr.path) == (ws.root / ptr.path).read_bytes()
        workspace = "added outside mvc" if ptr.outside_mvc else st.workspace
        if workspace == "modified":
            rb = rollback.current(ws, ptr.path, ptr.out)
            if rb is not None:
                workspace = f"rolled back to v{rb.version}"
        if rname is None:
            remote_state = "no remote"
        elif st.in_remote is None:
            remote_state = "not checked"
        else:
            remote_state = "ok" if st.in_remote else "missing"
        out.append(
            ModelStatus(
                name=ptr.manifest.name,
                path=ptr.out,
                version=ptr.manifest.version,
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
    result = dvcstore.push(ws.root, [p.path for p in ptrs], remote=rname, jobs=jobs, progress=progress)
    return rname, result.transferred


def pull(
    ws: Workspace,
    ptrs: list[Pointer],
    *,
    remote: str | None,
    jobs: int | None,
    progress: Progress | None,
    verify: bool = True,
) -> tuple[str, int, dict[str, list[str]]]:
    """Download the weights of ``ptrs`` and check them out; return (remote, fetched, changes).

    Raises:
        MissingObjectError: some weights are in neither the cache nor the remote; the
            others are still checked out.
        IntegrityError: a downloaded object does not match its hash (with ``verify``).
    """
    rname = remote_name(ws, remote)
    with dvcstore.lock(ws.root):  # one DVC repo for fetch, status and checkout
        fetched = dvcstore.fetch(ws.root, [p.path for p in ptrs], remote=rname, jobs=jobs, progress=progress, verify=verify)
        states = dvcstore.object_status(ws.root, {p.path: p.md5 for p in ptrs}, check_remote=False)
        present = [p for p in ptrs if states[p.path].in_cache]
        missing = [p for p in ptrs if not states[p.path].in_cache]
        changes = dvcstore.checkout(ws.root, [p.path for p in present]) if present else {}
    if missing:
        listing = ", ".join(f"{_label(p)} ({p.md5[:8]})" for p in missing)
        raise MissingObjectError(
            f"the weights of {listing} are in neither the local cache nor remote {rname!r}",
            hint="push them from the machine that added them (`mvc push`), or pull from another remote with --remote",
        )
    return rname, fetched.transferred, changes


def _label(ptr: Pointer) -> str:
    return f"{ptr.manifest.name} v{ptr.manifest.version}" if ptr.manifest else ptr.out


def checkout(ws: Workspace, ptrs: list[Pointer]) -> dict[str, list[str]]:
    """Make the work-tree weights of ``ptrs`` match their pointers (from the cache)."""
    changes = dvcstore.checkout(ws.root, [p.path for p in ptrs])
    rollback.clear(ws, [p.path for p in ptrs])
    return changes


@dataclass(frozen=True)
class PushedVersions:
    """Outcome of :func:`push_versions`."""

    remote: str
    transferred: int  # objects uploaded
    missing: tuple[str, ...]  # "NAME vN (md5[:8])" of versions in neither the cache nor the remote


def push_versions(ws: Workspace, labels: dict[str, str], *, remote: str | None, jobs: int | None = None) -> PushedVersions:
    """Upload the weights of versions given by content hash (``md5 -> "NAME vN"``) that the remote lacks.

    Any version, not only the work tree's: ``mvc push NAME@v1``, ``--all-versions`` and
    the pre-push hook. Versions in neither the local cache nor the remote are skipped and
    returned in ``missing``; the others are still uploaded.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or the upload failed.
        IntegrityError: a cache object no longer matches its hash (nothing of it is uploaded).
    """
    rname = remote_name(ws, remote)
    absent = dvcstore.missing_in_remote(ws.root, labels, remote=rname) if labels else set()
    local = [m for m in sorted(absent) if dvcstore.has_object(ws.root, m)]
    lost = tuple(f"{labels[m]} ({m[:8]})" for m in sorted(absent - set(local)))
    count = dvcstore.push_objects(ws.root, local, remote=rname, jobs=jobs).transferred if local else 0
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
    if rname is not None:
        if commit is not None:
            dvcstore.fetch_at(ws.root, ptr.path, commit, remote=rname, progress=progress)
        else:
            dvcstore.fetch(ws.root, [ptr.path], remote=rname, progress=progress)
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

"""What the tensors layout (issue 15) needs of DVC: the remote's root, cache file objects,
and directory versions' ``.dir`` listings moved alone.

Part of the DVC adapter (see :mod:`mvc.dvcstore`); :mod:`mvc.tensorsync` and
:mod:`mvc.tensorread` store and read the chunks themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mvc.dvcremotes import remotes
from mvc.dvcstore import _named_remote, _repo, _repo_at, _translate, _VerifiedLog
from mvc.errors import MissingObjectError, MvcError, RemoteError, counted


def remote_root(root: Path, remote: str) -> tuple[Any, str, bool]:
    """The fsspec filesystem of ``remote``, its root path (above DVC's ``files/md5``) and
    whether it is a local directory (then the path is an ordinary one, for ``os``).

    Raises:
        RemoteNotFoundError: no such remote.
    """
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "push")
        return odb.fs.fs, _odb_root(odb), odb.fs.protocol == "local"


def _odb_root(odb: Any) -> str:
    """The remote's root path: its object store's path above DVC's ``files/md5``."""
    path = str(odb.path)
    for tail in ("/files/md5", "\\files\\md5"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    return path


def remote_failure(exc: BaseException, remote: str, root: Path) -> MvcError:
    """The one error for a remote filesystem call that failed (auth, network, missing bucket)."""
    url = next((r.url for r in remotes(root) if r.name == remote), None)
    return _translate(exc, None, remote, url)


def cache_file(root: Path, md5: str) -> Path:
    """Where the local cache keeps the file object ``md5`` (it may not exist)."""
    with _repo(root) as repo:
        return Path(repo.cache.local.oid_to_path(md5))


def tmp_dir(root: Path) -> Path:
    """DVC's scratch directory of the repository (``.dvc/tmp``), never tracked."""
    with _repo(root) as repo:
        return Path(repo.tmp_dir or os.path.join(repo.root_dir, ".dvc", "tmp"))


def adopt_cache_file(root: Path, md5: str, src: Path) -> Path:
    """Move ``src``, a file mvc has checked to hash to ``md5``, into the cache as that object.

    The rename is atomic (``src`` must be on the cache's filesystem), the object is
    read-only as DVC leaves its own, and it is recorded as verified so the next pull or
    checkout does not hash it again.
    """
    with _repo(root) as repo:
        dest = repo.cache.local.oid_to_path(md5)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.chmod(src, 0o444)
        os.replace(src, dest)
        _VerifiedLog(repo).record([dest])
        return Path(dest)


def remote_root_at(git_root: Path, rev: str, remote: str | None, *, cache_dir: Path) -> tuple[Any, str, bool, str, str | None]:
    """:func:`remote_root` for a clone without a work tree (``mvc get``): the remote as the
    ``.dvc/config`` at ``rev`` names it (default: its default remote), credentials from the
    environment.

    Returns:
        ``(filesystem, root path, is a local directory, remote name, url)``.

    Raises:
        NotARepoError: no DVC set-up at ``rev``. RemoteNotFoundError: no such remote.
    """
    with _repo_at(git_root, rev, remote, cache_dir=cache_dir) as repo:
        name, url = _named_remote(repo, remote)
        odb = repo.cloud.get_remote_odb(name, "push")
        return odb.fs.fs, _odb_root(odb), odb.fs.protocol == "local", name, url


def remote_failure_at(exc: BaseException, remote: str, url: str | None) -> MvcError:
    """:func:`remote_failure` when the remote's URL is known (no repository to look it up in)."""
    return _translate(exc, None, remote, url)


# ---- directory versions on a tensors remote: the listing alone (issue 15) ------------------


def push_listings(root: Path, md5s: Iterable[str], *, remote: str) -> int:
    """Upload the ``.dir`` listing objects ``md5s`` the remote lacks, without their files.

    Raises:
        MissingObjectError: a listing is not in the local cache.
        RemoteNotFoundError / RemoteError: the remote is unknown, or refused or failed.
    """
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.transfer import transfer

    wanted = sorted(set(md5s))
    if not wanted:
        return 0
    try:
        with _repo(root, remote) as repo:
            cache = repo.cache.local
            lost = [m for m in wanted if not cache.exists(m)]
            if lost:
                raise MissingObjectError(f"the listing {lost[0][:8]}.dir is not in the local cache", hint="re-add the weights with `mvc add`")
            odb = repo.cloud.get_remote_odb(remote, "push")
            absent = [m for m in wanted if m not in set(odb.oids_exist(wanted))]
            if not absent:
                return 0
            result = transfer(cache, odb, [HashInfo("md5", m) for m in absent], cache_odb=cache)
    except MvcError:
        raise
    except Exception as exc:
        raise _translate(exc, None, remote) from exc
    if result.failed:
        raise RemoteError(f"{counted(len(result.failed), 'listing')} failed to upload to remote {remote!r}", hint="run `mvc push` again")
    return len(result.transferred)


def fetch_listings(root: Path, md5s: Iterable[str], *, remote: str) -> None:
    """Download the ``.dir`` listing objects ``md5s`` the local cache lacks (not their files);
    a listing the remote lacks, or whose bytes do not match its hash, is left out.

    Raises:
        RemoteNotFoundError / RemoteError: the remote is unknown, or failed.
    """
    import hashlib

    from dvc_data.hashfile.hash_info import HashInfo

    try:
        with _repo(root, remote) as repo:
            cache = repo.cache.local
            wanted = [m for m in sorted(set(md5s)) if m.endswith(".dir") and not cache.exists(m)]
            if not wanted:
                return
            odb = repo.cloud.get_remote_odb(remote, "fetch")
            there = set(odb.oids_exist(wanted))
            todo = [HashInfo("md5", m) for m in wanted if m in there]
            if todo:
                repo.cloud.pull(todo, remote=remote)
            for m in wanted:  # a listing is trusted only when its bytes hash to its name
                path = Path(cache.oid_to_path(m))
                if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != m[: -len(".dir")]:
                    os.chmod(path, 0o644)  # DVC keeps cache files read-only
                    path.unlink()
    except MvcError:
        raise
    except Exception as exc:
        raise _translate(exc, None, remote) from exc


def listings_on_remote(root: Path, md5s: Iterable[str], *, remote: str) -> set[str]:
    """Those ``.dir`` listing objects of ``md5s`` that ``remote`` holds (their files are not asked).

    Raises:
        RemoteNotFoundError / RemoteError: the remote is unknown, or failed.
    """
    wanted = sorted(set(md5s))
    if not wanted:
        return set()
    try:
        with _repo(root, remote) as repo:
            return set(repo.cloud.get_remote_odb(remote, "status").oids_exist(wanted))
    except MvcError:
        raise
    except Exception as exc:
        raise _translate(exc, None, remote) from exc


__all__ = [
    "adopt_cache_file",
    "cache_file",
    "fetch_listings",
    "listings_on_remote",
    "push_listings",
    "remote_failure",
    "remote_failure_at",
    "remote_root",
    "remote_root_at",
    "tmp_dir",
]

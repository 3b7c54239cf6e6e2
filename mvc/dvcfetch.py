"""Fetching weights by hash away from a work tree: ``mvc get`` and cluster workers.

Part of the DVC adapter (see :mod:`mvc.dvcstore`). :func:`fetch_version` reads a
repository's remote from a clone without a work tree (issue 3); :func:`fetch_object`
reads a remote with no repository at all, from the settings :func:`remote_access`
ships to cluster workers (issue 16). Every download is re-hashed before it is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mvc import documents
from mvc.dvcstore import (
    _copy,
    _engine_fetch,
    _export_from,
    _fetch_bytes,
    _hash_matches,
    _named_remote,
    _object_ids_in,
    _progress_hook,
    _repo,
    _repo_at,
    _translate,
    _tree_entries,
    _unsafe_relpath,
    _verified_download,
    _where,
    unsafe_listing_error,
)
from mvc.errors import IntegrityError, MissingObjectError, MvcError, RemoteNotFoundError
from mvc.progress import ByteMeter, Progress


def fetch_version(
    git_root: Path,
    rev: str,
    md5: str,
    dest: Path,
    *,
    cache_dir: Path,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    label: str | None = None,
    size: int | None = None,
) -> str:
    """Download the weights ``md5`` from a repository's remote and copy them to ``dest``.

    For ``mvc get``: ``git_root`` is a clone without a work tree; DVC reads its config
    from git at ``rev``, and the objects go to the private cache ``cache_dir``. Downloads
    are re-hashed (see :func:`_verified_download`). ``progress`` receives the bytes as
    one task named ``label``, whose total is ``size`` (the weights' size the pointer
    records) plus a directory listing's own bytes.

    Returns:
        The name of the remote the weights came from.

    Raises:
        NotARepoError: the repository has no DVC set-up at ``rev``.
        RemoteNotFoundError: no such remote / no default remote.
        MissingObjectError: the remote lacks the weights.
        IntegrityError: a downloaded object does not match its hash, or the directory
            listing names a path outside the directory (``label`` names the version).
        RemoteError: the remote refused or could not be reached.
    """
    from dvc_data.hashfile.hash_info import HashInfo

    with _repo_at(git_root, rev, remote, cache_dir=cache_dir) as repo:
        name, url = _named_remote(repo, remote)
        odb = repo.cache.local
        meter = ByteMeter(progress, label or md5[:8], _fetch_bytes(repo, name, {md5: size})) if progress else None
        with _progress_hook(meter):
            _engine_fetch(repo, name, [md5], jobs=jobs, progress=meter)
            with _verified_download(repo, name, [md5]):
                if not odb.exists(md5):  # the engine brought what an S3 / GCS remote holds
                    repo.cloud.pull([HashInfo("md5", md5)], jobs=jobs, remote=name)
                if md5.endswith(".dir") and odb.exists(md5) and _hash_matches(odb, md5):
                    entry = _unsafe_relpath(_tree_entries(odb, md5) or [])
                    if entry is not None:
                        raise unsafe_listing_error(label or f"object {md5[:8]}", md5, entry)
                # A .dir listing arrives alone; the files it names are a second transfer.
                files = [HashInfo("md5", oid) for oid in _object_ids_in(odb, md5)[1:] if not odb.exists(oid)]
                if files:
                    repo.cloud.pull(files, jobs=jobs, remote=name)
        if not all(odb.exists(oid) for oid in _object_ids_in(odb, md5)):
            raise MissingObjectError(
                f"the weights {md5[:8]} are not in {_where(name, url)}",
                hint="push them from the machine that added them (`mvc push`)",
            )
        if meter is not None:
            meter.finish()
        _export_from(odb, md5, dest, verify=False)
        return name


class RemoteAccess:
    """Everything a machine without the repository needs to read a remote by object hash.

    Built by :func:`remote_access` on the driver and shipped to cluster workers. The
    options may hold credentials: ``repr`` and ``str`` name the remote and URL only, so
    the secrets never reach a log line, a traceback or an error message.
    """

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self._options = dict(options)

    @property
    def url(self) -> str:
        """The remote's URL (never holds secrets: DVC keeps keys in their own options)."""
        return str(self._options.get("url", ""))

    def __repr__(self) -> str:
        return f"RemoteAccess({self.name!r}, {self.url!r})"

    __str__ = __repr__


def remote_access(root: Path, name: str) -> RemoteAccess:
    """The full settings of remote ``name`` (secrets from ``.dvc/config.local`` included).

    A local-directory URL is made absolute, so a worker on the same machine or on a
    shared filesystem finds it from any directory.

    Raises:
        RemoteNotFoundError: no such remote.
    """
    with _repo(root, name) as repo:
        conf = repo.config["remote"]
        if name not in conf:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`", remote=name)
        options = {k: v for k, v in conf[name].items()}
        url = str(options.get("url", ""))
        if url and "://" not in url and not os.path.isabs(url):  # DVC resolves these from .dvc/
            options["url"] = os.path.abspath(os.path.join(root, ".dvc", url))
        return RemoteAccess(name, options)


def fetch_object(access: RemoteAccess, md5: str, dest: Path, *, cache_dir: Path) -> Path:
    """Download the weights ``md5`` (a file or a ``.dir`` tree) from a remote to ``dest``.

    For cluster workers: no repository, no git, no DVC repo object. Objects land in the
    content-addressed ``cache_dir`` (shared by the tasks of one machine) only after their
    md5 is checked, by an atomic rename, so a file there is always intact and each
    version crosses the network once per machine. ``dest`` gets a private copy.

    Raises:
        MissingObjectError: the remote does not hold an object of the version.
        IntegrityError: a downloaded object does not match its hash (it is discarded).
        RemoteError: the remote refused or could not be reached.
    """

    where = _where(access.name, access.url)
    try:
        from dvc.fs import get_cloud_fs
        from dvc_data.hashfile.db import get_odb

        cls, config, fs_path = get_cloud_fs({"remote": {access.name: access._options}}, name=access.name)
        fs = cls(**config)
        odb = get_odb(fs, fs.join(fs_path, "files", "md5"), hash_name="md5")
        listing = _fetch_checked(odb, md5, cache_dir, where)
        if not md5.endswith(".dir"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy(listing, dest)
            return dest
        entries = [(str(e["relpath"]), str(e["md5"])) for e in documents.load_json(listing.read_text())]
        unsafe = _unsafe_relpath(entries)
        if unsafe is not None:
            raise unsafe_listing_error(f"object {md5[:8]}", md5, unsafe)
        dest.mkdir(parents=True, exist_ok=True)
        for relpath, oid in entries:
            local = _fetch_checked(odb, oid, cache_dir, where)
            target = dest.joinpath(*relpath.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(local, target)
        return dest
    except MvcError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise _translate(exc, None, access.name, access.url) from exc


def _fetch_checked(odb: Any, oid: str, cache_dir: Path, where: str) -> Path:
    """``cache_dir``'s copy of object ``oid``, downloaded and md5-checked when missing."""
    import hashlib
    import tempfile

    local = cache_dir / oid[:2] / oid[2:]
    if local.is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
    os.close(fd)
    try:
        try:
            odb.fs.get_file(odb.oid_to_path(oid), tmp)
        except FileNotFoundError:
            raise MissingObjectError(
                f"{where} lacks object {oid[:8]}", hint="push the weights from a machine that has them (`mvc push`)"
            ) from None
        with open(tmp, "rb") as f:
            actual = hashlib.file_digest(f, "md5").hexdigest()
        if actual != oid.split(".")[0]:
            raise IntegrityError(
                f"object {oid[:8]} downloaded from {where} does not match its hash; it was discarded",
                hint="the copy in the remote is corrupt: push a good copy (`mvc verify --repair`)",
            )
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return local


__all__ = ["RemoteAccess", "fetch_object", "fetch_version", "remote_access"]

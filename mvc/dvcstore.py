"""The only module that imports DVC; it drives ``dvc.repo.Repo`` in-process.

DVC is imported inside functions so that ``import mvc`` and ``mvc --help`` stay
fast. Every DVC exception becomes an :class:`mvc.errors.MvcError` in
:func:`_translate`; DVC's own logging and progress bars are silenced, and the
errors it logs are captured to classify failures (auth, missing bucket, network).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import (
    ConflictError,
    IntegrityError,
    LockedError,
    MissingObjectError,
    MvcError,
    NotARepoError,
    RemoteError,
    RemoteNotFoundError,
    UsageError,
)
from mvc.progress import Progress

if TYPE_CHECKING:
    from dvc.repo import Repo

_log_lock = threading.Lock()


@dataclass(frozen=True)
class OutInfo:
    """What DVC recorded for one tracked path."""

    md5: str  # "<md5>" for a file, "<md5>.dir" for a directory
    size: int
    nfiles: int | None
    isdir: bool


@dataclass(frozen=True)
class TransferResult:
    """Outcome of a push or fetch: objects moved and objects that failed."""

    transferred: int
    failed: int


@dataclass(frozen=True)
class RemoteConfig:
    """A DVC remote as mvc shows it (secrets never included)."""

    name: str
    url: str
    default: bool
    options: dict[str, str]


# Options that hold secrets or paths to secrets: written only to .dvc/config.local,
# never printed.
SECRET_OPTIONS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "credentialpath",
        "password",
        "ask_password",
        "key_secret",
        "sas_token",
        "connection_string",
        "account_key",
        "gdrive_client_secret",
    }
)


class _Captured(logging.Handler):
    """Collects the error messages DVC logs while mvc has its logging silenced."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage()]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
            cause = record.exc_info[1].__cause__ or record.exc_info[1].__context__
            if cause is not None:
                parts.append(repr(cause))
        self.messages.append(" ".join(parts))


_LOGGERS = ("dvc", "dvc_data", "dvc_objects")


@contextlib.contextmanager
def _quiet() -> Iterator[_Captured]:
    """Silence DVC's loggers (and so its tqdm bars) and capture what they log."""
    captured = _Captured()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    debug = os.environ.get("MVC_DEBUG") == "1"
    with _log_lock:
        saved = [(lg.level, lg.propagate) for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.DEBUG if debug else logging.CRITICAL)
            lg.propagate = debug
            lg.addHandler(captured)
    try:
        with contextlib.redirect_stdout(_NullWriter()):
            yield captured
    finally:
        with _log_lock:
            for lg, (level, propagate) in zip(loggers, saved, strict=True):
                lg.removeHandler(captured)
                lg.setLevel(level)
                lg.propagate = propagate


class _NullWriter:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _progress_hook(progress: Progress | None) -> Iterator[None]:
    """Forward DVC's per-file byte progress to ``progress`` while a transfer runs.

    DVC creates one tqdm callback per transferred file through
    ``TqdmCallback.branched``; we swap in a callback that reports to mvc.
    """
    if progress is None:
        yield
        return
    from fsspec.callbacks import Callback

    from dvc.fs import callbacks as dvc_callbacks

    class _Forward(Callback):
        def __init__(self, task: str) -> None:
            super().__init__()
            self.task = task

        def call(self, *args: Any, **kwargs: Any) -> None:  # fsspec hook on every update
            pass

        def set_size(self, size: int | None) -> None:
            super().set_size(size)
            progress(self.task, 0, size)

        def relative_update(self, inc: int = 1) -> None:
            super().relative_update(inc)
            progress(self.task, inc, self.size)

        def absolute_update(self, value: int) -> None:
            inc = value - (self.value or 0)
            super().absolute_update(value)
            if inc:
                progress(self.task, inc, self.size)

    def branched(self: Any, path_1: Any, path_2: str, **kwargs: Any) -> Callback:
        desc = path_1 if isinstance(path_1, str) else path_2
        return _Forward(os.path.basename(str(desc)))

    original = dvc_callbacks.TqdmCallback.branched
    dvc_callbacks.TqdmCallback.branched = branched  # type: ignore[method-assign]
    try:
        yield
    finally:
        dvc_callbacks.TqdmCallback.branched = original  # type: ignore[method-assign]


def _translate(exc: BaseException, captured: _Captured | None, remote: str | None = None) -> MvcError:
    """Map a DVC exception (plus what DVC logged) to an MvcError."""
    from dvc import config as dvc_config
    from dvc import exceptions as dx
    from dvc.lock import LockError

    logged = " | ".join(captured.messages) if captured else ""
    text = f"{exc} {logged}"
    where = f"remote {remote!r}" if remote else "the default remote"
    err: MvcError
    if isinstance(exc, LockError):
        err = LockedError(
            "another mvc or dvc process is working in this repository (.dvc/tmp/lock is held)",
            hint="wait for it to finish, then run the command again",
        )
    elif isinstance(exc, dvc_config.NoRemoteError):
        err = RemoteNotFoundError(
            "no remote is set for this repository",
            hint="add one: `mvc remote add NAME URL --default`",
        )
    elif isinstance(exc, dvc_config.RemoteNotFoundError):
        err = RemoteNotFoundError(
            f"no remote named {remote!r}" if remote else str(exc),
            hint="list the remotes with `mvc remote list`",
        )
    elif isinstance(exc, dx.NotDvcRepoError):
        err = NotARepoError("this is not an mvc repository", hint="run `mvc init` first")
    elif isinstance(exc, dx.FileTransferError | dx.CheckoutError) or "Access Denied" in text:
        err = _classify_transfer(exc, text, where)
    elif isinstance(exc, dx.CacheLinkError):
        err = MvcError(f"DVC could not link the cache into the work tree: {exc}")
    elif isinstance(exc, dx.DvcException):
        err = MvcError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    else:
        err = MvcError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc if isinstance(exc, Exception) else None
    return err


_AUTH_MARKERS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "invalid credentials", "Unauthorized", "401")
_DENIED_MARKERS = ("AccessDenied", "Access Denied", "Forbidden", "403")
_NO_BUCKET_MARKERS = ("NoSuchBucket", "bucket does not exist", "Bucket not found", "does not exist")
_NETWORK_MARKERS = (
    "Connection refused",
    "Cannot connect",
    "Could not connect",
    "EndpointConnectionError",
    "ConnectionError",
    "ClientConnectorError",
    "Connect call failed",
    "timed out",
    "ServerDisconnected",
)


def _classify_transfer(exc: BaseException, text: str, where: str) -> MvcError:
    from dvc import exceptions as dx

    if any(m in text for m in _AUTH_MARKERS):
        return RemoteError(
            f"{where} rejected the credentials",
            hint="check the keys: `mvc remote modify` / AWS_ACCESS_KEY_ID or .dvc/config.local",
        )
    if any(m in text for m in _DENIED_MARKERS):
        verb = "write" if isinstance(exc, dx.UploadError) else "read"
        return RemoteError(
            f"the credentials for {where} lack {verb} access",
            hint="use credentials with write access to push, or ask the bucket owner",
        )
    if any(m in text for m in _NO_BUCKET_MARKERS) and "Cache" not in text:
        return RemoteError(
            f"the bucket of {where} does not exist",
            hint="create the bucket or fix the URL with `mvc remote add NAME URL --force`",
        )
    if any(m in text for m in _NETWORK_MARKERS):
        return RemoteError(
            f"cannot reach {where}",
            hint="check the network / endpoint URL and run the command again (finished objects are kept)",
        )
    if isinstance(exc, dx.DownloadError):
        return MissingObjectError(
            f"{exc.amount} object(s) are in neither the local cache nor {where}",
            hint="push them from a machine that has them (`mvc push`), or pull from another remote",
        )
    if isinstance(exc, dx.UploadError):
        return RemoteError(
            f"{exc.amount} object(s) failed to upload to {where}",
            hint="run `mvc push` again; finished objects are not uploaded twice",
        )
    if isinstance(exc, dx.CheckoutError):
        return MissingObjectError(
            "some weights are not in the local cache",
            hint="run `mvc pull` to fetch them from the remote",
        )
    return RemoteError(f"{where} failed: {str(exc).splitlines()[0]}")


# The repo opened by :func:`lock`, reused by every call inside it so that mvc does not
# contend with itself for DVC's lock file.
_held: dict[Path, Repo] = {}


@contextlib.contextmanager
def _repo(root: Path, remote: str | None = None) -> Iterator[Repo]:
    """Open the DVC repo at ``root`` with logging silenced and errors translated."""
    held = _held.get(root)
    with _quiet() as captured:
        try:
            if held is not None:
                yield held
                return
            from dvc.repo import Repo

            with Repo(os.fspath(root)) as repo:
                yield repo
        except MvcError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise _translate(exc, captured, remote) from exc


def is_initialized(root: Path) -> bool:
    """True when ``root`` holds a DVC repository (checked without importing DVC)."""
    return (root / ".dvc" / "config").is_file()


def init(root: Path) -> None:
    """``dvc init`` at the git root ``root`` (no-op when already initialised)."""
    if is_initialized(root):
        return
    with _quiet() as captured:
        try:
            from dvc.repo import Repo

            Repo.init(os.fspath(root)).close()
        except Exception as exc:
            raise _translate(exc, captured) from exc


@contextlib.contextmanager
def lock(root: Path) -> Iterator[None]:
    """Hold DVC's repository lock for a multi-step mvc operation.

    Every dvcstore call on ``root`` inside the block reuses the locked repo.

    Raises:
        LockedError: another process holds the lock (after DVC's 3 s of retries).
    """
    if root in _held:
        yield
        return
    with _repo(root) as repo:
        from dvc.repo import lock_repo

        with lock_repo(repo):
            _held[root] = repo
            try:
                yield
            finally:
                del _held[root]


def add(root: Path, relpath: str) -> OutInfo:
    """Track ``relpath`` (file or directory) with DVC and return its hash info.

    DVC writes ``<relpath>.dvc`` and the ``.gitignore`` beside it, keeping any
    ``meta`` already in an existing pointer. Files are first put into the cache by
    :func:`_precache` (hash and copy in parallel), so DVC neither re-hashes nor
    re-copies them.
    """
    with _repo(root) as repo:
        _precache(repo, root / relpath)
        # relink=False: with copies, DVC would copy the cache object back over the
        # identical work-tree file (a third pass over the bytes).
        stages = repo.add([os.fspath(root / relpath)], relink=False)
        out = stages[0].outs[0]
        return OutInfo(
            md5=out.hash_info.value,
            size=int(out.meta.size or 0),
            nfiles=out.meta.nfiles,
            isdir=bool(out.meta.isdir),
        )


# Below this size the thread hand-off costs more than it saves.
_PRECACHE_MIN = 16 * 2**20


def _precache(repo: Repo, path: Path) -> None:
    """Copy each big file into the cache while hashing it, and tell DVC's state the md5.

    Plain ``dvc add`` reads a file twice, one pass after the other: md5, then the copy
    into the cache. Here the copy (kernel ``sendfile``) and the md5 run at the same time
    on two cores. If the file changes meanwhile (size, mtime or inode differ before and
    after), nothing is cached and DVC does its own passes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from dvc_data.hashfile.hash_info import HashInfo

    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    odb = repo.cache.local
    for file in files:
        before = file.stat()
        if before.st_size < _PRECACHE_MIN:
            continue
        tmp = Path(odb.path) / f".mvc-tmp-{os.getpid()}-{threading.get_ident()}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                copying = pool.submit(_copy, file, tmp)
                md5 = _md5(file)
                copying.result()
            after = file.stat()
            if (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino):
                continue
            dest = Path(odb.oid_to_path(md5))
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)  # DVC keeps cache files read-only
                os.replace(tmp, dest)
            repo.state.save(os.fspath(file), repo.fs, HashInfo("md5", md5))
        finally:
            tmp.unlink(missing_ok=True)


def _copy(src: Path, dest: Path) -> None:
    import shutil

    shutil.copyfile(src, dest)  # sendfile on Linux: no copy through user space


def _md5(path: Path, chunk: int = 8 * 2**20) -> str:
    import hashlib

    digest = hashlib.md5()  # noqa: S324 - DVC's content address, not security
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _targets(root: Path, pointers: Iterable[str] | None) -> list[str] | None:
    items = [os.fspath(root / p) for p in (pointers or [])]
    return items or None


def push(
    root: Path,
    pointers: Iterable[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    revs: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Upload the cache objects of ``pointers`` (all when None) to ``remote``."""
    with _repo(root, remote) as repo, _progress_hook(progress):
        revs = list(revs or [])
        count = repo.push(_targets(root, pointers), jobs=jobs, remote=remote, revs=revs or None)
        return TransferResult(transferred=count, failed=0)


def fetch(
    root: Path,
    pointers: Iterable[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Download the cache objects of ``pointers`` from ``remote`` into the cache."""
    with _repo(root, remote) as repo, _progress_hook(progress):
        count = repo.fetch(_targets(root, pointers), jobs=jobs, remote=remote)
        return TransferResult(transferred=count, failed=0)


def checkout(root: Path, pointers: Iterable[str] | None = None, *, force: bool = True) -> dict[str, list[str]]:
    """Make the work tree match ``pointers`` from the local cache.

    Returns:
        DVC's change lists: ``{"added": [...], "modified": [...], "deleted": [...]}``.
    """
    with _repo(root) as repo:
        result = repo.checkout(_targets(root, pointers), force=force)
        return {k: list(v) for k, v in result.items() if k in ("added", "modified", "deleted")}


@dataclass(frozen=True)
class ObjectStatus:
    """Where one pointer's weights are: work tree, local cache, remote."""

    workspace: str  # "ok" | "modified" | "missing"
    in_cache: bool
    in_remote: bool | None  # None: not checked (no remote)


def object_status(
    root: Path,
    pointers: dict[str, str],
    *,
    remote: str | None = None,
    check_remote: bool = True,
) -> dict[str, ObjectStatus]:
    """Status of each pointer (``{pointer_path: md5}``) with one DVC repo opened.

    The remote is asked once for all objects; when no remote is configured,
    ``in_remote`` is None.
    """
    from dvc.config import NoRemoteError

    with _repo(root, remote) as repo:
        result: dict[str, ObjectStatus] = {}
        objects: dict[str, set[str]] = {}
        for ptr, md5 in pointers.items():
            changes = repo.status([os.fspath(root / ptr)])
            state = "ok"
            for entries in changes.values():
                for entry in entries:
                    outs = entry.get("changed outs", {}) if isinstance(entry, dict) else {}
                    if "deleted" in outs.values():
                        state = "missing"
                    elif outs:
                        state = "modified"
            objects[ptr] = _object_ids(repo, md5)
            result[ptr] = ObjectStatus(workspace=state, in_cache=_cache_has(repo, md5), in_remote=None)
        if check_remote and pointers:
            try:
                odb = repo.cloud.get_remote_odb(remote, "status")
            except NoRemoteError:
                return result
            wanted = sorted(set().union(*objects.values()))
            present = set(odb.oids_exist(wanted))
            for ptr, status in list(result.items()):
                result[ptr] = ObjectStatus(status.workspace, status.in_cache, objects[ptr] <= present)
        return result


def _object_ids(repo: Repo, md5: str) -> set[str]:
    """``md5`` plus, for a directory whose listing is cached, the hashes of its files."""
    ids = {md5}
    if md5.endswith(".dir") and repo.cache.local.exists(md5):
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        tree = Tree.load(repo.cache.local, HashInfo("md5", md5))
        ids |= {hi.value for _, _, hi in tree}
    return ids


def _cache_has(repo: Repo, md5: str) -> bool:
    odb = repo.cache.local
    return all(odb.exists(oid) for oid in _object_ids(repo, md5))


def fetch_at(
    root: Path,
    pointer: str,
    commit: str,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Fetch into the cache the objects ``pointer`` records at git ``commit`` (no checkout)."""
    with _repo(root, remote) as repo, _progress_hook(progress):
        return repo.fetch([os.fspath(root / pointer)], jobs=jobs, remote=remote, revs=[commit], workspace=False)


def has_object(root: Path, md5: str) -> bool:
    """True when the local cache holds every object of ``md5``."""
    with _repo(root) as repo:
        return _cache_has(repo, md5)


def export(root: Path, md5: str, dest: Path, *, verify: bool = False) -> Path:
    """Copy the cached object ``md5`` (a file, or a ``.dir`` tree) to ``dest``.

    ``dest`` becomes the file, or the directory holding the tree's files. The
    user's work tree is never touched. With ``verify`` every file is re-hashed.

    Raises:
        MissingObjectError: not (wholly) in the local cache.
        IntegrityError: ``verify`` found a cache object whose bytes do not match.
    """
    with _repo(root) as repo:
        odb = repo.cache.local
        if not _cache_has(repo, md5):
            raise MissingObjectError(f"object {md5[:8]} is not in the local cache", hint="fetch it with `mvc pull` or --remote")
        if md5.endswith(".dir"):
            from dvc_data.hashfile.hash_info import HashInfo
            from dvc_data.hashfile.tree import Tree

            tree = Tree.load(odb, HashInfo("md5", md5))
            dest.mkdir(parents=True, exist_ok=True)
            for key, _, hi in tree:
                target = dest.joinpath(*key)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_checked(odb.oid_to_path(hi.value), target, hi.value, verify)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy_checked(odb.oid_to_path(md5), dest, md5, verify)
        return dest


def _copy_checked(src: str, dest: Path, md5: str, verify: bool) -> None:
    import shutil

    shutil.copyfile(src, dest)
    if verify and file_md5(dest) != md5:
        dest.unlink(missing_ok=True)
        raise IntegrityError(
            f"cache object {md5[:8]} is corrupt (its bytes no longer match its hash)",
            hint="run `mvc verify --repair` to fetch a good copy from the remote",
        )


def file_md5(path: Path) -> str:
    """DVC's md5 of one file (DVC hashes raw bytes for binary files)."""
    from dvc_data.hashfile.hash import file_md5 as _file_md5
    from dvc_objects.fs.local import LocalFileSystem

    return _file_md5(os.fspath(path), LocalFileSystem())


# ---- remotes -------------------------------------------------------------------------


def remotes(root: Path) -> list[RemoteConfig]:
    """The remotes of the repository, secrets left out."""
    with _repo(root) as repo:
        conf = repo.config
        default = conf["core"].get("remote")
        return [
            RemoteConfig(
                name=name,
                url=str(opts.get("url", "")),
                default=name == default,
                options={k: str(v) for k, v in opts.items() if k != "url" and k not in SECRET_OPTIONS},
            )
            for name, opts in sorted(conf["remote"].items())
        ]


def add_remote(
    root: Path,
    name: str,
    url: str,
    *,
    options: dict[str, Any] | None = None,
    default: bool = False,
    force: bool = False,
) -> None:
    """Add (or with ``force`` replace) a remote; secret options go to ``.dvc/config.local``."""
    options = dict(options or {})
    public = {k: v for k, v in options.items() if k not in SECRET_OPTIONS}
    secret = {k: v for k, v in options.items() if k in SECRET_OPTIONS}
    with _repo(root) as repo:
        if name in repo.config["remote"] and not force:
            raise ConflictError(
                f"a remote named {name!r} exists already",
                hint=f"pick another name, or replace it with `mvc remote add {name} URL --force`",
            )
        try:
            with repo.config.edit("repo") as conf:
                conf["remote"][name] = {"url": url, **public}
                if default:
                    conf["core"]["remote"] = name
            with repo.config.edit("local") as conf:
                if secret:
                    conf["remote"][name] = secret
                else:
                    conf["remote"].pop(name, None)
        except Exception as exc:
            from dvc.config import ConfigError

            if isinstance(exc, ConfigError):
                raise UsageError(
                    f"remote {name!r}: {str(exc).splitlines()[0]}",
                    hint="check the URL scheme (s3://, gs://, a local path, ...) and the options",
                ) from exc
            raise


def set_default_remote(root: Path, name: str) -> None:
    """Make ``name`` the default remote."""
    with _repo(root) as repo:
        if name not in repo.config["remote"]:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`")
        with repo.config.edit("repo") as conf:
            conf["core"]["remote"] = name


def remove_remote(root: Path, name: str) -> None:
    """Delete a remote from the repo and local configs."""
    with _repo(root) as repo:
        if name not in repo.config["remote"]:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`")
        for level in ("repo", "local"):
            with repo.config.edit(level) as conf:
                conf["remote"].pop(name, None)
                if conf["core"].get("remote") == name:
                    del conf["core"]["remote"]


def default_remote(root: Path) -> str | None:
    """The name of the default remote, or None."""
    with _repo(root) as repo:
        return repo.config["core"].get("remote")


# ---- background upload of single versions (issue 10) -----------------------------------


def push_objects(root: Path, md5s: Iterable[str], *, remote: str, jobs: int | None = None) -> TransferResult:
    """Upload the cache objects ``md5s`` (a ``.dir`` hash brings its files) to ``remote``.

    Made for a background thread while the training thread keeps calling mvc: it opens
    its own DVC repo (never the one :func:`lock` holds), does not touch logging or
    stdout (which :func:`_quiet` swaps process-wide), shows no progress bar, and takes
    no repository lock: it only reads immutable cache objects.

    Raises:
        MissingObjectError: an object is not in the local cache.
        RemoteNotFoundError / RemoteError: the remote is unknown, or refused or failed.
    """
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.transfer import transfer

    objs = [HashInfo("md5", m) for m in md5s]
    where = f"remote {remote!r}"
    try:
        with Repo(os.fspath(root)) as repo:
            odb = repo.cloud.get_remote_odb(remote, "push")
            cache = repo.cache.local
            missing = [o.value for o in objs if not _cache_has(repo, o.value)]
            if missing:
                raise MissingObjectError(
                    f"object {missing[0][:8]} is not in the local cache", hint="re-add the weights with `mvc add`"
                )
            result = transfer(cache, odb, objs, jobs=jobs, cache_odb=cache)
    except MvcError:
        raise
    except Exception as exc:
        raise _translate(exc, None, remote) from exc
    if result.failed:
        raise RemoteError(
            f"{len(result.failed)} object(s) failed to upload to {where}",
            hint="run `mvc push` again; finished objects are not uploaded twice",
        )
    return TransferResult(transferred=len(result.transferred), failed=0)


__all__ = [
    "IntegrityError",
    "OutInfo",
    "RemoteConfig",
    "TransferResult",
    "add",
    "add_remote",
    "export",
    "fetch_at",
    "file_md5",
    "has_object",
    "ObjectStatus",
    "object_status",
    "checkout",
    "default_remote",
    "fetch",
    "init",
    "is_initialized",
    "lock",
    "push",
    "push_objects",
    "remotes",
    "remove_remote",
    "set_default_remote",
]

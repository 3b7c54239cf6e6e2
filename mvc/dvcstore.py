"""The core of the DVC adapter: it drives ``dvc.repo.Repo`` in-process.

Only this module and the ``mvc/dvc*.py`` modules built on it import DVC; they import
this one, never the reverse. DVC is imported inside functions so that ``import mvc``
and ``mvc --help`` stay fast. Every DVC exception becomes an :class:`mvc.errors.MvcError`
in :func:`_translate`; DVC's own logging and progress bars are silenced, and the
errors it logs are captured to classify failures (auth, missing bucket, network).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc import documents
from mvc.errors import (
    ConflictError,
    IntegrityError,
    LockedError,
    MissingObjectError,
    MvcError,
    NotARepoError,
    RemoteError,
    RemoteNotFoundError,
    SchemaError,
    counted,
)
from mvc.progress import ByteMeter, Progress

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
    """Silence DVC's loggers (and so its tqdm bars) and capture what they log.

    Thread-safe: only logger levels change, never ``sys.stdout``.
    """
    import dvc  # noqa: F401 - its import runs dvc.logger.setup(), which would undo the silencing below

    captured = _Captured()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    debug = os.environ.get("MVC_DEBUG") == "1"
    with _log_lock:
        if not _silenced:  # the first of possibly nested or concurrent blocks
            for lg in loggers:
                _silenced.append((lg, lg.level, lg.propagate, list(lg.handlers)))
                # ERROR, not higher: the transfer errors DVC logs are what _translate
                # classifies. DVC's own handlers (installed by `import dvc`) are detached
                # and propagate is off, so nothing reaches the terminal; bars stay off
                # above INFO.
                lg.setLevel(logging.DEBUG if debug else logging.ERROR)
                lg.propagate = debug
                if not debug:
                    lg.handlers = []
            # DVC's tqdm bars draw unless their module's logger is above ERROR (the level
            # kept above for _translate); on a terminal they leaked blank lines (issue 14).
            for name in ("dvc.progress", "dvc_data.callbacks"):
                lg = logging.getLogger(name)
                _silenced.append((lg, lg.level, lg.propagate, list(lg.handlers)))
                if not debug:
                    lg.setLevel(logging.CRITICAL)
            # DVC's rich spinners ("Checking graph") write to the terminal directly.
            from dvc.ui import ui

            for console in (ui.error_console, ui.rich_console):
                _silenced_consoles.append((console, console.quiet))
                console.quiet = not debug
        _silenced_depth.append(captured)
        for lg in loggers:
            lg.addHandler(captured)
    try:
        yield captured
    finally:
        with _log_lock:
            for lg in loggers:
                lg.removeHandler(captured)
            _silenced_depth.remove(captured)
            if not _silenced_depth:  # the last block out restores DVC's logging
                for lg, level, propagate, handlers in _silenced:
                    lg.handlers = handlers
                    lg.setLevel(level)
                    lg.propagate = propagate
                _silenced.clear()
                for console, quiet in _silenced_consoles:
                    console.quiet = quiet
                _silenced_consoles.clear()


# Logger state saved by the outermost :func:`_quiet` block, and the capture handlers of
# the blocks open now (in any thread).
_silenced: list[tuple[logging.Logger, int, bool, list[logging.Handler]]] = []
_silenced_depth: list[_Captured] = []
_silenced_consoles: list[tuple[Any, bool]] = []


@contextlib.contextmanager
def _progress_hook(progress: Progress | None) -> Iterator[None]:
    """Forward the bytes DVC copies to ``progress`` while a transfer runs.

    DVC creates one tqdm callback per transferred file through ``TqdmCallback.branched``;
    the patched ``branched`` hands it a callback that reports to mvc instead. DVC's
    local copy (``dvc_objects.fs.local.copyfile``, used for a directory remote and the
    cache) reports no bytes below 1 GB, so the patched ``copyfile`` copies in chunks
    and reports each. The patches stay in place while any hook is open (in any
    thread); the innermost open hook receives the reports.
    """
    if progress is None:
        yield
        return
    with _hook_lock:
        if not _hook_targets:
            _patch_progress()
        _hook_targets.append(progress)
    try:
        yield
    finally:
        with _hook_lock:
            _hook_targets.remove(progress)
            if not _hook_targets:
                _unpatch_progress()


_hook_lock = threading.Lock()
_hook_targets: list[Progress] = []  # the open hooks' callbacks, innermost last
_hook_saved: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) of each patch


def _patch_progress() -> None:
    from dvc.fs import callbacks as dvc_callbacks
    from dvc_data import callbacks as data_callbacks
    from dvc_objects.fs import local as local_fs

    forward = _forward_class()

    def branched(self: Any, path_1: Any, path_2: str, **kwargs: Any) -> Any:
        desc = path_1 if isinstance(path_1, str) else path_2
        report = _hook_targets[-1] if _hook_targets else None
        return forward(report, os.path.basename(str(desc)))

    original_copy = local_fs.copyfile

    def copyfile(src: str, dest: str, callback: Any = None) -> None:
        if isinstance(callback, forward):
            _copy_reporting(src, dest, callback)
        elif callback is None:
            original_copy(src, dest)
        else:
            original_copy(src, dest, callback=callback)

    # dvc's own transfers use dvc.fs.callbacks; dvc-data's index push/fetch use its copy.
    for cls in (dvc_callbacks.TqdmCallback, data_callbacks.TqdmCallback):
        _hook_saved.append((cls, "branched", cls.__dict__.get("branched")))
        cls.branched = branched  # type: ignore[method-assign]
    _hook_saved.append((local_fs, "copyfile", original_copy))
    local_fs.copyfile = copyfile  # type: ignore[assignment]


def _unpatch_progress() -> None:
    for owner, attribute, original in reversed(_hook_saved):
        if original is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)
    _hook_saved.clear()


@functools.cache
def _forward_class() -> type:
    """The fsspec callback that reports one file's bytes to mvc (fsspec imported lazily)."""
    from fsspec.callbacks import Callback

    class _Forward(Callback):
        def __init__(self, report: Progress | None, task: str) -> None:
            super().__init__()
            self.report = report
            self.task = task

        def call(self, *args: Any, **kwargs: Any) -> None:  # fsspec hook on every update
            pass

        def _send(self, inc: int) -> None:
            if inc and self.report is not None:
                self.report(self.task, inc, self.size)

        def relative_update(self, inc: int = 1) -> None:
            super().relative_update(inc)
            self._send(inc)

        def absolute_update(self, value: int) -> None:
            inc = value - (self.value or 0)
            super().absolute_update(value)
            self._send(inc)

        def __exit__(self, *exc_args: Any) -> None:
            # A file copied whole (reflink, a store's single call) counts once it is there.
            if exc_args[0] is None and self.size and self.value < self.size:
                self._send(self.size - self.value)
            super().__exit__(*exc_args)

    return _Forward


def _branching(progress: Progress | None) -> Any:
    """A parent callback for dvc-data's ``transfer`` whose per-file children report bytes to ``progress``."""
    from fsspec.callbacks import DEFAULT_CALLBACK, Callback

    if progress is None:
        return DEFAULT_CALLBACK
    forward = _forward_class()

    class _Branching(Callback):
        def branched(self, path_1: Any, path_2: str, **kwargs: Any) -> Callback:
            return forward(progress, os.path.basename(str(path_1 if isinstance(path_1, str) else path_2)))  # type: ignore[no-any-return]

    return _Branching()


_COPY_CHUNK = 8 * 2**20  # a report per 8 MiB: smooth bar, few syscalls


def _copy_reporting(src: str, dest: str, callback: Any) -> None:
    """``dvc_objects.fs.utils.copyfile`` that reports every chunk it copies (sendfile on Linux).

    Same steps as DVC's: a reflink when the filesystem can, else a byte copy.
    """
    from dvc_objects.fs import system
    from dvc_objects.fs.utils import umask

    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(src))
    callback.set_size(os.path.getsize(src))
    try:
        system.reflink(src, dest)
        os.chmod(dest, 0o666 & ~umask)  # a reflink may or may not clone src permissions
        return  # counted whole when the callback closes
    except OSError:
        pass
    with open(src, "rb") as fsrc, open(dest, "wb") as fdest:
        offset = 0
        try:
            while sent := os.sendfile(fdest.fileno(), fsrc.fileno(), offset, _COPY_CHUNK):
                offset += sent
                callback.relative_update(sent)
        except (AttributeError, OSError):  # no sendfile here (or not for these files): copy through memory
            fsrc.seek(offset)
            fdest.seek(offset)
            while chunk := fsrc.read(_COPY_CHUNK):
                fdest.write(chunk)
                callback.relative_update(len(chunk))


def _translate(
    exc: BaseException, captured: _Captured | None, remote: str | None = None, url: str | None = None
) -> MvcError:
    """Map a DVC exception (plus what DVC logged) to an MvcError.

    ``url`` (the remote's URL, when known) lets remote failures name the bucket.
    """
    from dvc import config as dvc_config
    from dvc import exceptions as dx
    from dvc.lock import LockError

    logged = " | ".join(captured.messages) if captured else ""
    text = f"{_chain_text(exc)} | {logged}"
    where = _where(remote, url)
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
    elif isinstance(exc, dvc_config.ConfigError):
        first = (str(exc).splitlines() or [""])[0].removeprefix("config file error: ")
        err = SchemaError(
            f"DVC's configuration cannot be read: {first}",
            hint="fix .dvc/config (or .dvc/config.local) by hand, or restore it with `git checkout -- .dvc/config`",
        )
    elif type(exc).__name__ in ("RWLockFileCorruptedError", "RWLockFileFormatError"):
        err = ConflictError(
            f"DVC's lock file {RWLOCK} is corrupt (left by an interrupted mvc or dvc command)",
            hint=f"if no mvc or dvc command is running, delete {RWLOCK} (or run `mvc add` again, which resets it)",
        )
    elif isinstance(exc, dx.NotDvcRepoError):
        err = NotARepoError("this is not an mvc repository", hint="run `mvc init` first")
    elif isinstance(exc, dx.OverlappingOutputPathsError):  # issue 17: one line naming the fix
        # DVC's message names both paths relative to the repository: "Cannot add 'A', because
        # it is overlapping with other DVC tracked output: 'B'."
        quoted = re.findall(r"'([^']+)'", str(exc).splitlines()[0])
        outer, inner = (quoted[0], quoted[-1]) if len(quoted) >= 2 else ("the path", "a tracked output")
        err = ConflictError(
            f"{outer} overlaps {inner}, which is tracked on its own already",
            hint=f"version one or the other: for the whole directory, run `dvc remove {inner}.dvc` first",
        )
    elif type(exc).__name__ == "OutputAlreadyTrackedError":
        path = str(exc).split("'")[1] if "'" in str(exc) else "the file"
        err = ConflictError(
            f"{path} is tracked by git itself, so mvc cannot version it",
            hint=f"stop tracking it in git first: `git rm --cached {path}` (then `mvc add {path}`)",
        )
    elif (failed := _local_remote_oserror(exc, url)) is not None:
        err = RemoteError(
            f"cannot use {where}: {failed.strerror or type(failed).__name__} ({failed.filename})",
            hint="check the remote's path, permissions and free space, or point it elsewhere: "
            f"`mvc remote add {remote or 'NAME'} PATH --force`",
        )
    elif isinstance(exc, dx.FileTransferError | dx.CheckoutError) or _is_remote_failure(exc, text):
        err = _classify_transfer(exc, text, where, bucket=_bucket(url), remote=remote)
    elif isinstance(exc, dx.CacheLinkError):
        err = MvcError(f"DVC could not link the cache into the work tree: {exc}")
    elif isinstance(exc, dx.DvcException):
        err = MvcError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    else:
        err = MvcError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc if isinstance(exc, Exception) else None
    return err


# Remote failures are recognised by the library an exception comes from, or by the
# error codes and phrases S3 (botocore), GCS (gcsfs) and aiohttp put in their messages.
# Word boundaries keep a status like 403 from matching inside an md5 in a logged path.
_REMOTE_LIBRARIES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "requests", "urllib3"})
_NO_CREDENTIALS_RE = re.compile(
    r"NoCredentialsError|Unable to locate credentials|DefaultCredentialsError|could not find default credentials",
    re.IGNORECASE,
)
_AUTH_RE = re.compile(
    r"InvalidAccessKeyId|SignatureDoesNotMatch|invalid credentials|invalid_grant|RefreshError|Unauthorized|\b401\b"
)
_DENIED_RE = re.compile(r"AccessDenied|Access Denied|Forbidden|\b403\b")
# gcsfs reports a missing bucket as FileNotFoundError("b/BUCKET/o"), the listing URL path
# (a missing prefix in an existing bucket reads "b/BUCKET/o/PREFIX").
_NO_BUCKET_RE = re.compile(r"NoSuchBucket|specified bucket does not exist|Bucket not found|(?<![\w/])b/[^/\s]+/o(?![\w/])")
_NETWORK_RE = re.compile(
    r"Connection refused|Cannot connect|Could not connect|EndpointConnectionError|ConnectionError"
    r"|ClientConnectorError|Connect call failed|timed out|ServerDisconnected|ConnectTimeout|ReadTimeout"
    r"|Connection reset|Broken pipe|RemoteDisconnected|ResponseStreamingError|FSTimeoutError"
)


_TIMEOUT_RE = re.compile(r"ReadTimeout|ConnectTimeout|Read timeout|Connect timeout|timed out|TimeoutError|FSTimeoutError")
_SERVER_ERRORS = {
    "Internal Server Error": 500,
    "InternalError": 500,
    "Bad Gateway": 502,
    "Service Unavailable": 503,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
    "Gateway Timeout": 504,
}
_SERVER_ERROR_RE = re.compile("|".join(re.escape(k) for k in _SERVER_ERRORS))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _chain_text(exc: BaseException) -> str:
    """``Type: message`` of every exception in the chain (botocore puts its error code in the text)."""
    return " | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc))


def _is_remote_failure(exc: BaseException, text: str) -> bool:
    """True when ``exc`` came from talking to a remote (S3, GCS, HTTP) rather than from DVC itself."""
    if any(type(e).__module__.split(".")[0] in _REMOTE_LIBRARIES for e in _chain(exc)):
        return True
    return any(p.search(text) for p in (_NO_CREDENTIALS_RE, _AUTH_RE, _DENIED_RE, _NO_BUCKET_RE, _NETWORK_RE))


def _local_remote_oserror(exc: BaseException, url: str | None) -> OSError | None:
    """The OSError in ``exc``'s chain about a path of the directory remote at ``url`` (a parent
    that is a file, no permission, a full disk), or None."""
    if not url or "://" in url:
        return None
    base = os.path.abspath(url)
    for e in _chain(exc):
        if isinstance(e, OSError) and e.filename and os.path.abspath(os.fsdecode(e.filename)).startswith(base):
            return e
    return None


def _server_status(exc: BaseException) -> int | None:
    """The HTTP 5xx status an error in ``exc``'s chain carries (gcsfs ``HttpError.code``,
    aiohttp ``ClientResponseError.status``), or None."""
    for e in _chain(exc):
        for attr in ("code", "status"):
            value = getattr(e, attr, None)
            if isinstance(value, int) and 500 <= value <= 599:
                return value
    return None


def _where(remote: str | None, url: str | None) -> str:
    """How messages name a remote: ``remote 's3' (s3://bucket/prefix)``."""
    if not remote:
        return "the default remote"
    return f"remote {remote!r} ({url})" if url else f"remote {remote!r}"


def _bucket(url: str | None) -> str | None:
    """The bucket of an ``s3://`` / ``gs://`` style URL, else None."""
    if not url or "://" not in url:
        return None
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or None


def _credentials_hint(where: str, remote: str | None) -> str:
    name = remote or "NAME"
    if "gs://" in where:
        return f"set GOOGLE_APPLICATION_CREDENTIALS, or `mvc remote modify {name} credentialpath FILE` (kept in .dvc/config.local)"
    return (
        f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `mvc remote modify {name} access_key_id ID` "
        "and `... secret_access_key KEY` (kept in .dvc/config.local)"
    )


def _classify_transfer(
    exc: BaseException, text: str, where: str, bucket: str | None = None, remote: str | None = None
) -> MvcError:
    from dvc import exceptions as dx

    if _NO_CREDENTIALS_RE.search(text):
        return RemoteError(f"no credentials found for {where}", hint=_credentials_hint(where, remote))
    if _AUTH_RE.search(text):
        return RemoteError(f"{where} rejected the credentials", hint=_credentials_hint(where, remote))
    if _DENIED_RE.search(text) and not re.search(r"AccessDenied|Access Denied", text) and not isinstance(exc, dx.UploadError):
        # A bare 403 on a HEAD request carries no error code: wrong keys look exactly
        # like keys without read access, and wrong keys are by far the commoner cause.
        return RemoteError(
            f"{where} rejected the credentials (HTTP 403: wrong keys, or keys without read access)",
            hint=_credentials_hint(where, remote),
        )
    if _DENIED_RE.search(text):
        verb = "write" if isinstance(exc, dx.UploadError) else "read"
        return RemoteError(
            f"the credentials for {where} lack {verb} access",
            hint="use credentials with write access to push, or ask the bucket owner",
        )
    if _NO_BUCKET_RE.search(text):
        named = f"bucket {bucket!r} of {where}" if bucket else f"the bucket of {where}"
        return RemoteError(
            f"{named} does not exist",
            hint="create the bucket, or fix the URL with `mvc remote add NAME URL --force`",
        )
    status = _server_status(exc)
    if status is not None and not _SERVER_ERROR_RE.search(text):  # gcsfs / aiohttp: a bare code, no reason text
        return RemoteError(
            f"{where} answered HTTP {status}: the server failed, or it is not an object store endpoint",
            hint="check the endpoint URL (`mvc remote list`) and the server, then run the command again",
        )
    server_error = _SERVER_ERROR_RE.search(text)
    if server_error:
        code = _SERVER_ERRORS[server_error.group(0)]
        return RemoteError(
            f"{where} answered HTTP {code} ({server_error.group(0)}): the server failed, or it is not an "
            f"{'S3' if 's3://' in where else 'object store'} endpoint",
            hint="check the endpoint URL (`mvc remote list`) and the server, then run the command again",
        )
    if _TIMEOUT_RE.search(text):
        return RemoteError(
            f"{where} did not answer within {READ_TIMEOUT} s",
            hint="check that the endpoint is up and reachable; the limits are the remote's connect_timeout / "
            "read_timeout options (`mvc remote modify`)",
        )
    if _NETWORK_RE.search(text):
        return RemoteError(
            f"cannot reach {where}",
            hint="check the network / endpoint URL and run the command again (finished objects are kept)",
        )
    if isinstance(exc, dx.DownloadError):
        return MissingObjectError(
            f"{counted(exc.amount, 'object')} {'is' if exc.amount == 1 else 'are'} in neither the local cache nor {where}",
            hint="push them from a machine that has them (`mvc push`), or pull from another remote",
        )
    if isinstance(exc, dx.UploadError):
        return RemoteError(
            f"{counted(exc.amount, 'object')} failed to upload to {where}",
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

    def repo_at_root() -> Repo:
        from dvc.repo import Repo

        return Repo(os.fspath(root))

    with _opened(repo_at_root, remote, held=_held.get(root)) as repo:
        yield repo


@contextlib.contextmanager
def _repo_at(git_root: Path, rev: str, remote: str | None, *, cache_dir: Path) -> Iterator[Repo]:
    """:func:`_repo` for a clone without a work tree (``mvc get``): DVC reads the repository
    at ``rev`` from git, with the private cache ``cache_dir``."""

    def repo_at_rev() -> Repo:
        from dvc.repo import Repo

        return Repo(os.fspath(git_root), rev=rev, config={"cache": {"dir": os.fspath(cache_dir)}})

    with _opened(repo_at_rev, remote) as repo:
        yield repo


@contextlib.contextmanager
def _opened(open_repo: Callable[[], Repo], remote: str | None, *, held: Repo | None = None) -> Iterator[Repo]:
    """The one place a DVC repo is opened (``held``: one already open under :func:`session`):
    DVC's logging silenced, its cache registered, every error it raises translated."""
    opened: list[Repo] = [held] if held is not None else []
    with _quiet() as captured:
        try:
            if held is not None:
                yield held
                return
            with open_repo() as repo:
                opened.append(repo)
                _register_cache(repo)
                yield repo
        except MvcError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            name, url = _remote_ref(opened[0] if opened else None, remote)
            raise _translate(exc, captured, name, url) from exc


# ---- what crosses a remote: kept remote copies, verified cache objects, safe listings (issue 14)

# Paths of the local caches of the repositories mvc opened: DVC's local object stores
# other than these are remotes.
_cache_paths: set[str] = set()
_patch_lock = threading.Lock()


def _register_cache(repo: Repo) -> None:
    """Remember ``repo``'s cache, and install mvc's fixes to DVC (once per process).

    DVC's ``LocalHashFileDB.check`` (called by ``oids_exist`` on every pull) re-hashes a
    writable object and *deletes* it when the bytes do not match: a corrupt copy on a
    directory remote vanished and the pull reported it missing. For any local store that
    is not a cache mvc opened, the check is an existence check; mvc re-hashes what
    arrives in the cache (:func:`_verified_download`), so the corruption is reported
    (exit 6) and the remote copy stays for inspection.
    """
    from dvc_data.hashfile.db.local import LocalHashFileDB

    with _patch_lock:
        for odb in (repo.cache.local, repo.cache.legacy):
            _cache_paths.add(os.fspath(odb.path))
        _bound_cloud_waits_on_use()
        if getattr(LocalHashFileDB.check, "_mvc", False):
            return
        original = LocalHashFileDB.check

        def check(self: Any, oid: str, check_hash: bool = True, _info: dict[str, Any] | None = None) -> Any:
            if os.fspath(self.path) not in _cache_paths:
                check_hash = False
            return original(self, oid, check_hash, _info)

        check._mvc = True  # type: ignore[attr-defined]
        LocalHashFileDB.check = check  # type: ignore[method-assign]
        _refuse_path_like_oids()


_ID_OR_PREFIX = re.compile(r"[0-9a-f]{0,32}(\.dir)?")  # whole object ids, and the prefixes DVC lists a store by


def _refuse_path_like_oids() -> None:
    """Make DVC's object stores refuse an object id that is not a hash (called once, locked).

    A ``.dir`` listing (data from a remote or a hostile commit) names its files by md5,
    and every store builds the object's path from it (``xx/rest``): ``abc/../../x`` made
    a pull read a file outside the remote and write it outside the cache.
    """
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.db import ObjectDB

    for cls in (ObjectDB, LocalHashFileDB):
        original = cls.oid_to_path

        def oid_to_path(self: Any, oid: str, _original: Any = original) -> str:
            if not _ID_OR_PREFIX.fullmatch(oid):
                raise IntegrityError(
                    f"refusing a directory listing that names object {oid!r}, which is not a hash; nothing was written",
                    hint="this version was crafted or corrupted: do not use it; ask its author, and check the commit that added it",
                )
            return str(_original(self, oid))

        cls.oid_to_path = oid_to_path  # type: ignore[method-assign]


_cloud_bounded: set[str] = set()  # "s3" / "gs": the filesystems already bounded


def _bound_cloud_waits_on_use() -> None:
    """Bound the waits of an S3 or GCS filesystem when DVC first resolves one (not when the
    repository opens): importing s3fs, gcsfs and their DVC plugins costs ~1 s, which a
    command that never touches the remote (status, log, add) does not pay."""
    import dvc.fs

    if getattr(dvc.fs.get_fs_cls, "_mvc", False):
        return
    original = dvc.fs.get_fs_cls

    def get_fs_cls(*args: Any, **kwargs: Any) -> Any:
        cls = original(*args, **kwargs)
        module = getattr(cls, "__module__", "")
        todo = {scheme for scheme in ("s3", "gs") if module.startswith(f"dvc_{scheme}")} - _cloud_bounded
        if todo:
            with _bound_lock:
                todo -= _cloud_bounded
                _bound_cloud_waits(s3="s3" in todo, gs="gs" in todo)
                _cloud_bounded.update(todo)
        return cls

    get_fs_cls._mvc = True  # type: ignore[attr-defined]
    dvc.fs.get_fs_cls = get_fs_cls


_bound_lock = threading.Lock()


# Network bounds for s3:// and gs:// remotes unless the remote's config (or AWS_MAX_ATTEMPTS)
# says otherwise. Without them a stalled endpoint held a push for 15+ minutes (botocore's
# 60 s read timeout x its retries x s3fs's 5 retries, per object). With them a dead or
# stalled endpoint fails in about 30 s: connect 5 s, read 15 s, one botocore attempt,
# S3_TRIES s3fs tries (which back off 0.1-0.3 s). ``mvc status`` waits less (STATUS_WAIT).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15
S3_TRIES = 2
GS_TRIES = 2  # gcsfs's own default is 6 tries with 1-16 s back-off: 2 min on a stalled endpoint
STATUS_WAIT = 5.0


def _bound_cloud_waits(*, s3: bool = True, gs: bool = True) -> None:
    """Give DVC's S3 and GCS filesystems (those asked for) the timeouts and retry limits above."""
    if s3:
        _bound_s3_waits()
    if gs:
        _bound_gs_waits()


def _bound_s3_waits() -> None:
    with contextlib.suppress(ImportError):
        import s3fs
        from dvc_s3 import S3FileSystem

        s3_login = S3FileSystem._prepare_credentials

        def s3_credentials(self: Any, **config: Any) -> Any:
            info = s3_login(self, **config)
            kwargs = info.setdefault("config_kwargs", {})
            kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
            kwargs.setdefault("read_timeout", READ_TIMEOUT)
            if "AWS_MAX_ATTEMPTS" not in os.environ:
                kwargs.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
            return info

        S3FileSystem._prepare_credentials = s3_credentials
        s3fs.S3FileSystem.retries = S3_TRIES


def _bound_gs_waits() -> None:
    with contextlib.suppress(ImportError):
        from dvc_gs import GSFileSystem

        gs_login = GSFileSystem._prepare_credentials

        def gs_credentials(self: Any, **config: Any) -> Any:
            info = gs_login(self, **config)
            info.setdefault("requests_timeout", READ_TIMEOUT)
            return info

        GSFileSystem._prepare_credentials = gs_credentials
        _bound_gcsfs_retries()


def _bound_gcsfs_retries() -> None:
    """Make gcsfs try a request GS_TRIES times, not 6: its retry count is fixed when its
    ``_request`` method is decorated, so decorate the undecorated function again."""
    import gcsfs.core
    from gcsfs.retry import retry_request

    request = gcsfs.core.GCSFileSystem._request
    if getattr(request, "_mvc_tries", None) == GS_TRIES:
        return
    bounded = retry_request(retries=GS_TRIES)(getattr(request, "__wrapped__", request))
    bounded._mvc_tries = GS_TRIES  # type: ignore[attr-defined]
    gcsfs.core.GCSFileSystem._request = bounded


class _VerifiedLog:
    """The cache objects mvc has re-hashed, keyed by oid with the file's inode, mtime and size.

    DVC's state database cannot tell: DVC records the expected hash of every object it
    downloads without reading it back. An object whose stat differs from the record (or
    with no record: fetched by plain DVC, by ``pull --no-verify``, or by a pull that was
    interrupted before its check) is re-hashed before checkout and before push.
    """

    def __init__(self, repo: Repo) -> None:
        self.path = os.path.join(repo.tmp_dir or os.path.join(repo.root_dir, ".dvc", "tmp"), "mvc-verified.sqlite")

    def _connect(self) -> Any:
        import sqlite3

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        # A lost record only costs a re-hash: no fsync per write (it was ~15 ms per object, issue 19).
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE IF NOT EXISTS verified (path TEXT PRIMARY KEY, ino INT, mtime INT, size INT)")
        return db

    def record(self, paths: Iterable[str]) -> None:
        rows = []
        for path in paths:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                rows.append((os.path.abspath(path), st.st_ino, st.st_mtime_ns, st.st_size))
        if not rows:
            return
        with contextlib.suppress(Exception), contextlib.closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?)", rows)

    def knows(self, path: str) -> bool:
        return path in self.known([path])

    def known(self, paths: Iterable[str]) -> set[str]:
        """The ``paths`` whose inode, mtime and size are those recorded (one query for all)."""
        found = set()
        try:
            with contextlib.closing(self._connect()) as db:
                for path in paths:
                    with contextlib.suppress(OSError):
                        st = os.stat(path)
                        row = db.execute("SELECT ino, mtime, size FROM verified WHERE path = ?", (os.path.abspath(path),)).fetchone()
                        if row is not None and tuple(row) == (st.st_ino, st.st_mtime_ns, st.st_size):
                            found.add(path)
        except Exception:  # noqa: BLE001 - no record: re-hash
            return found
        return found


_OID = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


def _unsafe_relpath(entries: Iterable[tuple[str, str]]) -> str | None:
    """The first path or object id of a ``.dir`` listing that would land outside its place, or None.

    A listing is data from the remote (or a hostile commit): ``../x``, ``/etc/x``, ``a//b``
    or a Windows drive would make a checkout write outside the model's directory, and an
    id that is not an md5 (``abc/../../x``) a path outside the cache and the remote.
    """
    from pathlib import PurePosixPath, PureWindowsPath

    for relpath, oid in entries:
        parts = relpath.split("/")
        if (
            not relpath
            or PurePosixPath(relpath).is_absolute()
            or PureWindowsPath(relpath).drive
            or "\\" in relpath
            or any(part in ("", ".", "..") for part in parts)
        ):
            return relpath
        if not _OID.fullmatch(oid) or oid.endswith(".dir"):
            return oid
    return None


def unsafe_listing_entry(root: Path, md5: str) -> str | None:
    """For a directory version whose ``.dir`` listing is cached: its first unsafe path, else None."""
    if not md5.endswith(".dir"):
        return None
    with _repo(root) as repo:
        return _unsafe_relpath(_tree_entries(repo.cache.local, md5) or [])


def unsafe_listing_error(label: str, md5: str, entry: str) -> IntegrityError:
    """The one error for a listing that names a path outside its directory."""
    return IntegrityError(
        f"refusing {label}: its directory listing {md5[:8]}.dir names {entry!r}, a path outside the model's "
        "directory or the cache; nothing was written",
        hint="this version was crafted or corrupted: do not use it; ask its author, and check the commit that added it",
    )


def _tree_entries(odb: Any, md5: str) -> list[tuple[str, str]] | None:
    """``(relpath, oid)`` of the ``.dir`` listing ``md5`` in ``odb``; None if absent or unreadable."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    try:
        tree = Tree.load(odb, HashInfo("md5", md5))
    except Exception:  # noqa: BLE001 - missing (FileNotFoundError) or corrupt (ObjectFormatError)
        return None
    return [("/".join(key), hi.value) for key, _, hi in tree]


_DVC_TMP_RE = re.compile(r"^\.[A-Za-z0-9_-]{22}\.tmp$")  # dvc_objects.fs.utils.tmp_fname()


def _remove_temp_files(repo: Repo, remote: str | None, since: float | None = None) -> None:
    """Remove the partial files an interrupted or failed transfer left in the cache and a local remote.

    DVC copies each object to ``<dir>/.<token>.tmp`` and renames it; a failure or Ctrl-C
    in the middle leaves that file behind forever. Only files of that exact name, in the
    object directories, modified since ``since`` (this transfer), are removed.
    """
    import time

    since = since if since is not None else time.time() - 3600
    dirs = [os.fspath(repo.cache.local.path)]
    with contextlib.suppress(Exception):
        odb = repo.cloud.get_remote_odb(remote, "fetch")
        if odb.fs.protocol == "local":
            dirs.append(os.fspath(odb.path))
    for top in dirs:
        with contextlib.suppress(OSError), os.scandir(top) as subdirs:
            for sub in subdirs:
                if not sub.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError), os.scandir(sub.path) as files:
                    for f in files:
                        if _DVC_TMP_RE.match(f.name) and f.stat(follow_symlinks=False).st_mtime >= since - 1:
                            with contextlib.suppress(OSError):
                                os.unlink(f.path)


def _abort_multipart_uploads(repo: Repo, remote: str | None, since: float) -> None:
    """Abort the S3 multipart uploads under the remote's prefix that this push started.

    s3fs aborts a multipart upload when a part fails with an Exception, but not when the
    command is interrupted (Ctrl-C cancels the coroutine): the parts would stay stored
    and billed, invisible to a listing, until a lifecycle rule removes them.
    """
    with contextlib.suppress(Exception):
        odb = repo.cloud.get_remote_odb(remote, "push")
        for upload in _uploads_under(odb):
            if upload.initiated >= since - 60:
                with contextlib.suppress(Exception):
                    _abort_upload(odb.fs.fs, upload)


@dataclass(frozen=True)
class Upload:
    """An S3 multipart upload that was started and never completed nor aborted."""

    key: str  # bucket/key
    upload_id: str
    initiated: float  # seconds since the epoch


def _uploads_under(odb: Any) -> list[Upload]:
    """The unfinished multipart uploads under ``odb``'s prefix, all pages (none off S3)."""
    if odb.fs.protocol != "s3":
        return []
    s3 = odb.fs.fs
    bucket, _, prefix = str(odb.path).partition("/")
    uploads: list[Upload] = []
    marker: dict[str, str] = {}
    while True:
        page = s3.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
        uploads += [Upload(f"{bucket}/{u['Key']}", u["UploadId"], u["Initiated"].timestamp()) for u in page.get("Uploads", [])]
        if not page.get("IsTruncated"):
            return uploads
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


def _abort_upload(s3: Any, upload: Upload) -> None:
    bucket, _, key = upload.key.partition("/")
    s3.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)


def _remote_ref(repo: Repo | None, remote: str | None) -> tuple[str | None, str | None]:
    """``(name, url)`` of ``remote`` (or of the default remote), as far as the config tells."""
    if repo is None:
        return remote, None
    try:
        conf = repo.config
        name = remote or conf["core"].get("remote")
        return name, (str(conf["remote"][name]["url"]) if name else None)
    except Exception:  # noqa: BLE001 - a broken config is reported by the error being translated
        return remote, None


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
            _heal_rwlock(root)
            _held[root] = repo
            try:
                yield
            finally:
                del _held[root]


@contextlib.contextmanager
def session(root: Path) -> Iterator[None]:
    """Open the DVC repository once for a read-only multi-step command (``mvc status``).

    Every dvcstore call on ``root`` inside the block reuses it; DVC's lock is not taken
    (see :func:`lock` for commands that write).
    """
    if root in _held:
        yield
        return
    with _repo(root) as repo:
        _held[root] = repo
        try:
            yield
        finally:
            del _held[root]


RWLOCK = ".dvc/tmp/rwlock"


def _heal_rwlock(root: Path) -> None:
    """Reset DVC's stage lock file when a killed process left it empty or garbled (issue 14).

    DVC rewrites ``.dvc/tmp/rwlock`` in place (truncate, then write); ``kill -9`` in
    between leaves a file every later dvc command refuses to read. Called with the repo
    lock held, so no DVC process of this repository is writing it: a file that does not
    parse records no live lock, and ``{}`` (no locks) is what it meant.
    """

    path = root / RWLOCK
    try:
        data = path.read_bytes()
    except OSError:
        return
    try:
        doc = documents.load_json(data)
        if isinstance(doc, dict) and set(doc) <= {"read", "write"}:
            return
    except ValueError:
        pass
    tmp = path.with_name(f".rwlock.mvc-{os.getpid()}.tmp")
    tmp.write_bytes(b"{}")
    os.replace(tmp, path)


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
    _precache_small(repo, [f for f in files if f.stat().st_size < _PRECACHE_MIN])
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
                # As DVC does for objects it caches; and mvc read these very bytes.
                repo.state.save(os.fspath(dest), odb.fs, HashInfo("md5", md5))
                _VerifiedLog(repo).record([os.fspath(dest)])
            repo.state.save(os.fspath(file), repo.fs, HashInfo("md5", md5))
        finally:
            tmp.unlink(missing_ok=True)


def _precache_small(repo: Repo, files: list[Path]) -> None:
    """Cache small files (a directory model's shards) from one read each, and record them.

    DVC reads each file twice (md5, then the copy); here one read feeds both, and the
    cache objects are recorded as verified, so a push does not re-hash them (issue 19).
    A file that changes meanwhile is left to DVC.
    """
    import hashlib

    from dvc_data.hashfile.hash_info import HashInfo

    odb = repo.cache.local
    cached: list[tuple[str, HashInfo, None]] = []
    worked: list[tuple[str, HashInfo, None]] = []
    for file in files:
        before = file.stat()
        data = file.read_bytes()
        after = file.stat()
        if len(data) != before.st_size or (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino):
            continue
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's content address, not security
        dest = odb.oid_to_path(md5)
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = os.path.join(os.path.dirname(dest), f".mvc-tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                with open(tmp, "wb") as out:
                    out.write(data)
                os.chmod(tmp, 0o444)  # DVC keeps cache files read-only
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            cached.append((dest, HashInfo("md5", md5), None))
        worked.append((os.fspath(file), HashInfo("md5", md5), None))
    repo.state.save_many(cached, odb.fs)
    repo.state.save_many(worked, repo.fs)
    _VerifiedLog(repo).record([path for path, _, _ in cached])


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
    label: str | None = None,
) -> TransferResult:
    """Upload the cache objects of ``pointers`` (all when None) to ``remote``.

    ``progress`` receives the bytes as one task named ``label`` (the models, e.g.
    ``clf@v3``), whose total is known before the first byte moves.
    """
    import time

    with _repo(root, remote) as repo:
        _preflight(repo, remote, "push")
        revs = list(revs or [])
        since = time.time()
        md5s = _pointer_hashes(repo, _targets(root, pointers))
        meter = ByteMeter(progress, label or "weights", _push_bytes(repo, remote, md5s)) if progress else None
        with _progress_hook(meter):
            count, covered = _engine_push(repo, remote, md5s, jobs=jobs, progress=meter)
            if not (covered and not revs):  # covered: the remote holds every object; DVC would only list it again
                try:
                    count += repo.push(_targets(root, pointers), jobs=jobs, remote=remote, revs=revs or None)
                except BaseException:
                    _abort_multipart_uploads(repo, remote, since)
                    _remove_temp_files(repo, remote, since)
                    raise
        if meter is not None:
            meter.finish()
        return TransferResult(transferred=count, failed=0)


def fetch(
    root: Path,
    pointers: Iterable[str] | None = None,
    *,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    verify: bool = True,
    label: str | None = None,
) -> TransferResult:
    """Download the cache objects of ``pointers`` from ``remote`` into the cache.

    ``progress`` receives the bytes as one task named ``label`` (see :func:`push`).

    Every object this call downloads is re-hashed before it is trusted (DVC does not
    check downloads unless a remote sets ``verify``, and then drops a bad object
    silently); bad ones are removed from the cache again. ``verify=False`` skips that
    md5 pass (about 2 s per GiB) for remotes the user trusts.

    Raises:
        IntegrityError: a downloaded object does not match its hash.
        RemoteError / MissingObjectError / RemoteNotFoundError: the transfer failed.
    """
    import time

    with _repo(root, remote) as repo:
        targets = _targets(root, pointers)
        hashes = _pointer_hashes(repo, targets)
        if not _present(repo.cache.local, hashes) >= _all_ids(repo.cache.local, hashes):
            _preflight(repo, remote, "fetch")  # only when something must come (pull works offline)
        odb = repo.cache.local
        before = _present(odb, hashes)
        since = time.time()
        meter = ByteMeter(progress, label or "weights", _fetch_bytes(repo, remote, _pointer_sizes(repo, targets))) if progress else None
        try:
            with _progress_hook(meter):
                if verify:
                    _engine_fetch(repo, remote, hashes, jobs=jobs, progress=meter, sizes=_pointer_sizes(repo, targets))
                # DVC's fetch only for what the engine left (other remotes, objects the remote lacks):
                # run for nothing, it would list the remote and re-read the cache once more.
                if not verify or not _present(odb, hashes) >= _all_ids(odb, hashes):
                    with _verified_download(repo, remote, hashes) if verify else contextlib.nullcontext():
                        repo.fetch(targets, jobs=jobs, remote=remote)
        except BaseException:
            _remove_temp_files(repo, remote, since)
            raise
        if meter is not None:
            meter.finish()
        # DVC's own count misses objects of a listing fetched in an earlier, failed pull.
        return TransferResult(transferred=len(_present(odb, hashes) - before), failed=0)


def checkout(root: Path, pointers: Iterable[str] | None = None, *, force: bool = True) -> dict[str, list[str]]:
    """Make the work tree match ``pointers`` from the local cache.

    Returns:
        DVC's change lists: ``{"added": [...], "modified": [...], "deleted": [...]}``.
    """
    with _repo(root) as repo, _kernel_copies():
        result = repo.checkout(_targets(root, pointers), force=force)
        return {k: list(v) for k, v in result.items() if k in ("added", "modified", "deleted")}


@contextlib.contextmanager
def _kernel_copies() -> Iterator[None]:
    """Let DVC's checkout copy large files in the kernel (``copy_file_range``).

    Without reflinks (ext4), dvc_objects copies each file of 10 MiB or more through a
    Python read/write loop of 1 MiB chunks to drive its progress bar: about 3x slower
    than an in-kernel copy, and the larger part of pulling a big model (issue 19).
    """
    import shutil

    from dvc_objects.fs import local, system, utils

    original = local.copyfile

    def copyfile(src: str, dest: str, callback: Any = None) -> None:
        if os.path.isdir(dest) or not hasattr(os, "copy_file_range"):
            original(src, dest, callback=callback) if callback is not None else original(src, dest)
            return
        try:
            system.reflink(src, dest)
            os.chmod(dest, 0o666 & ~utils.umask)
            return
        except OSError:
            pass
        total = os.path.getsize(src)
        if callback is not None:
            callback.set_size(total)
        with open(src, "rb") as fsrc, open(dest, "wb") as fdest:
            done = 0
            try:
                while done < total:
                    n = os.copy_file_range(fsrc.fileno(), fdest.fileno(), min(total - done, 64 * 2**20))
                    if n <= 0:
                        break
                    done += n
                    if callback is not None:
                        callback.relative_update(n)
            except OSError:  # a filesystem without it (EXDEV, ENOSYS ...): the plain loop
                pass
            if done < total:
                fsrc.seek(done)
                fdest.seek(done)
                shutil.copyfileobj(fsrc, fdest, 2**20)
                if callback is not None:
                    callback.relative_update(total - done)

    local.copyfile = copyfile
    try:
        yield
    finally:
        local.copyfile = original


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
    outs: dict[str, str] | None = None,
) -> dict[str, ObjectStatus]:
    """Status of each pointer (``{pointer_path: md5}``) with one DVC repo opened.

    The remote is asked once for all objects; when no remote is configured,
    ``in_remote`` is None. ``outs`` (``{pointer_path: weights path}``) lets a
    single-file version be judged from DVC's state database (inode, mtime, size) without
    loading its stage: ``mvc status`` with 20 models spent most of its time in 20 DVC
    stage loads.
    """
    from dvc.config import NoRemoteError

    with _repo(root, remote) as repo:
        result: dict[str, ObjectStatus] = {}
        objects: dict[str, set[str]] = {}
        for ptr, md5 in pointers.items():
            out = (outs or {}).get(ptr)
            state = _file_workspace(repo, os.fspath(root / out), md5) if out and md5 and not md5.endswith(".dir") else None
            if state is None:
                state = _stage_workspace(repo, os.fspath(root / ptr))
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


def _file_workspace(repo: Repo, path: str, md5: str) -> str | None:
    """``ok`` or ``missing`` for the single file ``path`` that should hash to ``md5``, from
    DVC's state database when it knows the file (else hashed once, as DVC would); None
    when DVC's own status must judge (a directory, or a difference to classify)."""
    from dvc_data.hashfile.hash import hash_file

    try:
        info = repo.fs.info(path)
    except FileNotFoundError:
        return "missing"
    if info.get("type") != "file":
        return None
    _, hi = hash_file(path, repo.fs, "md5", repo.state, info=info)
    return "ok" if hi.value == md5 else None


def _stage_workspace(repo: Repo, pointer: str) -> str:
    """``ok``, ``modified`` or ``missing`` for one pointer file, as DVC's status sees it."""
    state = "ok"
    for entries in repo.status([pointer]).values():
        for entry in entries:
            changed = entry.get("changed outs", {}) if isinstance(entry, dict) else {}
            if "deleted" in changed.values():
                state = "missing"
            elif changed:
                state = "modified"
    return state


@dataclass(frozen=True)
class RemotePresence:
    """What a remote holds of some versions, or why it could not tell.

    ``state`` is ``ok`` (``present`` holds the versions it has all objects of),
    ``unreachable`` or ``denied``; ``error`` is the translated failure.
    """

    state: str
    present: frozenset[str] = frozenset()
    error: MvcError | None = None


def remote_presence(root: Path, md5s: Iterable[str], *, remote: str | None, wait: float = STATUS_WAIT) -> RemotePresence:
    """Which of ``md5s`` ``remote`` holds wholly, asked within ``wait`` seconds.

    For ``mvc status``: a remote that does not answer in time is ``unreachable``, one that
    rejects the keys ``denied``; neither raises. The question runs in a daemon thread with
    its own DVC repo, so a stalled endpoint cannot hold the command.
    """
    wanted = sorted(set(md5s))
    box: list[RemotePresence] = []

    def ask(captured: _Captured) -> None:
        from dvc.repo import Repo

        try:
            with Repo(os.fspath(root)) as repo:
                _register_cache(repo)
                name, url = _remote_ref(repo, remote)
                try:
                    odb = repo.cloud.get_remote_odb(remote, "status")
                    ids = {m: _object_ids(repo, m) for m in wanted}
                    have = set(odb.oids_exist(sorted(set().union(*ids.values())))) if ids else set()
                except Exception as exc:  # noqa: BLE001 - classified below
                    box.append(_presence_failure(exc, captured, name, url))
                    return
                box.append(RemotePresence("ok", frozenset(m for m, need in ids.items() if need <= have)))
        except Exception as exc:  # noqa: BLE001
            box.append(_presence_failure(exc, captured, remote, None))

    with _quiet() as captured:
        thread = threading.Thread(target=ask, args=(captured,), name="mvc-status-remote", daemon=True)
        thread.start()
        thread.join(wait)
    if box:
        return box[0]
    err = RemoteError(
        f"{_where(remote, None)} did not answer within {wait:g} s",
        hint="check the network / endpoint URL, or run `mvc status --no-remote`",
    )
    return RemotePresence("unreachable", error=err)


def _presence_failure(exc: BaseException, captured: _Captured, remote: str | None, url: str | None) -> RemotePresence:
    err = _translate(exc, captured, remote, url)
    text = _chain_text(exc)
    denied = any(p.search(text) for p in (_NO_CREDENTIALS_RE, _AUTH_RE, _DENIED_RE))
    return RemotePresence("denied" if denied else "unreachable", error=err)


def _object_ids(repo: Repo, md5: str) -> set[str]:
    """``md5`` plus, for a directory whose listing is cached, the hashes of its files."""
    ids = {md5}
    if md5.endswith(".dir") and repo.cache.local.exists(md5):
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        tree = Tree.load(repo.cache.local, HashInfo("md5", md5))
        ids |= {hi.value for _, _, hi in tree}
    return ids


def object_ids(root: Path, md5: str) -> set[str]:
    """``md5`` and, for a directory whose listing is cached, the oids of its files."""
    with _repo(root) as repo:
        return _object_ids(repo, md5)


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
    label: str | None = None,
) -> int:
    """Fetch into the cache the objects ``pointer`` records at git ``commit`` (no checkout).

    ``progress`` receives the bytes as one task named ``label`` (see :func:`push`).

    Downloads are re-hashed as in :func:`fetch`. The objects are fetched by hash with the
    work tree's remotes: ``repo.fetch(revs=[commit])`` would read the remotes from that
    commit's ``.dvc/config`` and fail for a remote added later ("no remote named ...").
    """
    with _repo(root, remote) as repo:
        sizes = _pointer_sizes_at(repo, pointer, commit)
        md5s = list(sizes)
        meter = ByteMeter(progress, label or "weights", _fetch_bytes(repo, remote, sizes)) if progress else None
        with _progress_hook(meter):
            count = _engine_fetch(repo, remote, md5s, jobs=jobs, progress=meter)
            with _verified_download(repo, remote, md5s):
                count += _pull_objects(repo, md5s, remote=remote, jobs=jobs)
        if meter is not None:
            meter.finish()
        return count


def _pull_objects(repo: Repo, md5s: list[str], *, remote: str | None, jobs: int | None) -> int:
    """Download the objects ``md5s`` (a ``.dir`` listing, then the files it names) into the cache."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    odb = repo.cache.local
    wanted = [HashInfo("md5", m) for m in md5s if not odb.exists(m)]
    count = len(repo.cloud.pull(wanted, jobs=jobs, remote=remote).transferred) if wanted else 0
    files = [
        hi
        for m in md5s
        if m.endswith(".dir") and odb.exists(m)
        for _, _, hi in Tree.load(odb, HashInfo("md5", m))
        if not odb.exists(hi.value)
    ]
    if files:
        count += len(repo.cloud.pull(files, jobs=jobs, remote=remote).transferred)
    return count


def unsaved_outputs(root: Path, pointers: Iterable[str]) -> list[str]:
    """Those ``pointers`` whose work-tree weights differ from what they record and are not in the cache.

    Overwriting such weights would lose them (DVC's own rule for prompting before a
    checkout); weights of another recorded version (e.g. after ``git checkout`` of a
    branch) are in the cache and safe to replace. Hashes come from DVC's state db, so
    known files are not re-read.
    """
    with _repo(root) as repo:
        unsaved = []
        for ptr in pointers:
            out = repo.stage.load_one(os.fspath(root / ptr)).outs[0]
            if not out.exists:
                continue
            current = out.get_hash()
            if current.value != out.hash_info.value and not _cache_has(repo, current.value):
                unsaved.append(ptr)
        return unsaved


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
        return _export_from(odb, md5, dest, verify=verify)


def _export_from(odb: Any, md5: str, dest: Path, *, verify: bool) -> Path:
    """Copy object ``md5`` (a file, or a ``.dir`` tree) from the object store ``odb`` to ``dest``."""
    if md5.endswith(".dir"):
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        tree = Tree.load(odb, HashInfo("md5", md5))
        entry = _unsafe_relpath(("/".join(key), hi.value) for key, _, hi in tree)
        if entry is not None:
            raise unsafe_listing_error(f"object {md5[:8]}", md5, entry)
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


# ---- experiments, hooks, registry (issue 5) --------------------------------------------


def missing_in_remote(root: Path, md5s: Iterable[str], *, remote: str) -> set[str]:
    """Those of ``md5s`` (a ``.dir`` hash with its files) that ``remote`` does not hold; one listing call.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or it failed.
    """
    wanted = sorted(set(md5s))
    if not wanted:
        return set()
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "status")
        ids = {m: _object_ids(repo, m) for m in wanted}
        present = set(odb.oids_exist(sorted(set().union(*ids.values()))))
        return {m for m, need in ids.items() if not need <= present}

# ---- cloud remotes: verified downloads (issue 3) ---------------------------------------


def _object_ids_in(odb: Any, md5: str) -> list[str]:
    """``md5`` plus, when its ``.dir`` listing is in ``odb``, the oids of the files it lists."""
    entries = _tree_entries(odb, md5) if md5.endswith(".dir") else None
    return [md5, *(oid for _, oid in entries or [])]


def _all_ids(odb: Any, md5s: Iterable[str]) -> set[str]:
    """The oids of ``md5s`` and of the files of those listings ``odb`` holds."""
    return {oid for md5 in md5s for oid in _object_ids_in(odb, md5)}


def _present(odb: Any, md5s: Iterable[str]) -> set[str]:
    """The oids of ``md5s`` (and of the files of their listings) that ``odb`` holds."""
    return {oid for md5 in md5s for oid in _object_ids_in(odb, md5) if odb.exists(oid)}


def _pointer_hashes(repo: Repo, targets: list[str] | None) -> list[str]:
    """The hashes the pointer files ``targets`` record (every tracked output when None)."""
    if targets is None:
        outs = repo.index.outs
    else:
        outs = [out for target in targets for out in repo.stage.load_one(target).outs]
    return [out.hash_info.value for out in outs if out.hash_info and out.hash_info.value]


def _pointer_sizes(repo: Repo, targets: list[str] | None) -> dict[str, int | None]:
    """The hashes the pointer files ``targets`` record (every tracked output when None), with their sizes."""
    if targets is None:
        outs = repo.index.outs
    else:
        outs = [out for target in targets for out in repo.stage.load_one(target).outs]
    return {out.hash_info.value: out.meta.size for out in outs if out.hash_info and out.hash_info.value}


def _pointer_sizes_at(repo: Repo, pointer: str, commit: str) -> dict[str, int | None]:
    """The hashes (with sizes) the pointer file ``pointer`` records at git ``commit`` (empty if unreadable)."""
    from dvc.utils.serialize import parse_yaml

    try:
        text = repo.scm.get_fs(commit).read_text(f"/{pointer}")
        data = parse_yaml(text, pointer)
    except Exception:  # noqa: BLE001 - DVC's own fetch reports a missing or broken pointer
        return {}
    outs = [o for o in data.get("outs", []) if isinstance(o, dict) and o.get("md5")]
    return {str(o["md5"]): o["size"] if isinstance(o.get("size"), int) else None for o in outs}


def _push_bytes(repo: Repo, remote: str | None, md5s: list[str]) -> int:
    """The bytes a push of ``md5s`` moves: their cached objects (listings and files) the remote lacks."""
    cache = repo.cache.local
    ids = sorted({oid for md5 in md5s for oid in _object_ids(repo, md5) if cache.exists(oid)})
    if not ids:
        return 0
    present: set[str] = set()
    with contextlib.suppress(Exception):  # an unreachable remote: the push itself reports it
        present = set(repo.cloud.get_remote_odb(remote, "push").oids_exist(ids))
    return sum(_file_size(cache.oid_to_path(oid)) for oid in ids if oid not in present)


def _fetch_bytes(repo: Repo, remote: str | None, sizes: dict[str, int | None]) -> int:
    """The bytes a fetch of the hashes ``sizes`` names moves: what the cache lacks.

    A cached ``.dir`` listing gives its missing files' sizes; a listing still to come
    counts with the size its pointer records for the whole directory (plus the
    listing's own bytes, asked of the remote).
    """
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    cache = repo.cache.local
    total = 0
    for md5, size in sizes.items():
        if md5.endswith(".dir") and cache.exists(md5):
            with contextlib.suppress(Exception):  # an unreadable listing: DVC's fetch reports it
                tree = Tree.load(cache, HashInfo("md5", md5))
                total += sum(meta.size or 0 for _, meta, hi in tree if meta is not None and not cache.exists(hi.value))
        elif not cache.exists(md5):
            total += size or 0
            if md5.endswith(".dir"):
                with contextlib.suppress(Exception):  # missing or unreachable: the fetch itself reports it
                    odb = repo.cloud.get_remote_odb(remote, "fetch")
                    total += int(odb.fs.size(odb.oid_to_path(md5)) or 0)
    return total


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _preflight(repo: Repo, remote: str | None, command: str) -> None:
    """List a cloud remote's prefix once, so that a missing bucket or rejected keys fail
    with the store's own error code.

    Without it a transfer of a few objects only sends HEAD requests (a bare 404 / 403):
    a pull would report the objects missing, and a push would go on to PUTs, which
    SeaweedFS answers with AccessDenied for a missing bucket.
    """
    odb = repo.cloud.get_remote_odb(remote, command)
    if odb.fs.protocol not in ("s3", "gs", "gcs"):
        return
    try:
        odb.fs.ls(odb.path)
    except FileNotFoundError as exc:
        if _NO_BUCKET_RE.search(_chain_text(exc)):
            raise
        # the prefix is new: nothing pushed there yet
    finally:
        odb.fs.fs.invalidate_cache()


def _hash_matches(odb: Any, oid: str, log: _VerifiedLog | None = None) -> bool:
    """Re-hash one cache object. DVC 3's md5 is that of the raw bytes (the same as
    :func:`file_md5`); ``hashlib.file_digest`` reads it ~20% faster than DVC's reader."""
    import hashlib

    path = odb.oid_to_path(oid)
    with open(path, "rb") as f:
        ok = hashlib.file_digest(f, "md5").hexdigest() == oid.split(".")[0]
    if ok and log is not None:
        log.record([path])
    return ok


@contextlib.contextmanager
def _verified_download(repo: Repo, remote: str | None, md5s: list[str]) -> Iterator[None]:
    """Re-hash every object of ``md5s`` that arrives in the cache during the block.

    A ``.dir`` listing is checked before the files it names. Objects that do not match
    their hash are deleted, so the bad bytes never reach a checkout; the objects that
    were in the cache before are not re-read.

    Raises:
        IntegrityError: some downloaded object was corrupt (raised even when the block
            itself failed, since bad objects are the more important news).
    """
    from concurrent.futures import ThreadPoolExecutor

    odb = repo.cache.local
    log = _VerifiedLog(repo)
    before = _present(odb, md5s)
    try:
        yield
    finally:
        bad = [m for m in md5s if m.endswith(".dir") and m not in before and odb.exists(m) and not _hash_matches(odb, m, log)]
        for oid in bad:
            odb.fs.remove(odb.oid_to_path(oid))
        new = sorted(_present(odb, md5s) - before)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            bad += [oid for oid, ok in zip(new, pool.map(lambda o: _hash_matches(odb, o, log), new), strict=True) if not ok]
        for oid in bad:
            with contextlib.suppress(FileNotFoundError):
                odb.fs.remove(odb.oid_to_path(oid))
        if bad:
            name, url = _remote_ref(repo, remote)
            raise IntegrityError(
                f"{counted(len(bad), 'object')} downloaded from {_where(name, url)}: the bytes do not match their hash "
                f"(first: {bad[0][:8]}); the bad bytes were deleted and nothing was written from them",
                hint="the copy in the remote is corrupt: push a good copy from a machine that has the weights "
                "(`mvc verify --repair`)",
            )


def _named_remote(repo: Repo, remote: str | None) -> tuple[str, str | None]:
    """``(name, url)`` of ``remote`` (the default when None) in another repository's config.

    Raises:
        RemoteNotFoundError: no default remote, or no remote of that name.
    """
    name, url = _remote_ref(repo, remote)
    if name is None:
        raise RemoteNotFoundError("the repository sets no default remote", hint="name one with --remote (see its .dvc/config)")
    if name not in repo.config["remote"]:
        names = ", ".join(sorted(repo.config["remote"])) or "none"
        raise RemoteNotFoundError(f"the repository has no remote named {name!r} (remotes: {names})", hint="pick one with --remote")
    return name, url


# ---- parallel, verified transfers for S3 / GCS remotes (issue 19) ----------------------


def remote_fs(root: Path, remote: str | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``remote`` (configured endpoint and credentials) and its base path.

    Raises:
        RemoteNotFoundError: no such remote / no default remote.
    """
    with _repo(root, remote) as repo:
        odb = repo.cloud.get_remote_odb(remote, "fetch")
        return odb.fs.fs, odb.path


def _versioned(repo: Repo, remote: str | None, command: str) -> bool:
    """True for a cloud-versioned or worktree remote: its layout is DVC's business, not the engine's."""
    found = repo.cloud.get_remote(remote, command)
    return bool(found.worktree or found.fs.version_aware)


def _engine_fetch(
    repo: Repo, remote: str | None, md5s: list[str], *, jobs: int | None, progress: Progress | None, sizes: dict[str, int | None] | None = None
) -> int:
    """Download the objects of ``md5s`` missing from the cache with :mod:`mvc.transfer` (S3 / GCS only).

    A ``.dir`` listing comes first, then the files it names. Each object is verified
    before it reaches the cache. Objects the remote lacks, and every object of other
    kinds of remote, are left to DVC's fetch, which runs next and reports them.

    Returns:
        The number of objects downloaded.
    """
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    from mvc import transfer

    cache = repo.cache.local
    if all(cache.exists(m) for m in md5s) and not any(m.endswith(".dir") for m in md5s):
        return 0
    if _versioned(repo, remote, "fetch"):
        return 0
    odb = repo.cloud.get_remote_odb(remote, "fetch")
    if not transfer.is_cloud(odb.fs.fs):
        return 0
    where = _where(*_remote_ref(repo, remote))

    def pull(sizes: dict[str, int | None]) -> int:
        items = [transfer.Item(o, cache.oid_to_path(o), odb.oid_to_path(o), n) for o, n in sizes.items() if not cache.exists(o)]
        if not items:
            return 0
        done = transfer.pull(odb.fs.fs, items, jobs=jobs, progress=progress, where=where).transferred
        _VerifiedLog(repo).record([cache.oid_to_path(o) for o in done])  # hashed on arrival: not again before a push
        return len(done)

    # a file's size as its pointer records it (no HEAD); a listing's is asked of the store
    count = pull({m: None if m.endswith(".dir") else (sizes or {}).get(m) for m in md5s})
    files: dict[str, int | None] = {}
    for md5 in md5s:
        if md5.endswith(".dir") and cache.exists(md5):
            files.update((hi.value, meta.size if meta else None) for _, meta, hi in Tree.load(cache, HashInfo("md5", md5)))
    return count + pull(files)


def _engine_push(
    repo: Repo, remote: str | None, md5s: list[str], *, jobs: int | None, progress: Progress | None
) -> tuple[int, bool]:
    """Upload the objects of ``md5s`` that an S3 remote lacks with :mod:`mvc.transfer`.

    Files go before the ``.dir`` listing that names them (as DVC does), so a listing in
    the remote always means its files are there. Other remotes are left to DVC.

    Returns:
        The number of objects uploaded, and whether the remote now holds every object of
        ``md5s`` (then DVC's push has nothing left to do; otherwise it runs and reports
        what is missing from the cache).
    """
    from mvc import transfer

    if not md5s or _versioned(repo, remote, "push"):
        return 0, False
    odb = repo.cloud.get_remote_odb(remote, "push")
    if not transfer.is_s3(odb.fs.fs):
        return 0, False
    cache = repo.cache.local
    ids = {m: [oid for oid in _object_ids(repo, m) if oid != m] for m in md5s if cache.exists(m)}
    wanted = sorted({oid for files in ids.values() for oid in files} | set(ids))
    present = set(odb.oids_exist(wanted))
    where = _where(*_remote_ref(repo, remote))

    def push(oids: list[str]) -> int:
        from dvc.exceptions import UploadError

        paths = {o: cache.oid_to_path(o) for o in oids if cache.exists(o)}
        verified = _VerifiedLog(repo).known(paths.values())  # hashed by mvc, unchanged since: not hashed again
        items = [transfer.Item(o, path, odb.oid_to_path(o), verified=path in verified) for o, path in paths.items()]
        try:
            return len(transfer.push(odb.fs.fs, items, jobs=jobs, progress=progress, where=where).transferred) if items else 0
        except MvcError:
            raise
        except Exception as exc:  # an upload failed: "denied" then means no write access
            raise UploadError(len(items)) from exc

    files = sorted({oid for oids in ids.values() for oid in oids if oid not in present} | {m for m in ids if not m.endswith(".dir") and m not in present})
    listings = [m for m in ids if m.endswith(".dir") and m not in present]
    count = push(files)
    count += push(listings)
    in_cache = len(ids) == len(set(md5s)) and all(cache.exists(oid) for oid in files)
    return count, in_cache and count == len(files) + len(listings)


__all__ = [
    "IntegrityError",
    "OutInfo",
    "TransferResult",
    "add",
    "export",
    "fetch_at",
    "file_md5",
    "has_object",
    "ObjectStatus",
    "object_status",
    "checkout",
    "fetch",
    "init",
    "is_initialized",
    "lock",
    "push",
    "remote_fs",
    "missing_in_remote",
]

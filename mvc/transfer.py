"""Parallel, verified object transfers between the DVC cache and S3 / GCS (issue 19).

DVC moves each object as one stream and mvc then re-hashed every download. This
engine splits large objects into parts that travel in parallel, and hashes the bytes
in order while later parts are still on the wire, so verification costs close to
nothing:

- :func:`pull` downloads objects with ranged GETs into a temp file next to the cache
  object (same directory, so same filesystem), feeds the md5 in order as the ranges
  land, and renames the file into the cache (read-only, as DVC leaves it) only once
  its hash matches. A killed pull leaves a ``.<name>.<token>.mvc.tmp`` file that never
  looks like an object; the next pull removes it.
- :func:`push` uploads objects above :data:`MULTIPART_THRESHOLD` as parallel S3
  multipart parts, hashing them in order as they are read, and completes the upload
  only when the hash matches; a failure, an interrupt, or (on the next run) a killed
  push's leftover upload is aborted. Smaller objects go up in one PUT each, many at once.

The filesystems are fsspec's (s3fs / gcsfs), handed over by :mod:`mvc.dvcstore` with
the remote's configured endpoint and credentials; this module imports neither DVC nor
the fsspec backends, and keeps DVC's layout because the caller names every path.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from mvc.errors import IntegrityError, RemoteError, counted
from mvc.progress import Progress

MiB = 2**20
RANGE_SIZE = 8 * MiB  # a pull fetches larger objects in ranges of this size
MULTIPART_THRESHOLD = 64 * MiB  # a push sends larger objects as multipart uploads
MIN_PART = 8 * MiB  # S3 wants >= 5 MiB per part (but the last)
PUSH_MEMORY = 64 * MiB  # parts held in memory at once, all jobs together
MAX_PARTS = 10_000  # S3's limit per upload
DEFAULT_JOBS = 8  # DVC's default for cloud remotes on 2 cores (4 x cpu_count)
ATTEMPTS = 4  # tries per part (s3fs / gcsfs retry each request a few times themselves)
CACHE_MODE = 0o444  # DVC's read-only mode for cache objects
TMP_SUFFIX = ".mvc.tmp"


@dataclass(frozen=True)
class Item:
    """One object to move.

    ``local`` is its path in the DVC cache and ``remote`` its path in the store
    (``bucket/prefix/files/md5/xx/rest``); ``size`` is the recorded size when known.
    """

    oid: str
    local: str
    remote: str
    size: int | None = None


@dataclass(frozen=True)
class Outcome:
    """Objects moved, and objects the source did not hold (left to the caller)."""

    transferred: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class _Short(Exception):
    """A range or part came back with fewer bytes than asked for."""


def is_cloud(fs: Any) -> bool:
    """True for the filesystems this engine drives: s3fs and gcsfs."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "gs", "gcs"} & set(protocols))


def is_s3(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "s3" in protocols


def part_size(size: int, jobs: int) -> int:
    """The multipart part size for an object of ``size`` bytes pushed with ``jobs`` parallel parts.

    About two rounds of parts per job, at least 8 MiB, at most what keeps ``jobs`` parts
    in memory under :data:`PUSH_MEMORY`, and never more than S3's 10,000 parts.
    """
    jobs = max(1, jobs)
    cap = max(MIN_PART, PUSH_MEMORY // jobs)
    step = max(min(max(MIN_PART, -(-size // (2 * jobs))), cap), -(-size // MAX_PARTS))
    return -(-step // MiB) * MiB


class _Reporter:
    """Serialises progress calls from the worker threads."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.lock = threading.Lock()

    def __call__(self, task: str, advance: int, total: int | None) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress(task, advance, total)


class _OrderedMd5:
    """An md5 fed with parts in order, whatever order they arrive in.

    The thread whose part is next hashes it (and every later part already there,
    re-read from ``reread``); other threads only record that their part arrived, so
    at most one part is held in memory for hashing.
    """

    def __init__(self, parts: Sequence[tuple[int, int]], reread: Callable[[int, int], bytes]) -> None:
        self.parts = parts
        self.reread = reread
        self.digest = hashlib.md5()  # DVC's content address, not security
        self.lock = threading.Lock()
        self.ready: dict[int, bytes | None] = {}
        self.next = 0
        self.busy = False

    def feed(self, index: int, data: bytes) -> bool:
        """Record part ``index``; True for the one call after which every part is hashed."""
        with self.lock:
            if self.busy:
                self.ready[index] = data if index == self.next else None
                return False
            self.ready[index] = data
            self.busy = True
        while True:
            with self.lock:
                if self.next not in self.ready:
                    self.busy = False
                    return self.next == len(self.parts)
                i, chunk = self.next, self.ready.pop(self.next)
            if chunk is None:
                chunk = self.reread(*self.parts[i])
            self.digest.update(chunk)
            with self.lock:
                self.next += 1

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _parts(size: int, step: int) -> list[tuple[int, int]]:
    return [(off, min(step, size - off)) for off in range(0, size, step)]


def _stale_temps(local: str) -> list[str]:
    head, name = os.path.split(local)
    return glob.glob(os.path.join(glob.escape(head), f".{glob.escape(name)}.*{TMP_SUFFIX}"))


class _Runner:
    """A pool of worker threads that stops taking work at the first fatal error."""

    def __init__(self, jobs: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=name)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.fatal: BaseException | None = None
        self.futures: list[Any] = []

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            if self.cancel.is_set():
                return
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join() in the caller's thread
                with self.lock:
                    if self.fatal is None:
                        self.fatal = exc
                self.cancel.set()

        self.futures.append(self.pool.submit(run))

    def join(self) -> None:
        wait(self.futures)
        self.futures = []
        if self.fatal is not None:
            raise self.fatal

    def close(self) -> None:
        self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def retry(self, what: Callable[[], Any], fail: Callable[[BaseException], Exception]) -> Any:
        """Call ``what`` up to :data:`ATTEMPTS` times; errors that a retry cannot fix pass through.

        Raises:
            _Cancelled: another task failed first, so this one stopped.
        """
        last: BaseException | None = None
        for attempt in range(ATTEMPTS):
            if self.cancel.is_set() or (attempt and self.cancel.wait(0.2 * 2**attempt)):
                raise _Cancelled
            try:
                return what()
            except (FileNotFoundError, PermissionError, IntegrityError):
                raise
            except Exception as exc:  # noqa: BLE001 - network errors come in many types
                last = exc
        assert last is not None
        err = fail(last)
        if err is last:
            raise last
        raise err from last


class _Cancelled(Exception):
    """Another part failed first; this one stopped quietly."""


def _network_error(where: str, verb: str, oid: str) -> Callable[[BaseException], Exception]:
    """The error for an object whose request still failed after :data:`ATTEMPTS` tries."""
    direction = "to" if verb == "uploading" else "from"

    def make(exc: BaseException) -> Exception:
        if isinstance(exc, ConnectionError) or "connect" in type(exc).__name__.lower():
            # the store is unreachable: the caller names it as for any other command
            return exc if isinstance(exc, Exception) else RemoteError(str(exc))
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RemoteError(
            f"{verb} object {oid[:8]} {direction} {where} failed {ATTEMPTS} times ({type(exc).__name__}: {detail[:200]})",
            hint="check the network / endpoint URL and run the command again (finished objects are kept)",
        )

    return make


def _corrupt(where: str, bad: list[str]) -> IntegrityError:
    return IntegrityError(
        f"{counted(len(bad), 'object')} downloaded from {where}: the bytes do not match their hash "
        f"(first: {bad[0][:8]}); the bad bytes were deleted and nothing was written from them",
        hint="the copy in the remote is corrupt: push a good copy from a machine that has the weights "
        "(`mvc verify --repair`)",
    )


# ---------------------------------------------------------------------------- pull


class _Download:
    """One object on its way into the cache: a temp file, its ranges and its hash.

    The temp file is opened at the first range (so a directory of thousands of files
    holds only the files in flight open) and closed by :meth:`finish`, or by
    :meth:`close` once every worker has stopped.
    """

    def __init__(self, item: Item, size: int) -> None:
        self.item = item
        self.size = size
        self.parts = _parts(size, RANGE_SIZE) if size else [(0, 0)]
        self.md5 = _OrderedMd5(self.parts, lambda off, n: os.pread(self.fd, n, off))
        self.lock = threading.Lock()
        self.fd = -1
        self.tmp = ""
        self.state = "new"  # -> "open" -> "done" (in the cache) | "dropped" (missing, corrupt)

    def write(self, offset: int, data: bytes) -> bool:
        """Write one range; False when the object was dropped meanwhile."""
        with self.lock:
            if self.state == "new":
                head, name = os.path.split(self.item.local)
                os.makedirs(head, exist_ok=True)
                for stale in _stale_temps(self.item.local):  # left by a killed pull
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale)
                self.tmp = os.path.join(head, f".{name}.{secrets.token_urlsafe(8)}{TMP_SUFFIX}")
                self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self.state = "open"
            if self.state != "open":
                return False
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        return True

    def finish(self) -> bool | None:
        """Move the temp file into the cache if its md5 is the object id (None: dropped meanwhile)."""
        with self.lock:
            if self.state != "open":
                return None
            os.close(self.fd)
            self.fd = -1
            if self.md5.hexdigest() != self.item.oid.split(".")[0]:
                os.unlink(self.tmp)
                self.state = "dropped"
                return False
            os.chmod(self.tmp, CACHE_MODE)
            os.replace(self.tmp, self.item.local)
            self.state = "done"
            return True

    def drop(self) -> bool:
        """Give the object up (its temp file goes at once); False if it was given up before."""
        with self.lock:
            if self.state in ("done", "dropped"):
                return False
            if self.tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
            self.state = "dropped"
            return True

    def close(self) -> None:
        """After the workers stopped: close the file and remove what did not make it."""
        self.drop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def pull(
    fs: Any,
    items: Iterable[Item],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    where: str = "the remote",
) -> Outcome:
    """Download ``items`` into the cache, each verified against its md5 before it lands.

    Objects up to :data:`RANGE_SIZE` come in one GET each, many in parallel; larger ones
    in parallel ranged GETs. A range that comes back short or a dropped connection is
    retried; an object whose bytes do not match its hash never reaches the cache.

    Returns:
        The oids downloaded, and those the remote does not hold.

    Raises:
        IntegrityError: some object's bytes did not match its hash (the others are kept).
        RemoteError: a range still failed after :data:`ATTEMPTS` tries.
        OSError: the store refused (auth, missing bucket), for the caller to classify.
    """
    items = list(items)
    report = _Reporter(progress)
    runner = _Runner(max(1, jobs or DEFAULT_JOBS), "mvc-pull")
    missing: list[str] = []
    bad: list[str] = []
    done: list[str] = []
    active: list[_Download] = []
    lock = threading.Lock()

    def size_of(item: Item) -> None:
        if item.size is not None and item.size <= RANGE_SIZE:
            sizes[item.oid] = item.size  # small: the GET itself tells if the size is off
            return
        try:
            sizes[item.oid] = int(runner.retry(lambda: fs.info(item.remote), _network_error(where, "reading", item.oid))["size"])
        except FileNotFoundError:
            with lock:
                missing.append(item.oid)

    def get(dl: _Download, index: int) -> None:
        offset, length = dl.parts[index]
        oid = dl.item.oid

        def fetch() -> bytes:
            if not length:
                fs.info(dl.item.remote)  # a 0-byte object: only check that it is there
                return b""
            data = fs.cat_file(dl.item.remote, start=offset, end=offset + length)
            if len(data) != length:
                fs.invalidate_cache(dl.item.remote)
                if int(fs.info(dl.item.remote)["size"]) != dl.size:  # the object itself is off
                    raise IntegrityError(f"object {oid[:8]} in {where} has the wrong size")
                raise _Short(f"asked for {length} bytes at offset {offset}, got {len(data)}")
            return data

        try:
            data = runner.retry(fetch, _network_error(where, "downloading", oid))
        except FileNotFoundError:
            if dl.drop():
                with lock:
                    missing.append(oid)
            return
        except IntegrityError:
            if dl.drop():
                with lock:
                    bad.append(oid)
            return
        if not dl.write(offset, data):
            return
        report(oid[:12], len(data), dl.size)
        if dl.md5.feed(index, data):
            ok = dl.finish()
            if ok is not None:
                with lock:
                    (done if ok else bad).append(oid)

    sizes: dict[str, int] = {}
    try:
        for item in items:
            runner.submit(size_of, item)
        runner.join()
        for item in items:
            if item.oid in sizes:
                dl = _Download(item, sizes[item.oid])
                active.append(dl)
                report(item.oid[:12], 0, dl.size)
                for index in range(len(dl.parts)):
                    runner.submit(get, dl, index)
        runner.join()
    finally:
        runner.close()
        for dl in active:
            dl.close()
    if bad:
        raise _corrupt(where, sorted(bad))
    return Outcome(transferred=done, missing=missing)


# ---------------------------------------------------------------------------- push


class _Upload:
    """One object on its way to S3: its parts, its hash and (when multipart) its upload id.

    A multipart object's file is opened at its first part and closed when its upload
    completes or, after a failure, once every worker has stopped.
    """

    def __init__(self, item: Item, size: int, jobs: int) -> None:
        self.item = item
        self.size = size
        self.multipart = size > MULTIPART_THRESHOLD
        self.parts = _parts(size, part_size(size, jobs)) if self.multipart else [(0, size)]
        self.md5 = _OrderedMd5(self.parts, self.read)
        self.lock = threading.Lock()
        self.fd = -1
        self.upload_id: str | None = None
        self.etags: dict[int, str] = {}

    def read(self, offset: int, length: int) -> bytes:
        if not self.multipart:
            with open(self.item.local, "rb") as handle:
                data = handle.read()
        else:
            with self.lock:
                if self.fd < 0:
                    self.fd = os.open(self.item.local, os.O_RDONLY)
            data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise IntegrityError(
                f"cache object {self.item.oid[:8]} changed size since it was added: refusing to push it",
                hint="re-add the weights with `mvc add`, or repair with `mvc verify --repair`",
            )
        return data

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _mismatch(oid: str) -> IntegrityError:
    return IntegrityError(
        f"cache object {oid[:8]} no longer matches its hash: refusing to push it",
        hint="re-add the weights with `mvc add`, or repair with `mvc verify --repair`",
    )


def push(
    fs: Any,
    items: Iterable[Item],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    where: str = "the remote",
) -> Outcome:
    """Upload ``items`` (cache objects) to an S3 store, each checked against its md5 on the way.

    Objects above :data:`MULTIPART_THRESHOLD` go as multipart uploads whose parts travel
    in parallel; the upload is completed (the object appears, whole) only once every part
    is stored and the bytes read match the object id. Failed or interrupted uploads are
    aborted, as is an upload of the same key left behind by a killed push. Smaller
    objects go in one PUT each (with Content-MD5, so the store checks the bytes too).

    Returns:
        The oids uploaded.

    Raises:
        IntegrityError: a cache object no longer matches its hash (nothing of it is stored).
        RemoteError: a part still failed after :data:`ATTEMPTS` tries.
        OSError: the store refused (auth, missing bucket), for the caller to classify.
    """
    from fsspec.asyn import sync  # type: ignore[import-untyped]

    items = list(items)
    jobs = max(1, jobs or DEFAULT_JOBS)
    report = _Reporter(progress)
    runner = _Runner(jobs, "mvc-push")
    done: list[str] = []
    uploads: list[_Upload] = []
    lock = threading.Lock()

    def call(method: str, **kwargs: Any) -> dict[str, Any]:
        return sync(fs.loop, fs._call_s3, method, **kwargs)  # s3fs's one entry to the S3 API

    def begin(up: _Upload) -> None:
        bucket, key, _ = fs.split_path(up.item.remote)
        with contextlib.suppress(Exception):  # best effort: not every store lists uploads
            listed = call("list_multipart_uploads", Bucket=bucket, Prefix=key)
            for stale in listed.get("Uploads", []):
                if stale.get("Key") == key:
                    call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=stale["UploadId"])
        fail = _network_error(where, "uploading", up.item.oid)
        up.upload_id = runner.retry(lambda: call("create_multipart_upload", Bucket=bucket, Key=key), fail)["UploadId"]

    def send(up: _Upload, index: int) -> None:
        offset, length = up.parts[index]
        oid = up.item.oid
        bucket, key, _ = fs.split_path(up.item.remote)
        data = up.read(offset, length)
        up.md5.feed(index, data)
        fail = _network_error(where, "uploading", oid)
        try:
            if up.multipart:
                number = index + 1
                reply = runner.retry(
                    lambda: call("upload_part", Bucket=bucket, Key=key, UploadId=up.upload_id, PartNumber=number, Body=data),
                    fail,
                )
                with up.lock:
                    up.etags[number] = reply["ETag"]
                    last = len(up.etags) == len(up.parts)
            else:
                if up.md5.hexdigest() != oid.split(".")[0]:
                    raise _mismatch(oid)
                content_md5 = base64.b64encode(bytes.fromhex(oid.split(".")[0])).decode()
                runner.retry(lambda: call("put_object", Bucket=bucket, Key=key, Body=data, ContentMD5=content_md5), fail)
                last = True
        except _Cancelled:
            return
        report(oid[:12], length, up.size)
        if not last:
            return
        if up.multipart:
            if up.md5.hexdigest() != oid.split(".")[0]:
                raise _mismatch(oid)
            parts = [{"ETag": up.etags[n], "PartNumber": n} for n in sorted(up.etags)]
            runner.retry(
                lambda: call(
                    "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=up.upload_id, MultipartUpload={"Parts": parts}
                ),
                fail,
            )
            up.upload_id = None
            up.close()
        with lock:
            done.append(oid)

    try:
        for item in items:
            up = _Upload(item, os.path.getsize(item.local), jobs)
            uploads.append(up)
            report(item.oid[:12], 0, up.size)
        for up in uploads:
            if up.multipart:
                runner.submit(begin, up)
        runner.join()
        for up in uploads:
            for index in range(len(up.parts)):
                runner.submit(send, up, index)
        runner.join()
    finally:
        runner.close()
        for up in uploads:
            up.close()
            if up.upload_id is not None:  # failed or interrupted: never leave the parts behind
                bucket, key, _ = fs.split_path(up.item.remote)
                with contextlib.suppress(Exception):
                    call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up.upload_id)
    return Outcome(transferred=done)


__all__ = ["Item", "Outcome", "is_cloud", "is_s3", "part_size", "pull", "push"]

"""Parallel, verified object transfers between the DVC cache and S3 / GCS (issue 19).

DVC moves each object as one stream and mvc then re-hashed every download. This
engine moves objects in parallel parts on the filesystem's own event loop (no thread
per request, no bytes joined per range) and hashes the bytes in order while later
parts are still on the wire, so verification costs close to nothing:

- :func:`pull` streams ranged GETs straight into a temp file next to the cache object
  (same directory, so same filesystem) with ``os.pwrite`` at each chunk's offset. A
  hasher thread follows the contiguous landed bytes, reading them back from the page
  cache, so the md5 is done moments after the last byte lands. The file is renamed
  into the cache (read-only, as DVC leaves it) only once its hash matches. A range cut
  short or dropped is resumed from its last byte. A killed pull leaves a
  ``.<name>.<token>.mvc.tmp`` file that never looks like an object; the next pull
  removes it.
- :func:`push` uploads objects above :data:`MULTIPART_THRESHOLD` as parallel S3
  multipart parts, sized to the object and ``jobs``, while a hasher thread takes the
  object's md5 (unless mvc recorded it: :attr:`Item.verified`); the upload is completed
  only when the hash matches. A failure, an interrupt, or (on the next run) a killed
  push's leftover upload is aborted. Smaller objects go up in one PUT each with their
  md5 as Content-MD5 (the store checks the bytes), many at once. Bodies are signed by
  their headers: no SHA-256 of each body over plain http (:func:`_lean_checks`).

Memory stays flat whatever the object size: a pull holds only the chunks on the wire
and one read-back block per hasher; a push at most :data:`PUSH_MEMORY` of bodies.

The filesystems are fsspec's (s3fs / gcsfs), handed over by :mod:`mvc.dvcstore` with
the remote's configured endpoint and credentials; this module imports neither DVC nor
the fsspec backends, and keeps DVC's layout because the caller names every path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import hashlib
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from mvc.errors import IntegrityError, RemoteError, counted
from mvc.progress import Progress

MiB = 2**20
RANGE_SIZE = 8 * MiB  # a pull fetches larger objects in ranges of this size
MULTIPART_THRESHOLD = 16 * MiB  # a push sends larger objects as multipart uploads
MIN_PART = 8 * MiB  # S3 wants >= 5 MiB per part (but the last)
PUSH_MEMORY = 64 * MiB  # request bodies held in memory at once, all jobs together
MAX_PARTS = 10_000  # S3's limit per upload
DEFAULT_JOBS = 8  # DVC's default for cloud remotes on 2 cores (4 x cpu_count)
ATTEMPTS = 4  # tries per range / part (s3fs / gcsfs retry each request a few times themselves)
CACHE_MODE = 0o444  # DVC's read-only mode for cache objects
TMP_SUFFIX = ".mvc.tmp"
HASH_BLOCK = 4 * MiB  # a hasher reads landed bytes back from the page cache in blocks of this size
CHUNK = 1 * MiB  # progress is reported (and hashers woken) about every this many bytes of a range
HASHERS = max(1, min(4, os.cpu_count() or 1))  # md5 is one core per object; more help many objects

_T = TypeVar("_T")


@dataclass(frozen=True)
class Item:
    """One object to move.

    ``local`` is its path in the DVC cache and ``remote`` its path in the store
    (``bucket/prefix/files/md5/xx/rest``); ``size`` is the recorded size when known.
    ``verified``: the caller vouches that ``local`` hashes to ``oid`` (mvc hashed it and
    its inode, mtime and size have not changed since); a push does not hash it again.
    """

    oid: str
    local: str
    remote: str
    size: int | None = None
    verified: bool = False


@dataclass(frozen=True)
class Outcome:
    """Objects moved, and objects the source did not hold (left to the caller)."""

    transferred: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class _Short(Exception):
    """A range or part came back with fewer bytes than asked for."""


class _Cancelled(Exception):
    """Another part failed first; this one stopped quietly."""


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


def _parts(size: int, step: int) -> list[tuple[int, int]]:
    return [(off, min(step, size - off)) for off in range(0, size, step)]


def _stale_temps(local: str) -> list[str]:
    head, name = os.path.split(local)
    return glob.glob(os.path.join(glob.escape(head), f".{glob.escape(name)}.*{TMP_SUFFIX}"))


class _Reporter:
    """Serialises progress calls from the event loop and the hasher threads."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.lock = threading.Lock()

    def __call__(self, task: str, advance: int, total: int | None) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress(task, advance, total)


# ---------------------------------------------------------------------------- running


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on the filesystem's event loop (fsspec's IO thread) and wait for it.

    Unlike ``fsspec.asyn.sync``, an interrupt in the waiting thread (Ctrl-C) cancels the
    coroutine and waits until its clean-up (temp files, multipart aborts) has run.
    """
    finished = threading.Event()

    async def wrapper() -> _T:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(wrapper(), loop)
    try:
        while not finished.wait(1):  # a timed wait lets KeyboardInterrupt through
            pass
        return future.result()
    except BaseException:
        future.cancel()
        finished.wait()
        raise


async def _each(jobs: int, work: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run the coroutines ``work`` makes, at most ``jobs`` at once, started in order.

    The first error stops the start of new work, cancels what runs, and is raised once
    everything has stopped; so is a cancellation of the caller.
    """
    slots = asyncio.Semaphore(jobs)
    running: set[asyncio.Future[None]] = set()
    task: asyncio.Future[None]
    errors: list[BaseException] = []

    def finished(task: asyncio.Future[None]) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None and not errors:
            errors.append(task.exception())  # type: ignore[arg-type]

    try:
        for make in work:
            await slots.acquire()
            if errors:
                slots.release()
                break
            task = asyncio.ensure_future(make())
            running.add(task)
            task.add_done_callback(finished)
        while running and not errors:
            await asyncio.wait(set(running), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(set(running))
    if errors:
        raise errors[0]


async def _retry(what: Callable[[], Awaitable[_T]], fail: Callable[[BaseException], Exception]) -> _T:
    """Await ``what()`` up to :data:`ATTEMPTS` times; errors that a retry cannot fix pass through."""
    last: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(0.2 * 2**attempt)
        try:
            return await what()
        except (FileNotFoundError, PermissionError, IntegrityError, _Cancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            last = exc
    assert last is not None
    err = fail(last)
    if err is last:
        raise last
    raise err from last


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


async def _quietly(check: Callable[[_Landing], Awaitable[None]], dl: _Landing) -> None:
    """``check(dl)``, whose :class:`IntegrityError` has recorded what it found."""
    with contextlib.suppress(IntegrityError):
        await check(dl)


def _corrupt(where: str, bad: list[str], sizes: dict[str, tuple[int, int]] | None = None) -> IntegrityError:
    """``bad`` objects came down wrong; ``sizes``: (recorded, stored) sizes of those whose size differs."""
    if sizes:
        # The store's copy or the size a .dvc file records is wrong: either may have been edited.
        oid, (recorded, stored) = sorted(sizes.items())[0]
        return IntegrityError(
            f"{counted(len(bad), 'object')} downloaded from {where}: the bytes do not match their hash (first: "
            f"{oid[:8]}, {stored} bytes stored, {recorded} recorded in its .dvc file); nothing was written from them",
            hint="if the .dvc file was edited, restore it (`git checkout -- FILE.dvc`); else the remote copy is damaged: "
            "upload a good one with `mvc verify --repair`",
        )
    return IntegrityError(
        f"{counted(len(bad), 'object')} downloaded from {where}: the bytes do not match their hash "
        f"(first: {bad[0][:8]}); the bad bytes were deleted and nothing was written from them",
        hint="the copy in the remote is corrupt: push a good copy from a machine that has the weights "
        "(`mvc verify --repair`)",
    )


def _file_md5(path: str, size: int, report: Callable[[int], None] | None = None) -> str:
    """The md5 of the first ``size`` bytes of ``path``, read in blocks (no whole-file buffer)."""
    digest = hashlib.md5()  # noqa: S324 - DVC's content address, not security
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        left = size
        while left > 0:
            n = handle.readinto(view[: min(left, HASH_BLOCK)])
            if not n:
                break
            digest.update(view[:n])
            left -= n
            if report is not None:
                report(n)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- pull


_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")


class _Landing:
    """One object on its way into the cache: a temp file, its ranges, and its md5.

    The event loop writes ranges and records how far each has landed; a hasher thread
    feeds the md5 with the contiguous landed bytes (read back from the page cache) and,
    once every byte is hashed, settles the object: renamed into the cache when the md5
    is its id, deleted otherwise. The temp file is created at the first byte (so a
    directory of thousands of files holds only the files in flight open).
    """

    def __init__(self, item: Item, size: int) -> None:
        self.item = item
        self.size = size
        self.parts = _parts(size, RANGE_SIZE)
        self.landed = [0] * len(self.parts)  # bytes written of each range, from its start
        self.md5 = hashlib.md5()  # noqa: S324 - DVC's content address, not security
        self.hashed = 0  # bytes fed to the md5, from the object's start
        self.part = 0  # the range ``hashed`` is in
        self.lock = threading.Lock()
        self.busy = False  # a hasher is on it
        self.again = False  # bytes landed while a hasher was on it
        self.fd = -1
        self.tmp = ""
        self.state = "new"  # -> "open" -> "done" (in the cache) | "dropped" (missing, corrupt, failed)

    def open(self) -> bool:
        """Create the temp file unless done already; False when the object was dropped."""
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
            return self.state == "open"

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def ready(self) -> int:
        """The end of the contiguous landed bytes (call with the lock held)."""
        while self.part < len(self.parts) and self.landed[self.part] == self.parts[self.part][1]:
            self.part += 1
        if self.part == len(self.parts):
            return self.size
        return self.parts[self.part][0] + self.landed[self.part]

    def settle(self) -> bool | None:
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
        """Give the object up (its temp file goes at once); False if it was settled or given up before.

        The descriptor stays open (a hasher may be reading it) until :meth:`close`.
        """
        with self.lock:
            if self.state in ("done", "dropped"):
                return False
            if self.tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
            self.state = "dropped"
            return True

    def close(self) -> None:
        """After the loop and the hashers stopped: close the file and remove what did not make it."""
        self.drop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Transfer:
    """What a push and a pull both hold: the store, requests in flight, progress, the remote's name."""

    def __init__(self, fs: Any, jobs: int, report: _Reporter, where: str) -> None:
        self.fs = fs
        self.jobs = jobs
        self.report = report
        self.where = where


class _Puller(_Transfer):
    """One :func:`pull`: the event-loop side (requests, writes) and the hasher side."""

    def __init__(self, fs: Any, jobs: int, report: _Reporter, where: str) -> None:
        super().__init__(fs, jobs, report, where)
        self.s3 = is_s3(fs)
        self.hashers = ThreadPoolExecutor(max_workers=HASHERS, thread_name_prefix="mvc-hash")
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.unsettled = 0  # objects opened and not settled or dropped yet
        self.done: list[str] = []
        self.missing: list[str] = []
        self.bad: list[str] = []
        self.sizes: dict[str, tuple[int, int]] = {}  # oid -> (size recorded, size in the store) when they differ
        self.failed: BaseException | None = None  # a hasher's own error (disk full ...)

    # ---- the hasher side (threads)

    def poke(self, dl: _Landing) -> None:
        """New bytes of ``dl`` landed: have a hasher catch up (one hasher per object at a time)."""
        with dl.lock:
            if dl.busy:
                dl.again = True
                return
            dl.busy = True
        self.hashers.submit(self._catch_up, dl)

    def _catch_up(self, dl: _Landing) -> None:
        try:
            buf = bytearray(min(HASH_BLOCK, max(1, dl.size)))
            view = memoryview(buf)
            while True:
                with dl.lock:
                    end = dl.ready() if dl.state == "open" else dl.hashed
                    if end == dl.hashed:
                        if not dl.again or dl.state != "open":
                            dl.busy = False
                            break
                        dl.again = False
                        continue
                n = os.preadv(dl.fd, [view[: min(len(buf), end - dl.hashed)]], dl.hashed)
                if n <= 0:
                    raise OSError(f"cannot read back {dl.tmp} at offset {dl.hashed}")
                dl.md5.update(view[:n])
                dl.hashed += n
            if dl.hashed == dl.size and dl.state == "open":
                self._settled(dl, dl.settle())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            with self.lock:
                self.failed = self.failed or exc
            if dl.drop():
                self._settled(dl, None)

    def _settled(self, dl: _Landing, ok: bool | None) -> None:
        with self.lock:
            if ok is not None:
                (self.done if ok else self.bad).append(dl.item.oid)
            self.unsettled -= 1
            self.idle.notify_all()

    def gone(self, dl: _Landing, into: list[str]) -> None:
        """The object is missing or wrong in the store: drop it and note it in ``into``."""
        if dl.drop():
            with self.lock:
                into.append(dl.item.oid)
                self.unsettled -= 1
                self.idle.notify_all()

    def wait_settled(self) -> None:
        with self.lock:
            while self.unsettled and self.failed is None:
                self.idle.wait(1)
        if self.failed is not None:
            raise self.failed

    # ---- the event-loop side

    async def size_of(self, item: Item, sizes: dict[str, int]) -> None:
        fail = _network_error(self.where, "reading", item.oid)
        try:
            info = await _retry(lambda: self.fs._info(item.remote), fail)
        except FileNotFoundError:
            with self.lock:
                self.missing.append(item.oid)
            return
        sizes[item.oid] = int(info["size"])

    def start(self, dl: _Landing) -> bool:
        """Count ``dl`` in and create its file; False when it was dropped meanwhile."""
        with self.lock:
            self.unsettled += 1
        try:
            return dl.open()
        except BaseException:
            if dl.drop():
                self._settled(dl, None)
            raise

    async def get(self, dl: _Landing, index: int) -> None:
        """Land range ``index`` of ``dl``, resuming where a short or dropped answer stopped."""
        start, length = dl.parts[index]
        end = start + length
        pos = start
        task = dl.item.oid[:12]

        async def attempt() -> None:
            nonlocal pos
            unreported = 0

            def sink(chunk: bytes | memoryview) -> bool:
                nonlocal pos, unreported
                if dl.state != "open":
                    raise _Cancelled
                if pos + len(chunk) > end:
                    raise _Short(f"asked for {end - pos} bytes at offset {pos}, got more")
                dl.write(pos, chunk)
                pos += len(chunk)
                dl.landed[index] = pos - start
                unreported += len(chunk)
                if unreported >= CHUNK or pos == end:
                    self.report(task, unreported, dl.size)
                    unreported = 0
                    self.poke(dl)
                return True

            try:
                await self._read(dl, pos, end, sink)
            except (_Cancelled, IntegrityError, FileNotFoundError, PermissionError):
                raise
            except Exception:
                # A range past the store's end (416) when the recorded size is larger: a
                # size problem, which no retry fixes; anything else is retried.
                await self._check_size(dl, quiet=True)
                raise
            finally:
                if unreported:
                    self.report(task, unreported, dl.size)
                    self.poke(dl)
            if pos < end:
                await self._check_size(dl)
                raise _Short(f"asked for {end - start} bytes at offset {start}, got {pos - start}")

        try:
            await _retry(attempt, _network_error(self.where, "downloading", dl.item.oid))
        except _Cancelled:
            return
        except FileNotFoundError:
            self.gone(dl, self.missing)
        except IntegrityError:
            self.gone(dl, self.bad)

    def _wrong_size(self, dl: _Landing, stored: int) -> IntegrityError:
        with self.lock:
            self.sizes[dl.item.oid] = (dl.size, stored)
        return IntegrityError(f"object {dl.item.oid[:8]} in {self.where} has the wrong size")

    async def _check_size(self, dl: _Landing, *, quiet: bool = False) -> None:
        """Raise :class:`IntegrityError` when the store's size of ``dl`` is not the recorded one
        (``quiet``: a failure to ask is the caller's error to raise, not this one)."""
        try:
            self.fs.invalidate_cache(dl.item.remote)
            stored = int((await self.fs._info(dl.item.remote))["size"])
        except Exception:
            if quiet:
                return
            raise
        if stored != dl.size:
            raise self._wrong_size(dl, stored)

    async def _read(self, dl: _Landing, start: int, end: int, sink: Callable[[bytes | memoryview], bool]) -> None:
        """Stream bytes ``[start, end)`` of the object into ``sink`` as they arrive."""
        if not self.s3:  # gcsfs: one GET per range, the body as one bytes object
            sink(await self.fs._cat_file(dl.item.remote, start=start, end=end))
            return
        bucket, key, version = self.fs.split_path(dl.item.remote)
        extra = {"VersionId": version} if version else {}
        reply = await self.fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **extra)
        body = reply["Body"]
        try:
            total = _CONTENT_RANGE.match(reply.get("ContentRange") or "")
            if total is not None and int(total.group(1)) != dl.size:
                raise self._wrong_size(dl, int(total.group(1)))
            stream = getattr(getattr(body, "raw_stream", None), "content", None)
            if stream is not None and hasattr(stream, "readany"):  # aiohttp: take the chunks as they come
                while chunk := await stream.readany():
                    sink(chunk)
            else:
                while chunk := await body.read(CHUNK):
                    sink(chunk)
        finally:
            body.close()

    async def run(self, items: list[Item], landings: list[_Landing]) -> None:
        """Land ``items``; each object's :class:`_Landing` goes into ``landings`` (for the clean-up)."""
        if self.s3:
            sign_headers_only(await self.fs.set_session())
        sizes: dict[str, int] = {}
        unknown = [i for i in items if i.size is None or i.size == 0]  # 0: only check that it is there
        await _each(self.jobs, (partial(self.size_of, i, sizes) for i in unknown))
        for item in items:
            size = item.size if item.size else sizes.get(item.oid)
            if size is not None:
                landings.append(_Landing(item, size))

        for dl in landings:
            self.report(dl.item.oid[:12], 0, dl.size)

        def work() -> Iterator[Callable[[], Awaitable[None]]]:
            for dl in landings:
                if not self.start(dl):
                    continue
                if not dl.parts:  # a 0-byte object: nothing to fetch, the hasher settles it
                    self.poke(dl)
                for index in range(len(dl.parts)):
                    yield partial(self.get, dl, index)

        await _each(self.jobs, work())


def pull(
    fs: Any,
    items: Iterable[Item],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    where: str = "the remote",
) -> Outcome:
    """Download ``items`` into the cache, each verified against its md5 before it lands.

    ``jobs`` ranged GETs are on the wire at once: objects up to :data:`RANGE_SIZE` in one
    GET each, larger ones in ranges. A range that comes back short or a dropped
    connection is resumed; an object whose bytes do not match its hash never reaches
    the cache.

    Returns:
        The oids downloaded, and those the remote does not hold.

    Raises:
        IntegrityError: some object's bytes did not match its hash (the others are kept).
        RemoteError: a range still failed after :data:`ATTEMPTS` tries.
        OSError: the store refused (auth, missing bucket), for the caller to classify.
    """
    items = list(items)
    puller = _Puller(fs, max(1, jobs or DEFAULT_JOBS), _Reporter(progress), where)
    landings: list[_Landing] = []

    try:
        _run(fs.loop, puller.run(items, landings))
        puller.wait_settled()
    finally:
        for dl in landings:  # what did not make it goes; the hashers stop on it
            dl.drop()
        puller.hashers.shutdown(wait=True, cancel_futures=True)
        for dl in landings:
            dl.close()
    if puller.bad or puller.sizes:
        # Bytes that do not hash to their id: a store size other than the recorded one (a
        # range past the end is caught on the way; a shorter recorded size is not) tells
        # the user which of the two to suspect.
        with contextlib.suppress(Exception):
            unsized = [dl for dl in landings if dl.item.oid in set(puller.bad) - set(puller.sizes)]
            _run(fs.loop, _each(puller.jobs, (partial(_quietly, puller._check_size, dl) for dl in unsized)))
        raise _corrupt(where, sorted(set(puller.bad) | set(puller.sizes)), puller.sizes)
    return Outcome(transferred=puller.done, missing=puller.missing)


# ---------------------------------------------------------------------------- push


class _Budget:
    """Bytes of request bodies held in memory, all jobs together (at most :data:`PUSH_MEMORY`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        n = min(n, self.limit)
        async with self.cond:
            await self.cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            async with self.cond:
                self.used -= n
                self.cond.notify_all()


class _Upload:
    """One object on its way to S3: its parts, its md5 (taken by a hasher) and its upload id."""

    def __init__(self, item: Item, size: int, jobs: int) -> None:
        self.item = item
        self.size = size
        self.multipart = size > MULTIPART_THRESHOLD
        self.parts = _parts(size, part_size(size, jobs)) if self.multipart else [(0, size)]
        self.upload_id: str | None = None
        self.creating = False  # CreateMultipartUpload sent, its answer (the upload id) not read yet
        self.etags: dict[int, str] = {}
        self.md5: asyncio.Future[str] | None = None

    def read(self, offset: int, length: int) -> bytes:
        with open(self.item.local, "rb", buffering=0) as handle:
            data = os.pread(handle.fileno(), length, offset)
        if len(data) != length:
            raise IntegrityError(
                f"cache object {self.item.oid[:8]} changed size since it was added: refusing to push it",
                hint="re-add the weights with `mvc add`, or repair with `mvc verify --repair`",
            )
        return data


def _mismatch(oid: str) -> IntegrityError:
    return IntegrityError(
        f"cache object {oid[:8]} no longer matches its hash: refusing to push it",
        hint="re-add the weights with `mvc add`, or repair with `mvc verify --repair`",
    )


def _lean_checks(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """One integrity check per body, not three (botocore ``before-parameter-build``, issue 19).

    Over plain http botocore signs every body with a SHA-256 of it, and adds a CRC32 to
    each PutObject / UploadPart: passes over the bytes on the event loop (~1.5 s and
    ~0.7 s per GiB, and as much again on the server). A PutObject here carries its md5
    (``Content-MD5``, checked by the store) and needs neither; a part keeps the CRC32
    and is signed by its headers.
    """
    from botocore.config import Config

    config = context.get("client_config")
    if config is None:
        return
    extra: dict[str, Any] = {"s3": {**(config.s3 or {}), "payload_signing_enabled": False}}
    if params.get("ContentMD5"):
        extra["request_checksum_calculation"] = "when_required"
    context["client_config"] = config.merge(Config(**extra))


def _no_response_crc(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """No CRC32 of each downloaded body (botocore ``before-parameter-build``, issue 19): every
    byte mvc downloads is hashed anyway (md5 of an object, blake3 of a tensor chunk), and
    botocore's CRC ran on the event loop in small pieces (~0.6 s of a 500 MB tensors pull)."""
    from botocore.config import Config

    config = context.get("client_config")
    if config is not None:
        context["client_config"] = config.merge(Config(response_checksum_validation="when_required"))
    params.pop("ChecksumMode", None)  # set by botocore's own handler if it ran first


def sign_headers_only(client: Any) -> None:
    """Install :func:`_lean_checks` and :func:`_no_response_crc` on an S3 client once (mvc's
    own transfers, and tensor chunks)."""
    if getattr(client, "_mvc_lean", False):
        return
    for op in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-parameter-build.s3.{op}", _lean_checks)
    client.meta.events.register("before-parameter-build.s3.GetObject", _no_response_crc)
    client._mvc_lean = True


class _Pusher(_Transfer):
    """One :func:`push` on the event loop."""

    def __init__(self, fs: Any, jobs: int, report: _Reporter, where: str) -> None:
        super().__init__(fs, jobs, report, where)
        self.budget = _Budget(PUSH_MEMORY)
        self.readers = ThreadPoolExecutor(max_workers=max(2, HASHERS), thread_name_prefix="mvc-read")
        self.hashers = ThreadPoolExecutor(max_workers=HASHERS, thread_name_prefix="mvc-hash")
        self.done: list[str] = []

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        return await self.fs._call_s3(method, **kwargs)  # type: ignore[no-any-return]  # s3fs's one entry to the S3 API

    async def thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.readers, fn, *args)

    async def begin(self, up: _Upload) -> None:
        bucket, key, _ = self.fs.split_path(up.item.remote)
        with contextlib.suppress(Exception):  # best effort: not every store lists uploads
            listed = await self.call("list_multipart_uploads", Bucket=bucket, Prefix=key)
            for stale in listed.get("Uploads", []):
                if stale.get("Key") == key:
                    await self.call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=stale["UploadId"])
        fail = _network_error(self.where, "uploading", up.item.oid)
        up.creating = True
        reply = await _retry(lambda: self.call("create_multipart_upload", Bucket=bucket, Key=key), fail)
        up.upload_id, up.creating = reply["UploadId"], False
        if not up.item.verified:  # the md5 recorded when mvc hashed it, else taken now (issue 19)
            loop = asyncio.get_running_loop()
            up.md5 = asyncio.ensure_future(loop.run_in_executor(self.hashers, _file_md5, up.item.local, up.size))

    async def send(self, up: _Upload, index: int) -> None:
        offset, length = up.parts[index]
        oid = up.item.oid
        bucket, key, _ = self.fs.split_path(up.item.remote)
        fail = _network_error(self.where, "uploading", oid)
        async with self.budget.hold(length):
            if up.multipart:
                data = await self.thread(up.read, offset, length)
                number = index + 1
                reply = await _retry(
                    lambda: self.call("upload_part", Bucket=bucket, Key=key, UploadId=up.upload_id, PartNumber=number, Body=data),
                    fail,
                )
                del data
                up.etags[number] = reply["ETag"]
                last = len(up.etags) == len(up.parts)
            else:
                if up.item.verified:  # the store checks the bytes against the md5 they are named by
                    data, digest = await self.thread(up.read, 0, up.size), oid.split(".")[0]
                else:
                    data, digest = await self.thread(self._read_hashed, up)
                if digest != oid.split(".")[0]:
                    raise _mismatch(oid)
                content_md5 = base64.b64encode(bytes.fromhex(digest)).decode()
                await _retry(partial(self._put, oid, Bucket=bucket, Key=key, Body=data, ContentMD5=content_md5), fail)
                del data
                last = True
        self.report(oid[:12], length, up.size)
        if not last:
            return
        if up.multipart:
            if up.md5 is not None and await up.md5 != oid.split(".")[0]:
                raise _mismatch(oid)
            parts = [{"ETag": up.etags[n], "PartNumber": n} for n in sorted(up.etags)]
            await _retry(
                lambda: self.call(
                    "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=up.upload_id, MultipartUpload={"Parts": parts}
                ),
                fail,
            )
            up.upload_id = None
        self.done.append(oid)

    async def _put(self, oid: str, **kwargs: Any) -> None:
        """PutObject; the store's refusal of bytes that do not match their Content-MD5 is an integrity error."""
        try:
            await self.call("put_object", **kwargs)
        except Exception as exc:  # noqa: BLE001 - s3fs wraps botocore's ClientError in OSError
            if "BadDigest" in f"{exc} {exc.__cause__}" or "InvalidDigest" in f"{exc} {exc.__cause__}":
                raise _mismatch(oid) from exc
            raise

    @staticmethod
    def _read_hashed(up: _Upload) -> tuple[bytes, str]:
        data = up.read(0, up.size)
        return data, hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's content address, not security

    async def abort(self, uploads: list[_Upload]) -> None:
        """Abort every upload left open (failed or interrupted): never leave parts behind."""
        for up in uploads:
            if up.md5 is not None and not up.md5.done():
                up.md5.cancel()
            bucket, key, _ = self.fs.split_path(up.item.remote)
            if up.creating:  # interrupted before the store's answer: find the upload it may have started
                with contextlib.suppress(Exception):
                    listed = await self.call("list_multipart_uploads", Bucket=bucket, Prefix=key)
                    for started in listed.get("Uploads", []):
                        if started.get("Key") == key:
                            await self.call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=started["UploadId"])
                up.creating = False
            if up.upload_id is not None:
                with contextlib.suppress(Exception):
                    await self.call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up.upload_id)
                up.upload_id = None

    async def run(self, uploads: list[_Upload]) -> None:
        sign_headers_only(await self.fs.set_session())
        try:
            await _each(self.jobs, (partial(self.begin, up) for up in uploads if up.multipart))
            await _each(self.jobs, (partial(self.send, up, i) for up in uploads for i in range(len(up.parts))))
        finally:
            await self.abort(uploads)


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
    is stored and the object's md5 matches its id. Failed or interrupted uploads are
    aborted, as is an upload of the same key left behind by a killed push. Smaller
    objects go in one PUT each (with Content-MD5, so the store checks the bytes too).

    Returns:
        The oids uploaded.

    Raises:
        IntegrityError: a cache object no longer matches its hash (nothing of it is stored).
        RemoteError: a part still failed after :data:`ATTEMPTS` tries.
        OSError: the store refused (auth, missing bucket), for the caller to classify.
    """
    jobs = max(1, jobs or DEFAULT_JOBS)
    report = _Reporter(progress)
    uploads = [_Upload(item, os.path.getsize(item.local), jobs) for item in items]
    for up in uploads:
        report(up.item.oid[:12], 0, up.size)
    pusher = _Pusher(fs, jobs, report, where)
    try:
        _run(fs.loop, pusher.run(uploads))
    finally:
        pusher.readers.shutdown(wait=True, cancel_futures=True)
        pusher.hashers.shutdown(wait=True, cancel_futures=True)
    return Outcome(transferred=pusher.done)


__all__ = ["Item", "Outcome", "is_cloud", "is_s3", "part_size", "pull", "push"]

"""The ``mvc/`` area of a remote with the ``tensors`` layout, and reading chunks from it (issue 15).

One class, :class:`ChunkStore`, does every request a tensors remote gets (small reads and
writes, listings), with failures translated into mvc errors; :func:`decode_chunk` turns
a stored chunk into its raw bytes given a way to get its delta base; :class:`ChunkProblem`
says which chunk failed and how. :mod:`mvc.tensorsync` (push, pull, gc) and
:mod:`mvc.tensorread` (sparse reads, get, verify) both build on them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mvc import dvctensors, tensorstore
from mvc.errors import IntegrityError, MvcError
from mvc.tensorstore import Recipe

ROOT = "mvc"
MARKER = f"{ROOT}/layout.json"
CHUNKS = f"{ROOT}/chunks"
RECIPES = f"{ROOT}/recipes"


def chunk_rel(cid: str) -> str:
    """A chunk's path below the remote's root."""
    return f"{CHUNKS}/{tensorstore.chunk_key(cid)}"


def recipe_rel(md5: str) -> str:
    """A version's recipe path below the remote's root."""
    return f"{RECIPES}/{md5[:2]}/{md5[2:]}"


class ChunkStore:
    """The tensors area of one remote: small reads and writes, failures translated."""

    def __init__(self, fs: Any, base: str, local: bool, name: str, fail: Callable[[BaseException], MvcError]) -> None:
        self.fs = fs
        self.base = base
        self.local = local
        self.name = name
        self._fail = fail
        # s3fs asks for an object's size (a HEAD request) before every whole-object read
        # unless it is told to read in one stream: one request per chunk, not two.
        protocols = getattr(fs, "protocol", ())
        self._whole: dict[str, Any] = {"max_concurrency": 1} if "s3" in protocols else {}
        self._lean = "s3" not in protocols  # uploads signed by their headers (see :meth:`put`)
        self._lock = threading.Lock()
        if not local:
            import warnings

            # aiohttp (under gcsfs) warns on every upload body over 1 MiB given as bytes; the
            # upload runs on fsspec's own event loop thread, which nothing else waits on.
            warnings.filterwarnings("ignore", message="Sending a large body directly", category=ResourceWarning)

    @staticmethod
    def of(root: Path, remote: str) -> ChunkStore:
        """The remote ``remote`` of the repository at ``root``."""
        fs, base, local = dvctensors.remote_root(root, remote)
        return ChunkStore(fs, base, local, remote, lambda exc: dvctensors.remote_failure(exc, remote, root))

    def path(self, rel: str) -> str:
        return os.path.join(self.base, *rel.split("/")) if self.local else f"{self.base.rstrip('/')}/{rel}"

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (MvcError, FileNotFoundError):
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.isfile(self.path(rel))
        return bool(self._guard(lambda: self.fs.exists(self.path(rel))))

    def get(self, rel: str, end: int | None = None) -> bytes | None:
        """The object's bytes (``end``: only the first bytes, one request), None when it does not exist."""
        try:
            if self.local:
                with open(self.path(rel), "rb") as f:
                    return f.read(end) if end is not None else f.read()
            options = {"start": 0, "end": end} if end is not None else self._whole
            if not self._lean:
                self._sign_headers_only()
            return bytes(self._guard(lambda: self.fs.cat_file(self.path(rel), **options)))
        except FileNotFoundError:
            return None

    def put(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if self.local:  # atomic: a reader never sees half a chunk
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return
        if not self._lean:
            self._sign_headers_only()
        self._guard(lambda: self.fs.pipe_file(path, data))

    def _sign_headers_only(self) -> None:
        """Have S3 uploads carry a CRC32 the store checks, not also a SHA-256 of the body in
        their signature (botocore does both over plain http: ~0.5 s of a 418 MiB delta push),
        and downloads skip botocore's CRC32: a chunk's bytes are checked against its id
        (blake3) whenever it is read."""
        from fsspec.asyn import sync

        from mvc.transfer import sign_headers_only

        with self._lock:
            if not self._lean:
                sign_headers_only(self._guard(lambda: sync(self.fs.loop, self.fs.set_session)))
                self._lean = True

    def remove_path(self, path: str) -> None:
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            self._guard(lambda: self.fs.rm_file(path))

    def listing(self, rel: str, *, temps: bool = False) -> dict[str, tuple[int, float | None]]:
        """``{path below rel: (size, modified time or None)}`` of every object under ``rel``
        (``temps``: on a directory remote also the ``*.tmp`` files of writes under way or killed)."""
        top = self.path(rel)
        out: dict[str, tuple[int, float | None]] = {}
        if self.local:
            for dirpath, _, files in os.walk(top):
                for f in files:
                    if temps or not f.endswith(".tmp"):
                        full = os.path.join(dirpath, f)
                        st = os.stat(full)
                        out[os.path.relpath(full, top).replace(os.sep, "/")] = (st.st_size, st.st_mtime)
            return out
        with contextlib.suppress(FileNotFoundError):
            self.fs.invalidate_cache()
            found = self._guard(lambda: self.fs.find(top, detail=True))
            for path, info in found.items():
                out[path[len(top.rstrip("/")) + 1 :]] = (int(info.get("size") or 0), _mtime(info))
        return out

    def recipe(self, md5: str) -> Recipe | None:
        """The recipe of version ``md5``, None when the remote has none.

        Raises:
            IntegrityError: the recipe is unreadable or describes another version.
        """
        raw = self.get(recipe_rel(md5))
        return Recipe.from_bytes(raw, md5) if raw is not None else None

    def chunk(self, cid: str, end: int | None = None) -> bytes | None:
        """The stored chunk ``cid`` (``end``: its first bytes), None when it is missing."""
        return self.get(chunk_rel(cid), end)


def _mtime(info: dict[str, Any]) -> float | None:
    """An object's modified time from an s3fs (``LastModified``) or gcsfs (``updated``) listing."""
    import datetime as dt

    value = info.get("LastModified") or info.get("updated") or info.get("mtime")
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


class ChunkProblem(Exception):
    """A chunk is ``missing``, ``corrupt``, or the deleted delta ``base`` of another."""

    def __init__(self, cid: str, kind: str) -> None:
        super().__init__(cid, kind)
        self.cid = cid
        self.kind = kind


def decode_chunk(blob: bytes, cid: str, base_of: Callable[[str], bytes | memoryview]) -> memoryview:
    """The raw bytes of the stored chunk ``blob`` (id ``cid``), checked; ``base_of`` gives a
    delta base's raw bytes (raising :class:`ChunkProblem`).

    Raises:
        ChunkProblem: the chunk is corrupt (``corrupt``), or its delta base is gone
            (``base``) or itself bad.
    """
    try:
        head = tensorstore.read_head(blob, cid)
        base = None
        if head.codec in tensorstore.DELTAS and head.base is not None:
            try:
                base = base_of(head.base)
            except ChunkProblem as exc:
                if exc.kind == "missing" and exc.cid == head.base:
                    raise ChunkProblem(head.base, "base") from exc
                raise
        return tensorstore.decode_buffer(blob, cid, base)
    except IntegrityError:
        raise ChunkProblem(cid, "corrupt") from None


# ---- delta chains on the remote (push's check, gc) --------------------------------------


def known_bases(entries: Iterable[tuple[str, str | None, int]]) -> dict[str, str | None]:
    """``chunk -> base`` from ``(chunk, base, depth)`` records (probes, encodings, recipe parts):
    the base of a depth-1 chunk is whole. A delta whose base is not recorded stays unknown."""
    out: dict[str, str | None] = {}
    records = list(entries)
    for cid, base, depth in records:
        if depth == 0 or base:
            out.setdefault(cid, base if depth else None)
    for _, base, depth in records:
        if base and depth == 1:
            out.setdefault(base, None)
    return out


def chunk_there(rem: ChunkStore, cid: str) -> tuple[bool, str | None]:
    """(whether chunk ``cid`` is there and readable, its delta base): one ranged GET."""
    head = rem.chunk(cid, end=tensorstore.HEAD_BYTES)
    if head is None:
        return False, None
    try:
        return True, tensorstore.read_head(head, cid).base
    except IntegrityError:
        return False, None  # a damaged chunk is as good as a missing one


def walk_chains(
    rem: ChunkStore,
    roots: Iterable[str],
    known: dict[str, str | None],
    pool: ThreadPoolExecutor,
    *,
    check: bool = False,
    there: frozenset[str] = frozenset(),
    listed: set[str] | None = None,
) -> tuple[dict[str, str | None], set[str]]:
    """Follow the delta chains of the chunks ``roots`` to their ends, a level at a time.

    A chunk's base comes from ``known`` or else from its header (one ranged GET each, in
    ``pool``: never a cached listing). With ``check`` every chunk not in ``there`` is also
    checked for presence: by its header, or in ``listed`` (a fresh listing of the chunks)
    when that is given and its base is known.

    Returns:
        ``chunk -> base`` of every chunk reached, and the chunks found missing or damaged.
    """
    bases: dict[str, str | None] = {}
    missing: set[str] = set()
    level = set(roots)
    for _ in range(tensorstore.MAX_DEPTH + 2):  # a chain is never longer: a loop ends here too
        if not level:
            break
        asked = check and listed is None
        read = sorted(c for c in level if c not in known or (asked and c not in there))
        heads = dict(zip(read, pool.map(lambda c: chunk_there(rem, c), read), strict=True))
        following: set[str] = set()
        for cid in level:
            if cid in heads:
                found, base = heads[cid]
            else:
                found, base = cid in there or not check or listed is None or cid in listed, known[cid]
            bases[cid] = base
            if not found:
                missing.add(cid)
            if base and base not in bases:
                following.add(base)
        level = following
    return bases, missing

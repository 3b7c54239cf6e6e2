"""Push and pull for remotes with the ``tensors`` layout (issue 15).

A remote's layout is an mvc setting (``.mvc/config.json``, ``"remotes": {NAME: {"layout":
"tensors"}}``): ``.dvc/config`` stays a plain DVC config. Beside DVC's ``files/md5`` the
remote holds::

    mvc/layout.json                     {"layout": "tensors"}: a full-layout clone refuses it
    mvc/chunks/ab/cdef...               chunks (see :mod:`mvc.tensorstore`), by blake3 of raw bytes
    mvc/recipes/<md5[:2]>/<md5[2:]>     one recipe per DVC md5, written after its chunks

Push uploads only the chunks the remote lacks, each a delta against the same part of
the parent version when the parent is on the remote (and in the local cache), then the
recipe: an interrupted push leaves chunks but no recipe, so the version is not there
yet and the next push re-sends only what is missing. Pull reads the recipe, takes every
part it can from versions already in the local cache, downloads the rest into a chunk
cache under ``.dvc/tmp`` (kept until the version is rebuilt, so an interrupted pull
resumes), rebuilds the file streaming into a temporary file beside the cache, checks
its md5 against the pointer, and only then renames it into the DVC cache.

Released versions (a registry tag at their commit) also get the plain DVC object, so a
deploy job with only ``dvc pull`` can fetch them.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc import documents, dvcpush, dvcstore, dvctensors, history, settings, tensorstore
from mvc.chunkstore import (
    CHUNKS,
    MARKER,
    ChunkProblem,
    ChunkStore,
    chunk_rel,
    chunk_there,
    decode_chunk,
    known_bases,
    recipe_rel,
    walk_chains,
)
from mvc.errors import ConflictError, IntegrityError, MissingObjectError, UsageError
from mvc.pointer import Pointer
from mvc.progress import Progress
from mvc.tensorstore import Part, Recipe
from mvc.workspace import Workspace

if TYPE_CHECKING:
    from mvc.formats import TensorIndex

FULL, TENSORS = "full", "tensors"
LAYOUTS = (FULL, TENSORS)
LOCAL_CHUNKS = "mvc-chunks"  # under .dvc/tmp: downloaded chunks of versions not yet rebuilt
LOCAL_RECIPES = "mvc-recipes"  # under .dvc/tmp: recipes of versions in the local cache
_SETTING = "remotes"


# ---- the layout setting ---------------------------------------------------------------


def layout(root: Path, remote: str) -> str:
    """The layout of ``remote``: ``full`` (plain DVC objects, the default) or ``tensors``."""
    remotes = settings.load(root).extra.get(_SETTING)
    entry = remotes.get(remote) if isinstance(remotes, dict) else None
    value = entry.get("layout") if isinstance(entry, dict) else None
    return str(value) if value in LAYOUTS else FULL


def set_layout(root: Path, remote: str, value: str) -> None:
    """Record the layout of ``remote`` in ``.mvc/config.json``.

    Raises:
        UsageError: not a known layout.
    """
    if value not in LAYOUTS:
        raise UsageError(f"unknown layout {value!r}", hint="use --layout full or --layout tensors")
    current = settings.load(root)
    extra = dict(current.extra)
    found = extra.get(_SETTING)
    remotes: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
    entry = dict(remotes.get(remote) or {})
    if value == FULL:
        entry.pop("layout", None)
    else:
        entry["layout"] = value
    if entry:
        remotes[remote] = entry
    else:
        remotes.pop(remote, None)
    if remotes:
        extra[_SETTING] = remotes
    else:
        extra.pop(_SETTING, None)
    if extra != current.extra:
        from dataclasses import replace

        settings.save(root, replace(current, extra=extra))


# ---- what to move ---------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One version to push or pull."""

    md5: str
    label: str  # "NAME vN"
    parents: tuple[tuple[str, str], ...] = ()  # (md5, "NAME vN") of the versions it was derived from
    released: bool = False


def item(ptr: Pointer, released: Iterable[str] = ()) -> Item:
    """The :class:`Item` of a pointer (its manifest's parents are the delta bases)."""
    m = ptr.manifest
    label = f"{m.name} v{m.version}" if m else ptr.out
    parents = tuple((p.hash, f"{p.name or (m.name if m else '')} v{p.version}") for p in (m.parents if m else ()))
    return Item(ptr.md5, label, parents, ptr.md5 in set(released))


def released_hashes(ws: Workspace) -> set[str]:
    """Content hashes of every version a registry tag (release or stage) points at."""
    from mvc import registry

    events = [e for e in registry.events(ws) if e.action in ("register", "assign")]
    out: set[str] = set()
    for e in events:
        for md5, label in history.version_labels(ws, [e.commit]).items():
            if label.rsplit(" v", 1)[0] == e.artifact:
                out.add(md5)
    return out


# ---- the remote -----------------------------------------------------------------------


def refuse_tensors_remote(root: Path, remote: str) -> None:
    """Refuse to use a remote holding the tensors layout as a ``full`` one (mixed layouts).

    Raises:
        ConflictError: the remote has mvc's tensors marker.
    """
    rem = ChunkStore.of(root, remote)
    if rem.exists(MARKER):
        raise ConflictError(
            f"remote {remote!r} holds the tensors layout but this repository uses it with the full layout",
            hint=f"set its layout: `mvc remote add {remote} URL --layout tensors --force` (same URL and options)",
        )


def workers(jobs: int | None) -> int:
    """Parts in flight: each holds up to a part, its base and its encoding (8 MiB each at most),
    so memory stays a few parts per core, not the model."""
    return max(1, jobs or min(8, 2 * (os.cpu_count() or 1)))


IO_JOBS = 8  # requests in flight by default (DVC: 4 x cores): a chunk request mostly waits on the store


def _io_jobs(jobs: int | None) -> int:
    """Requests in flight (probes, uploads, downloads): they hold only stored (compressed) chunks."""
    return max(1, jobs or IO_JOBS)


def _cpu_jobs(jobs: int | None) -> int:
    """Parts encoded or decoded at once (numpy, zstd and blake3 release the GIL): one per core,
    each holding a few part-sized buffers, so memory is bounded by the cores, not the model."""
    return max(1, min(jobs or 64, os.cpu_count() or 1))


# ---- push -----------------------------------------------------------------------------


def push(root: Path, items: list[Item], *, remote: str, jobs: int | None = None, progress: Progress | None = None) -> int:
    """Upload the versions of ``items`` a tensors remote lacks; returns the objects uploaded.

    Once every recipe is written, every chunk those versions need (delta bases to the end of
    each chain) that this call did not upload is checked, and a missing one is uploaded again
    whole from the local cache: a concurrent ``mvc gc --remote`` that planned to delete a
    chunk a push then reused, or a chunk lost by hand, is restored. A version the remote
    already has is checked too when its weights are in the local cache (the recipe is read
    instead of probed: same one request), so ``mvc push`` repairs it; one without local
    weights is not (``mvc verify --remote`` reports it). The check reads the header of every
    chunk down each chain (a ranged GET each, 8 in flight; a small file read on a directory
    remote), or, for more than :data:`LIST_ABOVE` chunks on a cloud remote, takes one
    listing of the chunks (its cost grows with the remote, a GET's with the version) and
    reads only the headers of links no recipe at hand names.

    Raises:
        MissingObjectError: a version's weights are not in the local cache.
        IntegrityError: a chunk was deleted again while it was restored (a gc still running).
        RemoteError: the remote failed.
    """
    rem = ChunkStore.of(root, remote)
    if items and not rem.exists(MARKER):
        rem.put(MARKER, json.dumps({"layout": TENSORS, "schema": tensorstore.RECIPE_SCHEMA}).encode())
    count = 0
    full: list[str] = []
    checks: list[_Check] = []
    for it in items:
        if it.md5.endswith(".dir"):  # directory versions keep plain DVC objects (issue 15: files first)
            full.append(it.md5)
            continue
        sent, check = _push_one(root, rem, it, jobs, progress)
        count += sent
        if check is not None:
            checks.append(check)
        if it.released:
            full.append(it.md5)
    count += _ensure(rem, checks, jobs)  # after every recipe: a chunk deleted before it is seen gone
    if full:
        absent = sorted(dvcstore.missing_in_remote(root, full, remote=remote))
        if absent:
            count += dvcpush.push_objects(root, absent, remote=remote, jobs=jobs).transferred
    return count


def push_full(root: Path, md5s: list[str], *, remote: str, jobs: int | None = None) -> int:
    """Upload the plain DVC objects of ``md5s`` the remote lacks (``mvc push --full``)."""
    absent = sorted(dvcstore.missing_in_remote(root, md5s, remote=remote)) if md5s else []
    return dvcpush.push_objects(root, absent, remote=remote, jobs=jobs).transferred if absent else 0


def _save_local_recipe(root: Path, recipe: Recipe) -> None:
    path = dvctensors.tmp_dir(root) / LOCAL_RECIPES / recipe.md5
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_bytes(recipe.to_bytes())
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Check:
    """What :func:`_ensure` needs of one version pushed (or found on the remote)."""

    it: Item
    src: Path  # its weights in the local cache: where a lost chunk is restored from
    recipe: Recipe
    sent: frozenset[str]  # chunks this push uploaded: there, no request needed
    bases: dict[str, str | None]  # chunk -> its delta base (None: stored whole), known without a request


def _push_one(root: Path, rem: ChunkStore, it: Item, jobs: int | None, progress: Progress | None) -> tuple[int, _Check | None]:
    """Push one file version; returns the objects uploaded and what :func:`_ensure` must check."""
    src = dvctensors.cache_file(root, it.md5)
    raw_recipe = rem.get(recipe_rel(it.md5))  # one request, as an existence probe would be
    if raw_recipe is not None:
        if not src.is_file():
            return 0, None  # nothing here to restore from: `mvc verify --remote` reports a loss
        with contextlib.suppress(IntegrityError):  # an unreadable recipe is pushed again below
            there = Recipe.from_bytes(raw_recipe, it.md5)
            return 0, _Check(it, src, there, frozenset(), known_bases((p.id, p.base, p.depth) for p in there.parts))
    if not src.is_file():
        raise MissingObjectError(
            f"the weights of {it.label} ({it.md5[:8]}) are not in the local cache", hint="pull them first, or re-add them with `mvc add`"
        )
    size = src.stat().st_size
    fmt, segs = tensorstore.segments(src, size)
    plan = list(tensorstore.pieces(segs))
    # The delta base: the first parent whose recipe is on the remote and whose file is here.
    base_src: Path | None = None
    bases: dict[tuple[str, int], tuple[int, Part]] = {}
    for pmd5, _ in it.parents:
        psrc = dvctensors.cache_file(root, pmd5)
        precipe = rem.recipe(pmd5) if psrc.is_file() and not pmd5.endswith(".dir") else None
        if precipe is not None:
            base_src, bases = psrc, tensorstore.parts_by_key(precipe)
            break
    # Two pools: requests (probe, upload) wait on the store, encoding keeps a core busy; an
    # upload thread hands its part to the encoders and waits, so only encoded parts queue.
    with ThreadPoolExecutor(_io_jobs(jobs)) as pool, ThreadPoolExecutor(_cpu_jobs(jobs)) as coder:
        ids = list(coder.map(lambda p: tensorstore.chunk_id(tensorstore.read_range(src, p[0], p[1])), plan))
        unique = list(dict.fromkeys(ids))
        depths: dict[str, tuple[int, str | None]] = {}
        lock = threading.Lock()
        sent: list[str] = []

        def encode(index: int) -> tuple[bytes, int, str | None]:
            offset, n, seg, piece = plan[index]
            raw = tensorstore.read_range(src, offset, n)
            base = bases.get((seg.tensor, piece)) if seg.tensor is not None else None
            if base is not None and base[1].id == ids[index]:
                base = None  # the parent's part itself (the remote lost it): stored whole, never a delta on itself
            base_raw = None
            if base is not None and base_src is not None and base[1].size == n:
                candidate = tensorstore.read_range(base_src, base[0], n)
                if tensorstore.chunk_id(candidate) == base[1].id:  # never delta against bytes the remote lacks
                    base_raw = candidate
                del candidate
            stored, depth = tensorstore.encode(
                raw, seg.width, base_raw, base[1].id if base else None, base[1].depth if base else 0
            )
            return stored, depth, base[1].id if depth and base else None

        def upload(index: int) -> None:
            cid = ids[index]
            # One ranged GET both tells whether the chunk is there and reads its delta depth.
            head = rem.chunk(cid, end=tensorstore.HEAD_BYTES)
            if head is not None:
                found = tensorstore.read_head(head, cid)
                with lock:
                    depths[cid] = (found.depth, found.base)
                return
            stored, depth, base_id = coder.submit(encode, index).result()
            rem.put(chunk_rel(cid), stored)
            del stored
            with lock:
                depths[cid] = (depth, base_id)
                sent.append(cid)
            if progress is not None:
                progress(it.label, plan[index][1], size)

        first = {cid: i for i, cid in reversed(list(enumerate(ids)))}
        # Every chunk is probed, those of the parent's recipe too: a push restores what the remote lost.
        for _ in pool.map(upload, [first[c] for c in unique]):
            pass
    parts = tuple(
        Part(id=cid, size=n, tensor=seg.tensor, piece=piece, width=seg.width, depth=depths[cid][0], base=depths[cid][1])
        for cid, (_, n, seg, piece) in zip(ids, plan, strict=True)
    )
    recipe = Recipe(md5=it.md5, size=size, format=fmt, parts=parts)
    rem.put(recipe_rel(it.md5), recipe.to_bytes())  # last: the version is on the remote only now
    _save_local_recipe(root, recipe)
    known = known_bases(
        [(cid, base, depth) for cid, (depth, base) in depths.items()]
        + [(p.id, p.base, p.depth) for _, p in bases.values()]  # the parent's parts: one more link of each chain
    )
    return len(sent) + 1, _Check(it, src, recipe, frozenset(sent), known)


# Chunks to check on a cloud remote above which one fresh listing of the chunks (1,000 keys a
# page) replaces a ranged GET each: a no-op `mvc push` of a 187-part version on local S3 took
# 2.3 s with GETs and 1.25 s (as before the check) with the listing. A remote of many
# thousand chunks pays a page per thousand, once per push, however many versions it checks.
LIST_ABOVE = 64


def _ensure(rem: ChunkStore, checks: list[_Check], jobs: int | None) -> int:
    """Upload again, whole, every chunk of ``checks`` whose chain lacks a chunk on the remote;
    returns the chunks uploaded.

    A missing chunk of the version is restored from the local weights; a missing delta base
    (whose bytes need not be here) is cut out of the chain: the chunk that needs it is
    uploaded whole instead, under the same id, so it no longer needs it.

    Raises:
        IntegrityError: a restored chunk is gone again at once (a gc still deleting).
    """
    where: dict[str, tuple[_Check, int, Part]] = {}
    known: dict[str, str | None] = {}
    there: set[str] = set()
    for check in checks:
        for offset, part in check.recipe.offsets():
            where.setdefault(part.id, (check, offset, part))
        for cid, base in check.bases.items():
            known.setdefault(cid, base)
        there |= check.sent
    if not where:
        return 0
    listed = None
    if not rem.local and len(set(where) - there) > LIST_ABOVE:  # taken after every recipe write
        listed = {k.replace("/", "") for k in rem.listing(CHUNKS)}
    with ThreadPoolExecutor(_io_jobs(jobs)) as pool:
        bases, missing = walk_chains(rem, where, known, pool, check=True, there=frozenset(there), listed=listed)
        if not missing:
            return 0
        broken = [cid for cid in where if _chain_lacks(cid, bases, missing)]

        def restore(cid: str) -> bool:
            check, offset, part = where[cid]
            raw = tensorstore.read_range(check.src, offset, part.size)
            if tensorstore.chunk_id(raw) != cid:
                raise IntegrityError(
                    f"the weights of {check.it.label} ({check.it.md5[:8]}) in the local cache do not match their recipe",
                    hint="pull them again or re-add them with `mvc add`, then push",
                )
            rem.put(chunk_rel(cid), tensorstore.encode(raw, part.width)[0])  # whole: no base to lose
            return chunk_there(rem, cid)[0]

        gone = [cid for cid, ok in zip(broken, pool.map(restore, broken), strict=True) if not ok]
    if gone:
        it = where[gone[0]][0].it
        raise IntegrityError(
            f"chunk {gone[0][:12]} of {it.label} ({it.md5[:8]}) was deleted from remote {rem.name!r} while it was pushed "
            "(a `mvc gc --remote` running elsewhere?); the version on the remote is incomplete",
            hint="run `mvc push` again once that gc is done",
        )
    return len(broken)


def _chain_lacks(cid: str, bases: dict[str, str | None], missing: set[str]) -> bool:
    """True when chunk ``cid`` or a chunk down its delta chain is in ``missing``."""
    seen: set[str] = set()
    at: str | None = cid
    while at is not None and at not in seen:
        if at in missing:
            return True
        seen.add(at)
        at = bases.get(at)
    return False


# ---- pull -----------------------------------------------------------------------------


def fetch(root: Path, items: list[Item], *, remote: str, jobs: int | None = None, progress: Progress | None = None) -> int:
    """Rebuild into the local cache every file version of ``items`` the cache lacks and the remote has a recipe for.

    Versions without a recipe (directories, versions pushed with the full layout) are
    left to DVC's fetch, which runs next.

    Returns:
        The number of versions rebuilt.

    Raises:
        IntegrityError: a chunk is missing or corrupt, a delta base was deleted, or the
            rebuilt file does not match its md5; nothing reaches the cache then.
        RemoteError: the remote failed.
    """
    todo = [it for it in items if it.md5 and not it.md5.endswith(".dir") and not dvctensors.cache_file(root, it.md5).is_file()]
    if not todo:
        return 0
    rem = ChunkStore.of(root, remote)
    count = 0
    for it in todo:
        try:
            recipe = rem.recipe(it.md5)
            if recipe is None:
                continue
            _drop_dead_rebuilds(dvctensors.cache_file(root, it.md5).parent)
            _rebuild(root, rem, it, recipe, jobs, progress)
        except IntegrityError as exc:  # an unreadable recipe, a bad chunk, a rebuild of other bytes
            if dvcstore.missing_in_remote(root, [it.md5], remote=remote):
                if exc.hint == tensorstore.RECIPE_FIX:  # the recipe names no version: this one does
                    raise IntegrityError(exc.message, hint=full_push_fix(it), remote=remote) from exc
                raise
            continue  # the full object is there too (a release, `mvc push --full`): DVC fetches it next
        count += 1
    return count


def _drop_dead_rebuilds(folder: Path) -> None:
    """Remove the half-rebuilt files a killed pull left in ``folder`` (``.mvc-rebuild-<pid>-*``
    of a process that is gone): each can be as large as a model, and nothing else reads them."""
    from mvc import journal

    with contextlib.suppress(OSError):
        for entry in folder.glob(".mvc-rebuild-*"):
            pid = entry.name.split("-")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not journal.alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


def on_remote(root: Path, md5: str, *, remote: str) -> bool:
    """True when a tensors remote holds version ``md5`` (its recipe, or the plain DVC object)."""
    if not md5.endswith(".dir") and ChunkStore.of(root, remote).exists(recipe_rel(md5)):
        return True
    return not dvcstore.missing_in_remote(root, [md5], remote=remote)


def local_sources(root: Path) -> dict[str, tuple[Path, int, int]]:
    """``chunk id -> (cache file, offset, size)`` of the parts of versions in the local cache
    whose recipes a push or pull left in ``.dvc/tmp``."""
    out: dict[str, tuple[Path, int, int]] = {}
    top = dvctensors.tmp_dir(root) / LOCAL_RECIPES
    if not top.is_dir():
        return out
    for path in top.iterdir():
        if path.name.startswith("."):
            continue
        src = dvctensors.cache_file(root, path.name)
        if not src.is_file():
            continue
        try:
            recipe = Recipe.from_bytes(path.read_bytes(), path.name)
        except IntegrityError:
            continue
        for offset, part in recipe.offsets():
            out.setdefault(part.id, (src, offset, part.size))
    return out


class _Decoder:
    """Raw bytes of chunks: from versions in the local cache, else downloaded (kept in the
    chunk cache until the caller is done) and decoded, delta bases first."""

    def __init__(self, root: Path, rem: ChunkStore) -> None:
        self.rem = rem
        self.sources = local_sources(root)
        self.chunk_dir = dvctensors.tmp_dir(root) / LOCAL_CHUNKS
        self.touched: set[str] = set()
        self.downloaded = 0
        self._lock = threading.Lock()
        self._fetched: dict[str, bytes] = {}  # stored chunks :meth:`prefetch` got, until decoded
        self._cached: set[str] = set()  # chunks read from the chunk cache (a resumed pull), not the remote

    def prefetch(self, cid: str, depth: int = 0) -> None:
        """Get the stored chunk ``cid`` and its delta bases (those not in the local cache) ahead
        of :meth:`buffer`, so requests run in many threads while decoding keeps to the cores.

        A failure is left for :meth:`buffer` to meet again and report.
        """
        if cid in self.sources or depth > tensorstore.MAX_DEPTH + 1:
            return
        try:
            blob = self.stored(cid)
            head = tensorstore.read_head(blob, cid)
        except (ChunkProblem, IntegrityError):
            return
        with self._lock:
            self._fetched[cid] = blob
        if head.base is not None:
            self.prefetch(head.base, depth + 1)

    def stored(self, cid: str) -> bytes:
        local = self.chunk_dir / tensorstore.chunk_key(cid)
        with self._lock:
            self.touched.add(cid)
        with contextlib.suppress(FileNotFoundError):
            kept = local.read_bytes()
            with self._lock:
                self._cached.add(cid)
            return kept
        data = self.rem.chunk(cid)
        if data is None:
            raise ChunkProblem(cid, "missing")
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        part.write_bytes(data)
        os.replace(part, local)
        with self._lock:
            self.downloaded += len(data)
        return data

    def raw(self, cid: str, depth: int = 0) -> bytes:
        """The raw bytes of chunk ``cid``, checked against its id."""
        return bytes(self.buffer(cid, depth))

    def buffer(self, cid: str, depth: int = 0) -> bytes | memoryview:
        """:meth:`raw` without a final copy (a read-only view)."""
        src = self.sources.get(cid)
        if src is not None:
            data = tensorstore.read_range(*src)
            if tensorstore.chunk_id(data) == cid:
                return data
        if depth > tensorstore.MAX_DEPTH + 1:
            raise ChunkProblem(cid, "corrupt")
        with self._lock:
            blob = self._fetched.pop(cid, None)
        for attempt in range(2):
            if blob is None:
                blob = self.stored(cid)
            try:
                return decode_chunk(blob, cid, lambda base: self.buffer(base, depth + 1))
            except ChunkProblem as exc:
                if exc.cid != cid or exc.kind != "corrupt":
                    raise
                with self._lock:
                    kept = cid in self._cached  # the bytes came from the chunk cache: a disk error, a hand edit
                    self._cached.discard(cid)
                with contextlib.suppress(FileNotFoundError):
                    (self.chunk_dir / tensorstore.chunk_key(cid)).unlink()  # never kept for a resume
                if not kept or attempt:
                    raise
                blob = None  # once more, from the remote
        raise AssertionError("unreachable")

    def forget(self) -> None:
        """Drop the downloaded chunks: the caller has what it needed from them."""
        self._fetched.clear()
        for cid in self.touched:
            with contextlib.suppress(FileNotFoundError):
                (self.chunk_dir / tensorstore.chunk_key(cid)).unlink()


def _rebuild(root: Path, rem: ChunkStore, it: Item, recipe: Recipe, jobs: int | None, progress: Progress | None) -> None:
    chunks = _Decoder(root, rem)
    dest = dvctensors.cache_file(root, it.md5)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".mvc-rebuild-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    md5 = hashlib.md5()
    parts = recipe.parts
    io, cpu = _io_jobs(jobs), _cpu_jobs(jobs)
    ahead = min(io, cpu + 2)  # decoded parts waiting for the writer: memory is a few parts, not the model

    def decode(fetch: Future[None], cid: str) -> bytes | memoryview:
        fetch.result()
        return chunks.buffer(cid)

    try:
        # Three stages: requests (many in flight, stored chunks only), decoding (one per
        # core), then in file order the md5 here while the write before runs in its thread.
        with (
            open(tmp, "wb") as f,
            ThreadPoolExecutor(io) as fetcher,
            ThreadPoolExecutor(cpu) as coder,
            ThreadPoolExecutor(1) as writer,
        ):
            fetched: dict[int, Future[None]] = {}
            decoded: deque[Future[bytes | memoryview]] = deque()
            nf = nd = 0
            written: Future[Any] | None = None
            for i in range(len(parts)):
                while nf < len(parts) and nf < i + io:
                    fetched[nf] = fetcher.submit(chunks.prefetch, parts[nf].id)
                    nf += 1
                while nd < len(parts) and nd < i + ahead:
                    decoded.append(coder.submit(decode, fetched.pop(nd), parts[nd].id))
                    nd += 1
                data = decoded.popleft().result()
                if written is not None:
                    written.result()
                written = writer.submit(f.write, data)
                md5.update(data)
                if progress is not None:
                    progress(it.label, len(data), recipe.size)
                del data
            if written is not None:
                written.result()
        if md5.hexdigest() != it.md5:
            raise rebuilt_mismatch(it, rem.name)
        dvctensors.adopt_cache_file(root, it.md5, tmp)
    except ChunkProblem as exc:
        raise _chunk_error(exc, it, rem.name) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _save_local_recipe(root, recipe)
    chunks.forget()  # the cache object now serves the parts; bases are fetched again if ever needed


def rebuilt_mismatch(it: Item, remote: str) -> IntegrityError:
    """The error for a version whose rebuilt bytes do not hash to its md5 (a wrong recipe)."""
    return IntegrityError(
        f"the weights of {it.label} ({it.md5[:8]}) rebuilt from remote {remote!r} do not match their hash; nothing was written",
        hint="the recipe on the remote is wrong: push the version again from a machine that has its weights (`mvc push --full`)",
    )


def full_push_fix(it: Item) -> str:
    """The hint for a version a tensors remote holds badly: a plain `mvc push` skips a version
    whose recipe is there, so it repairs nothing; the whole file beside the chunks does."""
    version = it.label.split(" file ", 1)[0]  # a directory version's file: "NAME vN file REL"
    ref = version.replace(" v", "@v", 1) if " v" in version else ""
    return tensorstore.RECIPE_FIX.replace(" NAME@vN", f" {ref}" if ref else "")


def _chunk_error(exc: ChunkProblem, it: Item, remote: str) -> IntegrityError:
    what = f"{it.label} ({it.md5[:8]})"
    fix = full_push_fix(it)
    if exc.kind == "base":
        return IntegrityError(
            f"the delta base chunk {exc.cid[:12]} of {what} was deleted from remote {remote!r}; nothing was written",
            hint=fix,
        )
    if exc.kind == "missing":
        return IntegrityError(f"chunk {exc.cid[:12]} of {what} is missing from remote {remote!r}; nothing was written", hint=fix)
    return IntegrityError(f"chunk {exc.cid[:12]} of {what} on remote {remote!r} is corrupt; nothing was written", hint=fix)


# ---- a partial safetensors file (mvc pull NAME@REF --tensors PATTERN) -------------------


@dataclass(frozen=True)
class PartialFile:
    """Outcome of :func:`pull_tensors`."""

    path: str
    tensors: tuple[str, ...]
    bytes: int  # the file's size
    downloaded: int  # bytes read from the remote


def pull_tensors(
    root: Path,
    it: Item,
    patterns: list[str],
    dest: Path,
    *,
    remote: str,
    jobs: int | None = None,
    index: TensorIndex | None = None,
) -> PartialFile:
    """Write ``dest``, a safetensors file with only the tensors of version ``it`` whose names
    match ``patterns`` (shell-style), downloading only the chunks that hold them.

    There is no md5 for a partial file: each chunk is checked against its id and the size
    its recipe gives it, and each tensor against ``index`` (the version's tensor index,
    from git: its dtype, shape and xxh3 hash), so a wrong recipe never yields a file.

    Raises:
        UsageError: the version is not a safetensors file on the remote.
        NotFoundError: no tensor matches; the version is not on the remote.
        IntegrityError: a chunk is missing or corrupt; the recipe or a tensor does not
            match what the version records. Nothing is written then.
    """
    import fnmatch
    import struct

    from mvc.errors import NotFoundError

    what = f"{it.label} ({it.md5[:8]}) on remote {remote!r}"

    rem = ChunkStore.of(root, remote)
    recipe = rem.recipe(it.md5)
    if recipe is None:
        raise NotFoundError(
            f"remote {remote!r} holds no tensor recipe of {it.label} ({it.md5[:8]})", hint="push it with `mvc push` first"
        )
    if recipe.format != "safetensors":
        raise UsageError(f"{it.label} is not a safetensors file; --tensors reads safetensors only", hint="pull the whole file")
    chunks = _Decoder(root, rem)
    spans = list(recipe.offsets())

    last: dict[str, bytes] = {}  # the part read last: small tensors share one

    def read(start: int, end: int) -> bytes:
        out = bytearray()
        for offset, part in spans:
            if offset + part.size <= start or offset >= end:
                continue
            if part.id not in last:
                last.clear()
                last[part.id] = chunks.raw(part.id)
            raw = last[part.id]
            if len(raw) != part.size:
                raise wrong_recipe(it, f"the recipe of {what} gives chunk {part.id[:12]} {part.size} bytes, but it holds {len(raw)}")
            out += raw[max(start - offset, 0) : min(end - offset, part.size)]
        return bytes(out)

    try:
        (n,) = struct.unpack("<Q", read(0, 8))
        header = documents.load_json(read(8, 8 + n))
        metadata = header.pop("__metadata__", None)
        chosen = sorted(
            (k for k in header if any(fnmatch.fnmatchcase(k, p) for p in patterns)), key=lambda k: header[k]["data_offsets"][0]
        )
        if not chosen:
            raise NotFoundError(
                f"no tensor of {it.label} matches {', '.join(repr(p) for p in patterns)}",
                hint=f"list its tensors with `mvc show {it.label.replace(' v', '@v', 1)}`",
            )
        out_header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        at = 0
        for k in chosen:
            b, e = header[k]["data_offsets"]
            out_header[k] = {**header[k], "data_offsets": [at, at + e - b]}
            at += e - b
        text = json.dumps(out_header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        tmp = temp_beside(dest)
        try:
            with open(tmp, "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text)
                for k in chosen:
                    b, e = header[k]["data_offsets"]
                    data = read(8 + n + b, 8 + n + e)
                    check_tensor(k, header[k], data, index, it, remote)
                    f.write(data)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    except ChunkProblem as exc:
        raise _chunk_error(exc, it, rem.name) from None
    finally:
        chunks.forget()
    return PartialFile(path=str(dest), tensors=tuple(chosen), bytes=dest.stat().st_size, downloaded=chunks.downloaded)


def temp_beside(dest: Path) -> Path:
    """A fresh temp file name for ``dest`` in its directory (created if needed),
    ``.<name>.<pid>.<hex8>.tmp`` (gc's temp pattern); the temp files of ``dest`` that a
    killed process left are removed first, so a rerun leaves none behind."""
    from mvc import journal

    dest.parent.mkdir(parents=True, exist_ok=True)
    for entry in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        pid = entry.name[len(dest.name) + 2 :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not journal.alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    return dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def wrong_recipe(it: Item, problem: str) -> IntegrityError:
    """The error for a recipe that does not rebuild version ``it`` (``problem`` says how)."""
    ref = it.label.split(" file ", 1)[0].replace(" v", "@v", 1)
    return IntegrityError(
        f"{problem}; nothing was written",
        hint=f"the remote's recipe is wrong: pull the whole version (`mvc pull {ref}`) after `mvc push --full {ref}` "
        "from a machine that has its weights",
    )


def check_tensor(name: str, entry: Any, data: bytes, index: TensorIndex | None, it: Item, remote: str) -> None:
    """Refuse tensor ``name`` of version ``it`` (its safetensors header ``entry`` and ``data``
    as rebuilt from a tensors remote) unless it is whole and, when the version's tensor
    ``index`` is known, has the dtype, shape and xxh3 hash the index records.

    Raises:
        IntegrityError: the remote's recipe or chunks describe other bytes.
    """
    import xxhash

    from mvc.formats import dtypes

    what = f"{it.label} ({it.md5[:8]}) on remote {remote!r}"
    begin, end = entry["data_offsets"] if isinstance(entry, dict) else (0, -1)
    if len(data) != end - begin:
        raise wrong_recipe(it, f"tensor {name!r} of {what} rebuilt to {len(data)} bytes, not the {end - begin} its header gives")
    if index is None:
        return
    info = index.by_name.get(name)
    if (
        info is None
        or dtypes.SAFETENSORS_DTYPES.get(str(entry.get("dtype")), ("?",))[0] != info.dtype
        or tuple(entry.get("shape") or ()) != tuple(info.shape)
        or xxhash.xxh3_128(data).hexdigest() != info.hash
    ):
        raise wrong_recipe(it, f"tensor {name!r} of {what} does not match the version's tensor index")


def chunk_error(cid: str, kind: str, it: Item, remote: str) -> IntegrityError:
    """The error for chunk ``cid`` of version ``it`` being ``kind`` ("missing", "corrupt" or
    "base": a delta base that was deleted) on ``remote``: one wording for every reader."""
    return _chunk_error(ChunkProblem(cid, kind), it, remote)

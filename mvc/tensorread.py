"""Reading versions a ``tensors`` remote holds as recipes and chunks, in part or whole (issue 15).

:mod:`mvc.tensorsync` moves whole versions between a tensors remote and the DVC cache.
This module serves the other readers:

- ``mvc diff --stats``: a *sparse copy* of a version, a file of the version's size that
  holds only its header and the bytes of the tensors asked for (the rest is a hole),
  so the tensor readers of :mod:`mvc.formats` read it as the real file while only the
  chunks of the changed tensors (and their delta bases) are downloaded;
- ``mvc get``: the whole file rebuilt into a destination, checked against its md5
  before it gets its name (no repository, no DVC cache);
- ``mvc verify --remote``: whether the remote holds the recipe and every chunk a
  version needs (delta bases included), re-decoded on a local-directory remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc import dvcintegrity, dvcstore, dvctensors, tensorstore, tensorsync
from mvc.chunkstore import ChunkProblem, ChunkStore, decode_chunk
from mvc.errors import IntegrityError
from mvc.progress import Progress
from mvc.refs import Resolved
from mvc.tensorstore import Part, Recipe
from mvc.workspace import Workspace

if TYPE_CHECKING:
    from mvc.formats import TensorIndex

_KEEP_BYTES = 64 * 2**20  # decoded parts kept for reuse (a child's delta base, small tensors sharing a part)


class Chunks:
    """Raw bytes of chunks: from versions in the local cache when ``root`` is a repository,
    else downloaded and decoded (delta bases first), the last few kept in memory."""

    def __init__(self, store: ChunkStore, root: Path | None = None) -> None:
        self.store = store
        self.sources = tensorsync.local_sources(root) if root is not None else {}
        self.downloaded = 0  # bytes of stored chunks read from the remote
        self.fetched: set[str] = set()  # ids of the chunks read from the remote
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._kept_bytes = 0
        self._lock = threading.Lock()

    def raw(self, cid: str, depth: int = 0) -> bytes:
        """The raw bytes of chunk ``cid``, checked against its id.

        Raises:
            ChunkProblem: the chunk (or a delta base) is missing or corrupt.
        """
        with self._lock:
            kept = self._kept.get(cid)
            if kept is not None:
                self._kept.move_to_end(cid)
                return kept
        src = self.sources.get(cid)
        if src is not None:
            with contextlib.suppress(OSError, IntegrityError):
                data = tensorstore.read_range(*src)
                if tensorstore.chunk_id(data) == cid:
                    return self._keep(cid, data)
        if depth > tensorstore.MAX_DEPTH + 1:
            raise ChunkProblem(cid, "corrupt")
        blob = self.store.chunk(cid)
        if blob is None:
            raise ChunkProblem(cid, "missing")
        with self._lock:
            self.downloaded += len(blob)
            self.fetched.add(cid)
        return self._keep(cid, bytes(decode_chunk(blob, cid, lambda base: self.raw(base, depth + 1))))

    def _keep(self, cid: str, data: bytes) -> bytes:
        with self._lock:
            if cid not in self._kept and len(data) <= _KEEP_BYTES // 4:
                self._kept[cid] = data
                self._kept_bytes += len(data)
                while self._kept_bytes > _KEEP_BYTES:
                    _, old = self._kept.popitem(last=False)
                    self._kept_bytes -= len(old)
        return data


# ---- sparse copies: only some tensors (mvc diff --stats) -------------------------------


@dataclass(frozen=True)
class Wanted:
    """One version to copy sparsely: its item, recipe and destination."""

    item: tensorsync.Item
    recipe: Recipe
    dest: Path
    index: TensorIndex | None = None  # the version's tensor index (from git): each copied tensor must match it


def sparse_copies(chunks: Chunks, wanted: Sequence[Wanted], names: Iterable[str]) -> None:
    """Write each ``wanted`` version as a sparse safetensors file holding its header and the
    bytes of the tensors ``names`` (those it has), every other byte a hole.

    The versions are read tensor by tensor, side by side, so a child's delta base (the
    same tensor of its parent) is decoded once and reused.

    Raises:
        IntegrityError: a chunk is missing or corrupt, a delta base was deleted, or a
            header is not safetensors.
    """
    files = []
    try:
        for w in wanted:
            w.dest.parent.mkdir(parents=True, exist_ok=True)
            f = open(w.dest, "wb")  # noqa: SIM115 - closed below, all together
            files.append(f)
            f.truncate(w.recipe.size)
        headers = [_header(chunks, w, f) for w, f in zip(wanted, files, strict=True)]
        for name in names:
            for w, f, (data_start, header) in zip(wanted, files, headers, strict=True):
                entry = header.get(name)
                if isinstance(entry, dict) and "data_offsets" in entry:
                    b, e = entry["data_offsets"]
                    data = _copy_range(chunks, w, f, data_start + int(b), data_start + int(e))
                    tensorsync.check_tensor(name, entry, data, w.index, w.item, chunks.store.name)
    finally:
        for f in files:
            f.close()


def _header(chunks: Chunks, w: Wanted, f: Any) -> tuple[int, dict[str, Any]]:
    head = _copy_range(chunks, w, f, 0, 8)
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > w.recipe.size:
        raise IntegrityError(
            f"the tensor recipe of {w.item.label} ({w.item.md5[:8]}) does not describe a safetensors file",
            hint="push the version again from a machine that has its weights (`mvc push`)",
        )
    text = _copy_range(chunks, w, f, 8, 8 + n)
    try:
        header = json.loads(text)
    except ValueError:
        raise IntegrityError(
            f"the safetensors header of {w.item.label} ({w.item.md5[:8]}) rebuilt from its chunks is unreadable",
            hint="push the version again from a machine that has its weights (`mvc push`)",
        ) from None
    return 8 + n, header if isinstance(header, dict) else {}


def _copy_range(chunks: Chunks, w: Wanted, f: Any, start: int, end: int) -> bytes:
    """Write the parts covering ``[start, end)`` at their offsets; return those bytes."""
    out = bytearray()
    for offset, part in w.recipe.offsets():
        if offset + part.size <= start or offset >= end or part.size == 0:
            continue
        raw = _raw(chunks, w.item, part)
        f.seek(offset)
        f.write(raw)
        out += raw[max(start - offset, 0) : min(end - offset, part.size)]
    return bytes(out)


def _raw(chunks: Chunks, it: tensorsync.Item, part: Part) -> bytes:
    try:
        return chunks.raw(part.id)
    except ChunkProblem as exc:
        raise tensorsync.chunk_error(exc.cid, exc.kind, it, chunks.store.name) from None


# ---- whole versions without a repository (mvc get) -------------------------------------


def rebuild(chunks: Chunks, it: tensorsync.Item, recipe: Recipe, dest: Path, *, jobs: int | None = None, progress: Progress | None = None) -> Path:
    """Write version ``it`` to ``dest`` from its chunks, a few parts in memory at a time;
    ``dest`` gets its name only once the bytes hash to ``it.md5``.

    Raises:
        IntegrityError: a chunk is missing or corrupt, a delta base was deleted, or the
            file does not match its md5 (nothing is left at ``dest`` then).
    """
    workers = max(1, jobs or min(8, 2 * (os.cpu_count() or 1)))
    tmp = tensorsync.temp_beside(dest)
    md5 = hashlib.md5()  # DVC's content address, not security
    try:
        with open(tmp, "wb") as f, ThreadPoolExecutor(workers) as pool:
            window: deque[Future[bytes]] = deque()

            def take() -> None:
                data = window.popleft().result()
                f.write(data)
                md5.update(data)
                if progress is not None:
                    progress(it.label, len(data), recipe.size)

            for part in recipe.parts:
                window.append(pool.submit(_raw, chunks, it, part))
                if len(window) > workers:
                    take()
            while window:
                take()
        if md5.hexdigest() != it.md5:
            raise tensorsync.rebuilt_mismatch(it, chunks.store.name)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


# ---- is a version whole on the remote? (mvc verify --remote) ----------------------------


def check(store: ChunkStore, md5: str, recipe: Recipe, *, deep: bool) -> list[dvcintegrity.ObjectCheck]:
    """The recipe's chunks and their delta bases as ``dvcintegrity.ObjectCheck``s (``oid``: the chunk id).

    Every chunk must exist and carry a readable header naming its part's size; with
    ``deep`` (a local-directory remote, read like DVC re-hashes its objects there) the
    version is rebuilt in memory part by part and its md5 compared too.
    """
    out: dict[str, dvcintegrity.ObjectCheck] = {}
    sizes = {p.id: p.size for p in recipe.parts}
    todo = list(dict.fromkeys(p.id for p in recipe.parts))
    while todo:
        cid = todo.pop(0)
        if cid in out:
            continue
        head_bytes = store.chunk(cid, end=64)
        if head_bytes is None:
            out[cid] = dvcintegrity.ObjectCheck(cid, "missing", "chunk missing")
            continue
        try:
            head = tensorstore.read_head(head_bytes, cid)
        except IntegrityError:
            out[cid] = dvcintegrity.ObjectCheck(cid, "corrupt", "not a chunk mvc wrote")
            continue
        if cid in sizes and head.size != sizes[cid]:
            out[cid] = dvcintegrity.ObjectCheck(cid, "corrupt", f"holds {head.size} bytes, the recipe needs {sizes[cid]}")
            continue
        out[cid] = dvcintegrity.ObjectCheck(cid, "ok")
        if head.base is not None and head.base not in out:
            todo.append(head.base)
    if deep and all(c.state == "ok" for c in out.values()):
        chunks = Chunks(store)
        digest = hashlib.md5()  # DVC's content address, not security
        for part in recipe.parts:
            try:
                digest.update(chunks.raw(part.id))
            except ChunkProblem as exc:
                out[exc.cid] = dvcintegrity.ObjectCheck(exc.cid, "corrupt" if exc.kind == "corrupt" else "missing", "does not decode")
                return list(out.values())
        if digest.hexdigest() != md5.split(".")[0]:
            out[md5] = dvcintegrity.ObjectCheck(md5, "corrupt", "the recipe rebuilds other bytes")
    return list(out.values())


# ---- the two sides of mvc diff --stats --------------------------------------------------


def stats_inputs(
    ws: Workspace, sides: Sequence[Resolved], names: Sequence[str], tmp: Path, *, remote: str | None, progress: Progress | None
) -> list[Path]:
    """Weights to read the tensors ``names`` of each side from, written under ``tmp``.

    A side in the local cache is exported whole as before. A side the cache lacks whose
    recipe is on a tensors remote (``remote`` or the default) becomes a sparse copy:
    only its header and the chunks of ``names`` (with their delta bases) are read. Any
    other side is fetched whole by :func:`mvc.sync.materialize`.

    Raises:
        MissingObjectError: a side is in neither the cache nor the remote.
        IntegrityError: a chunk is missing or corrupt.
    """
    from mvc import sync
    from mvc.errors import RemoteNotFoundError

    dests = [tmp / "ab"[i] / Path(res.pointer.out).name for i, res in enumerate(sides)]
    sparse: dict[int, Wanted] = {}
    store: ChunkStore | None = None
    try:
        rname: str | None = sync.remote_name(ws, remote)
    except RemoteNotFoundError:
        if remote is not None:
            raise
        rname = None
    if rname is not None and tensorsync.layout(ws.root, rname) == tensorsync.TENSORS:
        from mvc import comparison

        indexes = comparison.load_indexes(ws, list(sides))  # from git: what each copied tensor must be
        for i, res in enumerate(sides):
            md5 = res.pointer.md5
            if not md5 or md5.endswith(".dir") or dvcstore.has_object(ws.root, md5):
                continue
            store = store or ChunkStore.of(ws.root, rname)
            recipe = store.recipe(md5)
            if recipe is not None and recipe.format == "safetensors":
                item = tensorsync.Item(md5, f"{res.name} v{res.version}")
                sparse[i] = Wanted(item, recipe, dests[i], indexes[i])
    if store is not None and sparse:
        sparse_copies(Chunks(store, ws.root), list(sparse.values()), names)
    return [
        dests[i] if i in sparse else sync.materialize(ws, res.pointer, res.commit, dests[i], remote=remote, progress=progress)
        for i, res in enumerate(sides)
    ]


def get_version(
    git_root: Path,
    it: tensorsync.Item,
    dest: Path,
    *,
    cache_dir: Path,
    remote: str | None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> str | None:
    """``mvc get`` from a tensors remote: rebuild version ``it`` into ``dest`` (md5 checked).

    ``git_root`` is a clone without a work tree: the layout comes from ``.mvc/config.json``
    and the remote from ``.dvc/config`` at ``HEAD``, credentials from the environment.

    Returns:
        The remote's name; None when no tensors remote holds a recipe of the version (or
        a chunk is bad but the plain DVC object is there): DVC fetches it then.

    Raises:
        IntegrityError: a chunk is missing or corrupt, or the rebuilt bytes do not match,
            and the remote holds no plain DVC object of the version either.
        RemoteNotFoundError / RemoteError: no such remote, or it failed.
    """
    from mvc import gitstore, settings

    if not _tensors_layouts(gitstore.read_blob(git_root, "HEAD", settings.CONFIG_FILE), remote):
        return None
    fs, base, local, name, url = dvctensors.remote_root_at(git_root, "HEAD", remote, cache_dir=cache_dir)
    if not _tensors_layouts(gitstore.read_blob(git_root, "HEAD", settings.CONFIG_FILE), name):
        return None
    store = ChunkStore(fs, base, local, name, lambda exc: dvctensors.remote_failure_at(exc, name, url))
    if it.md5.endswith(".dir"):  # each file of the listing from its recipe (issue 15)
        return name if _get_dir_files(store, it, dest, jobs=jobs, progress=progress) else None
    try:
        recipe = store.recipe(it.md5)
        if recipe is None:
            return None
        rebuild(Chunks(store), it, recipe, dest, jobs=jobs, progress=progress)
    except IntegrityError as exc:  # an unreadable recipe, a bad chunk, a rebuild of other bytes
        if store.get(f"files/md5/{it.md5[:2]}/{it.md5[2:]}", end=1) is not None:
            return None  # a release also kept whole: DVC fetches that
        if exc.hint == tensorstore.RECIPE_FIX:  # the recipe names no version: this one does
            raise IntegrityError(exc.message, hint=tensorsync.full_push_fix(it), remote=name) from exc
        raise
    return name


# ---- directory versions (issue 15): the listing, then each file as a version of its own


def _dir_remote_checks(root: Path, md5: str, *, remote: str) -> list[dvcintegrity.ObjectCheck]:
    """``mvc verify --remote`` of directory version ``md5`` on a tensors remote: its listing (a
    plain object), then each file it lists, by :func:`remote_checks` (a recipe
    and its chunks, or the plain object).

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or it failed.
    """
    from mvc import tensordirs

    if md5 not in dvctensors.listings_on_remote(root, [md5], remote=remote):
        return [dvcintegrity.ObjectCheck(md5, "missing")]
    files = tensordirs.listing(root, md5)
    if files is None:
        dvctensors.fetch_listings(root, [md5], remote=remote)
        files = tensordirs.listing(root, md5)
    if files is None:
        return [dvcintegrity.ObjectCheck(md5, "corrupt", "its listing is unreadable")]
    found = [dvcintegrity.ObjectCheck(md5, "ok")]
    for oid in dict.fromkeys(files.values()):
        found += remote_checks(root, oid, remote=remote)
    return found


def _get_dir_files(store: ChunkStore, it: tensorsync.Item, dest: Path, *, jobs: int | None = None, progress: Progress | None = None) -> bool:
    """``mvc get`` of directory version ``it`` from a tensors remote: rebuild every file its
    listing names under ``dest`` (each md5 checked). False, writing nothing, when the
    listing is absent or some file has no recipe (DVC fetches the plain objects then).

    Raises:
        IntegrityError: the listing is corrupt or names a path outside the directory, or a
            file's chunk is missing or corrupt (and the remote holds no plain copy of it).
    """
    import shutil

    from mvc import tensordirs

    raw = store.get(f"files/md5/{it.md5[:2]}/{it.md5[2:]}")
    if raw is None:
        return False
    bad = IntegrityError(
        f"the listing of {it.label} ({it.md5[:8]}) on remote {store.name!r} is corrupt; nothing was written",
        hint="push the version again from a machine that has its weights (`mvc push`)",
    )
    if hashlib.md5(raw).hexdigest() != it.md5[: -len(".dir")]:
        raise bad
    try:
        entries = [(str(e["relpath"]), str(e["md5"])) for e in json.loads(raw)]
    except (ValueError, TypeError, KeyError):
        raise bad from None
    for rel, oid in entries:
        parts = rel.split("/")
        if not tensordirs.is_file_oid(oid) or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise IntegrityError(
                f"refusing the listing of {it.label} ({it.md5[:8]}): it names {rel!r}, outside its directory; nothing was written",
                hint="this version was crafted or corrupted: do not use it; ask its author",
            )
    recipes = {oid: store.recipe(oid) for _, oid in entries}
    if any(r is None for r in recipes.values()):
        return False
    for rel, oid in entries:
        recipe = recipes[oid]
        assert recipe is not None
        try:
            rebuild(Chunks(store), tensorsync.Item(oid, f"{it.label} file {rel}"), recipe, dest / rel, jobs=jobs, progress=progress)
        except IntegrityError:
            if store.get(f"files/md5/{oid[:2]}/{oid[2:]}", end=1) is not None:
                shutil.rmtree(dest, ignore_errors=True)  # mvc get's own staging directory
                return False  # a release also kept whole: DVC fetches that
            raise
    return True


def _tensors_layouts(config: bytes | None, remote: str | None) -> bool:
    """True when the settings file ``config`` gives ``remote`` (None: any remote) the tensors layout."""
    try:
        remotes = json.loads(config or b"{}").get("extra", {}).get("remotes", {})
    except (ValueError, AttributeError):
        return False
    if not isinstance(remotes, dict):
        return False
    layouts = {k: v.get("layout") for k, v in remotes.items() if isinstance(v, dict)}
    return any(v == tensorsync.TENSORS for k, v in layouts.items() if remote is None or k == remote)


def remote_checks(root: Path, md5: str, *, remote: str) -> list[dvcintegrity.ObjectCheck]:
    """``mvc verify --remote``: is version ``md5`` whole on ``remote``, whatever its layout?

    On a tensors remote a file version is there when its recipe and every chunk it needs
    (delta bases included) are, or else when the plain DVC object is (a release, or a
    version pushed before the switch: pull falls back to it). A bad chunk is reported
    as a corrupt copy of the version, naming the chunk; no copy at all as missing.

    Raises:
        RemoteNotFoundError / RemoteError: unknown remote, or it failed.
    """
    if tensorsync.layout(root, remote) != tensorsync.TENSORS:
        return dvcintegrity.check_remote(root, md5, remote=remote)
    if md5.endswith(".dir"):  # its listing, then each file as a version of its own
        return _dir_remote_checks(root, md5, remote=remote)
    store = ChunkStore.of(root, remote)
    try:
        recipe = store.recipe(md5)
    except IntegrityError:
        found = [dvcintegrity.ObjectCheck(md5, "corrupt", "its tensor recipe is unreadable")]
    else:
        if recipe is None:
            return dvcintegrity.check_remote(root, md5, remote=remote)
        found = check(store, md5, recipe, deep=store.local)
        if all(c.state == "ok" for c in found):
            return found
        found = [
            dvcintegrity.ObjectCheck(md5, "corrupt", f"chunk {c.oid[:12]} {'is missing' if c.state == 'missing' else c.detail}")
            if c.oid != md5
            else c
            for c in found
            if c.state != "ok"
        ]
    plain = dvcintegrity.check_remote(root, md5, remote=remote)
    return plain if all(c.state == "ok" for c in plain) else found

"""What a ``tensors`` remote stores and what it can drop: ``mvc storage`` and ``mvc gc --remote`` (issue 15).

Storage counts each chunk once, for the first version (by version number) that uses it;
gc removes the recipes of versions no branch or tag keeps, then every chunk no kept
recipe needs (delta bases followed to the end of each chain), listing the recipes again
just before it deletes chunks so a push that lands meanwhile keeps its chunks.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mvc import dvcstore, history, tensorstore, tensorsync
from mvc.chunkstore import CHUNKS, RECIPES, ChunkStore, chunk_rel, known_bases, recipe_rel, walk_chains
from mvc.errors import IntegrityError
from mvc.tensorstore import Part, Recipe
from mvc.workspace import Workspace

_MD5 = re.compile(r"[0-9a-f]{32}")  # a recipe's name
_CHUNK = re.compile(r"[0-9a-f]{64}")  # a chunk's name

# ---- what a tensors remote stores (mvc storage) ---------------------------------------


@dataclass(frozen=True)
class VersionStorage:
    """What one version costs on the remote."""

    name: str
    version: str  # "vN" ("?" when no commit of this repository records the hash)
    hash: str
    logical_bytes: int  # the file's size
    stored_bytes: int  # chunks this version brought (not in a version listed before it) + its recipe
    shared_bytes: int  # raw bytes of its parts stored already for a version listed before it
    ratio: float  # stored / logical
    release_bytes: int = 0  # the plain DVC object kept beside the chunks (releases, `push --full`)


@dataclass(frozen=True)
class StorageTotals:
    logical_bytes: int
    stored_bytes: int
    shared_bytes: int
    ratio: float
    release_bytes: int = 0

    @staticmethod
    def of(versions: Iterable[VersionStorage]) -> StorageTotals:
        """The sums over ``versions`` (the ratio of the sums)."""
        vs = list(versions)
        logical, stored = sum(v.logical_bytes for v in vs), sum(v.stored_bytes for v in vs)
        return StorageTotals(
            logical_bytes=logical,
            stored_bytes=stored,
            shared_bytes=sum(v.shared_bytes for v in vs),
            ratio=round(stored / logical, 4) if logical else 0.0,
            release_bytes=sum(v.release_bytes for v in vs),
        )


@dataclass(frozen=True)
class StorageReport:
    """Per version, oldest first per model, and the totals."""

    remote: str
    layout: str
    versions: tuple[VersionStorage, ...]
    totals: StorageTotals


def storage(ws: Workspace, remote: str, *, name: str | None = None) -> StorageReport:
    """Storage of every version a tensors remote holds (``name``: one model's).

    Versions are ordered per model by version number; a chunk counts as stored by the
    first version that uses it and as shared by every later one.

    Raises:
        RemoteError: the remote failed. ModelNotFoundError: ``name`` has no version there.
    """
    from mvc import gitstore, pointer
    from mvc.errors import ModelNotFoundError

    rem = ChunkStore.of(ws.root, remote)
    recipes_listing = rem.listing(RECIPES)
    chunk_sizes = {k.replace("/", ""): v[0] for k, v in rem.listing(CHUNKS).items()}
    labels = history.version_labels(ws, gitstore.all_commits_touching(ws.root, f"*{pointer.SUFFIX}"))
    # Only recipe names: a stray file there (a README, a Finder .DS_Store) is no version.
    md5s = [m for m in (k.replace("/", "") for k in recipes_listing) if _MD5.fullmatch(m)]
    with ThreadPoolExecutor(tensorsync.workers(None)) as pool:
        raws = list(pool.map(lambda m: rem.get(recipe_rel(m)), md5s))
    full = set(md5s) - dvcstore.missing_in_remote(ws.root, md5s, remote=remote) if md5s else set()

    def key(md5: str) -> tuple[str, int, str]:
        label = labels.get(md5, "? v0")
        model, _, number = label.rpartition(" v")
        return model, int(number) if number.isdigit() else 0, md5

    entries = sorted(
        ((md5, Recipe.from_bytes(raw, md5), len(raw)) for md5, raw in zip(md5s, raws, strict=True) if raw is not None),
        key=lambda e: key(e[0]),
    )
    seen: set[str] = set()
    out = []
    for md5, recipe, recipe_size in entries:
        model, number, _ = key(md5)
        stored, shared = recipe_size, 0
        for part in recipe.parts:
            if part.id in seen:
                shared += part.size
            else:
                seen.add(part.id)
                stored += chunk_sizes.get(part.id, 0)
        if name is not None and model != name:
            continue
        out.append(
            VersionStorage(
                name=model,
                version=f"v{number}" if md5 in labels else "?",
                hash=md5,
                logical_bytes=recipe.size,
                stored_bytes=stored,
                shared_bytes=shared,
                ratio=round(stored / recipe.size, 4) if recipe.size else 0.0,
                release_bytes=recipe.size if md5 in full else 0,
            )
        )
    if name is not None and not out:
        raise ModelNotFoundError(f"remote {remote!r} holds no version of {name!r} in the tensors layout", hint="push it with `mvc push`")
    return StorageReport(remote=remote, layout=tensorsync.layout(ws.root, remote), versions=tuple(out), totals=StorageTotals.of(out))


# ---- gc of a tensors remote ------------------------------------------------------------


@dataclass(frozen=True)
class Garbage:
    """A recipe or chunk no kept version needs."""

    path: str  # as the remote's filesystem names it
    kind: str  # "recipe" | "chunk"
    id: str  # the md5 of a recipe, the chunk id of a chunk
    size: int


@dataclass(frozen=True)
class GarbagePlan:
    """What :func:`garbage` found to remove, and the recipes it read to decide."""

    items: tuple[Garbage, ...]
    kept: frozenset[str]  # md5s of the recipes listed and kept: their chunks are out of ``items`` already


def garbage(root: Path, remote: str, keep: set[str], *, cutoff: float) -> GarbagePlan:
    """The recipes of versions not in ``keep`` and the chunks no kept recipe needs (delta bases
    included, to the end of each chain) on a tensors remote.

    Chunks written after ``cutoff`` (a timestamp) stay: a push under way uploads its chunks
    before its recipe. A kept recipe that cannot be read keeps every chunk. A push may still
    reuse a listed chunk after this listing: :func:`remove_garbage` lists the recipes again.
    """
    rem = ChunkStore.of(root, remote)
    listed = {f"{top}/{k}": v for top in (RECIPES, CHUNKS) for k, v in rem.listing(top, temps=True).items()}
    # Only what mvc names so: a stray file (a README, a Finder .DS_Store) is neither kept nor removed.
    recipes = {
        m: v for k, v in listed.items() if k.startswith(f"{RECIPES}/") and _MD5.fullmatch(m := k[len(RECIPES) + 1 :].replace("/", ""))
    }
    chunks = {
        c: v for k, v in listed.items() if k.startswith(f"{CHUNKS}/") and _CHUNK.fullmatch(c := k[len(CHUNKS) + 1 :].replace("/", ""))
    }
    # The temporary files of a write killed on a directory remote (a finished write renames its own).
    temps = [
        Garbage(rem.path(k), "chunk", k, size)
        for k, (size, mtime) in listed.items()
        if k.endswith(".tmp") and mtime is not None and mtime < cutoff
    ]
    md5s = sorted(recipes)
    with ThreadPoolExecutor(tensorsync.workers(None)) as pool:
        raws = dict(zip(md5s, pool.map(lambda m: rem.get(recipe_rel(m)), md5s), strict=True))
    base_of: dict[str, str | None] = {}
    needed: list[str] = []
    keep_all = False
    for md5 in md5s:
        try:
            recipe = Recipe.from_bytes(raws[md5] or b"", md5)
        except IntegrityError:
            keep_all = keep_all or md5 in keep
            continue
        for part in recipe.parts:
            base_of.setdefault(part.id, part.base)
            if md5 in keep:
                needed.append(part.id)
    out = [Garbage(rem.path(recipe_rel(m)), "recipe", m, recipes[m][0]) for m in md5s if m not in keep] + temps
    kept = frozenset(m for m in md5s if m in keep)
    if keep_all:
        return GarbagePlan(tuple(out), kept)
    held: set[str] = set()
    while needed:
        cid = needed.pop()
        if cid in held:
            continue
        held.add(cid)
        if cid not in base_of and cid in chunks:
            head = rem.chunk(cid, end=64)
            with contextlib.suppress(IntegrityError):
                base_of[cid] = tensorstore.read_head(head or b"", cid).base
        base = base_of.get(cid)
        if base:
            needed.append(base)
    for cid, (size, mtime) in sorted(chunks.items()):
        if cid not in held and mtime is not None and mtime < cutoff:
            out.append(Garbage(rem.path(chunk_rel(cid)), "chunk", cid, size))
    return GarbagePlan(tuple(out), kept)


def remove_garbage(root: Path, remote: str, items: Iterable[Garbage], *, kept: Iterable[str] | None = None) -> list[Garbage]:
    """Remove ``items``: recipes first, so an interrupted gc never leaves a recipe whose chunks
    are gone; then the recipes are listed again, and a chunk that a recipe written since the
    plan needs (a push that reused it, delta bases to the end of each chain) is spared.

    Args:
        kept: the recipes the plan read and kept (:attr:`GarbagePlan.kept`): only the others
            are read again. None reads every recipe left.

    Returns:
        The chunks spared.

    Raises:
        RemoteError: the remote failed.

    What stays open (an object store has no lock): a push whose recipe lands after that
    second listing, and whose own check of its chunks runs before this call deletes one it
    reused, loses that chunk; the next ``mvc push`` of the version restores it.
    """
    rem = ChunkStore.of(root, remote)
    todo = list(items)
    with ThreadPoolExecutor(tensorsync.workers(None)) as pool:
        list(pool.map(lambda g: rem.remove_path(g.path), [g for g in todo if g.kind == "recipe"]))
        chunks = [g for g in todo if g.kind == "chunk"]
        if not chunks:
            return []
        needed = _needed_since(rem, frozenset(kept or ()), pool)
        if needed is None:
            return chunks
        list(pool.map(lambda g: rem.remove_path(g.path), [g for g in chunks if g.id not in needed]))
    return [g for g in chunks if g.id in needed]


def _needed_since(rem: ChunkStore, kept: frozenset[str], pool: ThreadPoolExecutor) -> set[str] | None:
    """Every chunk (delta bases to the end of each chain) a recipe on the remote now needs,
    the recipes in ``kept`` aside (one listing, then one read per other recipe); None when
    one of them cannot be read (then every chunk is needed)."""
    md5s = sorted(m for m in (k.replace("/", "") for k in rem.listing(RECIPES)) if m not in kept)
    raws = list(pool.map(lambda m: rem.get(recipe_rel(m)), md5s))
    parts: list[Part] = []
    for md5, raw in zip(md5s, raws, strict=True):
        if raw is None:
            continue  # removed since the listing
        try:
            parts += Recipe.from_bytes(raw, md5).parts
        except IntegrityError:
            return None
    bases, _ = walk_chains(rem, {p.id for p in parts}, known_bases((p.id, p.base, p.depth) for p in parts), pool)
    return set(bases)

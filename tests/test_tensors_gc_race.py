"""`mvc push` to a tensors remote racing `mvc gc --remote` from another machine (issue 15).

An object store has no lock, so each interleaving is replayed deterministically, step by
step, through the library: gc plans (:func:`tensorspace.garbage`), the push runs, gc
removes (:func:`tensorspace.remove_garbage`); then a fresh clone pulls and the md5 is
checked. A deletion landing between push's probe and its recipe write is injected by
wrapping ``ChunkStore.put``: that is a concurrent actor deleting a real chunk from the real
store (a local directory, or the local S3 server), not a mock of the store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from mvc import chunkstore, tensorspace
from mvc.chunkstore import ChunkStore
from tests.conftest import assert_one_line_error, git
from tests.test_cloud_remotes import Bucket, clone, commit_all
from tests.test_tensors import SHAPES, add_tensors_remote, recipe, s3, save  # noqa: F401 - s3 is a fixture

REMOTE = "store"


@dataclass
class Store:
    """The remote under test and a look inside it that bypasses mvc."""

    root: Path  # the repository
    bucket: Bucket | None = None  # None: a local directory remote at root.parent / "store"

    def chunk(self, cid: str) -> str:
        return f"{self.bucket.prefix}/mvc/chunks/{cid[:2]}/{cid[2:]}" if self.bucket else str(
            self.root.parent / "store" / "mvc" / "chunks" / cid[:2] / cid[2:]
        )

    def has(self, cid: str) -> bool:
        return bool(self.bucket.fs().exists(self.chunk(cid))) if self.bucket else Path(self.chunk(cid)).is_file()

    def delete(self, cid: str) -> None:
        if self.bucket:
            self.bucket.fs().rm_file(self.chunk(cid))
        else:
            Path(self.chunk(cid)).unlink()

    def recipe(self, md5: str) -> Any:
        if self.bucket:
            return recipe(self.bucket, md5)
        raw = (self.root.parent / "store" / "mvc" / "recipes" / md5[:2] / md5[2:]).read_bytes()
        return mvc.tensorstore.Recipe.from_bytes(raw, md5)


def _store(cli: Callable[..., Any], repo: Path, bucket: Bucket | None) -> Store:
    if bucket is None:
        result = cli("remote", "add", REMOTE, str(repo.parent / "store"), "--layout", "tensors", "--default", cwd=repo)
        assert result.exit_code == 0, result.stderr
    else:
        add_tensors_remote(cli, repo, bucket, name=REMOTE)
    commit_all(repo, "tensors remote")
    return Store(repo, bucket)


def _weights(repo: Path) -> Path:
    return repo / "models" / "net.safetensors"


def _version(repo: Path, tensors: dict[str, np.ndarray], message: str) -> str:
    md5 = save(_weights(repo), tensors)
    mvc.add(_weights(repo), repo=repo)
    commit_all(repo, message)
    return md5


def _two_versions(cli: Callable[..., Any], repo: Path) -> tuple[str, dict[str, np.ndarray]]:
    """v1 pushed; returns its md5 and the tensors of v2 (enc.weight drifts: a delta on v1's
    part; head.weight is unchanged: v1's chunk is reused)."""
    rng = np.random.default_rng(11)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    v1 = _version(repo, tensors, "v1")
    pushed = cli("push", cwd=repo)
    assert pushed.exit_code == 0, pushed.stderr
    drift = (1e-3 * rng.standard_normal(SHAPES["enc.weight"])).astype(np.float32)
    return v1, {**tensors, "enc.weight": tensors["enc.weight"] + drift}


def _part(store: Store, md5: str, tensor: str) -> Any:
    return next(p for p in store.recipe(md5).parts if p.tensor == tensor)


def _pulls(cli: Callable[..., Any], repo: Path, tmp_path: Path, md5: str) -> None:
    """A fresh clone (empty cache) pulls HEAD and gets exactly ``md5``."""
    other = clone(repo, tmp_path / f"clone-{md5[:8]}", with_local_config=True)
    pulled = cli("pull", cwd=other)
    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5(_weights(other).read_bytes()).hexdigest() == md5


def _gc_plan(repo: Path, keep: set[str]) -> tensorspace.GarbagePlan:
    """gc's first half: the listing and the plan (every chunk counts as old)."""
    return tensorspace.garbage(repo, REMOTE, keep, cutoff=time.time() + 3600)


def _gc_remove(repo: Path, plan: tensorspace.GarbagePlan) -> None:
    """gc's second half: the removals, after whatever ran in between."""
    tensorspace.remove_garbage(repo, REMOTE, plan.items, kept=plan.kept)


def _planned_chunks(plan: tensorspace.GarbagePlan) -> set[str]:
    return {g.id for g in plan.items if g.kind == "chunk"}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.servers)])
def bucket_or_none(request: pytest.FixtureRequest) -> Bucket | None:
    return request.getfixturevalue("s3") if request.param == "s3" else None


def test_gc_listing_before_a_push_that_reuses_old_chunks_spares_them(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket_or_none: Bucket | None
) -> None:
    """gc lists -> push writes v2, reusing v1's chunks (an unchanged tensor, a delta base) -> gc
    removes v1: the recipes listed again before the chunk deletions keep v2's chunks."""
    store = _store(cli, repo, bucket_or_none)
    v1, tensors = _two_versions(cli, repo)
    plan = _gc_plan(repo, keep=set())  # v1 is on no kept branch
    v2 = _version(repo, tensors, "v2")
    pushed = cli("push", cwd=repo)
    reused = _part(store, v2, "head.weight")
    delta = _part(store, v2, "enc.weight")

    _gc_remove(repo, plan)

    assert pushed.exit_code == 0, pushed.stderr
    assert {reused.id, delta.base} <= _planned_chunks(plan), "the plan did mean to delete them"
    assert store.has(reused.id) and store.has(str(delta.base)), "v2 needs them: gc spares them"
    with pytest.raises(FileNotFoundError):
        store.recipe(v1)  # gc did remove v1
    _pulls(cli, repo, tmp_path, v2)


def test_gc_deleting_between_the_probe_and_the_recipe_write_is_undone_by_the_push(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """push probes v1's chunk (there: not uploaded) -> gc deletes it -> push writes the recipe:
    push's check after the recipe finds it gone and uploads it again, whole."""
    store = _store(cli, repo, None)
    v1, tensors = _two_versions(cli, repo)
    victim = _part(store, v1, "head.weight").id
    v2 = _version(repo, tensors, "v2")
    _deleting_on_recipe_write(monkeypatch, store, v2, victim)

    pushed = cli("push", cwd=repo)

    assert pushed.exit_code == 0, pushed.stderr
    assert store.has(victim), "the lost chunk is uploaded again"
    _pulls(cli, repo, tmp_path, v2)


def test_a_deleted_delta_base_makes_the_push_store_the_delta_whole(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base of v2's delta (a chunk of v1) deleted before v2's recipe lands: v2's chunk is
    uploaded again whole (its raw bytes are local), so v2 no longer needs the base."""
    store = _store(cli, repo, None)
    v1, tensors = _two_versions(cli, repo)
    base = _part(store, v1, "enc.weight").id
    v2 = _version(repo, tensors, "v2")
    _deleting_on_recipe_write(monkeypatch, store, v2, base)

    pushed = cli("push", cwd=repo)
    delta = _part(store, v2, "enc.weight")

    assert pushed.exit_code == 0, pushed.stderr
    assert delta.base == base and not store.has(base)
    _pulls(cli, repo, tmp_path, v2)


def test_a_chunk_deleted_again_while_it_is_restored_fails_the_push_naming_the_version(
    repo: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc that keeps deleting the chunk (every write of it is removed at once): exit 6."""
    store = _store(cli, repo, None)
    v1, tensors = _two_versions(cli, repo)
    victim = _part(store, v1, "head.weight").id
    v2 = _version(repo, tensors, "v2")
    _deleting_on_recipe_write(monkeypatch, store, v2, victim, again=True)

    pushed = cli("push", cwd=repo)

    assert_one_line_error(
        pushed, 6,
        f"error: chunk {victim[:12]} of net v2 ({v2[:8]}) was deleted from remote 'store' while it was pushed "
        "(a `mvc gc --remote` running elsewhere?); the version on the remote is incomplete",
        "hint: run `mvc push` again once that gc is done",
    )  # fmt: skip


def test_push_again_restores_a_chunk_deleted_by_hand(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """The recipe is on the remote, so push used to skip the version; now it checks its chunks."""
    store = _store(cli, repo, None)
    v1, _ = _two_versions(cli, repo)
    victim = _part(store, v1, "head.weight").id
    store.delete(victim)

    again = cli("push", cwd=repo)
    intact = cli("push", cwd=repo)

    assert again.exit_code == 0 and again.stdout.startswith("pushed 1 object"), again.stdout
    assert store.has(victim)
    assert intact.exit_code == 0 and intact.stdout.startswith("pushed 0 objects"), intact.stdout
    _pulls(cli, repo, tmp_path, v1)


def _deleting_on_recipe_write(monkeypatch: pytest.MonkeyPatch, store: Store, md5: str, cid: str, *, again: bool = False) -> None:
    """A concurrent gc: deletes chunk ``cid`` just before the recipe of ``md5`` is written
    (``again``: and every time the chunk is written back)."""
    put = ChunkStore.put
    recipe_at = chunkstore.recipe_rel(md5)
    chunk_at = chunkstore.chunk_rel(cid)

    def racing_put(self: Any, rel: str, data: bytes) -> None:
        if rel == recipe_at and store.has(cid):
            store.delete(cid)
        put(self, rel, data)
        if again and rel == chunk_at:
            store.delete(cid)

    monkeypatch.setattr(ChunkStore, "put", racing_put)


def test_mvc_gc_spares_what_a_clone_pushes_while_it_asks_and_reports_only_what_it_removed(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The whole command: another clone pushes v2 (reusing v1's chunks) while gc waits for its
    confirmation; gc removes v1's recipe, spares the reused chunks and leaves them out of its result."""
    store = _store(cli, repo, None)
    git(repo, "checkout", "-q", "-b", "exp")
    v1, tensors = _two_versions(cli, repo)
    other = clone(repo, tmp_path / "other")
    git(other, "checkout", "-q", "exp")
    assert cli("pull", cwd=other).exit_code == 0
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "exp")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    pushed: list[str] = []

    def push_elsewhere(plan: Any) -> bool:
        md5 = _version(other, tensors, "v2")
        result = cli("push", cwd=other)
        assert result.exit_code == 0, result.stderr
        pushed.append(md5)
        return True

    result = mvc.gc(repo=repo, cache=False, remote=REMOTE, older_than=0, confirm=push_elsewhere)
    v2 = pushed[0]
    needed = {p.id for p in store.recipe(v2).parts} | {str(_part(store, v2, "enc.weight").base)}
    removed = {r.oid for r in result.removed}

    assert f"recipe:{v1}" in removed
    assert not {f"chunk:{c}" for c in needed} & removed, "spared chunks are not reported as removed"
    assert all(store.has(c) for c in needed)
    git(other, "push", "-q", str(repo), "exp:exp")
    git(repo, "checkout", "-q", "exp")
    _pulls(cli, repo, tmp_path, v2)


def test_push_again_cuts_a_chain_whose_deepest_base_was_deleted(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """v3's part is a delta on v2's, itself a delta on v1's: the check follows the chain past
    what v3's recipe names (by the chunks' headers) and uploads v3's part whole."""
    store = _store(cli, repo, None)
    v1, tensors = _two_versions(cli, repo)
    v2 = _version(repo, tensors, "v2")
    assert cli("push", cwd=repo).exit_code == 0
    v3 = _version(repo, {**tensors, "enc.weight": tensors["enc.weight"] * np.float32(1.001)}, "v3")
    assert cli("push", cwd=repo).exit_code == 0
    deepest = _part(store, v1, "enc.weight").id
    part = _part(store, v3, "enc.weight")
    store.delete(deepest)

    again = cli("push", cwd=repo)

    assert (part.depth, _part(store, v2, "enc.weight").base) == (2, deepest)
    assert again.exit_code == 0 and again.stdout.startswith("pushed 1 object"), again.stdout
    assert not store.has(deepest), "the base is not needed any more"
    _pulls(cli, repo, tmp_path, v3)

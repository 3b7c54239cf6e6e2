"""Directory (sharded) versions on a tensors remote (issue 15): each shard stored as chunks and
deltas against the same shard of the parent version, the listing as a plain DVC object.

Every transfer runs against the real local S3 server (SeaweedFS); the bucket is only
inspected (or damaged on purpose) with s3fs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from tests.conftest import assert_one_line_error, git
from tests.remote_servers import servers
from tests.test_cloud_remotes import Bucket, clone, commit_all
from tests.test_tensors import add_tensors_remote, chunk_path, recipe, save, stored
from tests.test_tensors import s3 as s3  # noqa: PLC0414 - the S3 prefix fixture
from tests.test_tensors_routes import use_env_credentials

SHARDS = 3
SHAPES = {"a.weight": (512, 640), "a.bias": (640,), "b.weight": (300, 1000)}
CKPT = "models/ckpt"


def shard_name(i: int) -> str:
    return f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"


def checkpoint_steps(root: Path, count: int = 2, seed: int = 0) -> Iterator[dict[str, str]]:
    """Versions of a 3-shard checkpoint directory; each step fine-tunes shard 2 only (shard 1 and
    3 unchanged). Yields ``{relpath: md5}`` after ``mvc add`` + commit."""
    rng = np.random.default_rng(seed)
    shards = [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(SHARDS)]
    for i in range(count):
        out = {shard_name(j): save(root / CKPT / shard_name(j), shards[j]) for j in range(SHARDS)}
        (root / CKPT / "config.json").write_text(json.dumps({"step": 0}))
        mvc.add(root / CKPT, repo=root)
        commit_all(root, f"v{i + 1}")
        yield out
        shards[1] = {k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in shards[1].items()}


def dir_md5(root: Path) -> str:
    text = (root / "models" / "ckpt.dvc").read_text()
    return next(line.split("md5:")[1].strip() for line in text.splitlines() if "md5:" in line)


def tree(root: Path) -> dict[str, str]:
    base = root / CKPT
    return {str(p.relative_to(base)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(base.rglob("*")) if p.is_file()}


def bytes_under(b: Bucket, prefix: str) -> dict[str, int]:
    fs = b.fs()
    fs.invalidate_cache()
    return {k: fs.info(p)["size"] for k, p in stored(b, fs).items() if k.startswith(prefix)}


def pushed_chain(cli: Callable[..., Any], repo: Path, s3: Bucket) -> tuple[list[dict[str, str]], list[str], list[dict[str, int]]]:
    """v1 and v2 pushed one after the other; the trees, dir md5s and the chunks on the bucket after each."""
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    trees, dirs, chunks = [], [], []
    for files in checkpoint_steps(repo):
        trees.append({**files, "config.json": hashlib.md5((repo / CKPT / "config.json").read_bytes()).hexdigest()})
        dirs.append(dir_md5(repo))
        pushed = cli("push", cwd=repo)
        assert pushed.exit_code == 0, pushed.stderr
        chunks.append(bytes_under(s3, "mvc/chunks/"))
    return trees, dirs, chunks


@pytest.mark.servers
def test_directory_version_stores_shards_as_chunks_and_v2_costs_what_changed(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    trees, dirs, chunks = pushed_chain(cli, repo, s3)
    objects = stored(s3)
    logical = sum((repo / CKPT / shard_name(j)).stat().st_size for j in range(SHARDS))
    v2_bytes = sum(size for key, size in chunks[1].items() if key not in chunks[0])
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    pulled = cli("pull", cwd=other)
    pulled_v2 = tree(other)
    status = json.loads(cli("status", "--json", cwd=other).stdout)
    rolled = cli("checkout", "ckpt@v1", cwd=other)
    pulled_v1 = tree(other)
    again = cli("push", cwd=repo)
    report = json.loads(cli("storage", "--json", cwd=repo).stdout)

    plain = {k for k in objects if k.startswith("files/")}
    listings = {f"files/md5/{d[:2]}/{d[2:]}" for d in dirs}
    assert plain == listings, "only the listings are plain DVC objects"
    for files in trees:
        for md5 in files.values():
            assert f"mvc/recipes/{md5[:2]}/{md5[2:]}" in objects
    # v2 changed one shard of three (fine-tune noise): its new chunks are a small delta
    assert trees[0][shard_name(0)] == trees[1][shard_name(0)] and trees[0][shard_name(1)] != trees[1][shard_name(1)]
    assert 0 < v2_bytes < 0.25 * logical, (v2_bytes, logical)
    assert pulled.exit_code == 0, pulled.stderr
    assert pulled_v2 == trees[1]
    assert [(s["workspace"], s["cache"], s["remote"]) for s in status] == [("ok", "ok", "ok")]
    assert rolled.exit_code == 0, rolled.stderr
    assert pulled_v1 == trees[0]
    assert again.exit_code == 0 and again.stdout.startswith("pushed 0 objects"), again.stdout
    # mvc storage lists each directory version once, summed over its files
    assert [(v["name"], v["version"], v["hash"]) for v in report["versions"]] == [("ckpt", "v1", dirs[0]), ("ckpt", "v2", dirs[1])]
    first, second = report["versions"]
    assert first["logical_bytes"] == second["logical_bytes"] > logical
    assert second["stored_bytes"] < 0.25 * first["stored_bytes"]
    assert second["shared_bytes"] > 0.6 * second["logical_bytes"]


@pytest.mark.servers
def test_shard_delta_is_taken_against_the_same_shard_of_the_parent(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    from mvc import tensorstore

    trees, _, _ = pushed_chain(cli, repo, s3)
    changed = recipe(s3, trees[1][shard_name(1)])
    codecs = {tensorstore.read_head(s3.fs().cat_file(chunk_path(s3, p.id)), p.id).codec for p in changed.parts if p.tensor == "a.weight"}
    bases = {p.id for p in recipe(s3, trees[0][shard_name(1)]).parts}

    assert codecs == {tensorstore.SUB}
    assert {p.base for p in changed.parts if p.base} <= bases


@pytest.mark.servers
def test_missing_chunk_of_one_shard_fails_with_exit_6_naming_the_version_and_writes_nothing(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    trees, _, _ = pushed_chain(cli, repo, s3)
    shard = trees[1][shard_name(2)]
    victim = next(p for p in recipe(s3, shard).parts if p.tensor == "a.weight")
    s3.fs().rm_file(chunk_path(s3, victim.id))
    other = clone(repo, tmp_path / "clone", with_local_config=True)

    failed = cli("pull", cwd=other)

    assert_one_line_error(
        failed, 6,
        f"error: chunk {victim.id[:12]} of ckpt v2 file {shard_name(2)} ({shard[:8]}) is missing from remote 'store'; "
        "nothing was written",
        "hint: upload the whole file from a machine that has the weights (`mvc push --full ckpt@v2`)",
    )  # fmt: skip
    assert not (other / CKPT).exists(), "nothing reaches the work tree"


@pytest.mark.servers
def test_released_directory_version_is_pullable_with_plain_dvc(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    steps = checkpoint_steps(repo)
    first = next(steps)
    tagged = cli("tag", "ckpt", "v1.0.0", cwd=repo)
    pushed = cli("push", cwd=repo)
    objects = stored(s3)
    env = {**os.environ, **servers.client_env(s3.server)}
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    git(other, "checkout", "-q", "ckpt@v1.0.0")
    release = subprocess.run([sys.executable, "-m", "dvc", "pull"], cwd=other, env=env, capture_output=True, text=True)

    assert (tagged.exit_code, pushed.exit_code) == (0, 0), tagged.stderr + pushed.stderr
    for md5 in first.values():
        assert f"files/md5/{md5[:2]}/{md5[2:]}" in objects and f"mvc/recipes/{md5[:2]}/{md5[2:]}" in objects
    assert release.returncode == 0, release.stderr
    assert {k: v for k, v in tree(other).items() if k != "config.json"} == first


@pytest.mark.servers
def test_push_by_ref_and_all_versions_store_directory_versions_as_deltas(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    trees = list(checkpoint_steps(repo))
    pushed = cli("push", "--all-versions", cwd=repo)
    by_ref = cli("push", "ckpt@v1", cwd=repo)
    objects = stored(s3)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    pulled = cli("pull", cwd=other)
    rolled = cli("checkout", "ckpt@v1", cwd=other)

    assert pushed.exit_code == 0, pushed.stderr
    assert by_ref.exit_code == 0 and by_ref.stdout.startswith("pushed 0 objects"), by_ref.stdout
    for files in trees:
        for md5 in files.values():
            assert f"mvc/recipes/{md5[:2]}/{md5[2:]}" in objects
    assert any(p.base for p in recipe(s3, trees[1][shard_name(1)]).parts), "v2's changed shard is a delta"
    assert pulled.exit_code == 0, pulled.stderr
    assert rolled.exit_code == 0, rolled.stderr
    assert {k: v for k, v in tree(other).items() if k != "config.json"} == trees[0]


@pytest.mark.servers
def test_gc_keeps_the_shard_recipes_of_kept_directory_versions(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    trees, _, _ = pushed_chain(cli, repo, s3)
    # only v2 stays: history squashed into one commit
    git(repo, "checkout", "-q", "--orphan", "squashed")
    git(repo, "commit", "-q", "-m", "squash")
    git(repo, "branch", "-q", "-D", "main")
    git(repo, "reflog", "expire", "--expire=now", "--all")

    plan = json.loads(cli("gc", "--no-cache", "--remote", "store", "--dry-run", "--older-than", "0", "--json", cwd=repo).stdout)
    recipes_gone = {r["oid"] for r in plan["removed"] if r["oid"].startswith("recipe:")}
    done = cli("gc", "--no-cache", "--remote", "store", "--older-than", "0", "--yes", cwd=repo)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    pulled = cli("pull", cwd=other)

    assert recipes_gone == {f"recipe:{trees[0][shard_name(1)]}"}, "only v1's changed shard goes"
    assert done.exit_code == 0, done.stderr
    assert pulled.exit_code == 0, pulled.stderr
    assert tree(other) == trees[1]


@pytest.mark.servers
def test_verify_remote_checks_each_shard_of_a_directory_version(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    trees, _, _ = pushed_chain(cli, repo, s3)
    ok = cli("verify", "ckpt@v1", "ckpt@v2", "--remote", "store", "--json", cwd=repo)
    shard = trees[1][shard_name(1)]
    lost = next(p.id for p in recipe(s3, shard).parts if p.tensor == "b.weight")
    s3.fs().rm_file(chunk_path(s3, lost))
    broken = cli("verify", "ckpt@v2", "--remote", "store", cwd=repo)
    repaired = cli("verify", "ckpt@v2", "--remote", "store", "--repair", cwd=repo)
    after = cli("verify", "ckpt@v2", "--remote", "store", cwd=repo)

    assert ok.exit_code == 0, ok.stderr
    assert [(c["version"], c["remote"]) for c in json.loads(ok.stdout)["checks"]] == [(1, "ok"), (2, "ok")]
    assert broken.exit_code == 6, broken.stderr
    assert f"remote 'store' holds a corrupt copy of object {shard[:8]} (chunk {lost[:12]} is missing)" in broken.stderr
    assert repaired.exit_code == 0, repaired.stderr
    assert after.exit_code == 0, after.stderr


@pytest.mark.servers
def test_get_rebuilds_a_directory_version_held_only_as_listing_and_chunks(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees, _, _ = pushed_chain(cli, repo, s3)
    use_env_credentials(monkeypatch, s3)  # a deploy machine: no .dvc/config.local
    deploy = tmp_path / "deploy"

    got = cli("get", str(repo), "ckpt@v1", "-o", str(deploy))

    assert got.exit_code == 0, got.stderr
    out = deploy / "ckpt"
    assert {str(p.relative_to(out)): hashlib.md5(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()} == trees[0]
    assert sorted(p.name for p in deploy.iterdir()) == ["ckpt"], "no staging left behind"


@pytest.mark.parametrize("route", ["ref", "refs-at-once", "all-versions", "hook"])
def test_every_push_route_stores_a_directory_version_shard_by_shard_with_deltas(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, route: str
) -> None:
    from tests.test_tensors_routes import local_recipe, tensors_dir_remote

    store = tmp_path / "store"
    tensors_dir_remote(cli, repo, store)
    trees = list(checkpoint_steps(repo))

    if route == "ref":
        results = [cli("push", "ckpt@v1", cwd=repo), cli("push", "ckpt@v2", cwd=repo)]
    elif route == "refs-at-once":
        results = [cli("push", "ckpt@v2", "ckpt@v1", cwd=repo)]  # the child named first: the parent still goes first
    elif route == "all-versions":
        results = [cli("push", "--all-versions", cwd=repo)]
    else:
        assert cli("install-hooks", cwd=repo).exit_code == 0
        git(tmp_path, "init", "-q", "--bare", "origin.git")
        git(repo, "remote", "add", "origin", str(tmp_path / "origin.git"))
        pushed = subprocess.run(["git", "push", "-q", "origin", "HEAD"], cwd=repo, capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr
        results = []

    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results]
    first, second = local_recipe(store, trees[0][shard_name(1)]), local_recipe(store, trees[1][shard_name(1)])
    deltas = [p for p in second.parts if p.tensor is not None]
    assert deltas and all(p.depth == 1 for p in deltas), [(p.tensor, p.depth) for p in second.parts]
    assert {p.base for p in deltas} <= {p.id for p in first.parts}
    for files in trees:
        for md5 in files.values():
            assert (store / "mvc" / "recipes" / md5[:2] / md5[2:]).is_file()

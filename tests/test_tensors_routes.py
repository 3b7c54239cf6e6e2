"""The tensors layout (issue 15) on every route: push by ref / all versions / pre-push hook,
``diff --stats`` from the changed tensors' chunks only, ``get`` and ``verify --remote``.

Remotes are real: a local directory and the local S3 (SeaweedFS) / GCS (fake-gcs-server)
servers; the stored chunks are only inspected (or removed on purpose) with the filesystem
or s3fs / gcsfs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from mvc import tensorstore
from tests import test_cloud_remotes as cloud
from tests.conftest import assert_one_line_error, git
from tests.test_cloud_remotes import Bucket, clone, commit_all, use_env_credentials
from tests.test_tensors import add_tensors_remote, chain_steps, chunk_path, recipe, save

bucket = cloud.bucket  # the S3 and GCS prefix fixtures, shared with the cloud remote tests
s3 = cloud.s3

WEIGHTS = "models/net.safetensors"


def local_recipe(store: Path, md5: str) -> tensorstore.Recipe:
    return tensorstore.Recipe.from_bytes((store / "mvc" / "recipes" / md5[:2] / md5[2:]).read_bytes(), md5)


def tensors_dir_remote(cli: Callable[..., Any], repo: Path, store: Path) -> None:
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default", cwd=repo).exit_code == 0
    commit_all(repo, "tensors remote")


# ---------------------------------------------------------------------------- push routes


@pytest.mark.parametrize("route", ["ref", "refs-at-once", "all-versions", "hook"])
def test_every_push_route_stores_a_version_as_a_delta_against_its_parent(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, route: str
) -> None:
    store = tmp_path / "store"
    tensors_dir_remote(cli, repo, store)
    md5s = list(chain_steps(repo, 2))

    if route == "ref":
        results = [cli("push", "net@v1", cwd=repo), cli("push", "net@v2", cwd=repo)]
    elif route == "refs-at-once":
        results = [cli("push", "net@v2", "net@v1", cwd=repo)]  # the child named first: the parent still goes first
    elif route == "all-versions":
        results = [cli("push", "--all-versions", cwd=repo)]
    else:
        assert cli("install-hooks", cwd=repo).exit_code == 0
        git(tmp_path, "init", "-q", "--bare", "origin.git")
        git(repo, "remote", "add", "origin", str(tmp_path / "origin.git"))
        pushed = subprocess.run(["git", "push", "-q", "origin", "HEAD"], cwd=repo, capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr
        results = []
    report = json.loads(cli("storage", "--json", cwd=repo).stdout)

    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results]
    first, second = local_recipe(store, md5s[0]), local_recipe(store, md5s[1])
    assert all(p.depth == 0 for p in first.parts)
    deltas = [p for p in second.parts if p.tensor is not None]
    assert deltas and all(p.depth == 1 for p in deltas), [(p.tensor, p.depth) for p in second.parts]
    assert {p.base for p in deltas} <= {p.id for p in first.parts}
    v1, v2 = report["versions"]
    assert (v1["version"], v2["version"]) == ("v1", "v2")
    assert v2["stored_bytes"] < 0.8 * v1["stored_bytes"], report


# ---------------------------------------------------------------------------- diff --stats


def frozen_backbone_chain(root: Path) -> list[str]:
    """v1, then v2 where only the head trained: the 4 MiB backbone is unchanged."""
    rng = np.random.default_rng(3)
    tensors = {
        "backbone.weight": rng.standard_normal((1024, 1024)).astype(np.float32),
        "head.weight": rng.standard_normal((300, 1000)).astype(np.float32),
        "head.bias": rng.standard_normal(1000).astype(np.float32),
    }
    md5s = []
    for i in range(2):
        md5s.append(save(root / WEIGHTS, tensors))
        mvc.add(root / WEIGHTS, repo=root)
        commit_all(root, f"v{i + 1}")
        tensors = {k: (v + 1e-2 * rng.standard_normal(v.shape).astype(np.float32)) if k.startswith("head") else v for k, v in tensors.items()}
    return md5s


@pytest.mark.servers
def test_diff_stats_reads_only_the_changed_tensors_from_a_tensors_remote(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    add_tensors_remote(cli, repo, bucket)
    commit_all(repo, "tensors remote")
    md5s = frozen_backbone_chain(repo)
    assert cli("push", "--all-versions", cwd=repo).exit_code == 0
    with_cache = json.loads(cli("diff", "net@v1", "net@v2", "--stats", "--json", cwd=repo).stdout)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    # The backbone did not change: its chunks (shared by both versions) leave the remote, so
    # a diff that read them would fail.
    backbone = {p.id for p in recipe(bucket, md5s[1]).parts if p.tensor == "backbone.weight"}
    assert backbone and backbone == {p.id for p in recipe(bucket, md5s[0]).parts if p.tensor == "backbone.weight"}
    for cid in backbone:
        bucket.fs().rm_file(chunk_path(bucket, cid))

    remote_only = cli("diff", "net@v1", "net@v2", "--stats", "--json", cwd=other)
    text = cli("diff", "net@v1", "net@v2", "--stats", cwd=other)

    assert remote_only.exit_code == 0, remote_only.stderr
    got = json.loads(remote_only.stdout)
    assert {s["name"] for s in got["stats"]} == {"head.weight", "head.bias"}
    assert got["stats"] == with_cache["stats"]
    assert text.exit_code == 0 and "head.weight" in text.stdout
    cache = other / ".dvc" / "cache"
    assert not [p for p in cache.rglob("*") if p.is_file()], "no version was fetched whole into the cache"
    assert not [p for p in (other / ".dvc" / "tmp").rglob("*") if p.is_file() and "chunks" in str(p)], "no chunk left behind"


def test_diff_stats_with_a_chunk_missing_fails_naming_the_version(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    tensors_dir_remote(cli, repo, store)
    md5s = frozen_backbone_chain(repo)
    assert cli("push", "--all-versions", cwd=repo).exit_code == 0
    other = clone(repo, tmp_path / "clone")
    head = next(p.id for p in local_recipe(store, md5s[1]).parts if p.tensor == "head.weight")
    (store / "mvc" / "chunks" / head[:2] / head[2:]).unlink()

    result = cli("diff", "net@v1", "net@v2", "--stats", cwd=other)

    assert_one_line_error(result, 6, f"error: chunk {head[:12]} of net v2 ({md5s[1][:8]}) is missing from remote 'shared'")


# ---------------------------------------------------------------------------- get


@pytest.mark.servers
def test_get_rebuilds_a_version_the_remote_holds_only_as_chunks(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tensors_remote(cli, repo, bucket)
    commit_all(repo, "tensors remote")
    md5s = list(chain_steps(repo, 2))
    assert cli("push", "--all-versions", cwd=repo).exit_code == 0
    assert not bucket.objects(), "no plain DVC object: only chunks and recipes"
    use_env_credentials(monkeypatch, bucket)  # a deploy machine: no .dvc/config.local
    deploy = tmp_path / "deploy"

    got = cli("get", str(repo), "net@v2", "-o", str(deploy), "--json")
    first = cli("get", str(repo), "net@v1", "-o", str(tmp_path / "first"))

    assert got.exit_code == 0, got.stderr
    assert json.loads(got.stdout)["remote"] == "store"
    assert hashlib.md5((deploy / "net.safetensors").read_bytes()).hexdigest() == md5s[1]
    assert first.exit_code == 0, first.stderr
    assert hashlib.md5((tmp_path / "first" / "net.safetensors").read_bytes()).hexdigest() == md5s[0]
    assert sorted(p.name for p in deploy.iterdir()) == ["net.safetensors"], "no staging left behind"


@pytest.mark.servers
def test_get_with_a_chunk_missing_fails_with_exit_6_and_writes_nothing(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    md5s = list(chain_steps(repo, 2))
    assert cli("push", "--all-versions", cwd=repo).exit_code == 0
    lost = next(p.id for p in recipe(s3, md5s[1]).parts if p.tensor == "head.weight")
    s3.fs().rm_file(chunk_path(s3, lost))
    use_env_credentials(monkeypatch, s3)
    deploy = tmp_path / "deploy"

    result = cli("get", str(repo), "net@v2", "-o", str(deploy))

    assert_one_line_error(result, 6, f"error: chunk {lost[:12]} of net v2 ({md5s[1][:8]}) is missing from remote 'store'")
    assert not deploy.exists() or not list(deploy.iterdir()), "nothing was written"


# ---------------------------------------------------------------------------- verify --remote


def error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error: "))


@pytest.mark.servers
def test_verify_remote_sees_versions_stored_as_recipes_and_chunks(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    add_tensors_remote(cli, repo, bucket)
    commit_all(repo, "tensors remote")
    md5s = list(chain_steps(repo, 3))
    assert cli("push", "net@v1", "net@v2", cwd=repo).exit_code == 0  # v3 is not pushed

    pushed = cli("verify", "net@v1", "net@v2", "--remote", "store", "--json", cwd=repo)
    unpushed = cli("verify", "net@v3", "--remote", "store", cwd=repo)
    lost = next(p.id for p in recipe(bucket, md5s[1]).parts if p.tensor == "head.weight")
    bucket.fs().rm_file(chunk_path(bucket, lost))
    broken = cli("verify", "net@v2", "--remote", "store", cwd=repo)
    repaired = cli("verify", "net@v2", "--remote", "store", "--repair", cwd=repo)
    after = cli("verify", "net@v2", "--remote", "store", "--json", cwd=repo)

    assert pushed.exit_code == 0, pushed.stderr
    assert [(c["version"], c["remote"], c["status"]) for c in json.loads(pushed.stdout)["checks"]] == [(1, "ok", "ok"), (2, "ok", "ok")]
    assert unpushed.exit_code == 3
    assert error_line(unpushed.stderr) == f"error: net v3 ({md5s[2][:8]}): remote 'store' lacks object {md5s[2][:8]}"
    assert broken.exit_code == 6, broken.stderr
    assert error_line(broken.stderr) == (
        f"error: net v2 ({md5s[1][:8]}): remote 'store' holds a corrupt copy of object {md5s[1][:8]} (chunk {lost[:12]} is missing)"
    )
    assert repaired.exit_code == 0, repaired.stderr
    assert f"uploaded a good copy of {md5s[1][:8]}" in repaired.stderr
    assert [c["remote"] for c in json.loads(after.stdout)["checks"]] == ["ok"], "the plain object now serves the version"


def test_verify_remote_re_decodes_chunks_on_a_directory_remote(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    tensors_dir_remote(cli, repo, store)
    md5s = list(chain_steps(repo, 2))
    assert cli("push", "--all-versions", cwd=repo).exit_code == 0
    ok_before = cli("verify", "net@v2", "--remote", "shared", cwd=repo)
    part = next(p for p in local_recipe(store, md5s[1]).parts if p.tensor == "enc.weight")
    path = store / "mvc" / "chunks" / part.id[:2] / part.id[2:]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # the header still reads; the payload does not decode
    path.chmod(0o644)
    path.write_bytes(bytes(data))

    result = cli("verify", "net@v2", "--remote", "shared", cwd=repo)

    assert ok_before.exit_code == 0, ok_before.stderr
    assert result.exit_code == 6
    assert error_line(result.stderr) == (
        f"error: net v2 ({md5s[1][:8]}): remote 'shared' holds a corrupt copy of object {md5s[1][:8]} (chunk {part.id[:12]} does not decode)"
    )


# ---------------------------------------------------------------------------- directory versions


def _dir_md5(root: Path) -> str:
    text = (root / "ckpt.dvc").read_text()
    return next(line.split("md5:")[1].strip() for line in text.splitlines() if "md5:" in line)


@pytest.mark.parametrize("layout", ["tensors", "full"])
def test_a_directory_version_pushed_by_ref_brings_its_files_as_recipes_or_plain_objects(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, layout: str
) -> None:
    from tests.conftest import write_safetensors

    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", layout, "--default", cwd=repo).exit_code == 0
    commit_all(repo, "remote")
    ckpt = repo / "ckpt"
    for i in range(2):
        write_safetensors(ckpt / f"model-0000{i + 1}-of-00002.safetensors", seed=i)
    mvc.add(ckpt, name="llm", repo=repo)
    commit_all(repo, "llm v1")

    pushed = cli("push", "llm@v1", cwd=repo)
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", "llm", cwd=other)
    checked = cli("verify", "llm", "--remote", "shared", "--json", cwd=other)
    got = cli("get", str(repo), "llm", "-o", str(tmp_path / "out"))
    report = cli("storage", "--json", cwd=repo)

    assert pushed.exit_code == 0, pushed.stderr
    if layout == "tensors":  # the listing as a plain object, each shard as a recipe and chunks
        assert (store / "mvc" / "recipes").is_dir()
        assert [p.name for p in (store / "files" / "md5").rglob("*") if p.is_file()] == [f"{md5[2:]}" for md5 in [_dir_md5(repo)]]
    else:
        assert (store / "files" / "md5").is_dir() and not (store / "mvc" / "recipes").exists(), "whole objects, no recipe"
    assert pulled.exit_code == 0, pulled.stderr
    assert {p.name: p.read_bytes() for p in (other / "ckpt").iterdir()} == {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert [c["remote"] for c in json.loads(checked.stdout)["checks"]] == ["ok"]
    assert got.exit_code == 0, got.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "ckpt").iterdir()) == sorted(p.name for p in ckpt.iterdir())
    if layout == "tensors":
        assert report.exit_code == 0, report.stderr
        assert [(v["name"], v["version"]) for v in json.loads(report.stdout)["versions"]] == [("llm", "v1")]

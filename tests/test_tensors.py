"""The tensors remote layout (issue 15): chunked, deduplicated, delta storage of versions.

Codec round trips run on bytes; every transfer runs against the real local S3 (SeaweedFS)
and GCS (fake-gcs-server) servers, and the bucket is only inspected (or damaged on
purpose) with s3fs / gcsfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from mvc import dvctensors, tensorstore
from mvc.errors import IntegrityError
from tests import test_cloud_remotes as cloud
from tests.conftest import assert_one_line_error, git
from tests.remote_servers import servers
from tests.test_cloud_remotes import Bucket, clone, commit_all

bucket = cloud.bucket  # the S3 and GCS prefix fixtures, shared with the cloud remote tests
s3 = cloud.s3

SHAPES = {"enc.weight": (512, 640), "enc.bias": (640,), "head.weight": (300, 1000), "head.bias": (1000,)}


def save(path: Path, tensors: dict[str, np.ndarray]) -> str:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return hashlib.md5(path.read_bytes()).hexdigest()


def add_tensors_remote(cli: Callable[..., Any], root: Path, b: Bucket, *, name: str = "store", layout: str = "tensors") -> None:
    server = b.server
    args = ["remote", "add", name, b.url, "--endpoint-url", server.endpoint_url, "--default", "--layout", layout, "--force"]
    if b.kind == "s3":
        args += ["--access-key-id", server.access_key, "--secret-access-key", server.secret_key]
    result = cli(*args, cwd=root)
    assert result.exit_code == 0, result.stderr
    if b.kind == "gs":
        result = cli("remote", "modify", name, "allow_anonymous_login", "true", cwd=root)
        assert result.exit_code == 0, result.stderr


def stored(b: Bucket, fs: Any = None) -> dict[str, str]:
    """``{path below the prefix: path}`` of every object under the prefix."""
    fs = fs or b.fs()
    fs.invalidate_cache()
    try:
        return {p[len(b.prefix) + 1 :]: p for p in fs.find(b.prefix)}
    except FileNotFoundError:
        return {}


def recipe(b: Bucket, md5: str) -> tensorstore.Recipe:
    return tensorstore.Recipe.from_bytes(b.fs().cat_file(f"{b.prefix}/mvc/recipes/{md5[:2]}/{md5[2:]}"), md5)


def chunk_path(b: Bucket, cid: str) -> str:
    return f"{b.prefix}/mvc/chunks/{cid[:2]}/{cid[2:]}"


def pushed_clone(cli: Callable[..., Any], repo: Path, tmp_path: Path, b: Bucket, count: int = 3) -> tuple[list[str], Path]:
    """A chain pushed to a tensors remote (each version pushed as it was made) and a fresh clone of it."""
    add_tensors_remote(cli, repo, b)
    commit_all(repo, "tensors remote")
    md5s = []
    for i, md5 in enumerate(chain_steps(repo, count)):
        md5s.append(md5)
        result = cli("push", cwd=repo)
        assert result.exit_code == 0, f"v{i + 1}: {result.stderr}"
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    return md5s, other


def chain_steps(root: Path, count: int, seed: int = 0):  # noqa: ANN201 - a generator of md5s
    rng = np.random.default_rng(seed)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    for i in range(count):
        md5 = save(root / "models" / "net.safetensors", tensors)
        mvc.add(root / "models" / "net.safetensors", repo=root)
        commit_all(root, f"v{i + 1}")
        yield md5
        tensors = {k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in tensors.items()}


# ---------------------------------------------------------------------------- codec


def test_codec_round_trips_every_form_and_rejects_damage() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(100_001).astype(np.float32).tobytes()  # a tail shorter than the width
    child = (np.frombuffer(base, np.float32) + 1e-4 * rng.standard_normal(100_001).astype(np.float32)).tobytes()
    cid, bid = tensorstore.chunk_id(child), tensorstore.chunk_id(base)

    assert tensorstore.ungroup_bytes(tensorstore.group_bytes(child, 4), 4) == child
    delta, depth = tensorstore.encode(child, 4, base, bid, 2)
    packed, flat = tensorstore.encode(child, 4)
    raw, _ = tensorstore.encode(os.urandom(4096), 1)

    assert (tensorstore.read_head(delta, cid).codec, depth, tensorstore.read_head(delta, cid).base) == (tensorstore.SUB, 3, bid)
    assert (tensorstore.read_head(packed, cid).codec, flat) == (tensorstore.ZSTD, 0)
    assert tensorstore.read_head(raw, "x").codec == tensorstore.RAW
    assert len(delta) < len(packed) < len(child)
    assert tensorstore.decode(delta, cid, base) == child
    assert tensorstore.decode(packed, cid) == child
    small = rng.integers(0, 255, 50_000, dtype=np.uint8)
    bumped = small.copy()
    bumped[::100] += 1
    byte_delta, _ = tensorstore.encode(bumped.tobytes(), 1, small.tobytes(), tensorstore.chunk_id(small.tobytes()))
    assert tensorstore.read_head(byte_delta, "x").codec == tensorstore.XOR
    assert tensorstore.decode(byte_delta, tensorstore.chunk_id(bumped.tobytes()), small.tobytes()) == bumped.tobytes()
    for width, dtype in ((2, np.int16), (8, np.int64)):
        a = rng.integers(-(2**14), 2**14, 1000).astype(dtype).tobytes()
        b = rng.integers(-(2**14), 2**14, 1000).astype(dtype).tobytes()
        assert tensorstore.unsub_bytes(tensorstore.sub_bytes(a, b, width), b, width) == a
    # a chain at its bound is cut: the part is stored whole
    assert tensorstore.encode(child, 4, base, bid, tensorstore.MAX_DEPTH)[1] == 0
    damaged = bytearray(packed)
    damaged[-20] ^= 0xFF
    with pytest.raises(IntegrityError, match=f"chunk {cid[:12]} is corrupt"):
        tensorstore.decode(bytes(damaged), cid)
    with pytest.raises(IntegrityError):
        tensorstore.decode(delta, cid, base[:-4] + b"\0\0\0\0")  # the wrong base


def test_chunk_format_is_unchanged_by_the_fused_block_codec_and_older_chunks_decode() -> None:
    """The block-wise delta passes store exactly zstd(group(sub or xor)): chunks pushed before decode."""
    import zstandard

    rng = np.random.default_rng(3)
    count = 2 * tensorstore.BLOCK + 17  # several blocks and a partial one
    for width, dtype in ((2, np.float16), (4, np.float32), (8, np.float64)):
        base = rng.standard_normal(count).astype(dtype).tobytes()
        child = (np.frombuffer(base, dtype) + dtype(1e-3) * rng.standard_normal(count).astype(dtype)).tobytes()
        cid, bid = tensorstore.chunk_id(child), tensorstore.chunk_id(base)
        stored, depth = tensorstore.encode(child, width, base, bid)
        head = tensorstore.read_head(stored, cid)
        assert (head.codec, depth) == (tensorstore.SUB, 1)
        plain = zstandard.ZstdDecompressor().decompress(stored[head.payload_at :])
        assert plain == tensorstore.group_bytes(tensorstore.sub_bytes(child, base, width), width)
        assert tensorstore.decode(stored, cid, base) == child
        # a chunk written the older way (whole-part passes, zstd level 3) decodes to the same bytes
        older = stored[: head.payload_at] + zstandard.ZstdCompressor(level=3).compress(plain)
        assert tensorstore.decode(older, cid, base) == child
    # XOR for widths without an integer type or a part that is not whole elements: a 3-byte tail stays last
    base = rng.integers(0, 255, 4 * count + 3, dtype=np.uint8).tobytes()
    child = bytes(b ^ 1 if i % 7 == 0 else b for i, b in enumerate(base))
    cid, bid = tensorstore.chunk_id(child), tensorstore.chunk_id(base)
    stored, _ = tensorstore.encode(child, 4, base, bid)
    head = tensorstore.read_head(stored, cid)
    assert head.codec == tensorstore.XOR
    plain = zstandard.ZstdDecompressor().decompress(stored[head.payload_at :])
    assert plain == tensorstore.group_bytes(tensorstore.xor_bytes(child, base), 4)
    assert tensorstore.decode(stored, cid, base) == child


def test_segments_follow_the_safetensors_layout_and_group_small_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "m.safetensors"
    save(path, {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()})
    (tmp_path / "blob.bin").write_bytes(os.urandom(1000))

    fmt, segs = tensorstore.segments(path, path.stat().st_size)
    plan = list(tensorstore.pieces(segs, chunk_bytes=2**20))

    assert fmt == "safetensors"
    assert [(s.tensor, s.width) for s in segs] == [(None, 1), ("enc.bias", 4), ("enc.weight", 4), ("head.bias", 4), ("head.weight", 4)]
    assert sum(n for _, n, _, _ in plan) == path.stat().st_size
    assert [p for _, _, s, p in plan if s.tensor == "enc.weight"] == [0, 1]  # 1.25 MiB in 1 MiB pieces
    assert tensorstore.segments(tmp_path / "blob.bin", 1000)[0] == "opaque"


# ---------------------------------------------------------------------------- remote add


def test_remote_add_records_the_layout_in_mvc_settings_and_keeps_dvc_config_plain(repo: Path, cli: Callable[..., Any]) -> None:
    tensors = cli("remote", "add", "t", str(repo.parent / "t-store"), "--layout", "tensors")
    plain = cli("remote", "add", "f", str(repo.parent / "f-store"))
    bad = cli("remote", "add", "x", str(repo.parent / "x-store"), "--layout", "chunks")

    assert (tensors.exit_code, plain.exit_code) == (0, 0), tensors.stderr + plain.stderr
    assert tensors.stdout.strip().endswith("(layout tensors)")
    assert json.loads((repo / ".mvc" / "config.json").read_text())["extra"]["remotes"] == {"t": {"layout": "tensors"}}
    assert "layout" not in (repo / ".dvc" / "config").read_text()
    assert {r.name: r.layout for r in mvc.remote_list(repo=repo)} == {"local": "full", "t": "tensors", "f": "full"}
    assert ".mvc/config.json" in git(repo, "diff", "--cached", "--name-only")
    assert_one_line_error(bad, 2, "error: unknown layout 'chunks'", "hint: use --layout full or --layout tensors")
    assert "x" not in {r.name for r in mvc.remote_list(repo=repo)}
    # re-adding without --layout returns the remote to the full layout
    assert cli("remote", "add", "t", str(repo.parent / "t-store"), "--force").exit_code == 0
    assert {r.name: r.layout for r in mvc.remote_list(repo=repo)}["t"] == "full"


# ---------------------------------------------------------------------------- push / pull


@pytest.mark.servers
def test_push_uploads_chunks_and_deltas_and_pull_rebuilds_exact_bytes(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, bucket)
    objects = stored(bucket)
    again = cli("push", cwd=repo)

    pulled = cli("pull", cwd=other)
    pulled_md5 = hashlib.md5((other / "models" / "net.safetensors").read_bytes()).hexdigest()
    left = [p for p in (other / ".dvc" / "tmp" / "mvc-chunks").rglob("*") if p.is_file()]
    status = json.loads(cli("status", "--json", cwd=other).stdout)
    rolled = cli("checkout", "net@v1", cwd=other)
    report = json.loads(cli("storage", "--json", cwd=other).stdout)

    assert not [p for p in objects if "/files/md5/" in p or p.startswith("files/")], "no plain DVC object"
    assert {f"mvc/recipes/{m[:2]}/{m[2:]}" for m in md5s} <= set(objects) and "mvc/layout.json" in objects
    assert again.exit_code == 0 and again.stdout.startswith("pushed 0 objects"), again.stdout
    assert pulled.exit_code == 0, pulled.stderr
    assert pulled_md5 == md5s[-1]
    assert [(s["workspace"], s["cache"], s["remote"]) for s in status] == [("ok", "ok", "ok")]
    assert rolled.exit_code == 0, rolled.stderr
    assert hashlib.md5((other / "models" / "net.safetensors").read_bytes()).hexdigest() == md5s[0]
    # later versions are deltas against their parent and cost far less than the first
    codecs = {tensorstore.read_head(bucket.fs().cat_file(chunk_path(bucket, p.id)), p.id).codec for p in recipe(bucket, md5s[1]).parts if p.tensor == "enc.weight"}
    assert codecs == {tensorstore.SUB}
    assert [v["version"] for v in report["versions"]] == ["v1", "v2", "v3"]
    for entry in [*report["versions"], report["totals"]]:
        assert set(entry) >= {"logical_bytes", "stored_bytes", "shared_bytes", "ratio"}
    first, second = report["versions"][0], report["versions"][1]
    assert second["stored_bytes"] < 0.8 * first["stored_bytes"]
    assert report["totals"]["stored_bytes"] == sum(v["stored_bytes"] for v in report["versions"])
    assert not left, "the chunk cache is emptied once the version is rebuilt"


@pytest.mark.servers
def test_pull_reuses_parts_of_versions_already_in_the_cache(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, s3)
    git(other, "checkout", "-q", "HEAD~1")
    assert cli("pull", cwd=other).exit_code == 0
    git(other, "checkout", "-q", "-")
    for p in recipe(s3, md5s[1]).parts:  # v2's own chunks go: v3's deltas need them only as bases
        if p.id not in {q.id for q in recipe(s3, md5s[2]).parts}:
            s3.fs().rm_file(chunk_path(s3, p.id))

    pulled = cli("pull", cwd=other)

    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5((other / "models" / "net.safetensors").read_bytes()).hexdigest() == md5s[2]


@pytest.mark.servers
def test_push_restores_a_chunk_shared_with_the_parent_that_the_remote_lost(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    """Each chunk is probed (one ranged GET), those the parent's recipe lists too: the remote gets back what it lacks."""
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    rng = np.random.default_rng(5)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    first = save(repo / "models" / "net.safetensors", tensors)
    mvc.add(repo / "models" / "net.safetensors", repo=repo)
    commit_all(repo, "v1")
    assert cli("push", cwd=repo).exit_code == 0
    tensors["enc.weight"] = tensors["enc.weight"] + np.float32(1e-3)  # the head stays frozen
    md5 = save(repo / "models" / "net.safetensors", tensors)
    mvc.add(repo / "models" / "net.safetensors", repo=repo)
    commit_all(repo, "v2")
    shared = next(p for p in recipe(s3, first).parts if p.tensor == "head.weight")
    s3.fs().rm_file(chunk_path(s3, shared.id))

    pushed = cli("push", cwd=repo)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    pulled = cli("pull", cwd=other)

    assert pushed.exit_code == 0, pushed.stderr
    assert s3.fs().exists(chunk_path(s3, shared.id)), "the lost chunk is uploaded again"
    assert shared.id in {p.id for p in recipe(s3, md5).parts}
    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == md5


@pytest.mark.servers
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_pull_without_any_local_base_walks_the_whole_chain_in_stages(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket, jobs: str
) -> None:
    """v4 of a chain pulled into an empty cache: its deltas, their bases and theirs come from
    the remote (requests, decoding and the ordered md5 run in separate stages), whatever --jobs."""
    md5s, other = pushed_clone(cli, repo, tmp_path, s3, count=4)
    depths = {p.depth for p in recipe(s3, md5s[3]).parts if p.tensor == "enc.weight"}
    again = cli("push", "--jobs", jobs, cwd=repo)

    pulled = cli("pull", "--jobs", jobs, cwd=other)

    assert depths == {3}, "v4 is three deltas deep"
    assert again.exit_code == 0 and again.stdout.startswith("pushed 0 objects"), again.stdout
    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5((other / "models" / "net.safetensors").read_bytes()).hexdigest() == md5s[3]
    assert hashlib.md5(dvctensors.cache_file(other, md5s[3]).read_bytes()).hexdigest() == md5s[3]
    assert not [p for p in (other / ".dvc" / "tmp" / "mvc-chunks").rglob("*") if p.is_file()], "the chunk cache is emptied"
    assert not [p for p in dvctensors.cache_file(other, md5s[3]).parent.iterdir() if p.name.startswith(".mvc-rebuild")]


# ---------------------------------------------------------------------------- bad input


def _head_file(root: Path) -> Path:
    return root / "models" / "net.safetensors"


@pytest.mark.servers
def test_missing_chunk_fails_naming_the_version_writes_nothing_and_a_retry_resumes(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, s3, count=1)
    parts = recipe(s3, md5s[0]).parts
    victim = next(p for p in parts if p.tensor == "head.weight")
    saved = s3.fs().cat_file(chunk_path(s3, victim.id))
    s3.fs().rm_file(chunk_path(s3, victim.id))

    failed = cli("pull", cwd=other)
    kept = [p for p in (other / ".dvc" / "tmp" / "mvc-chunks").rglob("*") if p.is_file()]
    s3.fs().pipe_file(chunk_path(s3, victim.id), saved)
    retried = cli("pull", cwd=other)

    assert_one_line_error(
        failed, 6, f"error: chunk {victim.id[:12]} of net v1 ({md5s[0][:8]}) is missing from remote 'store'; nothing was written",
        "hint: upload the whole file from a machine that has the weights (`mvc push --full net@v1`)",
    )
    assert kept, "chunks downloaded before the failure stay for the retry"
    assert retried.exit_code == 0, retried.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == md5s[0]


@pytest.mark.servers
def test_corrupt_chunk_fails_with_exit_6_and_nothing_reaches_cache_or_work_tree(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, bucket, count=1)
    victim = next(p for p in recipe(bucket, md5s[0]).parts if p.tensor == "enc.weight")
    data = bytearray(bucket.fs().cat_file(chunk_path(bucket, victim.id)))
    data[-100] ^= 0xFF
    bucket.fs().pipe_file(chunk_path(bucket, victim.id), bytes(data))

    failed = cli("pull", cwd=other)

    assert_one_line_error(failed, 6, f"error: chunk {victim.id[:12]} of net v1 ({md5s[0][:8]}) on remote 'store' is corrupt")
    assert not _head_file(other).exists()
    assert not mvc.dvcstore.has_object(other, md5s[0])
    assert not [p for p in (other / ".dvc" / "cache").rglob("*") if p.is_file() and p.name.startswith(".mvc-rebuild")]


@pytest.mark.servers
def test_recipe_rebuilding_other_bytes_fails_the_md5_check(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, s3, count=2)
    old, new = recipe(s3, md5s[0]), recipe(s3, md5s[1])
    # v2's recipe with v1's parts: every chunk is intact, the file is not v2
    forged = tensorstore.Recipe(md5=new.md5, size=new.size, format=new.format, parts=old.parts)
    s3.fs().pipe_file(f"{s3.prefix}/mvc/recipes/{md5s[1][:2]}/{md5s[1][2:]}", forged.to_bytes())

    failed = cli("pull", cwd=other)

    assert_one_line_error(
        failed, 6, f"error: the weights of net v2 ({md5s[1][:8]}) rebuilt from remote 'store' do not match their hash; nothing was written"
    )
    assert not _head_file(other).exists() and not mvc.dvcstore.has_object(other, md5s[1])


@pytest.mark.servers
def test_deleted_delta_base_fails_with_a_hint_to_push_the_parent(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    md5s, other = pushed_clone(cli, repo, tmp_path, s3, count=2)
    fs = s3.fs()
    delta = next(p for p in recipe(s3, md5s[1]).parts if p.tensor == "enc.weight")
    base = tensorstore.read_head(fs.cat_file(chunk_path(s3, delta.id)), delta.id).base
    assert base is not None
    fs.rm_file(chunk_path(s3, base))

    failed = cli("pull", cwd=other)
    repaired = cli("push", "net@v1", cwd=repo)

    assert_one_line_error(
        failed, 6, f"error: the delta base chunk {base[:12]} of net v2 ({md5s[1][:8]}) was deleted from remote 'store'",
        "hint: upload the whole file from a machine that has the weights (`mvc push --full net@v2`): pull then uses it",
    )
    assert not _head_file(other).exists()
    # pushing the parent again restores nothing (its recipe is there); the full copy the hint names does
    assert repaired.exit_code == 0
    assert cli("push", "--full", "net@v2", cwd=repo).exit_code == 0
    assert cli("pull", cwd=other).exit_code == 0
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == md5s[1]


@pytest.mark.servers
def test_mixed_layouts(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    # a remote used with the full layout first, then switched to tensors: old versions stay pullable
    add_tensors_remote(cli, repo, s3, layout="full")
    steps = chain_steps(repo, 2)
    first = next(steps)
    assert cli("push", cwd=repo).exit_code == 0
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors now")
    second = next(steps)
    assert cli("push", cwd=repo).exit_code == 0
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    git(other, "checkout", "-q", "HEAD~1")
    old = cli("pull", cwd=other)
    git(other, "checkout", "-q", "-")
    new = cli("pull", cwd=other)
    # a clone that uses the tensors remote as a full one is told so
    third = clone(repo, tmp_path / "third", with_local_config=True)
    add_tensors_remote(cli, third, s3, layout="full")
    refused = cli("pull", cwd=third)

    assert (old.exit_code, new.exit_code) == (0, 0), old.stderr + new.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == second != first
    assert_one_line_error(
        refused, 4, "error: remote 'store' holds the tensors layout but this repository uses it with the full layout",
        "hint: set its layout: `mvc remote add store URL --layout tensors --force`",
    )


@pytest.mark.servers
def test_two_clones_pushing_the_same_chunks_at_once_both_succeed(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    a = clone(repo, tmp_path / "a", with_local_config=True)
    b = clone(repo, tmp_path / "b", with_local_config=True)
    rng = np.random.default_rng(5)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    md5 = ""
    for root in (a, b):
        md5 = save(_head_file(root), tensors)
        mvc.add(_head_file(root), repo=root)
        commit_all(root, "same weights")
    env = {**os.environ, **servers.client_env(s3.server)}
    procs = [subprocess.Popen([sys.executable, "-m", "mvc", "push"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for root in (a, b)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]

    assert [r[0] for r in results] == [0, 0], results
    git(b, "push", "-q", str(repo), "HEAD:refs/heads/pushed")
    fresh = clone(repo, tmp_path / "fresh", with_local_config=True)
    git(fresh, "checkout", "-q", "pushed")
    assert cli("pull", cwd=fresh).exit_code == 0
    assert hashlib.md5(_head_file(fresh).read_bytes()).hexdigest() == md5
    assert not [p for p in stored(s3) if p.endswith(".tmp")]


# ---------------------------------------------------------------------------- releases


@pytest.mark.servers
def test_released_versions_also_get_the_plain_dvc_object(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    steps = chain_steps(repo, 2)
    first = next(steps)
    tagged = cli("tag", "net", "v1.0.0", cwd=repo)
    pushed = cli("push", cwd=repo)
    second = next(steps)
    assert cli("push", cwd=repo).exit_code == 0
    full_objects = s3.objects()
    env = {**os.environ, **servers.client_env(s3.server)}
    other = clone(repo, tmp_path / "clone", with_local_config=True)

    def dvc_pull(ref: str) -> subprocess.CompletedProcess[str]:
        git(other, "checkout", "-q", ref)
        return subprocess.run([sys.executable, "-m", "dvc", "pull"], cwd=other, env=env, capture_output=True, text=True)

    release = dvc_pull("net@v1.0.0")
    release_md5 = hashlib.md5(_head_file(other).read_bytes()).hexdigest()
    unreleased = dvc_pull("main")
    left = _head_file(other).exists()
    forced = cli("push", "--full", "net@v2", cwd=repo)
    after = dvc_pull("main")

    assert (tagged.exit_code, pushed.exit_code) == (0, 0), tagged.stderr + pushed.stderr
    assert first in full_objects and second not in full_objects
    assert release.returncode == 0 and release_md5 == first, release.stderr
    # the README's promise: plain DVC finds no object for a version that is not released
    assert unreleased.returncode != 0, unreleased.stderr
    assert f"md5: {second}" in unreleased.stderr and "failed to pull data from the cloud" in unreleased.stderr
    assert not left, "DVC's checkout removes the previous version's file and has nothing to put there"
    assert forced.exit_code == 0 and forced.stdout.startswith("pushed 1 full object of net v2"), forced.stdout
    assert after.returncode == 0, after.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == second


# ---------------------------------------------------------------------------- gc


@pytest.mark.servers
def test_gc_removes_recipes_and_chunks_no_kept_version_needs_but_keeps_delta_bases(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    rng = np.random.default_rng(7)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    md5s = []
    for i in range(3):
        md5s.append(save(_head_file(repo), tensors))
        mvc.add(_head_file(repo), repo=repo)
        commit_all(repo, f"v{i + 1}")
        assert cli("push", cwd=repo).exit_code == 0
        # enc.weight drifts (a delta chain); head.weight is new each time (stored whole)
        tensors = {**tensors, "enc.weight": tensors["enc.weight"] + 1e-3 * rng.standard_normal(SHAPES["enc.weight"]).astype(np.float32)}
        tensors["head.weight"] = rng.standard_normal(SHAPES["head.weight"]).astype(np.float32)
    old_heads = {p.id for m in md5s[:2] for p in recipe(s3, m).parts if p.tensor == "head.weight"}
    chain = {p.id for m in md5s for p in recipe(s3, m).parts if p.tensor == "enc.weight"}
    # only v3 stays: history squashed into one commit
    git(repo, "checkout", "-q", "--orphan", "squashed")
    git(repo, "commit", "-q", "-m", "squash")
    git(repo, "branch", "-q", "-D", "main")
    git(repo, "reflog", "expire", "--expire=now", "--all")

    plan = json.loads(cli("gc", "--no-cache", "--remote", "store", "--dry-run", "--older-than", "0", "--json", cwd=repo).stdout)
    gone = {r["oid"] for r in plan["removed"]}
    before = stored(s3)
    done = cli("gc", "--no-cache", "--remote", "store", "--older-than", "0", "--yes", cwd=repo)
    after = stored(s3)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    pulled = cli("pull", cwd=other)

    assert gone == {f"recipe:{m}" for m in md5s[:2]} | {f"chunk:{c}" for c in old_heads}
    assert done.exit_code == 0, done.stderr
    assert len(before) - len(after) == len(gone)
    assert all(f"mvc/chunks/{c[:2]}/{c[2:]}" in after for c in chain), "the delta bases of v3 stay"
    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == md5s[2]


# ---------------------------------------------------------------------------- partial pull


@pytest.mark.servers
def test_pull_tensors_writes_a_partial_safetensors_file_from_their_chunks_only(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    from safetensors.numpy import load_file

    md5s, other = pushed_clone(cli, repo, tmp_path, bucket, count=2)
    whole = load_file(str(dvctensors.cache_file(repo, md5s[1])))
    stored_bytes = sum(bucket.fs().du(f"{bucket.prefix}/mvc/chunks", total=False).values())

    part = cli("pull", "net@v2", "--tensors", "enc.*", "--json", cwd=other)
    missing = cli("pull", "net@v2", "--tensors", "decoder.*", cwd=other)
    assert cli("remote", "add", "plain", str(tmp_path / "plain"), cwd=other).exit_code == 0
    full = cli("pull", "net@v2", "--tensors", "enc.*", "--remote", "plain", cwd=other)

    assert part.exit_code == 0, part.stderr
    report = json.loads(part.stdout)
    path = other / "models" / "net.partial.safetensors"
    assert report["path"] == str(path) and report["tensors"] == ["enc.bias", "enc.weight"]
    got = load_file(str(path))
    assert set(got) == {"enc.bias", "enc.weight"}
    assert all(np.array_equal(got[k], whole[k]) for k in got)
    assert 0 < report["downloaded"] < stored_bytes
    assert not (other / "models" / "net.safetensors").exists(), "the work tree is not touched"
    assert_one_line_error(missing, 3, "error: no tensor of net v2 matches 'decoder.*'")
    assert_one_line_error(full, 2, "error: --tensors reads a remote with the tensors layout; 'plain' uses the full layout")


def test_local_directory_remote_round_trip_and_storage_by_name(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default").exit_code == 0
    commit_all(repo, "tensors remote")
    md5s = []
    for md5 in chain_steps(repo, 2):
        md5s.append(md5)
        assert cli("push").exit_code == 0
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)
    by_name = json.loads(cli("storage", "net", "--json", cwd=other).stdout)
    unknown = cli("storage", "nosuch", cwd=other)

    assert pulled.exit_code == 0, pulled.stderr
    assert hashlib.md5(_head_file(other).read_bytes()).hexdigest() == md5s[1]
    assert not list(store.rglob("*.tmp")) and not (store / "files").exists()
    assert [v["version"] for v in by_name["versions"]] == ["v1", "v2"]
    assert by_name["totals"]["logical_bytes"] == 2 * _head_file(other).stat().st_size
    assert_one_line_error(unknown, 3, "error: remote 'shared' holds no version of 'nosuch' in the tensors layout")


@pytest.mark.servers
def test_a_push_interrupted_before_its_recipe_is_not_on_the_remote_and_resumes(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Bucket
) -> None:
    md5s, _ = pushed_clone(cli, repo, tmp_path, s3, count=1)
    chunks_before = {p for p in stored(s3) if p.startswith("mvc/chunks/")}
    s3.fs().rm_file(f"{s3.prefix}/mvc/recipes/{md5s[0][:2]}/{md5s[0][2:]}")  # as if killed before the recipe

    status = json.loads(cli("status", "--json", cwd=repo).stdout)
    again = cli("push", cwd=repo)

    assert [s["remote"] for s in status] == ["missing"]
    assert again.exit_code == 0 and again.stdout.startswith("pushed 1 object"), again.stdout
    assert {p for p in stored(s3) if p.startswith("mvc/chunks/")} == chunks_before
    assert recipe(s3, md5s[0]).md5 == md5s[0]


@pytest.mark.servers
def test_tag_and_promote_with_push_write_the_full_object_to_a_tensors_remote(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, bucket: Bucket
) -> None:
    add_tensors_remote(cli, repo, bucket)
    commit_all(repo, "tensors remote")
    git(tmp_path, "init", "-q", "--bare", "origin.git")
    git(repo, "remote", "add", "origin", str(tmp_path / "origin.git"))
    steps = chain_steps(repo, 2)
    first = next(steps)
    second = next(steps)

    tagged = cli("tag", "net@v1", "v1.0.0", "--push", cwd=repo)
    promoted = cli("promote", "net@v2", "--stage", "prod", "--push", cwd=repo)
    objects = bucket.objects()
    listing = stored(bucket)

    assert (tagged.exit_code, promoted.exit_code) == (0, 0), tagged.stderr + promoted.stderr
    assert {first, second} <= set(objects), "releases and stages are plain-DVC pullable"
    assert {f"mvc/recipes/{m[:2]}/{m[2:]}" for m in (first, second)} <= set(listing)

"""``mvc gc`` (issue 14): cache and remote objects no kept version needs, and temp-file leftovers.

A repo with versions on main, on a branch, behind a tag only, staged only, and on deleted
branches (the only versions gc may remove); a local-directory remote and the local S3 server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mvc
from mvc import pointer
from tests.conftest import assert_one_line_error, git, ok, write_safetensors

OLD = time.time() - 2 * 3600  # older than gc's default --older-than of 1 hour
NET = "models/net.safetensors"
CKPT = "models/ckpt"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def add_commit(root: Path, path: str, message: str, *, seed: int | None = None, files: dict[str, bytes] | None = None) -> str:
    """Write weights (a safetensors file from ``seed`` or a directory of ``files``), add, commit; the pointer's hash."""
    full = root / path
    if files is not None:
        full.mkdir(parents=True, exist_ok=True)
        for f in full.iterdir():
            f.unlink()
        for name, data in files.items():
            (full / name).write_bytes(data)
    else:
        write_safetensors(full, seed=seed or 0)
    mvc.add(str(full), repo=root)
    mvc.commit(repo=root, message=message)
    ptr = pointer.read(root, path + ".dvc")
    assert ptr is not None
    return ptr.md5


def cache_oids(root: Path) -> set[str]:
    base = root / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name for p in base.glob("??/*") if not p.name.endswith(".tmp")}


def remote_dir(root: Path) -> Path:
    (remote,) = mvc.remote_list(repo=root)
    return Path(remote.url)


def remote_oids(base: Path) -> set[str]:
    return {p.parent.name + p.name for p in (base / "files" / "md5").glob("??/*") if not p.name.endswith(".tmp")}


@dataclass(frozen=True)
class History:
    """The versions of a repo built by :func:`history`: the ones gc keeps and the ones it may remove."""

    kept: dict[str, str]  # git rev -> hash of a kept version (file or .dir)
    kept_files: set[str]  # the files of kept directory listings
    staged: str  # a version staged, never committed
    gone: set[str]  # objects only deleted branches named


def history(root: Path) -> History:
    """main: net v1, v2 and ckpt v1 (files a, b); branch exp: net v3; tag release: ckpt v2 (a, c) on a
    branch since deleted; deleted branches: net v4 and ckpt (a, d); staged on main: net v5. Each is pushed."""
    a, b, c, d = (os.urandom(1000 + i) for i in range(4))
    v1 = add_commit(root, NET, "net v1", seed=1)
    mvc.push(repo=root)
    v2 = add_commit(root, NET, "net v2", seed=2)
    mvc.push(repo=root)
    ck1 = add_commit(root, CKPT, "ckpt v1", files={"a.bin": a, "b.bin": b})
    mvc.push(repo=root)
    git(root, "checkout", "-q", "-b", "exp")
    v3 = add_commit(root, NET, "net v3", seed=3)
    mvc.push(repo=root)
    git(root, "checkout", "-q", "-b", "side", "main")
    ck2 = add_commit(root, CKPT, "ckpt v2", files={"a.bin": a, "c.bin": c})
    mvc.push(repo=root)
    git(root, "tag", "release")
    git(root, "checkout", "-q", "-b", "tmp", "main")
    v4 = add_commit(root, NET, "net v4", seed=4)
    ck3 = add_commit(root, CKPT, "ckpt v3", files={"a.bin": a, "d.bin": d})
    mvc.push(repo=root)
    git(root, "checkout", "-q", "-f", "main")
    mvc.checkout(repo=root)
    git(root, "branch", "-q", "-D", "side", "tmp")
    write_safetensors(root / NET, seed=5)
    staged = mvc.add(str(root / NET), repo=root)
    mvc.push(repo=root)
    v5 = pointer.read(root, NET + ".dvc")
    assert v5 is not None and staged is not None
    return History(
        kept={"HEAD~2": v1, "HEAD~1": v2, "HEAD": ck1, "exp": v3, "release": ck2},
        kept_files={md5(a), md5(b), md5(c)},
        staged=v5.md5,
        gone={v4, ck3, md5(d)},
    )


@pytest.fixture
def built(repo: Path) -> History:
    return history(repo)


def kept_objects(h: History) -> set[str]:
    return set(h.kept.values()) | h.kept_files | {h.staged}


# ------------------------------------------------------------------------ cache and remote


def test_gc_removes_exactly_what_no_kept_version_needs(repo: Path, built: History, cli: Callable[..., Any]) -> None:
    before = cache_oids(repo)
    assert built.gone <= before and kept_objects(built) <= before

    result = ok(cli("gc", "--yes", "--remote", mvc.remote_list(repo=repo)[0].name, "--json"))

    data = json.loads(result.stdout)
    removed = sorted((r["where"], r["kind"], r["oid"]) for r in data["removed"])
    assert removed == sorted((where, "object", oid) for where in ("cache", "remote") for oid in built.gone)
    assert data["removed_bytes"] == sum(r["size"] for r in data["removed"]) > 0
    assert data["dry_run"] is False
    assert cache_oids(repo) == before - built.gone == kept_objects(built)
    assert remote_oids(remote_dir(repo)) == kept_objects(built)


def test_plain_dvc_pull_of_every_kept_version_works_after_gc(
    repo: Path, built: History, cli: Callable[..., Any], tmp_path: Path
) -> None:
    ok(cli("gc", "--yes", "--remote", mvc.remote_list(repo=repo)[0].name))
    shas = {rev: git(repo, "rev-parse", rev) for rev in built.kept}
    mvc.commit(repo=repo, message="net v5")  # the staged version, committed after gc
    shas["staged"] = git(repo, "rev-parse", "HEAD")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    for rev, sha in shas.items():
        git(clone, "checkout", "-q", "-f", sha)
        proc = subprocess.run([sys.executable, "-m", "dvc", "pull", "-q"], cwd=clone, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (rev, proc.stdout, proc.stderr)
        check = subprocess.run([sys.executable, "-m", "dvc", "status", "-q"], cwd=clone, capture_output=True, text=True, check=False)
        assert check.returncode == 0, (rev, check.stdout, check.stderr)
    # ... and the local cache still checks out every kept version.
    for rev, sha in shas.items():
        git(repo, "checkout", "-q", "-f", sha)
        proc = subprocess.run([sys.executable, "-m", "dvc", "checkout", "-q"], cwd=repo, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (rev, proc.stdout, proc.stderr)


def test_dry_run_lists_objects_and_bytes_and_removes_nothing(repo: Path, built: History, cli: Callable[..., Any]) -> None:
    store = remote_dir(repo)
    before, before_remote = cache_oids(repo), remote_oids(store)
    sizes = {o: (repo / ".dvc/cache/files/md5" / o[:2] / o[2:]).stat().st_size for o in built.gone}

    result = ok(cli("gc", "--dry-run", "--remote", mvc.remote_list(repo=repo)[0].name))
    as_json = json.loads(ok(cli("gc", "--dry-run", "--json")).stdout)

    assert cache_oids(repo) == before and remote_oids(store) == before_remote
    lines = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert sorted((w, k, o) for w, k, o, _ in lines) == sorted(
        (where, "object", o[:8] + (".dir" if o.endswith(".dir") else "")) for where in ("cache", "remote") for o in built.gone
    )
    assert result.stderr.startswith(f"would remove 6 objects ({2 * sum(sizes.values()) / 1024:.1f} KiB); ")
    assert as_json["dry_run"] is True and as_json["removed_bytes"] == sum(sizes.values())
    assert {r["oid"] for r in as_json["removed"]} == built.gone


def test_without_yes_off_a_terminal_gc_refuses_and_removes_nothing(repo: Path, built: History, cli: Callable[..., Any]) -> None:
    before = cache_oids(repo)

    result = cli("gc")

    assert_one_line_error(result, 2, "needs confirmation", "--dry-run", "--yes")
    assert cache_oids(repo) == before


def test_gc_with_nothing_to_remove_says_so(repo: Path, weights: Path, cli: Callable[..., Any]) -> None:
    mvc.add(str(weights), repo=repo)

    result = ok(cli("gc", "--yes"))

    assert result.stdout == ""
    assert result.stderr.startswith("nothing to remove; 1 objects kept")


def test_a_corrupt_object_a_kept_version_names_stays(repo: Path, built: History, cli: Callable[..., Any]) -> None:
    v1 = built.kept["HEAD~2"]
    path = repo / ".dvc/cache/files/md5" / v1[:2] / v1[2:]
    os.chmod(path, 0o644)
    path.write_bytes(b"not the weights")

    ok(cli("gc", "--yes"))

    assert path.read_bytes() == b"not the weights"
    assert cache_oids(repo) == kept_objects(built)


def test_a_rolled_back_version_is_kept_after_its_branch_goes(repo: Path, cli: Callable[..., Any]) -> None:
    v1 = add_commit(repo, NET, "net v1", seed=1)
    git(repo, "checkout", "-q", "-b", "tmp")
    v2 = add_commit(repo, NET, "net v2", seed=2)
    git(repo, "checkout", "-q", "-f", "main")
    mvc.checkout(repo=repo)
    mvc.checkout(["net@tmp"], repo=repo)  # the work tree holds v2 while main records v1
    git(repo, "branch", "-q", "-D", "tmp")

    result = ok(cli("gc", "--yes"))

    assert cache_oids(repo) == {v1, v2}, result.stderr


def test_a_listing_found_nowhere_keeps_every_file_object(repo: Path, cli: Callable[..., Any]) -> None:
    ck1 = add_commit(repo, CKPT, "ckpt v1", files={"a.bin": b"a" * 100, "b.bin": b"b" * 100})
    git(repo, "checkout", "-q", "-b", "tmp")
    v = add_commit(repo, NET, "net v1", seed=1)
    git(repo, "checkout", "-q", "-f", "main")
    git(repo, "branch", "-q", "-D", "tmp")
    listing = repo / ".dvc/cache/files/md5" / ck1[:2] / ck1[2:]
    os.chmod(listing, 0o644)
    listing.unlink()  # and the remote never had it: nothing was pushed

    result = ok(cli("gc", "--yes"))

    # gc cannot tell which file objects the listing names: it keeps them all, the unneeded v1 included.
    assert cache_oids(repo) == {md5(b"a" * 100), md5(b"b" * 100), v}
    assert f"the listing {ck1[:8]}.dir of a kept version is in neither cache nor remote" in result.stderr


def test_a_declined_confirmation_removes_nothing(repo: Path, built: History) -> None:
    before = cache_oids(repo)
    asked: list[Any] = []

    result = mvc.gc(repo=repo, confirm=lambda plan: asked.append(plan) or False)

    assert cache_oids(repo) == before
    assert result.dry_run is True and {r.oid for r in result.removed} == built.gone
    assert asked == [result]


def test_a_listing_missing_from_the_cache_is_read_from_the_remote(repo: Path, cli: Callable[..., Any]) -> None:
    a, b = b"a" * 100, b"b" * 100
    ck1 = add_commit(repo, CKPT, "ckpt v1", files={"a.bin": a, "b.bin": b})
    mvc.push(repo=repo)
    git(repo, "checkout", "-q", "-b", "tmp")
    v = add_commit(repo, NET, "net v1", seed=1)
    git(repo, "checkout", "-q", "-f", "main")
    git(repo, "branch", "-q", "-D", "tmp")
    listing = repo / ".dvc/cache/files/md5" / ck1[:2] / ck1[2:]
    os.chmod(listing, 0o644)
    listing.unlink()

    result = ok(cli("gc", "--yes", "--remote", mvc.remote_list(repo=repo)[0].name))

    assert cache_oids(repo) == {md5(a), md5(b)}  # the listing, read from the remote, names them; v goes
    assert v not in cache_oids(repo) and "neither cache nor remote" not in result.stderr
    assert remote_oids(remote_dir(repo)) == {ck1, md5(a), md5(b)}


def test_during_a_merge_both_sides_are_kept(repo: Path, cli: Callable[..., Any]) -> None:
    v1 = add_commit(repo, NET, "net v1", seed=1)
    git(repo, "checkout", "-q", "-b", "side")
    v2 = add_commit(repo, NET, "net v2", seed=2)
    git(repo, "checkout", "-q", "-f", "main")
    mvc.checkout(repo=repo)
    v3 = add_commit(repo, NET, "net v3", seed=3)
    subprocess.run(["git", "merge", "-q", "side"], cwd=repo, capture_output=True, check=False)
    assert (repo / ".git" / "MERGE_HEAD").is_file()
    git(repo, "branch", "-q", "-D", "side")  # only MERGE_HEAD and the index name v2 now

    ok(cli("gc", "--yes"))

    assert cache_oids(repo) == {v1, v2, v3}


# ------------------------------------------------------------------------ temp files


def leftovers(root: Path, store: Path) -> dict[str, Path]:
    """Temp files and dirs an interrupted add / pull / push / checkout / sign leaves, made 2 hours old."""
    cache = root / ".dvc/cache/files/md5"
    paths = {
        "dvc cache temp": cache / "ab" / ".Ab3_-xYz0123456789abcd.tmp",
        "dvc cache temp, prefixed": cache / "cd" / "ef0123.Zy9_-xWv0123456789abcd.tmp",
        "mvc precache temp": cache / ".mvc-tmp-4242-140000",
        "pointer temp": root / "models" / ".net.safetensors.dvc.k3j_9a0b.tmp",
        "dvc checkout temp": root / "models" / ".Qw3_-xYz0123456789abcd.tmp",
        "rollback staging dir": root / "models" / ".mvc-checkout-ab12cd34",
        "sign view": root / ".dvc/tmp" / "mvc-sign-zz12cd34",
        "state temp": root / ".dvc/tmp" / ".mvc-rollback.json.a1b2c3d4.tmp",
        "remote temp": store / "files/md5" / "12" / ".Rr3_-xYz0123456789abcd.tmp",
    }
    for key, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if key.endswith(("dir", "view")):
            path.mkdir()
            (path / "partial.bin").write_bytes(b"x" * 10)
        else:
            path.write_bytes(b"x" * 10)
        os.utime(path, (OLD, OLD))
    return paths


def test_gc_cleans_temp_leftovers_older_than_an_hour(repo: Path, weights: Path, cli: Callable[..., Any]) -> None:
    add_commit(repo, NET, "net v1", seed=1)
    mvc.push(repo=repo)
    store = remote_dir(repo)
    old = leftovers(repo, store)
    fresh = repo / "models" / ".net.safetensors.dvc.fresh123.tmp"  # a command may still be writing it
    fresh.write_bytes(b"x")
    user_files = [repo / "notes.tmp", repo / "models" / "run.1.tmp"]
    for f in user_files:
        f.write_bytes(b"mine")
        os.utime(f, (OLD, OLD))

    dry = json.loads(ok(cli("gc", "--dry-run", "--json", "--remote", mvc.remote_list(repo=repo)[0].name)).stdout)
    assert all(p.exists() for p in old.values())
    result = ok(cli("gc", "--yes", "--remote", mvc.remote_list(repo=repo)[0].name, "--json"))

    data = json.loads(result.stdout)
    assert data["removed"] == dry["removed"]
    assert sorted(r["kind"] for r in data["removed"]) == ["temp dir", "temp dir"] + ["temp file"] * 7
    assert not any(p.exists() for p in old.values())
    assert fresh.exists() and all(f.exists() for f in user_files)
    assert data["removed_bytes"] == 9 * 10


def test_gc_cleans_what_a_killed_add_left_in_the_cache(repo: Path, cli: Callable[..., Any]) -> None:
    weights = repo / "models" / "big.bin"
    weights.parent.mkdir(parents=True)
    with weights.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(8 * 2**20))  # 256 MiB: mvc copies it into the cache under a temp name
    cache = repo / ".dvc/cache/files/md5"
    proc = subprocess.Popen([sys.executable, "-m", "mvc", "add", str(weights)], cwd=repo)
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and any(p.name.startswith(".mvc-tmp-") for p in cache.iterdir())):
        assert proc.poll() is None, "add ended before it could be interrupted"
        assert time.monotonic() < deadline, "no temp file appeared in the cache"
    proc.kill()
    proc.wait()
    left = [p for p in cache.iterdir() if p.name.startswith(".mvc-tmp-")]
    assert left

    data = json.loads(ok(cli("gc", "--yes", "--older-than", "0", "--json")).stdout)

    assert [(r["where"], r["kind"], r["path"]) for r in data["removed"]] == [("cache", "temp file", str(left[0]))]
    assert not any(p.exists() for p in left)
    ok(cli("add", str(weights)))  # and the next add works


def test_older_than_zero_cleans_fresh_temp_files(repo: Path, weights: Path, cli: Callable[..., Any]) -> None:
    fresh = repo / "models" / ".net.safetensors.dvc.fresh123.tmp"
    fresh.write_bytes(b"x")

    ok(cli("gc", "--yes", "--older-than", "0"))

    assert not fresh.exists()


def test_negative_older_than_is_a_usage_error(repo: Path, cli: Callable[..., Any]) -> None:
    result = cli("gc", "--yes", "--older-than", "-1")

    assert result.exit_code == 2, result.stderr


def test_gc_of_an_unknown_remote_exits_3(repo: Path, cli: Callable[..., Any]) -> None:
    result = cli("gc", "--yes", "--remote", "nope")

    assert_one_line_error(result, 3, "nope")


# ------------------------------------------------------------------------ S3 remote


@pytest.fixture
def s3_bucket(s3_server: Any, tmp_path: Path) -> Any:
    """A fresh prefix in the S3 test server."""
    import uuid

    from tests.test_cloud_remotes import Bucket

    return Bucket("s3", s3_server, f"{s3_server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


def uploads(fs: Any, prefix: str) -> list[str]:
    bucket, _, key = prefix.partition("/")
    return [u["Key"] for u in fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key).get("Uploads", [])]


@pytest.mark.servers
def test_gc_of_an_s3_remote_removes_unneeded_objects_and_aborts_stale_uploads(
    repo: Path, s3_bucket: Any, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.remote_servers import servers
    from tests.test_cloud_remotes import add_remote

    add_remote(cli, repo, s3_bucket)
    v1 = add_commit(repo, NET, "net v1", seed=1)
    mvc.push(repo=repo)
    git(repo, "checkout", "-q", "-b", "tmp")
    v2 = add_commit(repo, NET, "net v2", seed=2)
    mvc.push(repo=repo)
    git(repo, "checkout", "-q", "-f", "main")
    mvc.checkout(repo=repo)
    git(repo, "branch", "-q", "-D", "tmp")
    fs = s3_bucket.fs()
    bucket, _, prefix = s3_bucket.prefix.partition("/")
    key = f"{prefix}/files/md5/ff/{'f' * 30}"  # an interrupted push of a big object
    started = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert set(s3_bucket.objects(fs)) == {v1, v2} and uploads(fs, s3_bucket.prefix) == [key]

    young = json.loads(ok(cli("gc", "--dry-run", "--no-cache", "--remote", "store", "--json")).stdout)
    dry = json.loads(ok(cli("gc", "--dry-run", "--no-cache", "--remote", "store", "--older-than", "0", "--json")).stdout)
    assert set(s3_bucket.objects(fs)) == {v1, v2} and uploads(fs, s3_bucket.prefix) == [key]
    done = json.loads(ok(cli("gc", "--yes", "--no-cache", "--remote", "store", "--older-than", "0", "--json")).stdout)

    assert [(r["where"], r["kind"], r["oid"]) for r in young["removed"]] == [("remote", "object", v2)]
    expected = [("remote", "object", v2), ("remote", "upload", started["UploadId"])]
    assert [(r["where"], r["kind"], r["oid"]) for r in dry["removed"]] == expected
    assert [(r["where"], r["kind"], r["oid"]) for r in done["removed"]] == expected and done["dry_run"] is False
    assert set(s3_bucket.objects(fs)) == {v1}
    assert uploads(fs, s3_bucket.prefix) == []
    assert cache_oids(repo) == {v1, v2}  # --no-cache: the local cache is untouched
    # A teammate's plain `dvc pull` of the kept version still works.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    for name, value in servers.client_env(s3_bucket.server).items():
        monkeypatch.setenv(name, value)
    proc = subprocess.run([sys.executable, "-m", "dvc", "pull", "-q"], cwd=clone, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert md5((clone / NET).read_bytes()) == v1

"""Hardening of remotes and transfers (issues 14 and 17): what crosses a remote is checked.

Real git repos, real DVC, the repository's local-directory remote; S3 points use the
local SeaweedFS server or tiny TCP servers started here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mvc
from tests.conftest import assert_one_line_error, git, ok, write_safetensors


def remote_dir(repo: Path) -> Path:
    return Path(next(r.url for r in mvc.remote_list(repo) if r.default))


def remote_object(repo: Path, oid: str) -> Path:
    return remote_dir(repo) / "files" / "md5" / oid[:2] / oid[2:]


def cache_object(repo: Path, oid: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]


def write_object(path: Path, data: bytes) -> None:
    """Write (or overwrite) a stored object, read-only as DVC keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain ``dvc`` as a DVC-only teammate runs it."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)


def clone(repo: Path, dest: Path) -> Path:
    git(dest.parent, "clone", "-q", str(repo), str(dest))
    return dest


# ---------------------------------------------------------------------------- 1. hostile listings


def hostile_directory_version(repo: Path, cli: Callable[..., Any], relpath: str) -> str:
    """Commit a directory model whose ``.dir`` listing names ``relpath``; both objects pushed."""
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "a.bin").write_bytes(b"honest shard")
    ok(cli("add", "models/ckpt", "--name", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    honest = mvc.status(repo)[0].hash
    payload = b"owned"
    oid = hashlib.md5(payload).hexdigest()
    listing = json.dumps([{"md5": oid, "relpath": relpath}], sort_keys=True).encode()
    dir_oid = hashlib.md5(listing).hexdigest() + ".dir"
    for where in (cache_object, remote_object):
        write_object(where(repo, oid), payload)
        write_object(where(repo, dir_oid), listing)
    pointer = repo / "models" / "ckpt.dvc"
    pointer.write_text(pointer.read_text().replace(honest, dir_oid))
    git(repo, "commit", "-q", "-am", "ckpt v2 (crafted)")
    return dir_oid


@pytest.mark.parametrize("relpath", ["../../../escaped.txt", "/tmp/mvc-escaped-abs.txt"])
def test_pull_and_get_refuse_a_listing_with_paths_outside_the_directory(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, relpath: str
) -> None:
    dir_oid = hostile_directory_version(repo, cli, relpath)
    teammate = clone(repo, tmp_path / "teammate")
    Path("/tmp/mvc-escaped-abs.txt").unlink(missing_ok=True)

    pulled = cli("pull", cwd=teammate)
    checked_out = cli("checkout", cwd=repo)
    got = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "deploy" / "out"))
    signed = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "signed" / "out"), "--require-signed",
                 "--trusted-keys", str(tmp_path))  # fmt: skip

    for result in (pulled, checked_out, got, signed):
        assert_one_line_error(result, 6, f"refusing ckpt", f"{dir_oid[:8]}.dir", repr(relpath), "nothing was written")
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/mvc-escaped-abs.txt").exists()
    assert not (teammate / "models" / "ckpt").exists()
    assert not any((tmp_path / "deploy" / "out").iterdir()) if (tmp_path / "deploy" / "out").exists() else True
    assert not any((tmp_path / "signed" / "out").iterdir()) if (tmp_path / "signed" / "out").exists() else True


# ---------------------------------------------------------------------------- 2-4. corrupt objects


def pushed_version(repo: Path, weights: Path, cli: Callable[..., Any]) -> str:
    md5 = mvc.add(weights).version.hash
    mvc.commit(repo, message="net v1")
    ok(cli("push"))
    return md5


def test_a_corrupt_object_on_a_directory_remote_is_reported_corrupt_and_kept(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    md5 = pushed_version(repo, weights, cli)
    stored = remote_object(repo, md5)
    os.chmod(stored, 0o644)  # as a remote written by another tool (DVC re-hashes writable objects)
    stored.write_bytes(b"bit rot")
    teammate = clone(repo, tmp_path / "teammate")

    result = cli("pull", cwd=teammate)

    assert_one_line_error(result, 6, "downloaded from remote 'local'", "do not match their hash", md5[:8])
    assert stored.read_bytes() == b"bit rot"  # kept for inspection
    assert not (teammate / "models" / "net.safetensors").exists()


def test_objects_fetched_without_mvc_check_are_verified_before_checkout(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """What an interrupted pull leaves: objects DVC downloaded that mvc never re-hashed."""
    md5 = pushed_version(repo, weights, cli)
    good = weights.read_bytes()
    teammate = clone(repo, tmp_path / "teammate")
    write_object(remote_object(repo, md5), b"corrupt copy")
    fetched = dvc(teammate, "fetch")  # DVC fetches without reading the bytes back
    write_object(remote_object(repo, md5), good)  # the remote is fixed meanwhile

    result = cli("pull", cwd=teammate)

    assert fetched.returncode == 0, fetched.stderr
    ok(result)
    assert (teammate / "models" / "net.safetensors").read_bytes() == good
    assert result.stdout.startswith("fetched 1 object from local;")


def test_a_truncated_read_only_cache_object_is_never_checked_out(
    repo: Path, weights: Path, cli: Callable[..., Any]
) -> None:
    md5 = mvc.add(weights).version.hash
    mvc.commit(repo, message="net v1")
    obj = cache_object(repo, md5)
    assert not stat.S_IMODE(obj.stat().st_mode) & 0o222  # DVC keeps it read-only
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as handle:
        handle.truncate(10)
    os.chmod(obj, 0o444)
    weights.unlink()

    checked_out = cli("checkout")
    pulled = cli("pull")

    assert_one_line_error(checked_out, 6, f"cache object {md5[:8]} of net v1 no longer matches its hash")
    assert_one_line_error(pulled, 6, "net v1", "were corrupt and remote 'local' has no copy")
    assert not weights.exists()


def test_push_after_pull_no_verify_refuses_the_corrupt_object(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    md5 = pushed_version(repo, weights, cli)
    write_object(remote_object(repo, md5), b"corrupt copy")
    teammate = clone(repo, tmp_path / "teammate")
    other = tmp_path / "other-remote"
    ok(cli("pull", "--no-verify", cwd=teammate))
    ok(cli("remote", "add", "other", str(other), cwd=teammate))

    pushed = cli("push", "--remote", "other", cwd=teammate)

    assert_one_line_error(pushed, 6, f"cache object {md5[:8]} of net v1", "refusing to push it", "--repair")
    assert not other.exists() or not any(p.is_file() for p in other.rglob("*"))


# ---------------------------------------------------------------------------- 11. counts


def test_pull_counts_the_objects_that_came_down(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    for i in range(2):
        (ckpt / f"s{i}.bin").write_bytes(os.urandom(1000))
    ok(cli("add", "models/ckpt", "--name", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    ok(cli("push"))
    dir_oid = mvc.status(repo)[0].hash
    teammate = clone(repo, tmp_path / "teammate")
    # a partly failed pull left the listing in the cache
    write_object(cache_object(teammate, dir_oid), cache_object(repo, dir_oid).read_bytes())

    result = cli("pull", cwd=teammate)

    assert ok(result).stdout.startswith("fetched 2 objects from local; 1 path updated"), result.stdout


# ---------------------------------------------------------------------------- 6, 12, 13. remote config


def test_remote_remove_drops_both_halves_and_keys_are_private(repo: Path, cli: Callable[..., Any]) -> None:
    ok(cli("remote", "add", "s3", "s3://team/models", "--access-key-id", "AKID", "--secret-access-key", "KEY"))
    local = repo / ".dvc" / "config.local"
    mode = stat.S_IMODE(local.stat().st_mode)

    removed = cli("remote", "remove", "s3")

    assert mode == 0o600
    assert ok(removed).stdout == "removed remote s3\n"
    assert "s3" not in local.read_text() and "s3" not in (repo / ".dvc" / "config").read_text()
    assert [r.name for r in mvc.remote_list(repo)] == ["local"]
    assert dvc(repo, "remote", "list").returncode == 0


@pytest.mark.parametrize(("url", "package"), [("azure://container/models", "dvc-azure"), ("ssh://host/srv/models", "dvc-ssh")])
def test_remote_add_refuses_a_scheme_whose_plugin_is_missing(
    repo: Path, cli: Callable[..., Any], url: str, package: str
) -> None:
    before = (repo / ".dvc" / "config").read_text()

    result = cli("remote", "add", "far", url)

    assert_one_line_error(result, 2, "remote 'far'", f"need the {package} plugin", f"pip install {package}")
    assert (repo / ".dvc" / "config").read_text() == before


def test_a_local_url_override_can_be_unset(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    shared = str(remote_dir(repo))
    ok(cli("remote", "modify", "local", "url", str(tmp_path / "mine"), "--local"))

    unset = cli("remote", "modify", "local", "url", "--unset", "--local")

    assert ok(unset).stdout == "unset url of remote local in .dvc/config.local\n"
    assert [r.url for r in mvc.remote_list(repo)] == [shared]
    ok(cli("status"))
    listed = dvc(repo, "remote", "list")
    assert listed.returncode == 0 and shared in listed.stdout, listed.stderr

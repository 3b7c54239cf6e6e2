"""A directory listing whose object ids are paths (issue 14's hostile listings, the oid side).

A ``.dir`` listing names each file by ``relpath`` and ``md5``; the relpath side was
checked, but DVC and mvc build cache and remote paths from the md5 (``xx/rest``). An md5
like ``abc/../../../x`` made those paths climb out of the cache and the remote: a pull
read a file outside the remote and wrote it outside the cache. Every id in a listing
must be an md5.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mvc
from mvc import dvcfetch
from tests.conftest import assert_one_line_error, git, ok
from tests.test_hardening_remotes import cache_object, clone, remote_dir, remote_object, write_object


def climb(start: Path, top: Path) -> str:
    """An md5-shaped prefix whose ``xx/rest`` path, from ``start``, climbs to ``top``."""
    depth = len(start.relative_to(top).parts) + 2  # + the "ab/c" the id itself adds
    return "abc/" + "../" * depth + "escaped-by-oid"


def hostile_oid_version(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> tuple[str, str]:
    """Commit a directory model whose listing names a file by a path-like id; push it."""
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "a.bin").write_bytes(b"honest shard")
    ok(cli("add", "models/ckpt", "--name", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    honest = mvc.status(repo=repo)[0].hash
    top = Path(os.path.commonpath([remote_dir(repo), tmp_path]))
    oid = climb(remote_dir(repo) / "files" / "md5", top)
    (remote_dir(repo) / "files" / "md5" / "ab" / "c").mkdir(parents=True)  # the remote's owner makes the climb resolve
    # what a climbing read of the remote would find: a file outside the remote
    (top / "escaped-by-oid").write_bytes(b"outside the remote")
    listing = json.dumps([{"md5": oid, "relpath": "a.bin"}], sort_keys=True).encode()
    dir_oid = hashlib.md5(listing).hexdigest() + ".dir"
    for where in (cache_object, remote_object):
        write_object(where(repo, dir_oid), listing)
    pointer = repo / "models" / "ckpt.dvc"
    pointer.write_text(pointer.read_text().replace(honest, dir_oid))
    git(repo, "commit", "-q", "-am", "ckpt v2 (crafted)")
    return dir_oid, oid


def remote_name(repo: Path) -> str:
    return next(r.name for r in mvc.remote_list(repo=repo) if r.default)


def written_outside(tmp_path: Path) -> list[Path]:
    """Files named like the bait anywhere a climbing write could reach, the bait itself aside."""
    top = tmp_path.parent  # the session's base temp dir: the repo, its remote and the clone are below it
    return [p for p in [*top.rglob("escaped-by-oid"), *Path("/").glob("escaped-by-oid")] if p != top / "escaped-by-oid"]


def test_pull_and_get_refuse_a_listing_naming_a_file_by_a_path(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    _, oid = hostile_oid_version(repo, cli, tmp_path)
    teammate = clone(repo, tmp_path / "teammate")

    pulled = cli("pull", cwd=teammate)
    got = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "deploy" / "out"))

    for result in (pulled, got):
        assert_one_line_error(result, 6, f"refusing a directory listing that names object {oid!r}, which is not a hash; nothing was written")
    assert not written_outside(tmp_path)
    assert not (teammate / "models" / "ckpt").exists()


def test_a_cluster_worker_fetch_refuses_such_a_listing(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    dir_oid, oid = hostile_oid_version(repo, cli, tmp_path)
    access = dvcfetch.remote_access(repo, remote_name(repo))

    with pytest.raises(mvc.errors.IntegrityError, match="refusing object"):
        dvcfetch.fetch_object(access, dir_oid, tmp_path / "worker" / "out", cache_dir=tmp_path / "worker" / "cache")

    assert not written_outside(tmp_path)
    assert not (tmp_path / "worker" / "out").exists() or not any(os.scandir(tmp_path / "worker" / "out"))


@pytest.mark.parametrize("relpath", ["../../../escaped-by-oid", "/tmp/mvc-escaped-by-relpath"])
def test_a_cluster_worker_fetch_refuses_a_listing_with_paths_outside_the_directory(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, relpath: str
) -> None:
    from tests.test_hardening_remotes import hostile_directory_version

    dir_oid = hostile_directory_version(repo, cli, relpath)
    access = dvcfetch.remote_access(repo, remote_name(repo))

    with pytest.raises(mvc.errors.IntegrityError, match="refusing object"):
        dvcfetch.fetch_object(access, dir_oid, tmp_path / "worker" / "out", cache_dir=tmp_path / "worker" / "cache")

    assert not written_outside(tmp_path) and not Path("/tmp/mvc-escaped-by-relpath").exists()

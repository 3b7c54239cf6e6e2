"""Faults a user causes around the transfer engine (issue 19) on the real local S3 server:
a pointer edited by hand to lie about the object's size, and what a ``kill -9`` mid-pull
leaves for the next command and for ``mvc gc``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import mvc
from tests import test_cloud_remotes as cloud
from tests.conftest import assert_one_line_error
from tests.test_cloud_remotes import Bucket, clone, commit_all
from tests.test_faults_tensors import killed
from tests.test_transfer import add_remote, cache_path, temps

pytestmark = [pytest.mark.servers]
s3 = cloud.s3
bucket = cloud.bucket  # S3 and GCS

MiB = 2**20


def model(repo: Path, cli: Callable[..., Any], s3: Bucket, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "big.bin").write_bytes(data)
    md5 = mvc.add(repo / "models" / "big.bin").version.hash
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    commit_all(repo, "big v1")
    assert cli("push").exit_code == 0
    return md5, data


@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
@pytest.mark.parametrize("delta", [-1, +1, +20 * MiB])
def test_a_pointer_lying_about_the_size_fails_as_integrity_and_writes_nothing(
    repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, delta: int
) -> None:
    md5, data = model(repo, cli, bucket, 9 * MiB + 3)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    ptr = other / "models" / "big.bin.dvc"
    doc = yaml.safe_load(ptr.read_text())
    doc["outs"][0]["size"] = len(data) + delta
    ptr.write_text(yaml.safe_dump(doc, sort_keys=False))

    pulled = cli("pull", cwd=other)

    assert_one_line_error(
        pulled, 6, f"the bytes do not match their hash (first: {md5[:8]}, {len(data)} bytes stored, {len(data) + delta} "
        "recorded in its .dvc file); nothing was written",
        "hint: if the .dvc file was edited, restore it (`git checkout -- FILE.dvc`)",
    )
    assert not (other / "models" / "big.bin").exists()
    assert not cache_path(other, md5).exists() and not temps(other)


def test_what_a_killed_pull_leaves_in_the_cache_goes_with_gc(repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path) -> None:
    md5, data = model(repo, cli, s3, 20 * MiB)
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    killed(other, "mvc.transfer:_Landing.write", "after", "pull", "--jobs", "1", n=3)
    left = temps(other)
    gc = cli("gc", "--older-than", "0", "--yes", "--json", cwd=other)

    assert len(left) == 1 and not cache_path(other, md5).exists()
    assert gc.exit_code == 0, gc.stderr
    assert not temps(other), json.loads(gc.stdout)


@pytest.mark.parametrize("field", ["size", "md5"])
def test_a_push_through_a_pointer_that_lies_stores_nothing_wrong_and_says_so(
    repo: Path, cli: Callable[..., Any], s3: Bucket, field: str
) -> None:
    """A hand-edited .dvc file: a wrong size still pushes the real object (whose md5 the
    store checks); an md5 no cache or remote holds was 'pushed 0 objects', exit 0."""
    data = os.urandom(17 * MiB + 5)  # multipart
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "big.bin").write_bytes(data)
    md5 = mvc.add(repo / "models" / "big.bin").version.hash
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    ptr = repo / "models" / "big.bin.dvc"
    doc = yaml.safe_load(ptr.read_text())
    doc["outs"][0][field] = len(data) + 1 if field == "size" else "0" * 32
    ptr.write_text(yaml.safe_dump(doc, sort_keys=False))
    commit_all(repo, "big v1")

    pushed = cli("push")

    if field == "size":
        assert pushed.exit_code == 0, pushed.stderr
        assert list(s3.objects()) == [md5]
    else:
        assert_one_line_error(
            pushed, 3, "error: the weights of big v1 (00000000) are in neither the local cache nor remote 'store'",
            "hint: pull them from a remote that has them",
        )
        assert s3.objects() == {}

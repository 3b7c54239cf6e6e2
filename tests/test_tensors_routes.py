"""The tensors layout (issue 15) on every route: push by ref / all versions / pre-push hook,
``diff --stats`` from the changed tensors' chunks only, ``get`` and ``verify --remote``.

Remotes are real: a local directory and the local S3 (SeaweedFS) / GCS (fake-gcs-server)
servers; the stored chunks are only inspected (or removed on purpose) with the filesystem
or s3fs / gcsfs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from mvc import tensorstore
from tests.conftest import assert_one_line_error, git
from tests.test_cloud_remotes import Bucket, clone, commit_all
from tests.test_tensors import add_tensors_remote, bucket, chain_steps, chunk_path, recipe, s3, save  # noqa: F401 - fixtures

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

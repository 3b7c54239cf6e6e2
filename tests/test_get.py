"""``mvc get``: one version's weights from a git repository without a work tree of it (issue 3).

The repository here is a local bare repo (the "origin") whose weights were pushed to the
default local-directory remote; the S3 / GCS case runs in tests/test_cloud_remotes.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mvc
from tests.conftest import git, write_safetensors
from tests.test_cli_core import assert_one_line_error


@pytest.fixture
def origin(repo: Path, tmp_path: Path) -> dict[str, Any]:
    """A bare repo holding model ``net`` v1 and v2 (weights pushed), plus v3 on a branch."""
    weights = repo / "models" / "net.safetensors"
    written = {}
    for version in (1, 2):
        write_safetensors(weights, seed=version)
        written[version] = weights.read_bytes()
        mvc.add(weights, message=f"v{version}")
        mvc.commit(message=f"net v{version}")
        mvc.push()
    git(repo, "checkout", "-q", "-b", "exp/wide")
    write_safetensors(weights, seed=3)
    written[3] = weights.read_bytes()
    mvc.add(weights)
    mvc.commit(message="net v3 (wide)")
    mvc.push()
    git(repo, "checkout", "-q", "main")
    mvc.checkout()
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    return {"path": bare, "bytes": written}


def test_get_name_and_name_at_version(origin: dict[str, Any], cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "deploy"

    latest = cli("get", str(origin["path"]), "net", "-o", str(out / "latest"), "--json")
    first = cli("get", str(origin["path"]), "net@v1", "-o", str(out / "first"))
    branch = cli("get", str(origin["path"]), "net@exp/wide", "-o", str(out / "wide"), "--json")
    from_python = mvc.get(origin["path"], "net@v1", out=out / "python")

    assert latest.exit_code == 0, latest.stderr
    got = json.loads(latest.stdout)
    assert (got["name"], got["version"], got["remote"]) == ("net", 2, "local")
    assert got["path"] == str(out / "latest" / "net.safetensors")
    assert (out / "latest" / "net.safetensors").read_bytes() == origin["bytes"][2]
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("net v1 (") and first.stdout.strip().endswith(str(out / "first" / "net.safetensors"))
    assert (out / "first" / "net.safetensors").read_bytes() == origin["bytes"][1]
    assert json.loads(branch.stdout)["version"] == 3
    assert (out / "wide" / "net.safetensors").read_bytes() == origin["bytes"][3]
    assert from_python.version == 1 and Path(from_python.path).read_bytes() == origin["bytes"][1]
    # Only the weights: no work tree, no cache, no staging directory left behind.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")) == [
        "first/net.safetensors", "latest/net.safetensors", "python/net.safetensors", "wide/net.safetensors"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["first", "latest", "python", "wide"]
    assert all(len(list(d.iterdir())) == 1 for d in out.iterdir())


def test_get_refuses_to_overwrite_without_force(
    origin: dict[str, Any], cli: Callable[..., Any], tmp_path: Path
) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "net.safetensors").write_bytes(b"what is deployed now")

    refused = cli("get", str(origin["path"]), "net@v1", "-o", str(out))
    kept = (out / "net.safetensors").read_bytes()
    forced = cli("get", str(origin["path"]), "net@v1", "-o", str(out), "--force")

    assert_one_line_error(refused, 4, "net.safetensors exists already", "--force")
    assert kept == b"what is deployed now"
    assert forced.exit_code == 0, forced.stderr
    assert (out / "net.safetensors").read_bytes() == origin["bytes"][1]
    assert [p.name for p in out.iterdir()] == ["net.safetensors"]


def test_get_unknown_model_ref_or_remote(origin: dict[str, Any], cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases = [
        (["nosuch"], ["no model named 'nosuch'", "models: net"]),
        (["net@v9"], ["'net' has no version 9"]),
        (["net@no-such-branch"], ["'no-such-branch' is not a version, stage, tag, branch or commit"]),
        (["net", "--remote", "nosuch"], ["no remote named 'nosuch'", "remotes: local"]),
    ]

    results = [(args, cli("get", str(origin["path"]), *args, "-o", str(out))) for args, _ in cases]

    for (_args, result), (_, needles) in zip(results, cases, strict=True):
        assert_one_line_error(result, 3, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_get_directory_model(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    ckpt = repo / "ckpt"
    for i in range(3):
        write_safetensors(ckpt / f"shard-{i}.safetensors", seed=i)
    mvc.add(ckpt, name="llm")
    mvc.commit(message="llm v1")
    mvc.push()

    result = cli("get", str(repo), "llm", "-o", str(tmp_path / "out"))

    assert result.exit_code == 0, result.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "ckpt").iterdir()} == {
        p.name: p.read_bytes() for p in ckpt.iterdir()
    }


def test_get_from_a_path_that_is_not_a_repository(cli: Callable[..., Any], tmp_path: Path) -> None:
    result = cli("get", str(tmp_path / "nowhere"), "net", "-o", str(tmp_path / "out"))

    assert_one_line_error(result, 3, "is not a git repository")

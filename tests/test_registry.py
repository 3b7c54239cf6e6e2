"""The registry as a user runs it: tag, promote, registry; NAME@STAGE refs; agreement with the real gto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"


@pytest.fixture
def two_versions(repo, cli):
    """``net`` v1 and v2 committed (and pushed) on main; returns {1: (commit, hash), 2: (commit, hash)}."""
    out = {}
    for n, seed in ((1, 1), (2, 2)):
        write_safetensors(repo / WEIGHTS, seed=seed)
        ok(cli("add", str(repo / WEIGHTS)))
        ok(cli("commit", "-m", f"net v{n}"))
        ok(cli("push"))
        out[n] = (git(repo, "rev-parse", "HEAD"), json.loads(ok(cli("show", "net", "--json")).stdout)["hash"])
    return out


def at(monkeypatch, second: int) -> None:
    """Tag (and commit) at a fixed time, so registry events have a known order (GTO orders by tag time)."""
    monkeypatch.setenv("GIT_COMMITTER_DATE", f"2024-01-01T00:00:{second:02d} +0000")


def gto_show(repo: Path) -> dict:
    gto = Path(sys.executable).parent / "gto"
    return json.loads(subprocess.run([str(gto), "show", "--json"], cwd=repo, capture_output=True, text=True, check=True).stdout)


def mvc_state(cli) -> dict:
    """``mvc registry --json`` in gto show's shape: {name: {version, stage}}."""
    return {
        m["name"]: {"version": m["latest"], "stage": {s["stage"]: s["release"] for s in m["stages"]}}
        for m in json.loads(ok(cli("registry", "--json")).stdout)
    }


def agree_with_gto(repo: Path, cli) -> dict:
    theirs = gto_show(repo)
    mine = mvc_state(cli)
    assert {n: {"version": d["version"], "stage": {s: v for s, v in d["stage"].items() if v}} for n, d in theirs.items()} == mine
    return mine


# ---- tag --------------------------------------------------------------------------------------


def test_tag_registers_an_annotated_release_on_the_versions_commit(repo, cli, two_versions):
    r = json.loads(ok(cli("tag", "net@v1", "v1.0.0", "-m", "first release", "--json")).stdout)
    assert (r["tag"], r["commit"], r["version"], r["hash"]) == ("net@v1.0.0", two_versions[1][0], 1, two_versions[1][1])
    assert git(repo, "cat-file", "-t", "net@v1.0.0") == "tag"  # annotated: gto ignores lightweight tags
    assert git(repo, "tag", "-l", "--format=%(contents:subject)", "net@v1.0.0") == "first release"
    assert json.loads(ok(cli("show", "net@v1.0.0", "--json")).stdout)["hash"] == two_versions[1][1]
    head = json.loads(ok(cli("tag", "net", "v1.1.0", "--json")).stdout)
    assert head["commit"] == two_versions[2][0] and head["version"] == 2
    assert agree_with_gto(repo, cli) == {"net": {"version": "v1.1.0", "stage": {}}}


def test_tag_that_exists_already_is_refused(repo, cli, two_versions):
    ok(cli("tag", "net@v1", "v1.0.0"))
    assert_one_line_error(cli("tag", "net@v2", "v1.0.0"), 4, "release net@v1.0.0 exists already", "pick a new version number")
    assert_one_line_error(cli("tag", "net@v1", "v1.0.1"), 4, "net v1 is released already as net@v1.0.0")
    assert git(repo, "tag", "-l") == "net@v1.0.0"


def test_tag_rejects_a_non_semver_release_and_an_uncommitted_version(repo, cli, two_versions):
    assert_one_line_error(cli("tag", "net", "1.0"), 2, "'1.0' is not a release version", "vMAJOR.MINOR.PATCH")
    write_safetensors(repo / WEIGHTS, seed=3)
    ok(cli("add", str(repo / WEIGHTS)))
    assert_one_line_error(cli("tag", "net", "v3.0.0"), 4, "net v3 is not committed yet", "mvc commit")
    assert git(repo, "tag", "-l") == ""


# ---- promote ---------------------------------------------------------------------------------


def test_promote_refuses_a_version_whose_weights_are_not_in_the_remote(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", "net v1"))
    assert_one_line_error(cli("promote", "net", "--stage", "prod"), 4, "the weights of net v1", "are not in remote 'local'", "--push")
    assert git(repo, "tag", "-l") == ""
    ok(cli("push"))
    r = json.loads(ok(cli("promote", "net", "--stage", "prod", "--json")).stdout)
    assert (r["tag"], r["release"], r["release_tag"]) == ("net#prod#1", "v0.0.1", "net@v0.0.1")


def test_promote_rejects_a_bad_stage_and_a_repeat(repo, cli, two_versions):
    assert_one_line_error(cli("promote", "net", "--stage", "no good"), 2, "'no good' is not a valid stage name")
    ok(cli("promote", "net", "--stage", "prod"))
    assert_one_line_error(cli("promote", "net@v2", "--stage", "prod"), 4, "net v2 is in stage 'prod' already")


def test_stages_move_and_unassign_tags_are_honoured_like_gto(repo, cli, two_versions, monkeypatch):
    v1, v2 = two_versions[1][1], two_versions[2][1]
    at(monkeypatch, 1)
    ok(cli("tag", "net@v1", "v1.0.0"))
    at(monkeypatch, 2)
    first = json.loads(ok(cli("promote", "net@v1", "--stage", "prod", "--json")).stdout)
    assert first["release_tag"] is None and first["release"] == "v1.0.0"
    assert json.loads(ok(cli("show", "net@prod", "--json")).stdout)["hash"] == v1
    at(monkeypatch, 3)
    second = json.loads(ok(cli("promote", "net@v2", "--stage", "prod", "--json")).stdout)
    assert (second["tag"], second["release_tag"]) == ("net#prod#2", "net@v1.0.1")  # registered as gto assign does
    at(monkeypatch, 4)
    ok(cli("promote", "net@v2", "--stage", "staging"))
    assert json.loads(ok(cli("show", "net@prod", "--json")).stdout)["hash"] == v2
    assert agree_with_gto(repo, cli) == {"net": {"version": "v1.0.1", "stage": {"prod": "v1.0.1", "staging": "v1.0.1"}}}

    at(monkeypatch, 5)
    un = json.loads(ok(cli("promote", "net", "--stage", "prod", "--unassign", "--json")).stdout)
    assert un["tag"] == "net#prod!#4" and un["commit"] == two_versions[2][0]
    assert json.loads(ok(cli("show", "net@prod", "--json")).stdout)["hash"] == v1  # back to the earlier assignment
    assert agree_with_gto(repo, cli)["net"]["stage"] == {"prod": "v1.0.0", "staging": "v1.0.1"}
    at(monkeypatch, 6)
    ok(cli("promote", "net", "--stage", "prod", "--unassign"))
    assert_one_line_error(cli("show", "net@prod"), 3, "no version of net is in stage 'prod' now")
    assert agree_with_gto(repo, cli)["net"]["stage"] == {"staging": "v1.0.1"}
    assert json.loads(ok(cli("show", "net@staging", "--json")).stdout)["hash"] == v2


def test_registry_shows_releases_and_stages_and_ignores_lightweight_tags(repo, cli, two_versions, monkeypatch):
    at(monkeypatch, 1)
    ok(cli("tag", "net@v1", "v1.0.0"))
    at(monkeypatch, 2)
    ok(cli("promote", "net@v2", "--stage", "prod"))
    git(repo, "tag", "net@v9.9.9")  # lightweight: not a registry event
    data = json.loads(ok(cli("registry", "net", "--json")).stdout)
    (m,) = data
    assert m["latest"] == "v1.0.1"
    assert [(r["release"], r["version"], r["hash"]) for r in m["releases"]] == [("v1.0.1", 2, two_versions[2][1]), ("v1.0.0", 1, two_versions[1][1])]
    assert [(s["stage"], s["release"], s["version"], s["commit"]) for s in m["stages"]] == [("prod", "v1.0.1", 2, two_versions[2][0])]
    table = ok(cli("registry")).stdout.splitlines()
    assert table == ["model\tlatest\t#prod", "net\tv1.0.1\tv1.0.1"]
    detail = ok(cli("registry", "net")).stdout
    assert "v1.0.0\tv1 (" in detail and "v1.0.1\tv2 (" in detail and "\tprod\t" in detail
    agree_with_gto(repo, cli)


def test_tag_and_promote_push_weights_then_tags(repo, cli, two_versions, tmp_path):
    assert_one_line_error(cli("tag", "net", "v1.0.0", "--push"), 3, "no git remote named 'origin'")
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    ok(cli("tag", "net", "v1.0.0", "--push"))
    ok(cli("promote", "net", "--stage", "prod", "--push"))
    assert set(git(bare, "tag", "-l").split()) == {"net@v1.0.0", "net#prod#1"}


def test_push_registry_uploads_every_tagged_version_then_the_tags(repo, cli, tmp_path):
    import mvc

    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", "net v1"))
    ok(cli("tag", "net", "v1.0.0"))
    write_safetensors(repo / WEIGHTS, seed=2)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", "net v2"))
    ok(cli("tag", "net", "v2.0.0"))
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    result = mvc.push_registry(repo=repo)
    assert (result.remote, result.transferred, set(result.tags)) == ("local", 2, {"net@v1.0.0", "net@v2.0.0"})
    assert set(git(bare, "tag", "-l").split()) == {"net@v1.0.0", "net@v2.0.0"}
    ok(cli("promote", "net@v1.0.0", "--stage", "prod"))  # both versions' weights are in the remote now


def test_mvc_push_tags_uploads_tagged_weights_and_pushes_the_tags(repo, cli, tmp_path):
    import json

    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", "net v1"))
    ok(cli("tag", "net", "v1.0.0"))
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    result = cli("push", "--tags", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["push"]["remote"] == "local" and data["registry"]["tags"] == ["net@v1.0.0"]
    assert git(bare, "tag", "-l").split() == ["net@v1.0.0"]
    human = cli("push", "--tags")
    assert "registry: 1 tag pushed to origin" in human.stdout


def test_promote_push_of_a_released_version_pushes_its_release_tag_too(repo, cli, two_versions, tmp_path):
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    ok(cli("tag", "net@v1", "v1.0.0"))  # registered locally, never pushed
    ok(cli("promote", "net@v1.0.0", "--stage", "prod", "--push"))
    assert sorted(git(bare, "tag", "-l").split()) == ["net#prod#1", "net@v1.0.0"]

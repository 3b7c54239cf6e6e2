"""The merge driver for model pointers and `mvc resolve`, driven by real `git merge`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"
POINTER = WEIGHTS + ".dvc"


def version(cli, repo: Path, seed: int) -> tuple[bytes, str]:
    write_safetensors(repo / WEIGHTS, seed=seed)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", f"net seed {seed}"))
    return (repo / WEIGHTS).read_bytes(), json.loads(ok(cli("show", "net", "--json")).stdout)["hash"]


def git_merge(repo: Path, branch: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "merge", "--no-edit", branch], cwd=repo, capture_output=True, text=True)


def diverge(repo: Path, cli) -> dict[str, tuple[bytes, str]]:
    """v1 on main; v2 on branch `other` and a different v2 on main; returns {side: (bytes, hash)}."""
    base = version(cli, repo, 1)
    git(repo, "checkout", "-q", "-b", "other")
    theirs = version(cli, repo, 2)
    git(repo, "checkout", "-q", "main")
    ok(cli("checkout"))
    ours = version(cli, repo, 3)
    return {"base": base, "ours": ours, "theirs": theirs}


def test_init_sets_up_the_merge_driver_once(repo, cli):
    ok(cli("init"))
    assert (repo / ".gitattributes").read_text().splitlines().count("*.dvc merge=mvc") == 1
    assert git(repo, "ls-files", ".gitattributes") == ".gitattributes"  # committed with `mvc init`
    driver = git(repo, "config", "merge.mvc.driver")
    assert driver.startswith(sys.executable) and driver.endswith("-m mvc _merge-driver %O %A %B %P")


def test_a_model_changed_on_both_sides_stops_the_merge_without_conflict_markers(repo, cli):
    sides = diverge(repo, cli)
    merge = git_merge(repo, "other")
    assert merge.returncode == 1
    said = merge.stdout + merge.stderr
    assert "mvc: both sides changed model 'net' (models/net.safetensors.dvc)" in said
    assert f"ours    net v2 ({sides['ours'][1][:8]}) on main" in said
    assert f"theirs  net v2 ({sides['theirs'][1][:8]}) on other" in said
    assert "mvc resolve net --take ours|theirs|REF" in said and "mvc merge" in said
    text = (repo / POINTER).read_text()
    assert "<<<<<<<" not in text and yaml.safe_load(text)["outs"][0]["md5"] == sides["ours"][1]
    assert git(repo, "diff", "--name-only", "--diff-filter=U") == POINTER

    r = json.loads(ok(cli("resolve", "net", "--take", "theirs", "--json")).stdout)
    assert (r["version"], r["hash"], r["took"]) == (3, sides["theirs"][1], "theirs")
    assert [(p["hash"], p["version"]) for p in r["parents"]] == [(sides["ours"][1], 2), (sides["theirs"][1], 2)]
    assert (repo / WEIGHTS).read_bytes() == sides["theirs"][0]
    assert git(repo, "diff", "--name-only", "--diff-filter=U") == ""
    git(repo, "commit", "-q", "--no-edit")
    log = json.loads(ok(cli("log", "net", "--json")).stdout)
    assert (log[0]["version"], log[0]["hash"]) == (3, sides["theirs"][1])
    assert json.loads(ok(cli("status", "--no-remote", "--json")).stdout)[0]["workspace"] == "ok"


def test_resolve_can_take_ours_or_any_version(repo, cli):
    sides = diverge(repo, cli)
    assert git_merge(repo, "other").returncode == 1
    r = json.loads(ok(cli("resolve", "net", "--take", "v1", "--json")).stdout)
    assert (r["version"], r["hash"]) == (3, sides["base"][1]) and (repo / WEIGHTS).read_bytes() == sides["base"][0]
    git(repo, "merge", "--abort")
    ok(cli("checkout"))
    assert git_merge(repo, "other").returncode == 1
    r = json.loads(ok(cli("resolve", "net", "--take", "ours", "--json")).stdout)
    assert (r["version"], r["hash"]) == (3, sides["ours"][1]) and (repo / WEIGHTS).read_bytes() == sides["ours"][0]


def test_a_model_changed_on_one_side_merges_cleanly(repo, cli):
    version(cli, repo, 1)
    git(repo, "checkout", "-q", "-b", "other")
    theirs = version(cli, repo, 2)
    git(repo, "checkout", "-q", "main")
    (repo / "README").write_text("main moved on\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "docs")
    assert git_merge(repo, "other").returncode == 0
    assert yaml.safe_load((repo / POINTER).read_text())["outs"][0]["md5"] == theirs[1]


def test_the_driver_takes_the_only_changed_weights_and_falls_back_to_a_text_merge(repo, cli, tmp_path):
    version(cli, repo, 1)
    base = (repo / POINTER).read_bytes()
    version(cli, repo, 2)
    theirs = (repo / POINTER).read_bytes()
    ours = base.replace(b"message: net seed 1", b"message: reworded")  # same weights as the base
    files = {}
    for side, data in (("base", base), ("ours", ours), ("theirs", theirs)):
        files[side] = tmp_path / side
        files[side].write_bytes(data)
    ok(cli("_merge-driver", str(files["base"]), str(files["ours"]), str(files["theirs"]), POINTER, cwd=repo))
    assert files["ours"].read_bytes() == theirs
    for side, text in (("base", "a\n"), ("ours", "b\n"), ("theirs", "c\n")):
        files[side].write_text(text)  # not a pointer: git's own text merge
    assert cli("_merge-driver", str(files["base"]), str(files["ours"]), str(files["theirs"]), "data.dvc", cwd=repo).exit_code == 1
    assert "<<<<<<< ours" in files["ours"].read_text()


def test_resolve_without_a_conflict_is_refused(repo, cli):
    version(cli, repo, 1)
    assert_one_line_error(cli("resolve", "net", "--take", "theirs"), 4, "model 'net' has no merge conflict to resolve")

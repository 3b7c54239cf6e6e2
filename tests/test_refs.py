"""The one ref resolver, as users reach it through `mvc show`: every syntax, ambiguity, bad refs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import mvc
from tests.conftest import git
from tests.test_history import PTR, assert_one_line_error, repo_from_template, version, write_weights


def build_branches(repo: Path) -> dict[str, str]:
    """main: v1 -> v2 (tagged) -> v3; branches a and b (from v3) each make their own v4."""
    h = {"init": git(repo, "rev-parse", "HEAD")}
    h["v1"] = version(repo, 1, "one")
    h["v1-commit"] = git(repo, "rev-parse", "HEAD")
    h["v2"] = version(repo, 2, "two")
    git(repo, "tag", "good-one")
    git(repo, "tag", "-a", "net@v1.0.0", "-m", "release 1.0.0")
    h["v3"] = version(repo, 3, "three")
    for branch, seed in (("a", 4), ("b", 5)):
        git(repo, "checkout", "-q", "-b", branch, "main")
        mvc.checkout(["net"], repo=repo)
        h[f"{branch}-v4"] = version(repo, seed, f"four on {branch}")
        h[f"{branch}-commit"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    mvc.checkout(["net"], repo=repo)
    return h


@pytest.fixture
def branches(tmp_path, tmp_path_factory, monkeypatch):
    return repo_from_template("branches", build_branches, tmp_path, tmp_path_factory, monkeypatch)


def shown(cli, ref: str) -> dict:
    result = cli("show", ref, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("ref", "label", "version"),
    [
        ("net", "v3", 3),
        ("net@v1", "v1", 1),
        ("net@v2", "v2", 2),
        ("net@latest", "v3", 3),
        ("net@main", "v3", 3),
        ("net@a", "a-v4", 4),
        ("net@b", "b-v4", 4),
        ("net@good-one", "v2", 2),  # a git tag
        ("net@v1.0.0", "v2", 2),  # a registry release tag NAME@vX.Y.Z
        ("net@HEAD~1", "v2", 2),
        ("net@{v1-commit}", "v1", 1),  # full sha
        ("net@{v1-commit:.10}", "v1", 1),  # short sha
        ("models/net.safetensors@v1", "v1", 1),  # the weights path names the model too
    ],
)
def test_every_ref_syntax_resolves(branches, cli, ref, label, version):
    repo, h = branches
    ref = ref.format(**{"v1-commit": h["v1-commit"]}) if "{" in ref else ref
    d = shown(cli, ref)
    assert (d["hash"], d["version"], d["name"]) == (h[label], version, "net")
    if "@" in ref:
        assert d["commit"] is not None


def test_latest_is_the_branchs_newest_version(branches, cli):
    repo, h = branches
    git(repo, "checkout", "-q", "a")
    assert shown(cli, "net@latest")["hash"] == h["a-v4"]


def test_vn_on_two_branches_is_ambiguous_from_a_third(branches, cli):
    repo, h = branches
    result = cli("show", "net@v4")
    assert_one_line_error(result, 4, "net@v4 is ambiguous", h["a-v4"][:8], h["b-v4"][:8],
                          f"on a (commit {h['a-commit'][:8]})", f"on b (commit {h['b-commit'][:8]})")
    assert "hint: name one by branch or commit" in result.stderr
    assert_one_line_error(cli("diff", "net@v4", "net@v1"), 4, "ambiguous")


def test_vn_on_the_current_branch_wins(branches, cli):
    repo, h = branches
    git(repo, "checkout", "-q", "b")
    assert shown(cli, "net@v4")["hash"] == h["b-v4"]


def test_vn_on_only_another_branch_resolves(branches, cli):
    repo, h = branches
    git(repo, "branch", "-D", "b")
    d = shown(cli, "net@v4")
    assert d["hash"] == h["a-v4"] and d["commit"] == h["a-commit"]


def test_both_sides_of_a_merge_with_the_same_number_are_ambiguous(branches, cli):
    repo, h = branches
    git(repo, "checkout", "-q", "a")
    merge = subprocess.run(["git", "merge", "b", "-m", "merge b"], cwd=repo, capture_output=True, text=True)
    assert merge.returncode == 1
    git(repo, "checkout", "--ours", PTR)
    write_weights(repo / "models/net.safetensors", 9)
    assert mvc.add(repo / "models/net.safetensors").version.version == 5
    git(repo, "add", "-A", ".mvc", PTR)
    git(repo, "commit", "-q", "--no-edit")
    assert_one_line_error(cli("show", "net@v4"), 4, "ambiguous", h["a-v4"][:8], h["b-v4"][:8])
    assert shown(cli, f"net@{h['b-commit']}")["hash"] == h["b-v4"]  # a commit disambiguates


# ---- bad refs ----------------------------------------------------------------------------


def test_unknown_ref(branches, cli):
    assert_one_line_error(cli("show", "net@nope"), 3, "net@nope: 'nope' is not a version, stage, tag, branch or commit")


def test_unknown_version_number(branches, cli):
    assert_one_line_error(cli("show", "net@v9"), 3, "net@v9: 'net' has no version 9")


def test_unknown_release(branches, cli):
    assert_one_line_error(cli("show", "net@v9.9.9"), 3, "net@v9.9.9: no such release")


def test_ref_before_the_model_existed(branches, cli):
    repo, h = branches
    assert_one_line_error(cli("show", f"net@{h['init'][:10]}"), 3, "model 'net' did not exist at", h["init"][:8])


def test_unknown_model(branches, cli):
    assert_one_line_error(cli("show", "resnet@v1"), 3, "no model named 'resnet' (models: net)")


@pytest.mark.parametrize("ref", ["net@", "@v1"])
def test_malformed_ref(branches, cli, ref):
    assert_one_line_error(cli("show", ref), 2, "is not a model reference")

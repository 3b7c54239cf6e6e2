"""Rollback (`mvc checkout NAME@REF`, `mvc checkout NAME`) and `mvc restore`, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import mvc
from tests.conftest import git, write_safetensors
from tests.test_diff import push_every_version
from tests.test_history import PTR, assert_one_line_error, repo_from_template, rows

WEIGHTS = "models/net.safetensors"


def build_three(repo: Path) -> dict[str, str]:
    """net v1 -> v2 -> v3 on main; the bytes of each version are kept in ``.git/versions/``."""
    h = {}
    keep = repo / ".git" / "versions"
    keep.mkdir()
    for n in (1, 2, 3):
        write_safetensors(repo / WEIGHTS, seed=n)
        shutil.copyfile(repo / WEIGHTS, keep / f"v{n}")
        h[f"v{n}"] = mvc.add(repo / WEIGHTS, params={"lr": n / 10}, metrics={"acc": 0.5 + n / 10}, message=f"v{n}").version.hash
        h[f"v{n}-commit"] = mvc.commit(repo=repo, message=f"net v{n}").commit
    return h


@pytest.fixture
def three(tmp_path, tmp_path_factory, monkeypatch):
    return repo_from_template("three", build_three, tmp_path, tmp_path_factory, monkeypatch)


def saved(repo: Path, label: str) -> bytes:
    return (repo / ".git" / "versions" / label).read_bytes()


def workspace_state(cli) -> str:
    result = cli("status", "net", "--no-remote", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)[0]["workspace"]


def test_checkout_ref_rolls_back_without_moving_the_branch(three, cli):
    repo, h = three
    head, pointer = git(repo, "rev-parse", "HEAD"), (repo / PTR).read_bytes()
    result = cli("checkout", "net@v1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1 path updated in the work tree\n"
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v1")
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert (repo / PTR).read_bytes() == pointer and git(repo, "status", "--porcelain") == ""
    assert workspace_state(cli) == "rolled back to v1"
    table = rows(cli("status", "net", "--no-remote").stdout)
    assert table[0]["version"] == "v3" and table[0]["workspace"] == "rolled back to v1" and table[0]["committed"] == "yes"

    assert cli("checkout", "net@v2").exit_code == 0  # from one rollback to another: no --force needed
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v2") and workspace_state(cli) == "rolled back to v2"

    back = cli("checkout", "net", "--json")
    assert back.exit_code == 0, back.stderr
    assert json.loads(back.stdout)["models"] == ["net"]
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v3") and workspace_state(cli) == "ok"


@pytest.mark.parametrize("ref", ["net@{v1-commit}", "net@HEAD~2", "net@v1"])
def test_rollback_accepts_any_ref(three, cli, ref):
    repo, h = three
    assert cli("checkout", ref.format(**{"v1-commit": h["v1-commit"]})).exit_code == 0
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v1")


def test_checkout_of_the_current_version_is_a_plain_checkout(three, cli):
    repo, h = three
    result = cli("checkout", "net@v3", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["modified"] == []
    assert workspace_state(cli) == "ok"


@pytest.mark.parametrize("args", [["checkout", "net@v1"], ["checkout", "net"], ["checkout"], ["restore", "net@v1"]])
def test_unrecorded_changes_are_refused_without_force(three, cli, args):
    repo, h = three
    write_safetensors(repo / WEIGHTS, seed=99)  # trained further, not added
    mine = (repo / WEIGHTS).read_bytes()
    pointer = (repo / PTR).read_bytes()
    assert_one_line_error(cli(*args), 4, f"{WEIGHTS} has changes that no version records")
    assert (repo / WEIGHTS).read_bytes() == mine and (repo / PTR).read_bytes() == pointer  # nothing lost
    assert workspace_state(cli) == "modified"
    forced = cli(*args, "--force")
    assert forced.exit_code == 0, forced.stderr


def test_rolled_back_weights_changed_by_hand_are_protected(three, cli):
    repo, h = three
    cli("checkout", "net@v1")
    with open(repo / WEIGHTS, "ab") as f:
        f.write(b"\0")
    assert workspace_state(cli) == "modified"
    assert_one_line_error(cli("checkout", "net"), 4, "has changes that no version records")


def test_weights_of_another_branch_are_replaced_without_force(three, cli):
    repo, h = three
    git(repo, "checkout", "-q", "-b", "old", h["v1-commit"])  # pointer now v1, weights still v3 (recorded)
    assert workspace_state(cli) == "modified"
    result = cli("checkout", "net")
    assert result.exit_code == 0, result.stderr
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v1")


def test_rollback_fetches_weights_missing_from_the_cache(three, cli, tmp_path):
    repo, h = three
    push_every_version(repo, [h["v1-commit"], h["v3-commit"]], tmp_path / "team-remote")
    shutil.rmtree(repo / ".dvc" / "cache")
    result = cli("checkout", "net@v1")
    assert result.exit_code == 0, result.stderr
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v1")


def test_rollback_of_a_version_in_no_cache_or_remote(three, cli):
    repo, h = three
    shutil.rmtree(repo / ".dvc" / "cache")
    before = (repo / WEIGHTS).read_bytes()
    assert_one_line_error(cli("checkout", "net@v1"), 3, "net v1", "in neither the local cache nor")
    assert (repo / WEIGHTS).read_bytes() == before


def test_rollback_bad_refs(three, cli):
    assert_one_line_error(cli("checkout", "net@v7"), 3, "has no version 7")
    assert_one_line_error(cli("checkout", "cnn@v1"), 3, "no model named 'cnn' (models: net)")


# ---- restore -----------------------------------------------------------------------------


def test_restore_makes_a_new_version_with_the_old_weights(three, cli):
    repo, h = three
    result = cli("restore", "net@v1", "--json")
    assert result.exit_code == 0, result.stderr
    v = json.loads(result.stdout)["version"]
    assert v["version"] == 4 and v["hash"] == h["v1"]
    m = v["manifest"]
    assert m["parents"] == [{"hash": h["v3"], "version": 3, "name": None}]
    assert m["params"] == {"lr": 0.1} and m["metrics"] == {"acc": 0.6}
    assert m["extra"]["restored_from"] == {"version": 1, "hash": h["v1"], "ref": "net@v1"}
    assert m["message"] == f"restore v1 ({h['v1'][:8]})"
    assert (repo / WEIGHTS).read_bytes() == saved(repo, "v1")
    assert PTR in git(repo, "diff", "--cached", "--name-only").splitlines()  # staged, like `mvc add`
    assert workspace_state(cli) == "ok"

    assert cli("commit", "-m", "back to v1").exit_code == 0
    log = json.loads(cli("log", "net", "--json").stdout)
    assert [(r["version"], r["hash"]) for r in log] == [(4, h["v1"]), (3, h["v3"]), (2, h["v2"]), (1, h["v1"])]
    assert log[0]["parents"][0]["hash"] == h["v3"]  # history is never rewritten
    assert cli("diff", "net@v1", "net@v4").stdout.splitlines()[1] == "same weights"


def test_restore_human_output_and_message(three, cli):
    repo, h = three
    result = cli("restore", "net@v2", "-m", "v3 overfit")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"net: v4 ({h['v2'][:8]}) restores net@v2; commit it with `mvc commit -m MSG`\n"
    assert mvc.show("net", repo=repo).manifest.message == "v3 overfit"


def test_restore_after_a_rollback_needs_no_force(three, cli):
    repo, h = three
    cli("checkout", "net@v2")
    result = cli("restore", "net@v2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["version"]["version"] == 4
    assert workspace_state(cli) == "ok"


def test_restore_of_the_current_version(three, cli):
    assert_one_line_error(cli("restore", "net@v3"), 4, "net@v3 is already the current version of net")
    assert_one_line_error(cli("restore", "net@latest"), 4, "already the current version")


def test_checkout_ref_of_the_current_version_fetches_it_in_a_fresh_clone(repo, weights, cli, tmp_path):
    """`mvc checkout net@v1` when v1 is what HEAD records, in a clone with an empty cache."""
    assert cli("add", str(weights)).exit_code == 0
    assert cli("commit", "-m", "v1").exit_code == 0
    assert cli("push").exit_code == 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    result = cli("checkout", "net@v1", cwd=clone)
    assert result.exit_code == 0, result.stderr
    assert (clone / "models/net.safetensors").read_bytes() == weights.read_bytes()

"""Experiments as a user runs them: exp new / list / switch / compare / promote / remove."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"


def version(cli, repo: Path, seed: int, *extra: str) -> bytes:
    """Write weights from ``seed``, add and commit them; return their bytes."""
    write_safetensors(repo / WEIGHTS, seed=seed)
    ok(cli("add", str(repo / WEIGHTS), *extra))
    ok(cli("commit", "-m", f"net seed {seed}"))
    return (repo / WEIGHTS).read_bytes()


def train(path: Path, lr: float, *, epochs: int = 10) -> float:
    """Logistic regression by gradient descent from a fixed start on fixed data; save weights, return accuracy."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 6)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.7, 0.0, 1.0, -0.5], np.float32) + 0.3 > 0).astype(np.float32)
    w, b = np.random.default_rng(1).standard_normal(6).astype(np.float32), np.zeros(1, np.float32)
    for _ in range(epochs):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= lr * x.T @ (p - y) / len(y)
        b -= lr * np.array([np.mean(p - y)], np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": w, "b": b}, str(path))
    return round(float(np.mean(((x @ w + b) > 0) == y)), 4)


def exp_json(cli, *args: str):
    return json.loads(ok(cli("exp", *args, "--json")).stdout)


# ---- exp new ------------------------------------------------------------------------------


def test_exp_new_records_base_and_params_on_its_branch(repo, cli):
    version(cli, repo, 1)
    base = git(repo, "rev-parse", "HEAD")
    data = exp_json(cli, "new", "lr-0.1", "--param", "lr=0.1", "--param", "opt=adam")
    e = data["experiment"]
    assert (e["name"], e["branch"], e["base"], e["base_branch"]) == ("lr-0.1", "exp/lr-0.1", base, "main")
    assert e["params"] == {"lr": 0.1, "opt": "adam"} and e["current"] is True
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "exp/lr-0.1"
    record = json.loads(git(repo, "show", "exp/lr-0.1:.mvc/experiments/lr-0.1.json"))
    assert record["base"] == base and record["params"] == {"lr": 0.1, "opt": "adam"}
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == ".mvc/experiments/lr-0.1.json"


def test_exp_new_from_an_older_commit_syncs_its_weights(repo, cli):
    v1 = version(cli, repo, 1)
    version(cli, repo, 2)
    result = ok(cli("exp", "new", "from-v1", "--from", "HEAD~1"))
    assert "experiment from-v1: on branch exp/from-v1" in result.stdout
    assert (repo / WEIGHTS).read_bytes() == v1
    assert "synced the weights" in result.stderr


def test_exp_new_rejects_a_name_that_is_no_branch_name(repo, cli):
    for bad in ("two words", "a..b", "x~1"):
        assert_one_line_error(cli("exp", "new", bad), 2, "is not a valid experiment name")
    assert git(repo, "branch", "--list", "exp/*") == ""


def test_exp_new_rejects_an_existing_experiment(repo, cli):
    ok(cli("exp", "new", "a"))
    assert_one_line_error(cli("exp", "new", "a"), 4, "experiment 'a' exists already", "mvc exp switch a")


# ---- exp list -----------------------------------------------------------------------------


def test_exp_list_ranks_by_a_metric_read_from_git_objects(repo, cli):
    version(cli, repo, 1, "--metric", "acc=0.5")
    for name, acc, seed in (("a", 0.7, 2), ("b", 0.9, 3), ("c", 0.8, 4)):
        ok(cli("exp", "new", name, "--from", "main", "--param", f"seed={seed}"))
        version(cli, repo, seed, "--metric", f"acc={acc}")
    head = git(repo, "rev-parse", "HEAD")
    rows = json.loads(ok(cli("exp", "list", "--sort", "acc", "--json")).stdout)
    assert [r["name"] for r in rows] == ["b", "c", "a"]
    assert [r["models"][0]["metrics"]["acc"] for r in rows] == [0.9, 0.8, 0.7]
    assert rows[0]["models"][0]["version"] == 2 and rows[0]["params"] == {"seed": 3}
    assert [r["current"] for r in rows] == [False, True, False]
    assert all(r["base_branch"] == "main" and r["last_activity"] for r in rows)
    ascending = json.loads(ok(cli("exp", "list", "--sort", "acc:asc", "--json")).stdout)
    assert [r["name"] for r in ascending] == ["a", "c", "b"]
    table = ok(cli("exp", "list", "--sort", "acc")).stdout.splitlines()
    assert table[0].split("\t")[:5] == ["experiment", "branch", "base", "models", "acc"]
    assert table[1].startswith("b\texp/b\t") and table[2].startswith("* c\t")
    assert git(repo, "rev-parse", "HEAD") == head  # nothing was checked out
    code = (
        "import sys, mvc\n"
        f"rows = mvc.exp_list(repo={str(repo)!r}, sort='acc')\n"
        "print([r.name for r in rows], sorted(m for m in sys.modules if m.split('.')[0] == 'dvc'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['b', 'c', 'a'] []"


def test_exp_list_rejects_a_bad_sort_order(repo, cli):
    assert_one_line_error(cli("exp", "list", "--sort", "acc:sideways"), 2, "--sort 'acc:sideways' is not METRIC[:asc|desc]")


def test_exp_list_remote_shows_the_git_remotes_experiments(repo, cli, tmp_path):
    version(cli, repo, 1)
    ok(cli("exp", "new", "shared"))
    version(cli, repo, 2, "--metric", "acc=0.75")
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main", "exp/shared")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    assert json.loads(ok(cli("exp", "list", "--json", cwd=clone)).stdout) == []
    rows = json.loads(ok(cli("exp", "list", "--git-remotes", "--json", cwd=clone)).stdout)
    assert [(r["name"], r["branch"], r["remote"]) for r in rows] == [("shared", "origin/exp/shared", "origin")]
    assert rows[0]["models"][0]["metrics"] == {"acc": 0.75}


# ---- exp switch ---------------------------------------------------------------------------


def test_exp_switch_refuses_to_lose_unrecorded_weights_and_says_how_to_keep_them(repo, cli):
    version(cli, repo, 1)
    ok(cli("exp", "new", "a"))
    a_bytes = version(cli, repo, 2)
    ok(cli("exp", "new", "b", "--from", "main"))
    write_safetensors(repo / WEIGHTS, seed=3)  # trained, not recorded
    edited = (repo / WEIGHTS).read_bytes()
    result = cli("exp", "switch", "a")
    assert_one_line_error(result, 4, "models/net.safetensors has changes that no version records", "mvc add models/net.safetensors", "--force")
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "exp/b" and (repo / WEIGHTS).read_bytes() == edited
    ok(cli("add", str(repo / WEIGHTS)))  # keep them, as the hint says
    ok(cli("commit", "-m", "b: seed 3"))
    ok(cli("exp", "switch", "a"))
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "exp/a" and (repo / WEIGHTS).read_bytes() == a_bytes
    write_safetensors(repo / WEIGHTS, seed=4)
    ok(cli("exp", "switch", "b", "--force"))
    assert (repo / WEIGHTS).read_bytes() == edited


def test_exp_switch_to_an_unknown_experiment(repo, cli):
    assert_one_line_error(cli("exp", "switch", "nope"), 3, "no experiment named 'nope'")


# ---- exp compare --------------------------------------------------------------------------


def test_exp_compare_puts_params_and_metrics_side_by_side_with_a_tensor_diff(repo, cli):
    version(cli, repo, 1)
    ok(cli("exp", "new", "a", "--param", "lr=0.1"))
    version(cli, repo, 2, "--metric", "acc=0.7", "--param", "lr=0.1")
    ok(cli("exp", "new", "b", "--from", "main", "--param", "lr=0.01"))
    version(cli, repo, 3, "--metric", "acc=0.8", "--param", "lr=0.01")
    c = json.loads(ok(cli("exp", "compare", "a", "b", "--json")).stdout)
    assert [e["name"] for e in c["experiments"]] == ["a", "b"]
    assert {"key": "lr", "model": None, "values": [0.1, 0.01], "differs": True} in c["params"]
    assert {"key": "acc", "model": "net", "values": [0.7, 0.8], "differs": True} in c["metrics"]
    (d,) = c["diffs"]
    assert d["summary"]["content"] == 3 and d["summary"]["unchanged"] == 0 and not d["same_weights"]
    text = ok(cli("exp", "compare", "a", "b")).stdout
    assert "lr\t0.1\t0.01\t*" in text and "3 of 3 tensors changed" in text
    assert_one_line_error(cli("exp", "compare", "a"), 2, "at least two experiments")


# ---- exp promote / remove ---------------------------------------------------------------


def test_exp_promote_makes_a_version_whose_parents_include_the_experiments(repo, cli):
    version(cli, repo, 1)
    ok(cli("exp", "new", "a"))
    a_bytes = version(cli, repo, 2, "--metric", "acc=0.9")
    a_hash = json.loads(ok(cli("show", "net", "--json")).stdout)["hash"]
    git(repo, "checkout", "-q", "main")
    ok(cli("checkout"))
    version(cli, repo, 3)  # main moved on too: both sides changed the model
    main_hash = json.loads(ok(cli("show", "net", "--json")).stdout)["hash"]
    r = json.loads(ok(cli("exp", "promote", "a", "--json")).stdout)
    assert r["target"] == "main" and r["experiment"] == "a"
    (v,) = r["versions"]
    assert v["version"] == 3 and v["hash"] == a_hash
    assert {(p["hash"], p["version"]) for p in v["parents"]} == {(a_hash, 2), (main_hash, 2)}
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert len(git(repo, "log", "-1", "--format=%P").split()) == 2 and git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / WEIGHTS).read_bytes() == a_bytes
    shown = json.loads(ok(cli("show", "net", "--json")).stdout)
    assert shown["version"] == 3 and shown["manifest"]["experiment"] == "a" and shown["manifest"]["metrics"] == {"acc": 0.9}
    assert_one_line_error(cli("exp", "promote", "a"), 4, "already merged into main")


def test_exp_remove_refuses_unmerged_work_without_force(repo, cli):
    version(cli, repo, 1)
    ok(cli("exp", "new", "empty"))
    assert_one_line_error(cli("exp", "remove", "empty"), 4, "is checked out")
    ok(cli("exp", "new", "work", "--from", "main"))
    version(cli, repo, 2)
    git(repo, "checkout", "-q", "main")
    assert_one_line_error(cli("exp", "remove", "work"), 4, "has work that no other branch holds", "--force")
    removed = json.loads(ok(cli("exp", "remove", "empty", "--json")).stdout)
    assert removed["merged"] is True
    forced = json.loads(ok(cli("exp", "remove", "work", "--force", "--json")).stdout)
    assert forced["merged"] is False and git(repo, "branch", "--list", "exp/*") == ""


# ---- done means -----------------------------------------------------------------------------


def test_three_experiments_the_best_goes_to_prod_and_a_fresh_clone_gets_exactly_it(repo, cli, tmp_path):
    """Issue 5's end-to-end: train three ways, rank, promote the best, tag prod, deploy from a clone."""
    weights = repo / WEIGHTS
    train(weights, 0.0)
    ok(cli("add", str(weights), "--metric", "acc=0.5"))
    ok(cli("commit", "-m", "baseline"))
    trained = {}
    for lr in (0.03, 1.0, 0.3):
        name = f"lr-{lr}"
        ok(cli("exp", "new", name, "--from", "main", "--param", f"lr={lr}"))
        acc = train(weights, lr)
        ok(cli("add", str(weights), "--param", f"lr={lr}", "--metric", f"acc={acc}"))
        ok(cli("commit", "-m", f"train lr={lr}"))
        trained[name] = (acc, weights.read_bytes())
    ranked = json.loads(ok(cli("exp", "list", "--sort", "acc", "--json")).stdout)
    accs = [r["models"][0]["metrics"]["acc"] for r in ranked]
    assert accs == sorted(accs, reverse=True) and len(set(accs)) == 3
    best = ranked[0]["name"]
    assert trained[best][0] == max(a for a, _ in trained.values())

    ok(cli("exp", "promote", best, "--into", "main"))
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    assert_one_line_error(cli("promote", "net", "--stage", "prod"), 4, "are not in remote 'local'")
    promoted = json.loads(ok(cli("promote", "net", "--stage", "prod", "--push", "--json")).stdout)
    assert promoted["tag"] == "net#prod#1" and promoted["release"] == "v0.0.1" and promoted["pushed"]
    train(weights, 0.01)  # main moves on past prod
    ok(cli("add", str(weights)))
    ok(cli("commit", "-m", "retrain"))
    git(repo, "push", "-q", "origin", "main")

    clone = tmp_path / "deploy"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    shown = json.loads(ok(cli("show", "net@prod", "--json", cwd=clone)).stdout)
    assert shown["hash"] == promoted["hash"] and shown["manifest"]["experiment"] == best
    ok(cli("checkout", "net@prod", cwd=clone))
    assert (clone / WEIGHTS).read_bytes() == trained[best][1]

    ours = json.loads(ok(cli("registry", "--json", cwd=clone)).stdout)
    gto = subprocess.run([str(Path(sys.executable).parent / "gto"), "show", "--json"], cwd=clone, capture_output=True, text=True, check=True)
    theirs = json.loads(gto.stdout)
    assert theirs["net"]["version"] == ours[0]["latest"] == "v0.0.1"
    assert theirs["net"]["stage"] == {s["stage"]: s["release"] for s in ours[0]["stages"]} == {"prod": "v0.0.1"}


def test_exp_switch_in_a_fresh_clone_makes_the_branch_from_the_remote_one(repo, cli, tmp_path):
    version(cli, repo, 1)
    ok(cli("exp", "new", "bar"))
    v2 = version(cli, repo, 2)
    ok(cli("push", "--all-versions"))
    git(repo, "checkout", "-q", "main")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    listed = json.loads(ok(cli("exp", "list", "--git-remotes", "--json", cwd=clone)).stdout)
    assert [e["branch"] for e in listed] == ["origin/exp/bar"]
    switched = ok(cli("exp", "switch", "bar", cwd=clone))
    assert switched.stdout == "switched to experiment bar (exp/bar)\n"
    assert git(clone, "rev-parse", "--abbrev-ref", "exp/bar@{upstream}") == "origin/exp/bar"
    assert (clone / "models/net.safetensors").read_bytes() == v2

"""`mvc log` and `mvc show` on a history with branches and a git merge, as a user runs them."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

import mvc
from tests.conftest import assert_one_line_error as _assert_one_line_error
from tests.conftest import git

PTR = "models/net.safetensors.dvc"


def write_weights(path: Path, seed: int) -> dict[str, np.ndarray]:
    """Two float32 tensors and one float16 tensor (so bytes-per-dtype has two entries)."""
    rng = np.random.default_rng(seed)
    tensors = {
        "layer1.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "layer1.bias": rng.standard_normal(16).astype(np.float32),
        "embed": rng.standard_normal((10, 4)).astype(np.float16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return tensors


def version(repo: Path, seed: int, message: str, **options) -> str:
    """Write weights, ``mvc add`` them and commit; return the content hash."""
    write_weights(repo / "models/net.safetensors", seed)
    result = mvc.add(repo / "models/net.safetensors", message=message, **options)
    mvc.commit(repo=repo, message=f"net: {message}")
    return result.version.hash


def dvc(repo: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, check=True, capture_output=True)


def build_history(repo: Path) -> dict[str, str]:
    """main: v1 (with a data set) -> v2 -> v3; feat (from v2): v3 -> v4; main merges feat -> v5;
    wide (from the merge): v6, not merged. Returns label -> content hash (and the merge commit)."""
    data = repo / "data" / "train.csv"
    data.parent.mkdir()
    data.write_text("x,y\n1,2\n3,4\n")
    dvc(repo, "add", "data/train.csv")
    git(repo, "add", "data/train.csv.dvc", "data/.gitignore")
    git(repo, "commit", "-q", "-m", "track the data set")
    h = {"v1": version(repo, 1, "first", params={"lr": 0.1, "epochs": 3}, metrics={"acc": 0.5, "loss": 0.9},
                       datasets=[data], labels=["baseline"])}
    h["v2"] = version(repo, 2, "second", metrics={"acc": 0.6})
    git(repo, "checkout", "-q", "-b", "feat")
    h["feat-v3"] = version(repo, 3, "feat three", metrics={"acc": 0.7})
    h["feat-v4"] = version(repo, 6, "feat four", metrics={"acc": 0.75})
    git(repo, "checkout", "-q", "main")
    mvc.checkout(["net"], repo=repo)
    h["main-v3"] = version(repo, 4, "main three", metrics={"acc": 0.8})
    # Both branches changed the model: git cannot merge the pointer; take one side by hand,
    # put the merged weights in place and `mvc add` them during the unfinished merge.
    merge = subprocess.run(["git", "merge", "feat", "-m", "merge feat"], cwd=repo, capture_output=True, text=True)
    assert merge.returncode == 1 and "CONFLICT" in merge.stdout
    git(repo, "checkout", "--ours", PTR)
    write_weights(repo / "models/net.safetensors", 5)
    merged = mvc.add(repo / "models/net.safetensors", message="soup of main and feat", metrics={"acc": 0.9})
    git(repo, "add", "-A", ".mvc", PTR)
    git(repo, "commit", "-q", "--no-edit")
    h["v5"] = merged.version.hash
    h["merge-commit"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "wide")
    h["wide-v6"] = version(repo, 7, "wider")
    git(repo, "checkout", "-q", "main")
    mvc.checkout(["net"], repo=repo)
    return h


_TEMPLATES: dict[str, tuple[Path, dict[str, str]]] = {}


def repo_from_template(key: str, build, tmp_path: Path, factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A fresh copy, as the cwd, of a repository that ``build(root) -> hashes`` makes once per session.

    Building histories with real git + DVC takes seconds; copying one takes milliseconds.
    Returns ``(root, hashes)``.
    """
    if key not in _TEMPLATES:
        built = factory.mktemp(f"template-{key}") / "repo"
        built.mkdir()
        git(built, "init", "-q")
        monkeypatch.chdir(built)
        mvc.init(built)
        git(built, "commit", "-q", "-m", "init mvc")
        _TEMPLATES[key] = (built, build(built))
    source, hashes = _TEMPLATES[key]
    root = tmp_path / "repo"
    shutil.copytree(source, root, symlinks=True)
    monkeypatch.chdir(root)
    return root, dict(hashes)


@pytest.fixture
def history(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A fresh copy of :func:`build_history` as the cwd: (root, hashes)."""
    return repo_from_template("history", build_history, tmp_path, tmp_path_factory, monkeypatch)


def rows(stdout: str) -> list[dict[str, str]]:
    """The tab-separated table (stdout is not a TTY under CliRunner) as dicts."""
    lines = stdout.rstrip("\n").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


# ---- log ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["log", "show", "diff", "restore", "checkout"])
def test_history_commands_have_help_with_examples(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and f"mvc {command} " in result.stdout.split("Examples:")[1]


def test_merge_during_unfinished_git_merge_records_both_parents(history):
    repo, h = history
    m = mvc.show("net", repo=repo).manifest
    assert m.version == 5  # max(main v3, feat v4) + 1
    assert {(p.hash, p.version) for p in m.parents} == {(h["main-v3"], 3), (h["feat-v4"], 4)}
    assert git(repo, "rev-list", "--parents", "-n", "1", "HEAD").count(" ") == 2  # a real merge commit


def test_log_lists_every_version_of_the_branch_with_parents(history, cli):
    repo, h = history
    result = cli("log", "net")
    assert result.exit_code == 0, result.stderr
    table = rows(result.stdout)
    assert list(table[0]) == ["model", "version", "hash", "commit", "date", "author", "step", "message", "metrics", "parents"]
    order = [(r["version"], r["hash"]) for r in table]
    assert order[0] == ("v5", h["v5"][:8]) and order[-2:] == [("v2", h["v2"][:8]), ("v1", h["v1"][:8])]
    middle = order[1:-2]  # the two branches' versions: any order that puts children first
    assert sorted(middle) == sorted([("v3", h["main-v3"][:8]), ("v3", h["feat-v3"][:8]), ("v4", h["feat-v4"][:8])])
    assert middle.index(("v4", h["feat-v4"][:8])) < middle.index(("v3", h["feat-v3"][:8]))
    newest = table[0]
    assert newest["hash"] == h["v5"][:8] and newest["commit"] == h["merge-commit"][:8]
    assert newest["message"] == "soup of main and feat" and newest["metrics"] == "acc=0.9"
    assert newest["author"] == "Test User" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", newest["date"])
    assert newest["parents"] == f"v3 ({h['main-v3'][:8]}), v4 ({h['feat-v4'][:8]})"
    first = table[-1]
    assert first["metrics"] == "acc=0.5 loss=0.9" and first["parents"] == "" and first["message"] == "first"
    assert "v6" not in [r["version"] for r in table]  # on `wide` only


def test_log_all_branches_names_the_branch_of_each_version(history, cli):
    repo, h = history
    result = cli("log", "net", "--all-branches")
    assert result.exit_code == 0, result.stderr
    table = rows(result.stdout)
    assert "branch" in table[0]
    by_hash = {r["hash"]: r for r in table}
    assert by_hash[h["wide-v6"][:8]]["branch"] == "wide"
    assert by_hash[h["feat-v3"][:8]]["branch"] == "feat"
    assert by_hash[h["feat-v4"][:8]]["branch"] == "feat"
    assert len(table) == 7  # the merge commit is one version, not a copy of a side


def test_log_json_shape(history, cli):
    repo, h = history
    result = cli("log", "net", "--all-branches", "--json")
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    merged = next(r for r in records if r["version"] == 5)
    assert set(merged) >= {"name", "version", "hash", "commit", "branch", "date", "author", "subject", "pointer",
                           "parents", "key_metrics", "manifest", "outside_mvc"}
    assert merged["hash"] == h["v5"] and merged["commit"] == h["merge-commit"]
    assert merged["branch"] == "main" and merged["author"] == "Test User <test@example.com>"
    assert merged["subject"] == "merge feat" and merged["pointer"] == PTR and merged["outside_mvc"] is False
    assert [(p["hash"], p["version"]) for p in merged["parents"]] == [(h["main-v3"], 3), (h["feat-v4"], 4)]
    assert merged["key_metrics"] == {"acc": 0.9}
    assert merged["manifest"]["message"] == "soup of main and feat"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", merged["date"])


def test_log_without_name_lists_every_model(history, cli):
    repo, h = history
    (repo / "tok.bin").write_bytes(os.urandom(64))
    mvc.add(repo / "tok.bin")
    mvc.commit(repo=repo, message="tokenizer")
    records = json.loads(cli("log", "--json").stdout)
    assert sorted((r["name"], r["version"]) for r in records) == [("net", v) for v in (1, 2, 3, 3, 4, 5)] + [("tok", 1)]


def test_key_metrics_setting_picks_the_metrics_shown(history, cli):
    repo, h = history
    config = repo / ".mvc" / "config.json"
    data = json.loads(config.read_text())
    data["key_metrics"] = ["loss"]
    config.write_text(json.dumps(data))
    table = rows(cli("log", "net").stdout)
    assert table[-1]["metrics"] == "loss=0.9" and table[0]["metrics"] == ""


def test_merge_that_keeps_one_side_records_no_new_version(repo, cli):
    version(repo, 1, "one")
    git(repo, "checkout", "-q", "-b", "side")
    side = version(repo, 2, "side two")
    git(repo, "checkout", "-q", "main")
    mvc.checkout(["net"], repo=repo)
    version(repo, 3, "main two")
    assert subprocess.run(["git", "merge", "side", "-m", "merge side"], cwd=repo, capture_output=True).returncode == 1
    git(repo, "checkout", "--theirs", PTR)
    git(repo, "add", PTR)
    git(repo, "commit", "-q", "--no-edit")
    assert mvc.show("net", repo=repo).hash == side
    records = json.loads(cli("log", "net", "--json").stdout)
    assert sorted((r["version"], r["subject"]) for r in records) == [(1, "net: one"), (2, "net: main two"), (2, "net: side two")]


def test_log_of_a_model_without_commits(repo, cli):
    write_weights(repo / "models/net.safetensors", 1)
    mvc.add(repo / "models/net.safetensors")
    result = cli("log", "net")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no committed versions yet" in result.stderr
    assert json.loads(cli("log", "net", "--json").stdout) == []


# ---- show --------------------------------------------------------------------------------


def test_show_human_lists_the_full_manifest(history, cli):
    repo, h = history
    result = cli("show", "net@v1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    commit_v1 = git(repo, "log", "--format=%H", "-n", "1", "--grep", "net: first")
    data_md5 = yaml.safe_load((repo / "data/train.csv.dvc").read_text())["outs"][0]["md5"]
    expected = [
        "model:      net v1",
        f"hash:       {h['v1']}",
        "path:       models/net.safetensors",
        f"commit:     {commit_v1}",
        "message:    first",
        "parents:    -",
        "format:     safetensors",
        "tensors:    3 tensors, 184 parameters, float16 80 B, float32 576 B",
        "params:",
        "  lr = 0.1",
        "  epochs = 3",
        "metrics:",
        "  acc = 0.5",
        "  loss = 0.9",
        "datasets:",
        f"  data/train.csv ({data_md5})",
        "labels:     baseline",
    ]
    for line in expected:
        assert line in out.splitlines(), (line, out)
    code_line = next(line for line in out.splitlines() if line.startswith("code:"))
    assert re.fullmatch(r"code:       [0-9a-f]{40} on main", code_line)


def test_show_json_shape(history, cli):
    repo, h = history
    result = cli("show", "net@v5", "--json")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert (d["ref"], d["name"], d["version"], d["hash"]) == ("net@v5", "net", 5, h["v5"])
    assert d["commit"] == h["merge-commit"] and d["path"] == "models/net.safetensors"
    m = d["manifest"]
    assert m["tensors"] == {"count": 3, "parameters": 184, "total_bytes": 656, "bytes_by_dtype": {"float16": 80, "float32": 576}}
    assert m["format"] == "safetensors" and m["metrics"] == {"acc": 0.9}
    assert [p["version"] for p in m["parents"]] == [3, 4]
    assert re.fullmatch(r"[0-9a-f]{40}", m["code"]["commit"]) and m["code"]["branch"] == "main"
    v1 = json.loads(cli("show", "net@v1", "--json").stdout)["manifest"]
    data_md5 = yaml.safe_load((repo / "data/train.csv.dvc").read_text())["outs"][0]["md5"]
    assert v1["datasets"] == [{"path": "data/train.csv", "hash": data_md5}]
    assert v1["params"] == {"lr": 0.1, "epochs": 3}


def test_show_dataset_given_on_the_command_line(history, cli):
    repo, h = history
    write_weights(repo / "models/net.safetensors", 11)
    added = cli("add", "models/net.safetensors", "--dataset", "data/train.csv.dvc", "--param", "lr=0.2")
    assert added.exit_code == 0, added.stderr
    data_md5 = yaml.safe_load((repo / "data/train.csv.dvc").read_text())["outs"][0]["md5"]
    d = json.loads(cli("show", "net", "--json").stdout)
    assert d["manifest"]["datasets"] == [{"path": "data/train.csv", "hash": data_md5}] and d["version"] == 6
    assert f"  data/train.csv ({data_md5})" in cli("show", "net").stdout.splitlines()


def test_show_work_tree_version(history, cli):
    repo, h = history
    d = json.loads(cli("show", "net", "--json").stdout)
    assert d["commit"] is None and d["version"] == 5
    assert "commit:     (work tree)" in cli("show", "net").stdout


def test_show_opaque_model_says_so(repo, cli):
    (repo / "model.onnx").write_bytes(os.urandom(4096))
    mvc.add(repo / "model.onnx")
    result = cli("show", "model")
    assert result.exit_code == 0, result.stderr
    assert "format:     opaque" in result.stdout
    assert "tensors:    none indexed (opaque blob" in result.stdout
    d = json.loads(cli("show", "model", "--json").stdout)
    assert d["manifest"]["format"] == "opaque" and d["manifest"]["tensors"] is None


# ---- bad input ---------------------------------------------------------------------------


# The error names its subject in the error line itself, not only in the hint.
assert_one_line_error = functools.partial(_assert_one_line_error, first_line=True)


@pytest.mark.parametrize("args", [["log", "nope"], ["show", "nope"], ["show", "nope@v1"], ["log", "nope", "--all-branches"]])
def test_unknown_model_lists_the_known_ones(history, cli, args):
    repo, h = history
    assert_one_line_error(cli(*args), 3, "no model named 'nope'", "(models: net)")


@pytest.mark.parametrize("args", [["status", "--no-remote"], ["log", "net"], ["show", "net"], ["show", "net@v1"]])
def test_pointer_edited_into_invalid_yaml(history, cli, args):
    repo, h = history
    path = repo / PTR
    text = path.read_text().splitlines()
    text[2] = "  size: [unclosed"
    path.write_text("\n".join(text) + "\n")
    assert_one_line_error(cli(*args), 6, f"{PTR} is not valid YAML (line ")


def _newer_schema(text: str) -> str:
    data = yaml.safe_load(text)
    data["meta"]["mvc"]["schema"] = 99
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize("args", [["show", "net"], ["log", "net"], ["diff", "net@v1", "net@v2"]])
def test_newer_schema_in_the_work_tree(history, cli, args):
    repo, h = history
    path = repo / PTR
    path.write_text(_newer_schema(path.read_text()))
    assert_one_line_error(cli(*args), 6, PTR, "newer mvc", "schema 99")


@pytest.mark.parametrize("args", [["show", "net@HEAD"], ["log", "net"], ["diff", "net@v1", "net@HEAD"], ["show", "net@latest"]])
def test_newer_schema_in_history(history, cli, args):
    repo, h = history
    path = repo / PTR
    current = path.read_text()
    path.write_text(_newer_schema(current))
    git(repo, "commit", "-q", "-am", "written by a newer mvc")
    path.write_text(current)  # the work tree is fine; the commit is not
    for _ in range(2):  # the second time `log` reads the pointer from its cache of parsed pointers
        assert_one_line_error(cli(*args), 6, "newer mvc", "schema 99")


def test_log_reads_the_same_from_its_cache(history, cli):
    repo, h = history
    first = cli("log", "net", "--all-branches", "--json").stdout
    assert (repo / ".dvc" / "tmp" / "mvc-pointer-docs.json").is_file()
    assert cli("log", "net", "--all-branches", "--json").stdout == first
    assert git(repo, "status", "--porcelain") == ""  # git never sees the cache

"""The core workflow as a user runs it: init, add, commit, status, push, pull, checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mvc
from tests.conftest import assert_one_line_error, git, write_safetensors

COMMANDS = ["init", "add", "commit", "status", "push", "pull", "checkout", "remote"]


def dvc_bin() -> str:
    return str(Path(sys.executable).parent / "dvc")


def mvc_bin() -> str:
    return str(Path(sys.executable).parent / "mvc")


def test_help_lists_every_command_with_a_description(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        line = next(row for row in result.stdout.splitlines() if row.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "remote"] + ["remote add", "remote list"])
def test_every_command_help_has_an_example(cli, command):
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert "mvc " in result.stdout.split("Examples:")[1]


def test_help_imports_no_dvc_git_or_numpy():
    code = (
        "import sys\n"
        "from mvc.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('dvc', 'git', 'numpy', 'torch', 'ray'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_init_twice_is_safe_and_sets_a_local_remote(tmp_path, cli):
    root = tmp_path / "proj"
    first = cli("init", str(root), "--git", "--json")
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["created_git"] and data["created_dvc"] and data["remote"] == "local"
    assert Path(data["remote_url"]).is_dir()
    assert (root / ".dvc" / "config").is_file() and (root / ".mvc" / "config.json").is_file()
    second = cli("init", str(root), "--json")
    assert second.exit_code == 0
    again = json.loads(second.stdout)
    assert not again["created_dvc"] and not again["created_settings"]
    assert again["remote_url"] == data["remote_url"]
    assert "core" in (root / ".dvc" / "config").read_text()


def test_init_outside_git_fails_with_a_hint(tmp_path, cli):
    result = cli("init", str(tmp_path))
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ") and "not inside a git repository" in result.stderr
    assert "hint: " in result.stderr and "Traceback" not in result.stderr


def test_add_writes_manifest_index_and_stages(repo, weights, cli):
    result = cli("add", str(weights), "--param", "lr=0.01", "--param", "optim=adam", "--metric", "acc=0.91",
                 "--message", "first", "--label", "baseline", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["created"] is True
    v = data["version"]
    assert (v["name"], v["version"]) == ("net", 1)
    pointer = yaml.safe_load((repo / "models/net.safetensors.dvc").read_text())
    assert pointer["outs"][0]["type"] == "model"
    m = pointer["meta"]["mvc"]
    assert m["name"] == "net" and m["version"] == 1 and m["hash"] == pointer["outs"][0]["md5"]
    assert m["params"] == {"lr": 0.01, "optim": "adam"} and m["metrics"] == {"acc": 0.91}
    assert m["format"] == "safetensors" and m["labels"] == ["baseline"] and m["message"] == "first"
    assert m["author"] == "Test User <test@example.com>"
    assert m["code"]["commit"] == git(repo, "rev-parse", "HEAD") and m["code"]["dirty"] is False
    assert m["tensors"]["count"] == 3 and m["tensors"]["parameters"] == 16 * 8 + 16 + 4 * 16
    sidecar = repo / m["index"]
    assert sidecar.is_file() and m["index"].startswith(".mvc/index/")
    staged = git(repo, "diff", "--cached", "--name-only").splitlines()
    assert {"models/net.safetensors.dvc", "models/.gitignore", m["index"]} <= set(staged)


def test_readd_unchanged_makes_no_version_and_changed_makes_next(repo, weights, cli):
    assert cli("add", str(weights)).exit_code == 0
    assert cli("commit", "-m", "v1").exit_code == 0
    again = cli("add", str(weights))
    assert again.exit_code == 0 and "unchanged" in again.stdout and "v1" in again.stdout
    write_safetensors(weights, seed=2)
    second = cli("add", str(weights), "--json")
    v2 = json.loads(second.stdout)["version"]
    assert v2["version"] == 2
    v1_hash = yaml.safe_load(git(repo, "show", "HEAD:models/net.safetensors.dvc"))["outs"][0]["md5"]
    assert v2["manifest"]["parents"] == [{"hash": v1_hash, "version": 1, "name": None}]


def test_add_directory_model(repo, cli):
    ckpt = repo / "ckpt"
    write_safetensors(ckpt / "model-00001-of-00002.safetensors", seed=1, shapes={"a": (4, 4)})
    write_safetensors(ckpt / "model-00002-of-00002.safetensors", seed=2, shapes={"b": (8,)})
    (ckpt / "config.json").write_text('{"hidden": 4}')
    result = cli("add", str(ckpt), "--json")
    assert result.exit_code == 0, result.stderr
    v = json.loads(result.stdout)["version"]
    assert v["name"] == "ckpt" and v["hash"].endswith(".dir")
    assert v["manifest"]["tensors"]["count"] == 2


def test_commit_takes_only_model_files(repo, weights, cli):
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", "train.py")
    (repo / "notes.txt").write_text("scratch\n")
    cli("add", str(weights))
    result = cli("commit", "-m", "net v1")
    assert result.exit_code == 0, result.stderr
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert "models/net.safetensors.dvc" in committed and "train.py" not in committed
    assert "train.py" in git(repo, "diff", "--cached", "--name-only")  # still staged, untouched
    again = cli("commit", "-m", "nothing")
    assert again.exit_code == 4 and "no model changes" in again.stderr


def test_status_push_then_clone_and_pull_identical_bytes(repo, weights, cli, tmp_path):
    cli("add", str(weights))
    cli("commit", "-m", "v1")
    st = json.loads(cli("status", "--json").stdout)
    assert st[0]["name"] == "net" and st[0]["workspace"] == "ok" and st[0]["cache"] == "ok"
    assert st[0]["remote"] == "missing" and st[0]["committed"] is True
    pushed = cli("push", "--json")
    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["transferred"] == 1
    assert json.loads(cli("status", "--json").stdout)[0]["remote"] == "ok"

    clone = tmp_path / "teammate"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/net.safetensors").exists()
    pulled = cli("pull", "--json", cwd=clone)
    assert pulled.exit_code == 0, pulled.stderr
    assert json.loads(pulled.stdout)["fetched"] == 1
    assert (clone / "models/net.safetensors").read_bytes() == weights.read_bytes()


def test_plain_dvc_works_in_an_mvc_repo(repo, weights, cli, tmp_path):
    cli("add", str(weights))
    cli("commit", "-m", "v1")
    env = dict(os.environ)
    push = subprocess.run([dvc_bin(), "push"], cwd=repo, capture_output=True, text=True, env=env)
    assert push.returncode == 0, push.stderr
    status = subprocess.run([dvc_bin(), "status"], cwd=repo, capture_output=True, text=True, env=env)
    assert status.returncode == 0 and "up to date" in status.stdout.lower()
    clone = tmp_path / "plain"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    pull = subprocess.run([dvc_bin(), "pull"], cwd=clone, capture_output=True, text=True, env=env)
    assert pull.returncode == 0, pull.stderr
    assert (clone / "models/net.safetensors").read_bytes() == weights.read_bytes()


def test_checkout_restores_deleted_weights(repo, weights, cli):
    cli("add", str(weights))
    original = weights.read_bytes()
    weights.unlink()
    st = json.loads(cli("status", "--no-remote", "--json").stdout)
    assert st[0]["workspace"] == "missing"
    result = cli("checkout", "net")
    assert result.exit_code == 0, result.stderr
    assert weights.read_bytes() == original


# ---- bad input -------------------------------------------------------------------------


def test_add_outside_a_git_repo(tmp_path, cli):
    path = tmp_path / "w.safetensors"
    write_safetensors(path)
    assert_one_line_error(cli("add", str(path), cwd=tmp_path), 3, "not inside a git repository")


def test_add_missing_path(repo, cli):
    assert_one_line_error(cli("add", "nope.safetensors"), 3, "nope.safetensors", "no such file")


def test_add_several_paths_makes_one_model_each_and_one_staged_note(repo, cli):
    for name in ("enc", "dec"):
        write_safetensors(repo / "models" / f"{name}.safetensors", seed=len(name) + (name == "dec"))

    result = cli("add", "models/enc.safetensors", "models/dec.safetensors", "-m", "joint fine-tune", "--param", "lr=0.1")
    again = cli("add", "models/enc.safetensors", "models/dec.safetensors", "--json")

    assert result.exit_code == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["enc", "dec"]
    assert result.stderr.count("staged ") == 1 and result.stderr.count("models/.gitignore") == 1
    assert [(s.name, s.version) for s in mvc.status(repo=repo)] == [("dec", 1), ("enc", 1)]
    assert {mvc.show(n, repo=repo).manifest.params["lr"] for n in ("enc", "dec")} == {0.1}
    assert [r["created"] for r in json.loads(again.stdout)] == [False, False]


def test_add_several_paths_checks_them_all_before_adding_any(repo, cli):
    write_safetensors(repo / "models" / "enc.safetensors")

    missing = cli("add", "models/enc.safetensors", "nope.safetensors")
    named = cli("add", "models/enc.safetensors", "models/enc.safetensors", "--name", "x")

    assert_one_line_error(missing, 3, "nope.safetensors: no such file or directory")
    assert_one_line_error(named, 2, "--name names one model, but 2 paths were given")
    assert not (repo / "models" / "enc.safetensors.dvc").exists()


def test_add_path_outside_the_repo(repo, cli, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    write_safetensors(outside)
    assert_one_line_error(cli("add", str(outside)), 2, "outside the repository")


def test_add_truncated_safetensors_leaves_nothing(repo, weights, cli):
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    result = cli("add", str(weights))
    assert_one_line_error(result, 6, "net.safetensors")
    assert not (repo / "models/net.safetensors.dvc").exists()
    assert not (repo / "models/.gitignore").exists()
    assert weights.exists()


def test_add_param_without_equals(repo, weights, cli):
    assert_one_line_error(cli("add", str(weights), "--param", "lr"), 2, "--param", "KEY=VALUE")
    assert not (repo / "models/net.safetensors.dvc").exists()


def test_add_unreadable_metrics_file(repo, weights, cli):
    bad = repo / "metrics.json"
    bad.write_text("{not json")
    assert_one_line_error(cli("add", str(weights), "--metrics-file", str(bad)), 2, "metrics.json", "not valid JSON")
    assert_one_line_error(cli("add", str(weights), "--metrics-file", "missing.json"), 3, "missing.json")
    assert not (repo / "models/net.safetensors.dvc").exists()


def test_readd_corrupt_keeps_previous_version(repo, weights, cli):
    cli("add", str(weights))
    before = (repo / "models/net.safetensors.dvc").read_bytes()
    weights.write_bytes(b"\x00" * 12)
    assert cli("add", str(weights)).exit_code == 6
    assert (repo / "models/net.safetensors.dvc").read_bytes() == before


def test_push_with_no_remote(repo, weights, cli):
    cli("remote", "remove", "local")
    cli("add", str(weights))
    assert_one_line_error(cli("push"), 3, "no remote")


def test_pull_object_the_remote_lacks(repo, weights, cli, tmp_path):
    cli("add", str(weights))
    cli("commit", "-m", "v1")  # committed but never pushed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    result = cli("pull", cwd=clone)
    assert_one_line_error(result, 3, "net v1", "neither the local cache nor")
    assert not (clone / "models/net.safetensors").exists()


def test_unknown_model_name(repo, weights, cli):
    cli("add", str(weights))
    assert_one_line_error(cli("push", "nosuch"), 3, "no model named 'nosuch'", "net")


def test_add_while_another_process_holds_the_lock(repo, weights):
    from mvc import dvcstore

    with dvcstore.lock(repo):
        proc = subprocess.run([mvc_bin(), "add", str(weights)], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith("error: ") and "lock" in proc.stderr and "Traceback" not in proc.stderr
    assert not (repo / "models/net.safetensors.dvc").exists()
    ok = subprocess.run([mvc_bin(), "add", str(weights)], cwd=repo, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_two_concurrent_adds_both_end_consistent(repo):
    a, b = repo / "a.safetensors", repo / "b.safetensors"
    write_safetensors(a, seed=1)
    write_safetensors(b, seed=2)
    procs = [subprocess.Popen([mvc_bin(), "add", str(p)], cwd=repo, stderr=subprocess.PIPE, text=True) for p in (a, b)]
    codes = [(p.wait(), p.communicate()[1]) for p in procs]
    for (code, err), path in zip(codes, (a, b), strict=True):
        pointer = path.with_name(path.name + ".dvc")
        if code == 0:
            assert "mvc" in yaml.safe_load(pointer.read_text())["meta"]
        else:
            assert code == 4 and "lock" in err and not pointer.exists()
    assert a.exists() and b.exists()


def test_api_mirrors_cli(repo, weights):
    result = mvc.add(weights, params={"lr": 0.1}, metrics={"loss": 0.5})
    assert result.created and result.version.manifest.params == {"lr": 0.1}
    commit = mvc.commit(repo=repo, message="v1")
    assert len(commit.commit) == 40
    assert [m.name for m in mvc.models(repo=repo)] == ["net"]
    assert mvc.push(repo=repo).transferred == 1
    shutil.rmtree(repo / ".dvc" / "cache")
    weights.unlink()
    assert mvc.pull(repo=repo).fetched == 1 and weights.exists()


def test_add_big_file_is_cached_once_and_dvc_agrees(repo, cli):
    """Files >= 16 MiB take the parallel hash+copy path; DVC must see a consistent cache."""
    import hashlib

    big = repo / "big.safetensors"
    write_safetensors(big, seed=3, shapes={"w": (1024, 4200)})  # ~16.4 MiB
    assert big.stat().st_size >= 16 * 2**20
    result = cli("add", str(big), "--json")
    assert result.exit_code == 0, result.stderr
    md5 = json.loads(result.stdout)["version"]["hash"]
    assert md5 == hashlib.md5(big.read_bytes()).hexdigest()
    obj = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    assert hashlib.md5(obj.read_bytes()).hexdigest() == md5
    assert not list((repo / ".dvc/cache/files/md5").glob(".mvc-tmp-*"))
    status = subprocess.run([dvc_bin(), "status"], cwd=repo, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout.lower()


def test_api_names_stay_callable_after_importing_every_module():
    """A submodule named like an API function (mvc/diff.py) would shadow `mvc.diff`."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(mvc.__path__, "mvc."):
        if not info.name.startswith("mvc.integrations.") and info.name != "mvc.__main__":
            importlib.import_module(info.name)
    for name in mvc._API:
        assert callable(getattr(mvc, name)), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mvc_process_keeps_freed_part_buffers_for_reuse(monkeypatch):
    from mvc.cli import _memory, main

    calls = []
    monkeypatch.setattr(main, "keep_freed_buffers", lambda: calls.append(_memory.keep_freed_buffers()))
    monkeypatch.setattr(main, "app", lambda: None)
    main.run()
    assert calls == [True]

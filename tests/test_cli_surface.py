"""The CLI surface as a user meets it (issues 14 and 17): one voice, one meaning per flag,
no dead ends. Each test acts through the CLI (or real git / a real subprocess) and
checks the exit code, the exact text and the repository state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

import mvc
from mvc import pointer as pointer_mod
from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"


def version(cli, repo: Path, seed: int, *extra: str) -> str:
    """Add and commit a version of ``net``; return its hash."""
    write_safetensors(repo / WEIGHTS, seed=seed)
    out = json.loads(ok(cli("add", str(repo / WEIGHTS), "--json", *extra)).stdout)
    ok(cli("commit", "-m", f"net seed {seed}"))
    return out["version"]["hash"]


def commands():
    """(command path, click command) of every visible command, read through typer."""
    from mvc.cli.main import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        elif not cmd.hidden:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


def options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option"]


# ---- one voice for usage errors (issue 17) -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message", "command"),
    [
        (["add"], "error: missing argument PATH", "mvc add"),
        (["add", "w.safetensors", "--bogus"], "error: no such option: --bogus", "mvc add"),
        (["nosuch"], "error: no such command 'nosuch'", "mvc"),
        (["exp", "new"], "error: missing argument NAME", "mvc exp new"),
        (["push", "--jobs", "0"], "error: invalid value for '--jobs' / '-j': 0 is not in the range x>=1", "mvc push"),
    ],
)
def test_usage_errors_are_one_error_and_one_hint_line(repo, cli, args, message, command):
    result = cli(*args)
    assert_one_line_error(result, 2)
    assert result.stderr == f"{message}\nhint: run `{command} --help` for its arguments and options\n"
    assert "Usage:" not in result.stderr + result.stdout


# ---- -m is the message everywhere (issue 14) -----------------------------------------------


def test_m_is_the_message_and_metric_has_only_its_long_form(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS, "-m", "first try", "--metric", "acc=0.9"))
    manifest = yaml.safe_load((repo / f"{WEIGHTS}.dvc").read_text())["meta"]["mvc"]
    assert manifest["message"] == "first try" and manifest["metrics"] == {"acc": 0.9}
    old_style = cli("add", WEIGHTS, "-M", "x")
    assert old_style.stderr == "error: no such option: -M\nhint: run `mvc add --help` for its arguments and options\n"
    for path, cmd in commands():
        for opt in options(cmd):
            if "-m" in opt.opts:
                assert opt.opts == ["--message", "-m"], path
            if opt.name == "message":
                assert "-m" in opt.opts, f"{path}: --message has no -m"


def test_a_short_flag_and_a_long_flag_mean_one_thing_everywhere():
    longs: dict[str, set[str]] = {}
    for _path, cmd in commands():
        for opt in options(cmd):
            long = next(o for o in opt.opts if o.startswith("--"))
            for short in (o for o in opt.opts if not o.startswith("--")):
                longs.setdefault(short, set()).add(long)
    assert {s: ls for s, ls in longs.items() if len(ls) > 1} == {}
    assert longs["-m"] == {"--message"} and longs["-q"] == {"--quiet"} and longs["-f"] == {"--force"}


def test_exp_list_names_git_remotes_and_remote_is_a_dvc_remote_everywhere():
    for path, cmd in commands():
        for opt in options(cmd):
            if "--remote" in opt.opts and path != "init":  # init --remote DIR creates the default remote
                assert not opt.is_flag, f"{path}: --remote must take a DVC remote name"
    exp_list = dict(commands())["exp list"]
    assert any("--git-remotes" in o.opts for o in options(exp_list))


QUIET_NOT_NEEDED = {"init", "show", "install-hooks", "remote add", "remote list", "remote default", "remote remove", "remote modify"}


def test_every_command_that_writes_notes_or_progress_takes_quiet():
    missing = [path for path, cmd in commands() if path not in QUIET_NOT_NEEDED and not any("--quiet" in o.opts for o in options(cmd))]
    assert missing == []


def test_quiet_silences_notes_but_not_errors(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    noisy = ok(cli("add", WEIGHTS))
    assert noisy.stderr.startswith("staged ")
    write_safetensors(repo / WEIGHTS, seed=2)
    quiet = ok(cli("add", WEIGHTS, "-q"))
    assert quiet.stderr == "" and quiet.stdout.startswith("net: v1")
    ok(cli("commit", "-m", "v1", "-q"))
    assert ok(cli("exp", "new", "wide", "-q")).stderr == ""
    assert_one_line_error(cli("exp", "switch", "nosuch", "-q"), 3, "no experiment named 'nosuch'")


def test_params_file_errors_name_the_params_file_flag(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    (repo / "params.yaml").write_text("lr: [unclosed\n")
    result = cli("add", WEIGHTS, "--params-file", "params.yaml")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[0] == "error: --params-file params.yaml is not valid YAML"
    (repo / "metrics.json").write_text("{nope")
    result = cli("add", WEIGHTS, "--metrics-file", "metrics.json")
    assert result.stderr.splitlines()[0] == "error: --metrics-file metrics.json is not valid JSON"
    assert not (repo / f"{WEIGHTS}.dvc").exists()


# ---- counts and plurals (issue 17) ---------------------------------------------------------


def test_counts_are_in_proper_singular_and_plural(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS))
    committed = ok(cli("commit", "-m", "net v1")).stdout
    assert committed.endswith("net v1 (3 files)\n")
    assert ok(cli("push")).stdout == "pushed 1 object of 1 model to local\n"
    assert ok(cli("push")).stdout == "pushed 0 objects of 1 model to local\n"
    ok(cli("rename", "net", "mlp"))
    assert ok(cli("commit", "-m", "rename")).stdout.endswith("rename (1 file)\n")
    for module in Path(mvc.__file__).parent.joinpath("cli").glob("*.py"):
        assert "(s)" not in module.read_text(), module.name


# ---- a reader that goes away (issue 14) ----------------------------------------------------


@pytest.mark.parametrize("args", [["log"], ["status", "--no-remote"], ["diff", "net@v1", "net@v2"]])
def test_a_closed_pipe_ends_mvc_quietly(repo, cli, args):
    version(cli, repo, 1)
    version(cli, repo, 2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mvc.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has read enough: every write to stdout fails
    try:
        done = subprocess.run([sys.executable, "-m", "mvc", *args], cwd=repo, stdout=write_end, stderr=subprocess.PIPE, env=env, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr.decode()) == (141, "")


# ---- show renders nested fields (issue 17) -------------------------------------------------


def test_show_renders_nested_params_and_extra_fields_readably(repo, cli):
    (repo / "params.yaml").write_text("optimizer:\n  name: adam\n  betas: [0.9, 0.999]\nlayers: [{width: 64}, {width: 32}]\n")
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS, "--params-file", "params.yaml"))
    ptr = pointer_mod.read(repo, f"{WEIGHTS}.dvc")
    pointer_mod.write_manifest(repo, ptr.path, ptr.manifest.evolve(extra={"merge": {"method": "linear", "weights": [0.5, 0.5]}}))
    text = ok(cli("show", "net")).stdout
    assert "{" not in text and "'" not in text
    assert "params:\n  optimizer:\n    name = adam\n    betas = 0.9, 0.999\n  layers:\n    [1]:\n      width = 64\n    [2]:\n      width = 32\n" in text
    assert text.endswith("merge:\n  method: linear\n  weights: 0.5, 0.5\n")


# ---- rename (issue 17) ---------------------------------------------------------------------


def test_a_name_the_registry_refuses_is_fixed_with_mvc_rename(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS, "--name", "ñet-模型"))
    ok(cli("commit", "-m", "v1"))
    refused = cli("tag", "ñet-模型", "v1.0.0")
    assert_one_line_error(refused, 2)
    assert refused.stderr.splitlines()[1] == "hint: rename it first: `mvc rename ñet-模型 NEW`, then commit"
    renamed = ok(cli("rename", "ñet-模型", "net"))
    assert renamed.stdout.startswith("ñet-模型 -> net: v1 (") and renamed.stdout.endswith(f"staged {WEIGHTS}.dvc\n")
    assert git(repo, "diff", "--cached", "--name-only") == f"{WEIGHTS}.dvc"  # the pointer only: no new weights
    ok(cli("commit", "-m", "rename"))
    status = json.loads(ok(cli("status", "--json", "--no-remote")).stdout)
    assert [(s["name"], s["version"], s["workspace"]) for s in status] == [("net", 1, "ok")]
    assert ok(cli("tag", "net", "v1.0.0")).stdout.startswith("net@v1.0.0: net v1 (")
    assert_one_line_error(cli("rename", "net", "bad name"), 2, "model name 'bad name' is not allowed")
    assert_one_line_error(cli("rename", "nosuch", "x"), 3, "no model named 'nosuch'")


# ---- resolve says the next git command (issue 17) ------------------------------------------


def _diverged(cli, repo: Path) -> None:
    """main holds net v2 (seed 2), branch `other` holds another v2 (seed 3), both from v1."""
    version(cli, repo, 1)
    git(repo, "branch", "other")
    version(cli, repo, 2)
    git(repo, "checkout", "-q", "other")
    version(cli, repo, 3)


def test_resolve_during_a_rebase_names_git_rebase_continue(repo, cli):
    _diverged(cli, repo)
    stopped = subprocess.run(["git", "rebase", "main"], cwd=repo, capture_output=True, text=True, check=False)
    assert stopped.returncode != 0 and "mvc: both sides changed model 'net'" in stopped.stderr
    r = ok(cli("resolve", "net", "--take", "theirs"))
    assert r.stderr == "finish with `git rebase --continue`\n"
    done = subprocess.run(["git", "rebase", "--continue"], cwd=repo, capture_output=True, text=True, env={**os.environ, "GIT_EDITOR": "true"}, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(ok(cli("show", "net", "--json")).stdout)["version"] == 3


def test_resolve_during_a_cherry_pick_names_git_cherry_pick_continue(repo, cli):
    _diverged(cli, repo)
    git(repo, "checkout", "-q", "main")
    stopped = subprocess.run(["git", "cherry-pick", "other"], cwd=repo, capture_output=True, text=True, check=False)
    assert stopped.returncode != 0
    assert ok(cli("resolve", "net", "--take", "ours")).stderr == "finish with `git cherry-pick --continue`\n"


def test_resolve_after_a_merge_names_git_commit(repo, cli):
    _diverged(cli, repo)
    git(repo, "checkout", "-q", "main")
    assert subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True, check=False).returncode != 0
    assert ok(cli("resolve", "net", "--take", "theirs")).stderr == "finish with `git commit`\n"


# ---- pushing versions that were committed but never pushed (issue 14) ---------------------


def test_push_name_at_ref_and_all_versions_upload_committed_versions(repo, cli, tmp_path):
    h1 = version(cli, repo, 1)
    h2 = version(cli, repo, 2)
    h3 = version(cli, repo, 3)
    one = json.loads(ok(cli("push", "net@v1", "--json")).stdout)
    assert (one["transferred"], one["versions"], one["missing"]) == (1, ["net v1"], [])
    rest = json.loads(ok(cli("push", "--all-versions", "--json")).stdout)
    assert rest["transferred"] == 2 and rest["versions"] == ["net v1", "net v2"]  # v3 went as the work tree's version
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    for rev, md5 in (("main", h3), ("main~1", h2), ("main~2", h1)):  # a teammate pulls every version
        git(clone, "checkout", "-q", rev)
        ok(cli("pull", cwd=clone))
        assert json.loads(ok(cli("status", "--json", cwd=clone)).stdout)[0]["hash"] == md5
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    (cache / h1[:2] / h1[2:]).chmod(0o644)
    (cache / h1[:2] / h1[2:]).unlink()
    gone = tmp_path / "other-remote"
    ok(cli("remote", "add", "other", str(gone)))
    result = cli("push", "net@v1", "net@v2", "--remote", "other")
    assert_one_line_error(result, 3)
    assert result.stderr.splitlines()[0] == f"error: the weights of net v1 ({h1[:8]}) are in neither the local cache nor remote 'other'"
    assert result.stdout == "pushed 1 object of 1 model to other\n"  # v2 still went

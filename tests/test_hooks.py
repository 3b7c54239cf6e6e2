"""`mvc install-hooks`: real git checkout / switch / merge / push running the installed hooks."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"
BEGIN = "# >>> mvc (managed by `mvc install-hooks`"


def version(cli, repo: Path, seed: int) -> bytes:
    write_safetensors(repo / WEIGHTS, seed=seed)
    ok(cli("add", str(repo / WEIGHTS)))
    ok(cli("commit", "-m", f"net seed {seed}"))
    return (repo / WEIGHTS).read_bytes()


def run_git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def test_install_hooks_is_idempotent_and_runs_this_python(repo, cli):
    first = json.loads(ok(cli("install-hooks", "--json")).stdout)
    assert [(h["hook"], h["action"]) for h in first] == [
        ("post-checkout", "created"), ("post-merge", "created"), ("post-rewrite", "created"), ("pre-push", "created")
    ]
    again = json.loads(ok(cli("install-hooks", "--json")).stdout)
    assert {h["action"] for h in again} == {"unchanged"}
    for name in ("post-checkout", "post-merge", "post-rewrite", "pre-push"):
        hook = repo / ".git" / "hooks" / name
        text = hook.read_text()
        assert text.count(BEGIN) == 1 and f"{shlex.quote(sys.executable)} -m mvc _hook {name}" in text
        assert hook.stat().st_mode & stat.S_IXUSR


def test_existing_hooks_keep_working(repo, cli, tmp_path):
    hooks = repo / ".git" / "hooks"
    (hooks / "post-checkout").write_text('#!/bin/sh\necho "user hook $3" >> user-hook.log\n')
    (hooks / "pre-push").write_text(f"#!{sys.executable}\nimport sys\nopen('pre-push.log', 'a').write(sys.stdin.read())\n")
    for hook in ("post-checkout", "pre-push"):
        (hooks / hook).chmod(0o755)
    assert [h["action"] for h in json.loads(ok(cli("install-hooks", "--json")).stdout)] == ["chained", "created", "created", "chained"]
    ok(cli("install-hooks"))
    text = (hooks / "post-checkout").read_text()
    assert text.count(BEGIN) == 1 and text.startswith("#!/bin/sh\n" + BEGIN) and text.endswith('echo "user hook $3" >> user-hook.log\n')
    assert (hooks / "pre-push.pre-mvc").read_text().startswith(f"#!{sys.executable}")
    assert run_git(repo, "checkout", "-q", "-b", "feature").returncode == 0
    assert (repo / "user-hook.log").read_text() == "user hook 1\n"
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    push = run_git(repo, "push", "-q", "origin", "feature")
    assert push.returncode == 0, push.stderr
    assert "refs/heads/feature" in (repo / "pre-push.log").read_text()  # the ref lines reached the user's hook too


def test_checkout_switch_and_merge_sync_the_weights(repo, cli):
    ok(cli("install-hooks"))
    v1 = version(cli, repo, 1)
    assert run_git(repo, "checkout", "-q", "-b", "other").returncode == 0
    v2 = version(cli, repo, 2)
    switched = run_git(repo, "switch", "main")
    assert switched.returncode == 0 and "mvc: synced the weights of 1 path\n" in switched.stderr
    assert (repo / WEIGHTS).read_bytes() == v1
    merged = run_git(repo, "merge", "-q", "other")
    assert merged.returncode == 0, merged.stderr
    assert (repo / WEIGHTS).read_bytes() == v2
    assert run_git(repo, "checkout", "-q", "HEAD~1").returncode == 0
    assert (repo / WEIGHTS).read_bytes() == v1


def test_git_pull_fetches_the_weights_a_teammate_pushed(repo, cli, tmp_path):
    ok(cli("install-hooks"))
    version(cli, repo, 1)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    assert run_git(repo, "push", "-q", "origin", "main").returncode == 0
    mate = tmp_path / "mate"
    git(tmp_path, "clone", "-q", str(bare), str(mate))
    ok(cli("install-hooks", cwd=mate))
    v2 = version(cli, repo, 2)
    assert run_git(repo, "push", "-q", "origin", "main").returncode == 0
    pulled = run_git(mate, "pull", "-q", "--ff-only")
    assert pulled.returncode == 0, pulled.stderr
    assert (mate / WEIGHTS).read_bytes() == v2  # fetched from the remote by the post-merge hook


def test_checkout_keeps_weights_no_version_records(repo, cli):
    ok(cli("install-hooks"))
    version(cli, repo, 1)
    git(repo, "branch", "older")
    version(cli, repo, 2)
    write_safetensors(repo / WEIGHTS, seed=9)
    edited = (repo / WEIGHTS).read_bytes()
    moved = run_git(repo, "checkout", "-q", "older")
    assert moved.returncode == 0
    assert "mvc: kept models/net.safetensors: it holds changes no version records" in moved.stderr
    assert "`mvc add models/net.safetensors` keeps them" in moved.stderr
    assert (repo / WEIGHTS).read_bytes() == edited


def test_git_push_uploads_the_weights_of_the_pushed_commits_and_tags(repo, cli, tmp_path):
    ok(cli("install-hooks"))
    version(cli, repo, 1)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    assert json.loads(ok(cli("status", "--json")).stdout)[0]["remote"] == "missing"
    push = run_git(repo, "push", "origin", "main")
    assert push.returncode == 0 and "mvc: pushed 1 weight object to local" in push.stderr
    assert json.loads(ok(cli("status", "--json")).stdout)[0]["remote"] == "ok"
    version(cli, repo, 2)
    ok(cli("tag", "net", "v1.0.0"))
    tags = run_git(repo, "push", "origin", "net@v1.0.0")  # only the tag: its commit's weights go too
    assert tags.returncode == 0 and "mvc: pushed 1 weight object" in tags.stderr
    assert json.loads(ok(cli("status", "--json")).stdout)[0]["remote"] == "ok"


def test_a_failed_weight_upload_aborts_the_git_push(repo, cli, tmp_path):
    ok(cli("install-hooks"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote's directory should be\n")
    ok(cli("remote", "add", "broken", str(blocker / "remote"), "--default"))
    version(cli, repo, 1)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    push = run_git(repo, "push", "origin", "main")
    assert push.returncode != 0
    assert "mvc: git push stopped:" in push.stderr and "git push --no-verify" in push.stderr
    assert git(bare, "for-each-ref") == ""  # nothing reached the git remote


def test_git_pull_rebase_and_git_rebase_sync_the_weights(repo, cli, tmp_path):
    ok(cli("install-hooks"))
    version(cli, repo, 1)
    ok(cli("push"))
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    assert run_git(repo, "push", "-q", "origin", "main").returncode == 0
    mate = tmp_path / "mate"
    git(tmp_path, "clone", "-q", str(bare), str(mate))
    ok(cli("install-hooks", cwd=mate))
    ok(cli("pull", cwd=mate))
    (mate / "notes.txt").write_text("a local commit, so the pull really rebases\n")
    git(mate, "add", "notes.txt")
    git(mate, "commit", "-q", "-m", "notes")
    v2 = version(cli, repo, 2)
    assert run_git(repo, "push", "-q", "origin", "main").returncode == 0
    pulled = run_git(mate, "pull", "-q", "--rebase")
    assert pulled.returncode == 0, pulled.stderr
    assert (mate / WEIGHTS).read_bytes() == v2
    assert [s["workspace"] for s in json.loads(ok(cli("status", "--json", "--no-remote", cwd=mate)).stdout)] == ["ok"]
    # A plain `git rebase` onto a branch with another version: synced too.
    git(repo, "checkout", "-q", "-b", "side", "HEAD~1")
    (repo / "side.txt").write_text("side\n")
    git(repo, "add", "side.txt")
    git(repo, "commit", "-q", "-m", "side")
    rebased = run_git(repo, "rebase", "main")
    assert rebased.returncode == 0, rebased.stderr
    assert (repo / WEIGHTS).read_bytes() == v2


def test_checkout_to_a_branch_without_the_model_keeps_its_weights_git_ignored(repo, cli):
    ok(cli("install-hooks"))
    git(repo, "branch", "bare-branch")  # before the model exists
    v1 = version(cli, repo, 1)
    moved = run_git(repo, "checkout", "bare-branch")
    assert moved.returncode == 0, moved.stderr
    assert (
        "mvc: models/net.safetensors is not tracked at this commit: its weights stay in the work tree, "
        "git-ignored (.git/info/exclude)"
    ) in moved.stderr
    assert (repo / WEIGHTS).read_bytes() == v1  # never deleted
    git(repo, "add", "-A")
    assert WEIGHTS not in git(repo, "diff", "--cached", "--name-only").splitlines()
    back = run_git(repo, "checkout", "main")
    assert back.returncode == 0, back.stderr
    assert "/models/net.safetensors" not in (repo / ".git/info/exclude").read_text()  # tracked again: entry dropped

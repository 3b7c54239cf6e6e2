"""mvc.log_model and mvc.wait as a training script uses them: versions, commits, background uploads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import mvc
import mvc.api
from mvc import refs, workspace
from mvc.errors import LockedError, NotARepoError, RemoteError, UsageError
from tests.conftest import git, write_safetensors
from tests.integrations.helpers import committed_files, history, on_experiment


def test_each_call_makes_a_version_with_step_params_metrics_on_the_branch(repo, weights, cli):
    branch = on_experiment(repo)
    for epoch in (1, 2, 3):
        write_safetensors(weights, seed=epoch)
        logged = mvc.log_model(
            weights, params={"lr": np.float32(0.5), "layers": np.int64(2)}, metrics={"loss": 1.0 / epoch}, step=epoch
        )
        assert (logged.name, logged.version, logged.created) == ("net", epoch, True)
        assert logged.commit == git(repo, "rev-parse", "HEAD")
    records = history(repo, "net")
    assert [r.version for r in records] == [1, 2, 3]
    assert [r.manifest.step for r in records] == [1, 2, 3]
    assert [r.manifest.metrics["loss"] for r in records] == [1.0, 0.5, 1.0 / 3]
    assert records[-1].manifest.params == {"lr": 0.5, "layers": 2}
    assert all(r.manifest.experiment == "x" and r.branch is None for r in records)
    assert records[-1].subject == "mvc: net v3 (step 3)"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == branch
    best = refs.resolve(workspace.open_workspace(repo), "net@latest")
    assert (best.version, best.hash, best.commit) == (3, records[-1].hash, records[-1].commit)
    shown = cli("log", "net", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert [r["manifest"]["step"] for r in json.loads(shown.stdout)] == [3, 2, 1]


def test_the_commit_holds_only_mvc_files(repo, weights):
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "code")
    (repo / "train.py").write_text("print('v2, unstaged')\n")
    (repo / "notes.txt").write_text("staged, unrelated\n")
    git(repo, "add", "notes.txt")
    logged = mvc.log_model(weights, message="first weights")
    files = committed_files(repo)
    assert files == {"models/net.safetensors.dvc", "models/.gitignore", f".mvc/index/{logged.hash[:2]}/{logged.hash}.json"}
    assert git(repo, "log", "-1", "--format=%s") == "first weights"
    status = git(repo, "status", "--porcelain").splitlines()
    assert "A  notes.txt" in status and " M train.py" in status
    assert (repo / "train.py").read_text() == "print('v2, unstaged')\n"


def test_unchanged_weights_make_no_version_and_no_commit(repo, weights):
    first = mvc.log_model(weights, step=1)
    head = git(repo, "rev-parse", "HEAD")
    again = mvc.log_model(weights, step=2, metrics={"loss": 0.1})
    assert (again.created, again.version, again.hash, again.commit) == (False, 1, first.hash, None)
    assert git(repo, "rev-parse", "HEAD") == head


def test_commit_false_records_and_stages_only(repo, weights):
    head = git(repo, "rev-parse", "HEAD")
    logged = mvc.log_model(weights, commit=False, name="tiny")
    assert logged.created and logged.commit is None and logged.name == "tiny"
    assert git(repo, "rev-parse", "HEAD") == head
    assert "models/net.safetensors.dvc" in git(repo, "diff", "--cached", "--name-only")


def test_outside_a_git_repository(tmp_path, monkeypatch):
    outside = tmp_path / "scratch"
    write_safetensors(outside / "net.safetensors")
    monkeypatch.chdir(outside)
    with pytest.raises(NotARepoError, match="not inside a git repository"):
        mvc.log_model(outside / "net.safetensors")


def test_weights_outside_the_repository_named_by_repo(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "net.safetensors"
    write_safetensors(elsewhere)
    with pytest.raises(UsageError, match="is outside the repository"):
        mvc.log_model(elsewhere, repo=repo)
    with pytest.raises(UsageError, match="is outside the repository"):  # what callbacks check when made
        mvc.api.check_weights_path(tmp_path / "elsewhere" / "later.safetensors")
    assert mvc.api.check_weights_path(repo / "models" / "not-yet.safetensors") == "models/not-yet.safetensors"


def test_locked_git_index_gives_a_clear_error_and_no_commit(repo, weights, cli):
    mvc.log_model(weights)
    head = git(repo, "rev-parse", "HEAD")
    write_safetensors(weights, seed=9)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # another git process
    with pytest.raises(LockedError) as info:
        mvc.log_model(weights, step=2)
    assert "not committed" in info.value.message and ".git/index.lock" in info.value.message
    assert "mvc commit" in info.value.hint
    assert git(repo, "rev-parse", "HEAD") == head and lock.exists()
    ptr = yaml.safe_load((repo / "models/net.safetensors.dvc").read_text())
    assert ptr["meta"]["mvc"]["version"] == 2 and ptr["meta"]["mvc"]["step"] == 2  # recorded locally
    lock.unlink()
    done = cli("commit", "-m", "net v2, later")
    assert done.exit_code == 0, done.stderr
    assert [r.version for r in history(repo, "net")] == [1, 2]


def test_background_push_uploads_every_version(repo, weights):
    pushed = []
    for seed in (1, 2):
        write_safetensors(weights, seed=seed)
        pushed.append(mvc.log_model(weights, push=True))
    report = mvc.wait()
    assert [v.version for v in report.uploaded] == [1, 2] and report.failed == ()
    remote = Path(mvc.api.remote_list(repo=repo)[0].url)
    for v in pushed:
        assert (remote / "files" / "md5" / v.hash[:2] / v.hash[2:]).is_file()
    assert mvc.wait().uploaded == ()  # reported once


def test_failing_background_push_surfaces_at_wait_and_keeps_the_commits(repo, weights, tmp_path):
    not_a_dir = tmp_path / "remote-is-a-file"
    not_a_dir.write_text("")
    mvc.api.remote_add("broken", str(not_a_dir), repo=repo, default=True)
    logged = []
    for seed in (1, 2):  # training goes on: log_model returns at once
        write_safetensors(weights, seed=seed)
        logged.append(mvc.log_model(weights, push=True, step=seed))
    with pytest.raises(RemoteError) as info:
        mvc.wait()
    assert info.value.message.startswith("2 background uploads failed: net v1")
    assert "cannot write to remote 'broken'" in info.value.message
    assert "mvc push" in info.value.hint
    assert [(r.version, r.commit) for r in history(repo, "net")] == [(v.version, v.commit) for v in logged]
    mvc.api.remote_remove("broken", repo=repo)
    mvc.api.remote_remove("local", repo=repo)
    write_safetensors(weights, seed=3)
    mvc.log_model(weights, push=True)
    with pytest.raises(RemoteError, match="net v3 .*no remote is set"):
        mvc.wait()


def test_pending_failures_are_printed_at_interpreter_exit(repo, weights):
    mvc.api.remote_remove("local", repo=repo)
    script = textwrap.dedent(
        f"""
        import mvc
        mvc.log_model({str(weights)!r}, push=True)
        print("training done")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "training done\n"
    assert "mvc: error: 1 background upload failed: net v1" in proc.stderr
    assert "no remote is set" in proc.stderr and "mvc: hint:" in proc.stderr
    assert [r.version for r in history(repo, "net")] == [1]


def test_the_core_and_the_integrations_package_import_no_framework():
    code = (
        "import sys, mvc, mvc.api, mvc.training, mvc.integrations, mvc.cli.run\n"
        "mvc.log_model\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'keras', 'transformers', 'lightning', 'pytorch_lightning', 'accelerate', 'dvc', 'git')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


def test_log_model_on_a_detached_head_commits_and_warns(repo, weights):
    from mvc.training import DetachedHeadWarning

    mvc.add(weights)
    mvc.commit(repo=repo, message="v1")
    git(repo, "checkout", "-q", "--detach")
    write_safetensors(weights, seed=5)
    with pytest.warns(DetachedHeadWarning, match=r"^net v2 committed onto a detached HEAD: .*`git switch -c NAME`$") as caught:
        logged = mvc.log_model(weights)
    ours = [w for w in caught if w.category is DetachedHeadWarning]
    assert len(ours) == 1 and ours[0].filename == __file__  # points at the caller
    assert logged.commit == git(repo, "rev-parse", "HEAD") and logged.version == 2
    git(repo, "switch", "-q", "-c", "kept")
    assert [r.version for r in history(repo, "net")] == [1, 2]


def test_log_model_on_a_branch_does_not_warn(repo, weights):
    import warnings

    from mvc.training import DetachedHeadWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", DetachedHeadWarning)
        assert mvc.log_model(weights).commit is not None

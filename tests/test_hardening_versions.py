"""Hardening of making versions, numbering, history and the work-tree state (issues 14 and 17).

Each test reproduces a defect as a user meets it (real git, real DVC, the CLI in-process
or as a subprocess) and checks the exit code, the message and the repository afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mvc
from mvc import dvcstore
from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"
PTR = "models/net.safetensors.dvc"


def dvc_bin() -> str:
    return str(Path(sys.executable).parent / "dvc")


def mvc_bin() -> str:
    return str(Path(sys.executable).parent / "mvc")


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)


def version(repo: Path, cli, seed: int, *, metrics: tuple[str, ...] = (), message: str = "") -> str:
    """Write weights with ``seed``, add and commit them; return the content hash."""
    write_safetensors(repo / WEIGHTS, seed=seed)
    args = ["add", WEIGHTS, "--json"]
    for m in metrics:
        args += ["--metric", m]
    result = ok(cli(*args))
    ok(cli("commit", "-m", message or f"seed {seed}"))
    return json.loads(result.stdout)["version"]["hash"]


def log_rows(cli, name: str = "net") -> list[tuple[int, str]]:
    return [(r["version"], r["hash"]) for r in json.loads(ok(cli("log", name, "--json")).stdout)]


def status_of(cli, *args: str) -> dict:
    return json.loads(ok(cli("status", "--no-remote", "--json", *args)).stdout)[0]


# ---- 1. weights that change while being added -------------------------------------------


def test_add_refuses_weights_that_change_while_being_added(repo, cli, monkeypatch):
    path = repo / WEIGHTS
    write_safetensors(path, seed=1)
    monkeypatch.setattr(dvcstore, "_PRECACHE_MIN", 0)  # take the hash-while-copying path for a small file
    real_copy = dvcstore._copy

    def copy_then_append(src: Path, dest: Path) -> None:  # a writer appends half-way through the add
        real_copy(src, dest)
        with open(src, "ab") as handle:
            handle.write(b"\0" * 4096)

    monkeypatch.setattr(dvcstore, "_copy", copy_then_append)
    result = cli("add", WEIGHTS)
    assert_one_line_error(result, 4, f"{WEIGHTS} changed while adding", "wait until the weights are completely written")
    assert not (repo / PTR).exists()
    assert PTR not in git(repo, "status", "--porcelain")
    # Nothing in the cache holds bytes that differ from its name.
    cache = repo / ".dvc/cache/files/md5"
    for obj in (p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []:
        assert dvcstore.file_md5(obj) == obj.parent.name + obj.name


# ---- 2. kill -9 during add ----------------------------------------------------------------


@pytest.mark.parametrize("step", ["add:after-dvc-add", "add:before-manifest"])
def test_add_killed_at_each_step_leaves_a_repo_mvc_and_dvc_use(repo, cli, step):
    v1 = version(repo, cli, 1)
    before = (repo / PTR).read_bytes()
    write_safetensors(repo / WEIGHTS, seed=2)
    killed = run(repo, mvc_bin(), "add", WEIGHTS, env={"MVC_FAULT": step})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)

    st = status_of(cli)  # the next mvc command undoes the half-made version
    assert (repo / PTR).read_bytes() == before
    assert st["version"] == 1 and st["hash"] == v1 and st["workspace"] == "modified"
    assert not list((repo / ".dvc/tmp").glob("mvc-journal-*"))
    dvc_status = run(repo, dvc_bin(), "status")
    assert dvc_status.returncode == 0, dvc_status.stderr
    again = json.loads(ok(cli("add", WEIGHTS, "--json")).stdout)
    assert again["created"] is True and again["version"]["version"] == 2


def test_an_empty_dvc_rwlock_left_by_a_kill_is_recovered(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    (repo / ".dvc/tmp").mkdir(exist_ok=True)
    (repo / ".dvc/tmp/rwlock").write_bytes(b"")  # what kill -9 between DVC's truncate and write leaves
    plain = run(repo, dvc_bin(), "add", WEIGHTS)
    assert plain.returncode != 0 and "rwlock" in (plain.stderr + plain.stdout).lower()  # DVC itself is stuck

    added = cli("add", WEIGHTS, "--json")
    assert added.exit_code == 0, added.stderr
    assert not any(json.loads((repo / ".dvc/tmp/rwlock").read_text()).values())  # no locks held
    for args in (["status"], ["checkout"]):
        after = run(repo, dvc_bin(), *args)
        assert after.returncode == 0, after.stderr


# ---- 3. pull never overwrites unrecorded weights --------------------------------------------


def test_pull_refuses_to_overwrite_weights_no_version_records(repo, cli):
    version(repo, cli, 1)
    ok(cli("push"))
    write_safetensors(repo / WEIGHTS, seed=7)  # new training output, not added yet
    mine = (repo / WEIGHTS).read_bytes()
    result = cli("pull")
    assert_one_line_error(result, 4, f"{WEIGHTS} has changes that no version records", "--force")
    assert (repo / WEIGHTS).read_bytes() == mine
    forced = cli("pull", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert status_of(cli)["workspace"] == "ok"


# ---- 4. a teammate re-adds weights with plain `dvc add` --------------------------------------


def test_plain_dvc_add_is_one_version_everywhere(repo, cli):
    h1 = version(repo, cli, 1, metrics=("acc=0.5",))
    h2 = version(repo, cli, 2, metrics=("acc=0.9",))
    write_safetensors(repo / WEIGHTS, seed=3)
    plain = run(repo, dvc_bin(), "add", WEIGHTS)
    assert plain.returncode == 0, plain.stderr
    git(repo, "add", PTR)
    git(repo, "commit", "-q", "-m", "teammate: dvc add")
    h3 = dvcstore.file_md5(repo / WEIGHTS)

    assert status_of(cli)["version"] == 3
    log = json.loads(ok(cli("log", "net", "--json")).stdout)
    assert [(r["version"], r["hash"]) for r in log] == [(3, h3), (2, h2), (1, h1)]
    assert log[0]["key_metrics"] == {} and log[0]["parents"] == [{"hash": h2, "version": 2, "name": None}]
    shown = cli("show", "net", "--json")
    assert shown.exit_code == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["version"] == 3 and detail["manifest"]["version"] == 3 and detail["manifest"]["metrics"] == {}
    assert detail["manifest"]["parents"] == [{"hash": h2, "version": 2, "name": None}]
    assert detail["manifest"]["tensors"]["count"] == 3  # index rebuilt from the weights
    diff = json.loads(ok(cli("diff", "net@v2", "net", "--json")).stdout)
    assert diff["b"]["version"] == 3 and diff["b"]["hash"] == h3
    assert [(m["a"], m["b"]) for m in diff["metrics"]] == [(0.9, None)]

    adopted = json.loads(ok(cli("add", WEIGHTS, "--json")).stdout)["version"]
    assert adopted["version"] == 3 and adopted["hash"] == h3
    assert adopted["manifest"]["parents"] == [{"hash": h2, "version": 2, "name": None}]
    ok(cli("commit", "-m", "adopt"))
    assert log_rows(cli) == [(3, h3), (2, h2), (1, h1)]
    assert status_of(cli)["version"] == 3


# ---- 5. commit takes exactly mvc's files ---------------------------------------------------


def test_first_commit_carries_the_merge_driver_and_clones_get_it(tmp_path, cli):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    ok(cli("init", cwd=root))
    write_safetensors(root / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS, cwd=root))
    ok(cli("commit", "-m", "v1", cwd=root))
    committed = git(root, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert ".gitattributes" in committed and ".dvc/config" in committed and PTR in committed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    assert "*.dvc merge=mvc" in (clone / ".gitattributes").read_text()


def test_log_model_commits_the_merge_driver(tmp_path, cli):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "commit", "-q", "--allow-empty", "-m", "start")
    ok(cli("init", cwd=root))
    git(root, "commit", "-q", "-m", "dvc set-up", "--", ".dvc", ".dvcignore", ".mvc")  # the user kept .gitattributes out
    write_safetensors(root / WEIGHTS, seed=1)
    logged = mvc.log_model(root / WEIGHTS)
    assert logged.commit is not None
    assert ".gitattributes" in git(root, "show", "--name-only", "--format=", "HEAD").splitlines()


def test_commit_leaves_staged_dvc_config_changes_to_the_user(repo, cli, tmp_path):
    config = repo / ".dvc" / "config"
    config.write_text(config.read_text() + f"['remote \"hand\"']\n    url = {tmp_path / 'hand'}\n")  # staged by hand
    git(repo, "add", ".dvc/config")
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS))
    ok(cli("commit", "-m", "v1"))
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert PTR in committed and ".dvc/config" not in committed
    assert ".dvc/config" in git(repo, "diff", "--cached", "--name-only").splitlines()


def test_commit_carries_a_remote_that_mvc_remote_add_wrote(repo, cli, tmp_path):
    """A remote added with `mvc remote add` is mvc's own change: a teammate's clone must know it."""
    ok(cli("remote", "add", "backup", str(tmp_path / "backup")))
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS))
    ok(cli("commit", "-m", "v1"))
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert PTR in committed and ".dvc/config" in committed
    assert "backup" in git(repo, "show", "HEAD:.dvc/config")


# ---- 6. git revert / rebase never give two versions one number -------------------------------


def test_add_after_git_revert_takes_a_new_number(repo, cli):
    h1, h2, h3 = (version(repo, cli, s) for s in (1, 2, 3))
    git(repo, "revert", "--no-edit", "HEAD")  # the pointer is v2's again
    assert status_of(cli)["version"] == 2
    h4 = version(repo, cli, 4)
    rows = log_rows(cli)
    assert rows == [(4, h4), (2, h2), (3, h3), (2, h2), (1, h1)]
    assert status_of(cli)["version"] == 4
    assert json.loads(ok(cli("show", "net@v4", "--json")).stdout)["hash"] == h4


def test_rebased_version_is_numbered_after_the_upstream_one(repo, cli):
    h1 = version(repo, cli, 1)
    git(repo, "switch", "-q", "-c", "feat")
    ha = version(repo, cli, 2, message="feat v2")
    git(repo, "switch", "-q", "main")
    ok(cli("checkout", "net"))
    hb = version(repo, cli, 3, message="main v2")
    git(repo, "switch", "-q", "feat")
    rebase = subprocess.run(["git", "rebase", "main"], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, "MVC_NO_HOOKS": "1"}, check=False)
    assert rebase.returncode != 0  # both changed the model
    git(repo, "checkout", "--theirs", "--", PTR)  # keep feat's version
    git(repo, "add", PTR)
    subprocess.run(["git", "rebase", "--continue"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_EDITOR": "true", "MVC_NO_HOOKS": "1"})
    assert log_rows(cli) == [(3, ha), (2, hb), (1, h1)]
    assert status_of(cli)["version"] == 3
    assert json.loads(ok(cli("show", "net@v3", "--json")).stdout)["hash"] == ha
    assert json.loads(ok(cli("show", "net", "--json")).stdout)["version"] == 3


# ---- 7. a fresh clone before pull ------------------------------------------------------------


def test_fresh_clone_status_says_missing(repo, cli, tmp_path):
    version(repo, cli, 1)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    st = json.loads(ok(cli("status", "--no-remote", "--json", cwd=clone)).stdout)[0]
    assert st["workspace"] == "missing"


# ---- 8. a file inside a directory model; a bad signing key ------------------------------------


def test_add_file_inside_a_tracked_directory_model_is_refused(repo, cli):
    write_safetensors(repo / "ckpt/model.safetensors", seed=1)
    ok(cli("add", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    before = (repo / "ckpt.dvc").read_bytes()
    write_safetensors(repo / "ckpt/model.safetensors", seed=2)
    result = cli("add", "ckpt/model.safetensors")
    assert_one_line_error(result, 2, "ckpt/model.safetensors is inside the tracked directory model ckpt", "mvc add ckpt")
    assert (repo / "ckpt.dvc").read_bytes() == before
    assert not (repo / "ckpt/model.safetensors.dvc").exists()


def test_add_with_a_bad_signing_key_writes_nothing(repo, cli, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    write_safetensors(repo / WEIGHTS, seed=1)
    result = cli("add", WEIGHTS, "--sign", str(bad))
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not (repo / PTR).exists()
    assert git(repo, "diff", "--cached", "--name-only") == ""


# ---- 9. directory models: symlinks, empty, no weights --------------------------------------


def test_symlink_inside_a_directory_model_is_refused(repo, cli, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"private bytes outside the repo")
    write_safetensors(repo / "ckpt/model.safetensors", seed=1)
    (repo / "ckpt/extra.bin").symlink_to(secret)
    result = cli("add", "ckpt")
    assert_one_line_error(result, 2, "ckpt holds a symlink: extra.bin", "replace the link")
    assert not (repo / "ckpt.dvc").exists()
    cache = repo / ".dvc/cache"
    assert not cache.exists() or not any(p.is_file() and p.read_bytes() == secret.read_bytes() for p in cache.rglob("*"))


@pytest.mark.parametrize(("files", "message"), [({}, "ckpt is an empty directory"), ({"config.json": b"{}"}, "ckpt holds no weight files")])
def test_empty_or_weightless_directory_is_refused(repo, cli, files, message):
    (repo / "ckpt").mkdir()
    for name, data in files.items():
        (repo / "ckpt" / name).write_bytes(data)
    result = cli("add", "ckpt")
    assert_one_line_error(result, 2, message)
    assert not (repo / "ckpt.dvc").exists()
    assert git(repo, "diff", "--cached", "--name-only") == ""


# ---- 10. model names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", "..", "../../etc/x", "a\nb", "red\x1b[31m", "tab\there", ".hidden"])
def test_bad_model_names_are_refused(repo, cli, name):
    write_safetensors(repo / WEIGHTS, seed=1)
    result = cli("add", WEIGHTS, "--name", name)
    assert_one_line_error(result, 2, "is not allowed", "--name my-model")
    assert not (repo / PTR).exists()


# ---- 11. the tensor index is bound to the weights --------------------------------------------


def _edit_sidecar(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["tensors"][0][1] = "F16" if doc["tensors"][0][1] != "F16" else "F32"
    path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))


def test_hand_edited_tensor_index_is_not_trusted(repo, cli):
    version(repo, cli, 1)
    version(repo, cli, 2)
    honest = json.loads(ok(cli("diff", "net@v1", "net", "--json")).stdout)
    manifest = yaml.safe_load((repo / PTR).read_text())["meta"]["mvc"]
    assert manifest["index_hash"].startswith("sha256:")
    sidecar = repo / manifest["index"]
    _edit_sidecar(sidecar)
    rebuilt = json.loads(ok(cli("diff", "net@v1", "net", "--json")).stdout)
    assert rebuilt["tensors"] == honest["tensors"] and rebuilt["summary"] == honest["summary"]

    _edit_sidecar(sidecar)
    shutil.rmtree(repo / ".dvc/cache")
    result = cli("diff", "net@v1", "net")
    assert_one_line_error(result, 6, f"tensor index {manifest['index']} does not match", "git checkout --")


# ---- 12. recording metrics on a version is not a new version ----------------------------------


def test_eval_record_then_commit_is_one_version_with_the_new_metrics(repo, cli):
    version(repo, cli, 1)
    h2 = version(repo, cli, 2, metrics=("acc=0.5",))
    script = repo / "ev.py"
    script.write_text("import json, sys\njson.dump({'acc': 0.75}, open(sys.argv[1], 'w'))\n")
    ok(cli("eval", "net", "--cmd", f"{sys.executable} ev.py {{out}} {{weights}}", "--record"))
    ok(cli("commit", "-m", "record eval"))
    log = json.loads(ok(cli("log", "net", "--json")).stdout)
    assert (log[0]["version"], log[0]["hash"]) == (2, h2) and len(log) == 2
    assert log[0]["key_metrics"]["acc"] == 0.75
    shown = json.loads(ok(cli("show", "net@v2", "--json")).stdout)
    assert shown["manifest"]["metrics"]["acc"] == 0.75


# ---- 13. one author --------------------------------------------------------------------


def test_log_and_show_name_the_same_author(repo, cli):
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS))
    git(repo, "-c", "user.name=Release Bot", "-c", "user.email=bot@example.com", "commit", "-q", "-m", "v1")
    shown = json.loads(ok(cli("show", "net", "--json")).stdout)
    log = json.loads(ok(cli("log", "net", "--json")).stdout)
    assert shown["manifest"]["author"] == log[0]["author"] == "Test User <test@example.com>"


# ---- 14. restore the current version over modified weights -----------------------------------


def test_restore_current_version_over_modified_weights(repo, cli):
    version(repo, cli, 1)
    recorded = (repo / WEIGHTS).read_bytes()
    write_safetensors(repo / WEIGHTS, seed=9)
    refused = cli("restore", "net")
    assert_one_line_error(refused, 4, f"{WEIGHTS} has changes that no version records", "--force")
    result = cli("restore", "net", "--force")
    assert result.exit_code == 0, result.stderr
    assert "work-tree weights restored to v1" in result.stdout
    assert (repo / WEIGHTS).read_bytes() == recorded
    (repo / WEIGHTS).unlink()
    ok(cli("restore", "net"))
    assert (repo / WEIGHTS).read_bytes() == recorded
    again = cli("restore", "net")
    assert_one_line_error(again, 4, "net is already the current version of net")


# ---- 15. status during a conflicted model pointer ----------------------------------------------


def test_status_names_a_conflicted_model_and_mvc_resolve(repo, cli):
    version(repo, cli, 1)
    git(repo, "switch", "-q", "-c", "other")
    version(repo, cli, 2)
    git(repo, "switch", "-q", "main")
    ok(cli("checkout", "net"))
    version(repo, cli, 3)
    merged = subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, "MVC_NO_HOOKS": "1"}, check=False)
    assert merged.returncode != 0
    assert status_of(cli)["workspace"] == "conflict"
    plain = cli("status", "--no-remote")
    assert plain.exit_code == 0
    assert "conflict" in plain.stdout and "mvc resolve net --take" in plain.stderr


def test_add_while_another_git_command_holds_the_index_says_what_was_recorded(repo, cli):
    """A concurrent git command (or a stale .git/index.lock): the version is recorded whole
    but cannot be staged; the one error line says so and names the command that finishes it."""
    weights = repo / "models" / "net.safetensors"
    write_safetensors(weights, seed=1)
    (repo / ".git" / "index.lock").touch()

    result = cli("add", "models/net.safetensors")

    assert_one_line_error(result, 4, "recorded in models/net.safetensors.dvc but not staged", ".git/index.lock", first_line=True)
    assert "mvc commit -m MSG" in result.stderr
    assert yaml.safe_load((repo / "models/net.safetensors.dvc").read_text())["meta"]["mvc"]["version"] == 1
    (repo / ".git" / "index.lock").unlink()
    ok(cli("commit", "-m", "net v1"))
    assert [r["version"] for r in json.loads(ok(cli("log", "net", "--json")).stdout)] == [1]
    assert git(repo, "status", "--porcelain", "--", ".mvc", "models") == ""

"""Faults a user causes around a ``tensors`` remote (issue 15): ``kill -9`` at each step of a
push, pull, partial pull and remote gc; plain ``dvc``/``git`` between mvc steps; a hostile
or hand-edited remote and ``.dvc/tmp``.

Each kill runs the real CLI in a subprocess that SIGKILLs itself at a chosen call (the
step), so the state left is exactly what a killed process leaves; then the next command
must complete, nothing half-written may look complete and no weights are lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mvc import dvctensors
from tests import test_cloud_remotes as cloud
from tests.conftest import assert_one_line_error, git
from tests.test_cloud_remotes import clone, commit_all
from tests.test_tensors import _head_file, chain_steps

s3 = cloud.s3  # the S3 prefix fixture, shared with the cloud remote tests

# Runs ``mvc ARGS`` with ``MODULE:ATTR`` wrapped so the process SIGKILLs itself ``before`` or
# ``after`` the N-th call whose repr of arguments holds MATCH (empty: any call), or (``pause``)
# creates $MVC_TEST_PAUSED there and waits for $MVC_TEST_RESUME to exist.
KILLER = r"""
import importlib, os, select, signal, sys
spec, when, n, match = sys.argv[1:5]
args = sys.argv[sys.argv.index("--") + 1 :]
modname, _, attr = spec.partition(":")
owner = importlib.import_module(modname)
*path, last = attr.split(".")
for p in path:
    owner = getattr(owner, p)
real = getattr(owner, last)
seen = [0]
def wrapper(*a, **k):
    hit = match in repr(a) + repr(k)
    if hit:
        seen[0] += 1
    if hit and when == "pause" and seen[0] == int(n):
        open(os.environ["MVC_TEST_PAUSED"], "w").close()
        while not os.path.exists(os.environ["MVC_TEST_RESUME"]):
            select.select([], [], [], 0.01)
    if hit and when == "before" and seen[0] >= int(n):
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(*a, **k)
    if hit and when == "after" and seen[0] >= int(n):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(owner, last, wrapper)
sys.argv = ["mvc", *args]
from mvc.cli.main import run
run()
"""


def killed(root: Path, step: str, when: str, *args: str, n: int = 1, match: str = "") -> subprocess.CompletedProcess[str]:
    """``mvc ARGS`` in ``root``, SIGKILLed at ``step``; asserts it died there."""
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, step, when, str(n), match, "--", *args],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def paused(root: Path, step: str, *args: str, markers: Path, n: int = 1, match: str = "") -> subprocess.Popen[str]:
    """``mvc ARGS`` in ``root`` stopped at ``step`` (returns once it is there); ``resume(markers)`` lets it go on."""
    markers.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MVC_TEST_PAUSED": str(markers / "paused"), "MVC_TEST_RESUME": str(markers / "resume")}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, step, "pause", str(n), match, "--", *args],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while not (markers / "paused").exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {step}: {proc.returncode} {proc.communicate()}")
        select.select([], [], [], 0.01)
    return proc


def resume(proc: subprocess.Popen[str], markers: Path) -> tuple[int, str, str]:
    (markers / "resume").touch()
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tensors_repo(
    cli: Callable[..., Any], repo: Path, tmp_path: Path, count: int = 2, *, push_last: bool = True
) -> tuple[Path, list[str]]:
    """A chain of ``count`` versions, each pushed as it was made to a local-directory tensors
    remote (the last one only with ``push_last``)."""
    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default").exit_code == 0
    commit_all(repo, "tensors remote")
    md5s = []
    for i, md5 in enumerate(chain_steps(repo, count)):
        md5s.append(md5)
        if push_last or i < count - 1:
            result = cli("push")
            assert result.exit_code == 0, result.stderr
    return store, md5s


def recipe_file(store: Path, md5: str) -> Path:
    return store / "mvc" / "recipes" / md5[:2] / md5[2:]


def chunk_files(store: Path) -> dict[str, bytes]:
    top = store / "mvc" / "chunks"
    return {p.relative_to(top).as_posix(): p.read_bytes() for p in top.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- kill -9: push


def test_push_killed_after_its_chunks_before_the_recipe_resumes(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2, push_last=False)
    killed(repo, "mvc.chunkstore:ChunkStore.put", "before", "push", match="mvc/recipes/")
    left, half = chunk_files(store), recipe_file(store, md5s[1]).exists()
    status = json.loads(cli("status", "--json").stdout)
    again = cli("push", "--json")
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)

    assert left and not half
    assert [s["remote"] for s in status] == ["missing"], status
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["transferred"] == 1, again.stdout  # the recipe only: its chunks are there
    assert chunk_files(store) == left
    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[1]


def test_push_killed_after_the_recipe_before_its_local_copy_is_complete(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2, push_last=False)
    killed(repo, "mvc.tensorsync:_save_local_recipe", "before", "push")
    on_remote = recipe_file(store, md5s[1]).exists()
    status = json.loads(cli("status", "--json").stdout)
    again = cli("push", "--json")

    assert on_remote
    assert [s["remote"] for s in status] == ["ok"], status
    assert again.exit_code == 0 and json.loads(again.stdout)["transferred"] == 0, again.stdout + again.stderr


# ---------------------------------------------------------------------------- kill -9: pull


def test_pull_killed_mid_download_leaves_nothing_complete_and_resumes(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    killed(other, "mvc.tensorsync:_Decoder.stored", "after", "pull", "--jobs", "1", n=3)
    cache = dvctensors.cache_file(other, md5s[1])
    half = (cache.exists(), _head_file(other).exists())
    kept_chunks = list((other / ".dvc" / "tmp" / "mvc-chunks").rglob("*"))
    again = cli("pull", cwd=other)

    assert half == (False, False)
    assert kept_chunks, "the downloaded chunks stay for the next pull"
    assert again.exit_code == 0, again.stderr
    assert md5_of(_head_file(other)) == md5s[1]
    leftovers = [p.name for p in cache.parent.parent.rglob(".*")]
    assert not leftovers, leftovers


def test_pull_killed_after_the_cache_object_before_the_work_tree_file(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    killed(other, "mvc.dvctensors:adopt_cache_file", "after", "pull")
    in_cache = md5_of(dvctensors.cache_file(other, md5s[1]))
    status = json.loads(cli("status", "--no-remote", "--json", cwd=other).stdout)
    again = cli("pull", cwd=other)

    assert in_cache == md5s[1]
    assert status[0]["workspace"] != "ok", status
    assert again.exit_code == 0, again.stderr
    assert md5_of(_head_file(other)) == md5s[1]


# ---------------------------------------------------------------------------- kill -9: pull --tensors


def test_partial_pull_killed_while_writing_leaves_no_file_and_the_next_one_completes(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    dest = other / "models" / "net.partial.safetensors"
    killed(other, "mvc.tensorsync:_Decoder.raw", "after", "pull", "net@v2", "--tensors", "*", n=3)
    half = dest.exists()
    left = sorted(p.name for p in dest.parent.iterdir())
    again = cli("pull", "net@v2", "--tensors", "*", cwd=other)

    assert not half, "a killed partial pull never leaves a file under the final name"
    assert again.exit_code == 0, again.stderr
    whole = load_file(str(dvctensors.cache_file(repo, md5s[1])))
    got = load_file(str(dest))
    assert set(got) == set(whole)
    assert any(name.endswith(".tmp") for name in left)
    assert not list(dest.parent.glob("*.tmp")), "the next partial pull removes what the killed one left"


@pytest.mark.parametrize("out", ["models/net.safetensors", "models/net.safetensors.dvc", "models/net.safetensors/", "shards/a.safetensors"])
def test_partial_pull_never_writes_over_tracked_weights_or_their_pointer(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, out: str
) -> None:
    from tests.conftest import write_safetensors

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    write_safetensors(repo / "shards" / "a.safetensors", seed=3)
    assert cli("add", "shards").exit_code == 0
    weights = _head_file(repo)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\1\2\3\4")  # unrecorded work
    before = _files(repo)

    result = cli("pull", "net@v1", "--tensors", "enc.*", "--out", out)

    assert_one_line_error(result, 4, "error: --out", "hint: write it elsewhere with `--out PATH`")
    assert _files(repo) == before


def _files(root: Path) -> dict[str, bytes]:
    """The bytes of every file of the work tree and the DVC cache (not .git, not .dvc/tmp)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.parts and "tmp" not in p.relative_to(root).parts[:2]
    }


def test_partial_pull_into_a_directory_is_a_usage_error(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    (repo / "out").mkdir()
    result = cli("pull", "net@v1", "--tensors", "enc.*", "--out", "out")

    assert_one_line_error(result, 2, "error: --out out is a directory", "hint: ")
    assert list((repo / "out").iterdir()) == []


# ---------------------------------------------------------------------------- kill -9: gc --remote


def _garbage_versions(cli: Callable[..., Any], repo: Path, tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """v1, v2 kept on main; v3, v4 pushed from a branch that is then deleted (garbage)."""
    store, kept = tensors_repo(cli, repo, tmp_path, 2)
    git(repo, "checkout", "-q", "-b", "exp")
    import numpy as np

    import mvc
    from tests.test_tensors import SHAPES, save

    rng = np.random.default_rng(7)
    gone = []
    for i in range(2):
        md5 = save(repo / "models" / "net.safetensors", {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()})
        mvc.add(repo / "models" / "net.safetensors", repo=repo)
        commit_all(repo, f"exp {i}")
        assert cli("push").exit_code == 0
        gone.append(md5)
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "exp")
    return store, kept, gone


@pytest.mark.parametrize("step", ["after-the-cache", "first-recipe", "first-chunk"])
def test_gc_remote_killed_mid_removal_keeps_every_kept_version_and_finishes_next_time(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, step: str
) -> None:
    store, kept, gone = _garbage_versions(cli, repo, tmp_path)
    gc = ("gc", "--remote", "shared", "--older-than", "0", "--yes")
    if step == "after-the-cache":
        killed(repo, "mvc.tensorspace:remove_garbage", "before", *gc)
    else:
        killed(repo, "mvc.chunkstore:ChunkStore.remove_path", "after", *gc, match="recipes" if step == "first-recipe" else "chunks")
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other, )
    old = clone(repo, tmp_path / "old")
    git(old, "checkout", "-q", "HEAD~1")
    pulled_old = cli("pull", cwd=old)
    again = cli("gc", "--remote", "shared", "--older-than", "0", "--yes", "--json")

    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == kept[1]
    assert pulled_old.exit_code == 0, pulled_old.stderr
    assert md5_of(_head_file(old)) == kept[0]
    assert again.exit_code == 0, again.stderr
    assert not any(recipe_file(store, m).exists() for m in gone)
    assert all(recipe_file(store, m).exists() for m in kept)


# ---------------------------------------------------------------------------- two commands at once


def test_add_and_commit_of_another_model_while_a_pull_rebuilds(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    from tests.conftest import write_safetensors

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    proc = paused(other, "mvc.dvctensors:adopt_cache_file", "pull", markers=tmp_path / "m")
    write_safetensors(other / "models" / "other.safetensors", seed=5)
    added = cli("add", "models/other.safetensors", cwd=other)
    code, _, err = resume(proc, tmp_path / "m")
    again = cli("add", "models/other.safetensors", cwd=other)
    committed = cli("commit", "-m", "other", cwd=other)
    status = {s["name"]: s for s in json.loads(cli("status", "--no-remote", "--json", cwd=other).stdout)}

    # the add waits for nobody: it refuses while the pull holds the lock, and records nothing
    assert_one_line_error(added, 4, "another mvc or dvc process is working in this repository", "hint: wait for it to finish")
    assert code == 0, err
    assert md5_of(_head_file(other)) == md5s[1]
    assert again.exit_code == 0 and committed.exit_code == 0, again.stderr + committed.stderr
    assert {n: (s["version"], s["workspace"]) for n, s in status.items()} == {"net": (2, "ok"), "other": (1, "ok")}


# ---------------------------------------------------------------------------- a damaged or hostile remote


def _recipe(store: Path, md5: str):  # noqa: ANN202
    from mvc import tensorstore

    return tensorstore.Recipe.from_bytes(recipe_file(store, md5).read_bytes(), md5)


def _chunk(store: Path, cid: str) -> Path:
    return store / "mvc" / "chunks" / cid[:2] / cid[2:]


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_chunk_is_repaired_by_the_command_the_error_names(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, damage: str
) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    victim = next(p for p in _recipe(store, md5s[0]).parts if p.tensor == "head.weight")
    path = _chunk(store, victim.id)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    other = clone(repo, tmp_path / "clone")

    failed = cli("pull", cwd=other)
    written = _head_file(other).exists()
    hint = failed.stderr.split("hint: ", 1)[-1]
    command = hint.split("`")[1].split()
    fixed = cli(*command[1:], cwd=repo)
    pulled = cli("pull", cwd=other)

    assert failed.exit_code == 6 and not written, failed.stderr
    assert command == ["mvc", "push", "--full", "net@v1"], hint
    assert fixed.exit_code == 0, fixed.stderr
    assert pulled.exit_code == 0, (hint, pulled.stderr)
    assert md5_of(_head_file(other)) == md5s[0]


@pytest.mark.parametrize("damage", ["garbage", "another version's"])
def test_a_damaged_recipe_is_repaired_by_the_command_the_error_names(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, damage: str
) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    target = recipe_file(store, md5s[1])
    target.write_bytes(b"{not a recipe" if damage == "garbage" else recipe_file(store, md5s[0]).read_bytes())
    other = clone(repo, tmp_path / "clone")

    failed = cli("pull", cwd=other)
    written = _head_file(other).exists()
    command = failed.stderr.split("hint: ", 1)[-1].split("`")[1].split()
    fixed = cli(*command[1:], cwd=repo)
    pulled = cli("pull", cwd=other)

    assert_one_line_error(failed, 6, f"error: the tensor recipe of {md5s[1][:8]} on the remote")
    assert not written
    assert fixed.exit_code == 0, fixed.stderr
    assert pulled.exit_code == 0, (command, pulled.stderr)
    assert md5_of(_head_file(other)) == md5s[1]


def test_a_recipe_lying_about_a_part_size_never_yields_a_partial_file(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    from dataclasses import replace

    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    good = _recipe(store, md5s[0])
    parts = list(good.parts)
    # two neighbouring parts trade 4 bytes: the sizes still add up, every chunk is intact
    i = next(i for i, p in enumerate(parts) if p.tensor == "enc.weight")
    parts[i], parts[i + 1] = replace(parts[i], size=parts[i].size - 4), replace(parts[i + 1], size=parts[i + 1].size + 4)
    recipe_file(store, md5s[0]).write_bytes(replace(good, parts=tuple(parts)).to_bytes())
    other = clone(repo, tmp_path / "clone")

    partial = cli("pull", "net@v1", "--tensors", "enc.*", cwd=other)

    assert_one_line_error(
        partial, 6, f"error: the recipe of net v1 ({md5s[0][:8]}) on remote 'shared' gives chunk {parts[i].id[:12]} "
        f"{parts[i].size} bytes, but it holds {parts[i].size + 4}; nothing was written",
        "hint: the remote's recipe is wrong: pull the whole version (`mvc pull net@v1`) after `mvc push --full net@v1`",
    )
    assert not list((other / "models").glob("*partial*"))


def test_a_recipe_of_another_version_never_yields_a_partial_file(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """Every chunk intact and every size right, but v2's recipe lists v1's parts: only the
    tensor index git records for v2 tells the tensors apart."""
    from dataclasses import replace

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    old, new = _recipe(store, md5s[0]), _recipe(store, md5s[1])
    recipe_file(store, md5s[1]).write_bytes(replace(new, parts=old.parts).to_bytes())
    other = clone(repo, tmp_path / "clone")

    partial = cli("pull", "net@v2", "--tensors", "enc.*", cwd=other)
    whole = cli("pull", cwd=other)

    assert_one_line_error(
        partial, 6, f"error: tensor 'enc.bias' of net v2 ({md5s[1][:8]}) on remote 'shared' does not match the version's "
        "tensor index; nothing was written",
    )
    assert not list((other / "models").glob("*partial*"))
    assert whole.exit_code == 6 and not _head_file(other).exists()
    assert cli("push", "--full", "net@v2").exit_code == 0  # the hint's way out
    assert cli("pull", cwd=other).exit_code == 0 and md5_of(_head_file(other)) == md5s[1]


def test_a_hand_edited_local_recipe_is_never_trusted_as_a_source_of_bytes(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    from dataclasses import replace

    from mvc import tensorsync

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    git(other, "checkout", "-q", "HEAD~1")
    assert cli("pull", cwd=other).exit_code == 0  # v1 rebuilt: its recipe is kept in .dvc/tmp
    git(other, "checkout", "-q", "main")
    local = other / ".dvc" / "tmp" / tensorsync.LOCAL_RECIPES / md5s[0]
    v1, v2 = _recipe(store, md5s[0]), _recipe(store, md5s[1])
    # v1's local recipe now claims every part of v2 lives in v1's file at v1's offsets
    forged = [replace(p1, id=p2.id) for p1, p2 in zip(v1.parts, v2.parts, strict=False)]
    local.write_bytes(replace(v1, parts=tuple(forged)).to_bytes())

    pulled = cli("pull", cwd=other)
    part = cli("pull", "net@v2", "--tensors", "enc.*", cwd=other)

    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[1]
    assert part.exit_code == 0, part.stderr


def test_dvc_gc_and_git_checkout_between_mvc_steps(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 3)
    dvc = str(Path(sys.executable).parent / "dvc")
    gc = subprocess.run([dvc, "gc", "-w", "-f"], cwd=repo, capture_output=True, text=True, check=False)
    assert gc.returncode == 0, gc.stderr
    assert not dvctensors.cache_file(repo, md5s[0]).exists()
    git(repo, "checkout", "-q", "HEAD~2")
    pulled = cli("pull")
    v1 = md5_of(_head_file(repo))
    git(repo, "checkout", "-q", "main")
    back = cli("checkout")
    status = cli("status", "--json")

    assert pulled.exit_code == 0, pulled.stderr
    assert v1 == md5s[0]
    assert back.exit_code == 0, back.stderr
    assert md5_of(_head_file(repo)) == md5s[2], status.stdout


def test_plain_dvc_push_to_a_tensors_remote_then_mvc_pull(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    dvc = str(Path(sys.executable).parent / "dvc")
    pushed = subprocess.run([dvc, "push"], cwd=repo, capture_output=True, text=True, check=False)
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)
    storage = cli("storage", "--json", cwd=other)
    dvc_only = clone(repo, tmp_path / "dvc-only")
    plain = subprocess.run([dvc, "pull"], cwd=dvc_only, capture_output=True, text=True, check=False)

    assert pushed.returncode == 0, pushed.stderr
    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[1]
    assert storage.exit_code == 0, storage.stderr
    assert plain.returncode == 0, plain.stderr
    assert md5_of(_head_file(dvc_only)) == md5s[1]


# ---------------------------------------------------------------------------- mvc add PATH...


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_add_of_several_paths_with_a_corrupt_one_records_none(repo: Path, cli: Callable[..., Any], json_flag: list[str]) -> None:
    from tests.conftest import write_safetensors

    write_safetensors(repo / "models" / "a.safetensors", seed=1)
    bad = repo / "models" / "b.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    result = cli("add", "models/a.safetensors", "models/b.safetensors", *json_flag)
    staged = git(repo, "status", "--porcelain", "--untracked-files=no")

    assert_one_line_error(result, 6, "error: models/b.safetensors is not a valid safetensors file")
    assert result.stdout == "" and staged == ""
    assert not (repo / "models" / "a.safetensors.dvc").exists()


def test_what_a_killed_rebuild_leaves_in_the_cache_goes_with_gc(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    other = clone(repo, tmp_path / "clone")
    killed(other, "mvc.tensorsync:_Decoder.stored", "after", "pull", "--jobs", "1", n=3)
    left = [p for p in (other / ".dvc" / "cache").rglob(".mvc-rebuild-*")]
    gc = cli("gc", "--older-than", "0", "--yes", cwd=other)

    assert left
    assert gc.exit_code == 0, gc.stderr
    assert not [p for p in (other / ".dvc" / "cache").rglob(".mvc-rebuild-*")]


def test_two_clones_pushing_children_of_one_version_at_once(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """Clone A stops between its chunks and its recipe while clone B pushes its own v3 whole."""
    import numpy as np

    import mvc
    from tests.test_tensors import SHAPES, save

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    a, b = clone(repo, tmp_path / "a"), clone(repo, tmp_path / "b")
    assert cli("pull", cwd=a).exit_code == 0 and cli("pull", cwd=b).exit_code == 0
    made = {}
    for root, seed in ((a, 1), (b, 2)):
        rng = np.random.default_rng(seed)
        made[root] = save(root / "models" / "net.safetensors", {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()})
        mvc.add(root / "models" / "net.safetensors", repo=root)
        commit_all(root, "v3")
    proc = paused(a, "mvc.chunkstore:ChunkStore.put", "push", markers=tmp_path / "m", match="mvc/recipes/")
    pushed_b = cli("push", cwd=b)
    gc = cli("gc", "--remote", "shared", "--yes", cwd=b)  # the default: chunks younger than an hour stay
    code, _, err = resume(proc, tmp_path / "m")
    pulls = {}
    for root in (a, b):
        fresh = clone(root, tmp_path / f"fresh-{root.name}")
        pulls[root] = (cli("pull", cwd=fresh).exit_code, md5_of(_head_file(fresh)))

    assert pushed_b.exit_code == 0, pushed_b.stderr
    assert gc.exit_code == 0, gc.stderr
    assert code == 0, err
    assert pulls == {a: (0, made[a]), b: (0, made[b])}


def test_two_pulls_at_once_in_one_repository(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    proc = paused(other, "mvc.tensorsync:_Decoder.stored", "pull", markers=tmp_path / "m", n=2)
    second = cli("pull", cwd=other)
    code, _, err = resume(proc, tmp_path / "m")

    assert code == 0, err
    assert second.exit_code in (0, 4), second.stderr
    assert "Traceback" not in second.stderr
    assert md5_of(_head_file(other)) == md5s[1]


def test_a_directory_version_push_killed_before_its_listing_resumes(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    from tests.conftest import write_safetensors

    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default").exit_code == 0
    for i in range(2):
        write_safetensors(repo / "ckpt" / f"shard{i}.safetensors", seed=i, shapes={"w": (64, 64), "b": (64,)})
    assert cli("add", "ckpt").exit_code == 0
    commit_all(repo, "ckpt v1")
    killed(repo, "mvc.dvctensors:push_listings", "before", "push")
    status = json.loads(cli("status", "--json").stdout)
    again = cli("push")
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)

    assert [s["remote"] for s in status] == ["missing"], status
    assert again.exit_code == 0, again.stderr
    assert pulled.exit_code == 0, pulled.stderr
    assert all((other / "ckpt" / f"shard{i}.safetensors").read_bytes() == (repo / "ckpt" / f"shard{i}.safetensors").read_bytes() for i in range(2))


def test_a_version_tagged_after_its_push_reaches_a_dvc_only_teammate(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    tagged = cli("tag", "net@v1", "v1.0.0")
    pushed = cli("push", "--all-versions")
    teammate = clone(repo, tmp_path / "teammate")
    git(teammate, "checkout", "-q", "HEAD~1")  # the commit of v1
    dvc = str(Path(sys.executable).parent / "dvc")
    plain = subprocess.run([dvc, "pull"], cwd=teammate, capture_output=True, text=True, check=False)

    assert tagged.exit_code == 0, tagged.stderr
    assert pushed.exit_code == 0, pushed.stderr
    assert plain.returncode == 0, plain.stderr
    assert md5_of(_head_file(teammate)) == md5s[0]


def test_a_damaged_chunk_in_the_local_chunk_cache_is_fetched_again(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    other = clone(repo, tmp_path / "clone")
    killed(other, "mvc.tensorsync:_Decoder.stored", "after", "pull", "--jobs", "1", n=3)
    cached = [p for p in (other / ".dvc" / "tmp" / "mvc-chunks").rglob("*") if p.is_file()]
    cached[0].write_bytes(cached[0].read_bytes()[:-10])  # a disk error, a hand edit

    pulled = cli("pull", cwd=other)

    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[0]


@pytest.mark.parametrize("stray", ["README", ".DS_Store", "ab/.DS_Store"])
def test_storage_and_gc_ignore_stray_files_beside_the_recipes(repo: Path, cli: Callable[..., Any], tmp_path: Path, stray: str) -> None:
    """A file nobody's mvc wrote (a Finder .DS_Store in a shared directory remote, a README)."""
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    (store / "mvc" / "recipes" / stray).parent.mkdir(parents=True, exist_ok=True)
    (store / "mvc" / "recipes" / stray).write_text("hello")

    storage = cli("storage", "--json")
    gc = cli("gc", "--remote", "shared", "--older-than", "0", "--yes")
    verify = cli("verify", "net@v2", "--remote", "shared")

    assert storage.exit_code == 0, storage.stderr
    assert [v["version"] for v in json.loads(storage.stdout)["versions"]] == ["v1", "v2"]
    assert gc.exit_code == 0, gc.stderr
    assert verify.exit_code == 0, verify.stdout + verify.stderr
    assert all(recipe_file(store, m).exists() for m in md5s)


# ---------------------------------------------------------------------------- on the real local S3


@pytest.mark.servers
def test_s3_push_and_partial_pull_killed_mid_transfer_then_completed(repo: Path, cli: Callable[..., Any], tmp_path: Path, s3: Any) -> None:
    from safetensors.numpy import load_file

    from tests.test_tensors import add_tensors_remote, stored

    add_tensors_remote(cli, repo, s3)
    commit_all(repo, "tensors remote")
    md5s = list(chain_steps(repo, 2))
    killed(repo, "mvc.chunkstore:ChunkStore.put", "after", "push", "--jobs", "1", n=3, match="mvc/chunks/")
    half = sorted(stored(s3))
    gc = cli("gc", "--remote", "store", "--yes")
    again = cli("push")
    other = clone(repo, tmp_path / "clone", with_local_config=True)
    dest = other / "models" / "net.partial.safetensors"
    killed(other, "mvc.tensorsync:_Decoder.raw", "after", "pull", "net@v2", "--tensors", "head.*", n=2)
    half_partial = dest.exists()
    partial = cli("pull", "net@v2", "--tensors", "head.*", cwd=other)
    pulled = cli("pull", cwd=other)

    assert not [p for p in half if p.startswith("mvc/recipes/")] and len([p for p in half if p.startswith("mvc/chunks/")]) >= 3
    assert gc.exit_code == 0 and again.exit_code == 0, gc.stderr + again.stderr
    assert not half_partial and partial.exit_code == 0, partial.stderr
    assert set(load_file(str(dest))) == {"head.bias", "head.weight"}
    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[1]


def test_diff_stats_through_another_versions_recipe_is_refused(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """It reported every tensor unchanged (l2_diff 0.0) though the tensor indexes differ."""
    from dataclasses import replace

    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    old, new = _recipe(store, md5s[0]), _recipe(store, md5s[1])
    recipe_file(store, md5s[1]).write_bytes(replace(new, parts=old.parts).to_bytes())
    other = clone(repo, tmp_path / "clone")

    stats = cli("diff", "net@v1", "net@v2", "--stats", "--json", cwd=other)

    assert_one_line_error(
        stats, 6, f"error: tensor 'enc.bias' of net v2 ({md5s[1][:8]}) on remote 'shared' does not match the version's tensor index"
    )


@pytest.mark.parametrize("relpath", ["../../../escaped.txt", "/tmp/mvc-faults-escaped.txt"])
def test_a_directory_listing_climbing_out_is_refused_on_a_tensors_remote(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, relpath: str
) -> None:
    import mvc

    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default").exit_code == 0
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "a.bin").write_bytes(b"honest shard")
    assert cli("add", "models/ckpt", "--name", "ckpt").exit_code == 0
    assert cli("commit", "-m", "ckpt v1").exit_code == 0
    honest = mvc.status(repo=repo)[0].hash
    payload = b"owned"
    oid = hashlib.md5(payload).hexdigest()
    listing = json.dumps([{"md5": oid, "relpath": relpath}], sort_keys=True).encode()
    dir_oid = hashlib.md5(listing).hexdigest() + ".dir"
    for data, name in ((payload, oid), (listing, dir_oid)):
        path = dvctensors.cache_file(repo, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o444)
    pointer = repo / "models" / "ckpt.dvc"
    pointer.write_text(pointer.read_text().replace(honest, dir_oid))
    git(repo, "commit", "-q", "-am", "ckpt v2 (crafted)")
    pushed = cli("push")
    teammate = clone(repo, tmp_path / "teammate")
    Path("/tmp/mvc-faults-escaped.txt").unlink(missing_ok=True)

    pulled = cli("pull", cwd=teammate)
    got = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "deploy" / "out"))

    assert pushed.exit_code == 0, pushed.stderr  # the crafter's own push stores it as chunks
    for result in (pulled, got):
        assert_one_line_error(result, 6, "error: refusing ", "ckpt v1", repr(relpath), "nothing was written")
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/mvc-faults-escaped.txt").exists()
    assert not (teammate / "models" / "ckpt").exists()


def test_add_of_several_paths_killed_at_the_second_leaves_the_first_whole_and_reruns(repo: Path, cli: Callable[..., Any]) -> None:
    from tests.conftest import write_safetensors

    for name, seed in (("a", 1), ("b", 2)):
        write_safetensors(repo / "models" / f"{name}.safetensors", seed=seed)
    killed(repo, "mvc.pointer:write_manifest", "before", "add", "models/a.safetensors", "models/b.safetensors", n=2)
    status = {s["name"]: s for s in json.loads(cli("status", "--no-remote", "--json").stdout)}
    half = (repo / "models" / "b.safetensors.dvc").exists()
    dvc = str(Path(sys.executable).parent / "dvc")
    plain = subprocess.run([dvc, "status"], cwd=repo, capture_output=True, text=True, check=False)
    again = cli("add", "models/a.safetensors", "models/b.safetensors", "--json")

    assert set(status) == {"a"} and status["a"]["version"] == 1, status
    assert not half, "the journal of the killed add put b back as it was"
    assert plain.returncode == 0, plain.stderr
    assert again.exit_code == 0, again.stderr
    assert [(r["version"]["name"], r["version"]["version"], r["created"]) for r in json.loads(again.stdout)] == [
        ("a", 1, False), ("b", 1, True)]  # fmt: skip


# ---------------------------------------------------------------------------- mvc get


def test_get_killed_mid_rebuild_leaves_no_file_and_the_next_get_completes(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    deploy = tmp_path / "deploy"
    killed(tmp_path, "mvc.tensorread:_raw", "after", "get", str(repo), "net", "-o", str(deploy), "--jobs", "1", n=3)
    left = sorted(p.name for p in deploy.rglob("*") if p.is_file())
    again = cli("get", str(repo), "net", "-o", str(deploy), cwd=tmp_path)
    files = [p.relative_to(deploy).as_posix() for p in deploy.rglob("*")]

    assert left and "net.safetensors" not in left, left  # only a temp file, never the final name
    assert again.exit_code == 0, again.stderr
    assert files == ["net.safetensors"] and md5_of(deploy / "net.safetensors") == md5s[1], files


def test_get_through_an_unreadable_recipe_uses_the_whole_file_the_hint_uploads(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    recipe_file(store, md5s[0]).write_bytes(b"{broken")
    failed = cli("get", str(repo), "net", "-o", str(tmp_path / "first"), cwd=tmp_path)
    command = failed.stderr.split("hint: ", 1)[-1].split("`")[1].split()
    fixed = cli(*command[1:])
    got = cli("get", str(repo), "net", "-o", str(tmp_path / "deploy"), cwd=tmp_path)

    assert failed.exit_code == 6, failed.stderr
    assert fixed.exit_code == 0, (command, fixed.stderr)
    assert got.exit_code == 0, got.stderr
    assert [md5_of(p) for p in (tmp_path / "deploy").rglob("*") if p.is_file()] == [md5s[0]]


def test_a_push_from_a_corrupt_cache_object_never_stores_a_recipe_of_other_bytes(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2, push_last=False)
    cached = dvctensors.cache_file(repo, md5s[1])
    os.chmod(cached, 0o644)
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF  # a bit flip on disk after mvc add
    cached.write_bytes(bytes(data))
    os.utime(cached, (1_600_000_000, 1_600_000_000))

    pushed = cli("push")
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)

    assert_one_line_error(pushed, 6, f"error: cache object {md5s[1][:8]} of net v2 no longer matches its hash: refusing to push it")
    assert not recipe_file(store, md5s[1]).exists()
    assert pulled.exit_code == 3 and not _head_file(other).exists(), pulled.stderr


def test_verify_repair_mends_a_truncated_chunk_for_the_next_pull(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    victim = next(p for p in _recipe(store, md5s[0]).parts if p.tensor == "enc.weight")
    path = _chunk(store, victim.id)
    path.write_bytes(path.read_bytes()[:-100])

    before = cli("verify", "net", "--remote", "shared", "--json")
    repaired = cli("verify", "net", "--remote", "shared", "--repair", "--json")
    other = clone(repo, tmp_path / "clone")
    pulled = cli("pull", cwd=other)

    assert before.exit_code == 6 and json.loads(before.stdout)["checks"][0]["remote"] == "corrupt", before.stdout
    assert repaired.exit_code == 0, repaired.stdout + repaired.stderr
    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[0]


def test_a_pointer_lying_about_the_size_still_pulls_the_verified_version_from_chunks(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    import yaml

    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    other = clone(repo, tmp_path / "clone")
    ptr = other / "models" / "net.safetensors.dvc"
    doc = yaml.safe_load(ptr.read_text())
    doc["outs"][0]["size"] += 1
    ptr.write_text(yaml.safe_dump(doc, sort_keys=False))

    pulled = cli("pull", cwd=other)

    assert pulled.exit_code == 0, pulled.stderr
    assert md5_of(_head_file(other)) == md5s[0]


def test_a_hand_edited_tensor_index_stops_a_partial_pull_with_its_fix(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1)
    other = clone(repo, tmp_path / "clone")
    sidecar = next((other / ".mvc" / "index").rglob("*.json"))
    doc = json.loads(sidecar.read_text())
    doc["tensors"][0][4] = "0" * 32  # enc.bias's xxh3
    sidecar.write_text(json.dumps(doc))
    commit_all(other, "edited by hand")

    partial = cli("pull", "net@HEAD", "--tensors", "enc.*", cwd=other)

    assert_one_line_error(partial, 6, "does not match the hash its manifest records", "hint: restore it with `git checkout")
    assert not list((other / "models").glob("*partial*"))


def test_git_checkout_while_a_pull_rebuilds(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 2)
    other = clone(repo, tmp_path / "clone")
    proc = paused(other, "mvc.dvctensors:adopt_cache_file", "pull", markers=tmp_path / "m")
    git(other, "checkout", "-q", "HEAD~1")  # the pointer now names v1
    code, out, err = resume(proc, tmp_path / "m")
    state = _head_file(other).exists() and md5_of(_head_file(other))
    again = cli("pull", cwd=other)

    # the pull fetched v2, then found v1's pointer: it names the fix, and the fix works
    assert (code, err.splitlines()[-1]) == (3, "hint: run `mvc pull` to fetch them from the remote"), err
    assert state in (False, md5s[0]), "never v2's bytes under v1's pointer"
    assert again.exit_code == 0, again.stderr
    assert md5_of(_head_file(other)) == md5s[0]


def test_gc_remote_removes_what_a_killed_push_left_on_a_directory_remote(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    store, md5s = tensors_repo(cli, repo, tmp_path, 1, push_last=False)
    killed(repo, "mvc.tensorsync:os.replace", "before", "push", "--jobs", "1", match="mvc/chunks/")
    left = list((store / "mvc").rglob("*.tmp"))
    gc = cli("gc", "--remote", "shared", "--older-than", "0", "--yes")

    assert left and gc.exit_code == 0, gc.stderr
    assert not list((store / "mvc").rglob("*.tmp"))

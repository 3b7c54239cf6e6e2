"""`mvc merge` as a user runs it: real repos, real DVC, outputs checked against numpy."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mvc
from tests.conftest import git, write_safetensors

SHAPES = {"layer1.weight": (16, 8), "layer1.bias": (16,), "layer2.weight": (4, 16)}


@dataclass
class Zoo:
    """A repository of models to merge (read-only: tests write their outputs elsewhere)."""

    root: Path
    net: dict[int, dict[str, np.ndarray]]  # net v1 (the base), v2, v3
    extra: dict[str, np.ndarray]  # net v2's tensors plus head.weight
    sharded: dict[int, dict[str, np.ndarray]]  # a directory model, v1 and v2


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    gitconfig = home / ".gitconfig"
    gitconfig.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
    for key, value in {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "MVC_REMOTE_HOME": str(home / "remotes"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }.items():
        mp.setenv(key, value)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """net v1..v3 and models that do not fit it: extra tensor, other shape, float16, opaque, sharded."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("zoo-home"))
        root = tmp_path_factory.mktemp("zoo") / "repo"
        root.mkdir()
        git(root, "init", "-q")
        mp.chdir(root)
        mvc.init(root)
        git(root, "commit", "-q", "-m", "init mvc")
        models = root / "models"
        net = {}
        for version, seed in ((1, 0), (2, 1), (3, 2)):
            net[version] = write_safetensors(models / "net.safetensors", seed=seed)
            mvc.add(models / "net.safetensors")
            mvc.commit(message=f"net v{version}")
        # Same seed and name order as net v2: its first three tensors equal v2's.
        extra = write_safetensors(models / "extra.safetensors", seed=1, shapes={**SHAPES, "head.weight": (2, 4)})
        write_safetensors(models / "reshaped.safetensors", seed=3, shapes={**SHAPES, "layer2.weight": (8, 16)})
        save_file({k: v.astype(np.float16) for k, v in net[2].items()}, str(models / "half.safetensors"))
        (models / "blob.bin").write_bytes(np.random.default_rng(4).bytes(256))
        for name in ("extra", "reshaped", "half"):
            mvc.add(models / f"{name}.safetensors")
        mvc.add(models / "blob.bin")
        sharded = {}
        for version, seed in ((1, 5), (2, 6)):
            a = write_safetensors(models / "sharded" / "a.safetensors", seed=seed, shapes={"x": (4, 4)})
            b = write_safetensors(models / "sharded" / "b.safetensors", seed=seed + 10, shapes={"y": (3,)})
            sharded[version] = {**a, **b}
            mvc.add(models / "sharded")
            mvc.commit(message=f"models, sharded v{version}")
        return Zoo(root=root, net=net, extra=extra, sharded=sharded)


def merged(cli, zoo: Zoo, tmp_path: Path, *args: str) -> dict[str, np.ndarray]:
    out = tmp_path / "out.safetensors"
    result = cli("merge", *args, "-o", str(out), cwd=zoo.root)
    assert result.exit_code == 0, result.stderr
    return load_file(str(out))


def assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


# ---- each method against numpy -------------------------------------------------------------


def test_linear_is_the_weighted_average(cli, zoo, tmp_path):
    got = merged(cli, zoo, tmp_path, "net@v1", "net@v2", "net@v3", "--weights", "0.5,0.3,0.2")
    n = zoo.net
    assert_close(got, {k: 0.5 * n[1][k] + 0.3 * n[2][k] + 0.2 * n[3][k] for k in SHAPES})


def test_uniform_weights_by_default_make_a_model_soup(cli, zoo, tmp_path):
    result = cli("merge", "net@v1", "net@v2", "net@v3", "-o", str(tmp_path / "soup.safetensors"), "--json", cwd=zoo.root)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["method"] == "linear" and data["weights"] == pytest.approx([1 / 3] * 3)
    assert (data["tensors"], data["merged"], data["copied"], data["notes"]) == (3, 3, 0, [])
    assert [i["version"] for i in data["inputs"]] == [1, 2, 3] and data["version"] is None
    got = load_file(str(tmp_path / "soup.safetensors"))
    assert_close(got, {k: np.mean([zoo.net[v][k] for v in (1, 2, 3)], axis=0) for k in SHAPES})


def test_merging_two_copies_of_a_model_returns_it_bit_exact(cli, zoo, tmp_path):
    for method in (["--method", "linear"], ["--method", "slerp", "--param", "t=0.3"]):
        got = merged(cli, zoo, tmp_path, "net@v2", "net@v2", *method)
        assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in zoo.net[2].items()}
    got = merged(cli, zoo, tmp_path, "net@v2", "net@v2", "--method", "task-arithmetic", "--base", "net@v2")
    assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in zoo.net[2].items()}


def test_task_arithmetic_adds_the_task_vectors_to_the_base(cli, zoo, tmp_path):
    got = merged(cli, zoo, tmp_path, "net@v2", "net@v3", "--method", "task-arithmetic", "--base", "net@v1",
                 "--weights", "0.6,0.4", "--param", "lambda=0.5")
    n = zoo.net
    assert_close(got, {k: n[1][k] + 0.5 * (0.6 * (n[2][k] - n[1][k]) + 0.4 * (n[3][k] - n[1][k])) for k in SHAPES})


def test_slerp_interpolates_on_the_sphere(cli, zoo, tmp_path):
    got = merged(cli, zoo, tmp_path, "net@v2", "net@v3", "--method", "slerp", "--param", "t=0.3")
    expected = {}
    for k in SHAPES:
        a, b = zoo.net[2][k].astype(np.float64), zoo.net[3][k].astype(np.float64)
        theta = np.arccos(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        expected[k] = (np.sin(0.7 * theta) * a + np.sin(0.3 * theta) * b) / np.sin(theta)
    assert_close(got, expected)


def test_ties_trims_elects_signs_and_averages_agreeing_entries(cli, zoo, tmp_path):
    got = merged(cli, zoo, tmp_path, "net@v2", "net@v3", "--method", "ties", "--base", "net@v1", "--param", "density=0.5")
    expected = {}
    for k in SHAPES:
        base = zoo.net[1][k].astype(np.float64).ravel()
        kept = []
        for v in (2, 3):
            d = zoo.net[v][k].astype(np.float64).ravel() - base
            top = np.argsort(-np.abs(d))[: int(0.5 * d.size)]
            t = np.zeros_like(d)
            t[top] = d[top]
            kept.append(t)
        sign = np.sign(kept[0] + kept[1])
        agree = [(np.sign(t) == sign) & (t != 0) for t in kept]
        mean = (kept[0] * agree[0] + kept[1] * agree[1]) / np.maximum(agree[0] * 1.0 + agree[1], 1)
        expected[k] = (base + mean).reshape(SHAPES[k])
    assert_close(got, expected)


def test_dtype_sets_the_output_dtype(cli, zoo, tmp_path):
    out = tmp_path / "bf16.safetensors"
    result = cli("merge", "net@v2", "net@v3", "--dtype", "bfloat16", "-o", str(out), cwd=zoo.root)
    assert result.exit_code == 0, result.stderr
    with mvc.formats.open_tensors(out) as reader:
        assert {reader.info(k).dtype for k in SHAPES} == {"bfloat16"}
        for k in SHAPES:
            expected = (zoo.net[2][k] + zoo.net[3][k]) / 2
            np.testing.assert_allclose(reader.read(k, as_float32=True), expected, rtol=1e-2, atol=1e-2)


def test_directory_models_are_read_from_the_cache(cli, zoo, tmp_path):
    got = merged(cli, zoo, tmp_path, "sharded@v1", "sharded@v2")
    s = zoo.sharded
    assert_close(got, {k: (s[1][k] + s[2][k]) / 2 for k in ("x", "y")})


def test_config_file_with_per_tensor_overrides(cli, zoo, tmp_path):
    config = tmp_path / "merge.yaml"
    out = tmp_path / "cfg.safetensors"
    config.write_text(
        f"inputs: [net@v2, net@v3]\nmethod: linear\nweights: [0.5, 0.5]\noutput: {out}\n"
        "overrides:\n  - match: 'layer1.*'\n    weights: [1, 0]\n  - match: 'layer2.*'\n    weights: [0.25, 0.75]\n"
        "  - match: 'layer1.bias'\n    weights: [0, 1]\n"
    )
    result = cli("merge", "--config", str(config), "--json", cwd=zoo.root)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["copied"] == 2  # layer1.*: net@v2 as stored, net@v3 not read
    assert data["notes"] == ["override 'layer1.bias' applies to no tensor (no name matches it, or an earlier override matches first)"]
    got = load_file(str(out))
    n = zoo.net
    assert got["layer1.weight"].tobytes() == n[2]["layer1.weight"].tobytes()
    assert got["layer1.bias"].tobytes() == n[2]["layer1.bias"].tobytes()
    np.testing.assert_allclose(got["layer2.weight"], 0.25 * n[2]["layer2.weight"] + 0.75 * n[3]["layer2.weight"], rtol=1e-6)


# ---- bad input ----------------------------------------------------------------------------


def test_different_tensor_names_are_listed(cli, zoo, tmp_path):
    result = cli("merge", "net@v3", "extra", "-o", str(tmp_path / "x.safetensors"), cwd=zoo.root)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == (
        "error: the models do not match: 1 tensor not in every model: head.weight (missing from net@v3)"
    )
    assert "--allow-missing" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_allow_missing_keeps_tensors_only_some_models_hold(cli, zoo, tmp_path):
    out = tmp_path / "x.safetensors"
    result = cli("merge", "net@v3", "extra", "--allow-missing", "-o", str(out), cwd=zoo.root)
    assert result.exit_code == 0, result.stderr
    assert "1 tensor is not in every model" in result.stderr
    got = load_file(str(out))
    assert got["head.weight"].tobytes() == zoo.extra["head.weight"].tobytes()  # its only holder's value
    assert_close({k: got[k] for k in SHAPES}, {k: (zoo.net[3][k] + zoo.extra[k]) / 2 for k in SHAPES})


def test_different_shapes_are_listed(cli, zoo, tmp_path):
    result = cli("merge", "net@v2", "reshaped", "--allow-missing", "-o", str(tmp_path / "x.safetensors"), cwd=zoo.root)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == (
        "error: the models do not match: 1 shape mismatch(es): layer2.weight ([4, 16] in net@v2, [8, 16] in reshaped)"
    )
    assert "different architectures" in result.stderr


def test_different_dtypes_need_an_output_dtype(cli, zoo, tmp_path):
    result = cli("merge", "net@v2", "half", "-o", str(tmp_path / "x.safetensors"), cwd=zoo.root)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == (
        "error: the models do not match: 3 dtype mismatch(es): layer1.bias (float32 in net@v2, float16 in half), "
        "layer1.weight (float32 in net@v2, float16 in half), layer2.weight (float32 in net@v2, float16 in half)"
    )
    assert "hint: pass --dtype float32" in result.stderr
    got = merged(cli, zoo, tmp_path, "net@v2", "half", "--dtype", "float32")
    assert_close(got, {k: (zoo.net[2][k] + zoo.net[2][k].astype(np.float16).astype(np.float32)) / 2 for k in SHAPES})


def test_weights_not_summing_to_one_warn_or_normalize(cli, zoo, tmp_path):
    out = tmp_path / "x.safetensors"
    result = cli("merge", "net@v2", "net@v3", "--weights", "1,0.5", "-o", str(out), cwd=zoo.root)
    assert result.exit_code == 0
    assert "note: the weights sum to 1.5, not 1: merged tensors are scaled by 1.5 (pass --normalize" in result.stderr
    assert_close(load_file(str(out)), {k: zoo.net[2][k] + 0.5 * zoo.net[3][k] for k in SHAPES})
    result = cli("merge", "net@v2", "net@v3", "--weights", "1,0.5", "--normalize", "-o", str(out), cwd=zoo.root)
    assert result.exit_code == 0 and "note:" not in result.stderr
    assert_close(load_file(str(out)), {k: (2 * zoo.net[2][k] + zoo.net[3][k]) / 3 for k in SHAPES})


def test_slerp_of_more_than_two_models_is_refused(cli, zoo, tmp_path):
    result = cli("merge", "net@v1", "net@v2", "net@v3", "--method", "slerp", "-o", str(tmp_path / "x.safetensors"), cwd=zoo.root)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: slerp merges exactly two models, got 3"


def test_opaque_models_are_refused(cli, zoo, tmp_path):
    result = cli("merge", "net@v2", "blob", "-o", str(tmp_path / "x.safetensors"), cwd=zoo.root)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: cannot merge opaque blobs: blob is versioned as bytes, mvc cannot read its tensors"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["net@v1", "net@v2", "-o", "x.pt"], 2, "error: the merge is written as safetensors, so -o must end in .safetensors, not 'x.pt'"),
        (["net@v1", "net@v2"], 2, "error: no output file given"),
        (["net@v1", "net@v2", "--weights", "1,2,3", "-o", "x.safetensors"], 2, "error: 3 weights for 2 models"),
        (["net@v1", "net@v2", "--method", "ties", "-o", "x.safetensors"], 2, "error: ties needs a base model"),
        (["net@v1", "net@v2", "--param", "t=0.5", "-o", "x.safetensors"], 2, "error: linear has no parameter 't' (params)"),
        (["net@v1", "net@v9", "-o", "x.safetensors"], 3, "error: net@v9: 'net' has no version 9"),
        (["--config", "nope.yaml", "-o", "x.safetensors"], 3, "error: --config nope.yaml: no such file"),
        (["net@v1", "net@v2", "--add", "-o", "elsewhere.safetensors"], 2,
         "error: model 'net' lives at models/net.safetensors: its new version must be written there, not to elsewhere.safetensors"),
    ],
)
def test_bad_arguments(cli, zoo, args, code, message):
    result = cli("merge", *args, cwd=zoo.root)
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == message
    assert not (zoo.root / "x.safetensors").exists() and not (zoo.root / "elsewhere.safetensors").exists()


# ---- --add: a new version with its lineage --------------------------------------------------


def _versions(repo: Path, seeds: list[int], *, push: bool = False) -> dict[int, dict[str, np.ndarray]]:
    path = repo / "models" / "net.safetensors"
    out = {}
    for i, seed in enumerate(seeds, start=1):
        out[i] = write_safetensors(path, seed=seed)
        mvc.add(path)
        mvc.commit(message=f"net v{i}")
        if push:
            mvc.push(repo=repo)
    return out


def test_add_records_a_version_whose_parents_are_the_inputs(repo, cli):
    net = _versions(repo, [0, 1, 2], push=True)
    # v1 and v2 are not in the cache any more: the merge fetches them from the remote.
    shutil.rmtree(repo / ".dvc" / "cache")
    result = cli("merge", "net@v1", "net@v2", "--weights", "0.25,0.75", "-o", "models/net.safetensors", "--add", cwd=repo)
    assert result.exit_code == 0, result.stderr
    assert "net: v4 (" in result.stdout and "merges v1, v2" in result.stdout  # above HEAD's v3
    assert "record it with `mvc commit -m MSG`" in result.stderr
    assert cli("commit", "-m", "soup", cwd=repo).exit_code == 0
    log = json.loads(cli("log", "net", "--json", cwd=repo).stdout)
    hashes = {r["version"]: r["hash"] for r in log}
    newest = log[0]
    assert newest["version"] == 4
    assert [(p["version"], p["hash"]) for p in newest["manifest"]["parents"]] == [(1, hashes[1]), (2, hashes[2])]
    shown = json.loads(cli("show", "net", "--json", cwd=repo).stdout)["manifest"]
    assert shown["params"] == {"method": "linear", "weights": [0.25, 0.75]}
    info = shown["extra"]["merge"]
    assert info["method"] == "linear" and info["weights"] == [0.25, 0.75]
    assert [(i["ref"], i["version"], i["hash"]) for i in info["inputs"]] == [("net@v1", 1, hashes[1]), ("net@v2", 2, hashes[2])]
    text = cli("show", "net", cwd=repo).stdout
    assert f"parents:    v1 ({hashes[1][:8]}), v2 ({hashes[2][:8]})" in text and "  method: linear" in text and "{'" not in text
    got = load_file(str(repo / "models" / "net.safetensors"))
    assert_close(got, {k: 0.25 * net[1][k] + 0.75 * net[2][k] for k in SHAPES})


@pytest.mark.parametrize("driver", [True, False], ids=["merge-driver", "plain-git"])
def test_add_resolves_a_git_pointer_conflict(repo, cli, driver):
    if not driver:  # plain git's text merge: conflict markers inside the pointer
        (repo / ".git" / "info" / "attributes").write_text("*.dvc merge=text\n")
    path = repo / "models" / "net.safetensors"
    _versions(repo, [0])
    git(repo, "checkout", "-q", "-b", "exp")
    theirs = _versions(repo, [1])[1]
    git(repo, "checkout", "-q", "main")
    assert cli("checkout", cwd=repo).exit_code == 0
    ours = _versions(repo, [2])[1]
    merge = subprocess.run(["git", "merge", "exp"], cwd=repo, capture_output=True, text=True)
    assert merge.returncode != 0 and "models/net.safetensors.dvc" in git(repo, "diff", "--name-only", "--diff-filter=U")
    assert ("<<<<<<<" in (repo / "models/net.safetensors.dvc").read_text()) is not driver
    result = cli("merge", "net@HEAD", "net@MERGE_HEAD", "-o", "models/net.safetensors", "--add", cwd=repo)
    assert result.exit_code == 0, result.stderr
    assert "net: v3 (" in result.stdout and "merges v2, v2" in result.stdout
    assert "conclude the git merge with `git commit`" in result.stderr
    assert git(repo, "diff", "--name-only", "--diff-filter=U") == ""
    git(repo, "commit", "-q", "--no-edit")
    newest = mvc.log("net", repo=repo)[0]
    assert newest.version == 3 and newest.commit == git(repo, "rev-parse", "HEAD")
    parents = [mvc.show("net@HEAD^1", repo=repo).hash, mvc.show("net@HEAD^2", repo=repo).hash]
    assert [p.hash for p in newest.manifest.parents] == parents
    assert_close(load_file(str(path)), {k: (ours[k] + theirs[k]) / 2 for k in SHAPES})


def test_merging_two_models_starts_a_new_model_and_keeps_integer_tensors(repo, cli):
    models = repo / "models"
    rng = np.random.default_rng(0)
    weights = {}
    for name, ids in (("a", np.arange(5)), ("b", np.arange(5)), ("c", np.arange(1, 6))):
        weights[name] = rng.standard_normal((4, 4)).astype(np.float32)
        models.mkdir(exist_ok=True)
        save_file({"w": weights[name], "ids": ids.astype(np.int64)}, str(models / f"{name}.safetensors"))
        mvc.add(models / f"{name}.safetensors")
    mvc.commit(repo=repo, message="a, b, c")
    result = cli("merge", "a", "b", "-o", "models/ab.safetensors", "--add", "--name", "ab", "--json", cwd=repo)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["version"]["version"] == 1  # other models' version numbers do not count
    parents = data["version"]["manifest"]["parents"]
    assert [(p["name"], p["version"]) for p in parents] == [("a", 1), ("b", 1)]
    got = load_file(str(models / "ab.safetensors"))
    assert got["ids"].tolist() == [0, 1, 2, 3, 4] and got["ids"].dtype == np.int64
    np.testing.assert_allclose(got["w"], (weights["a"] + weights["b"]) / 2, rtol=1e-6)
    result = cli("merge", "a", "c", "-o", "x.safetensors", cwd=repo)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == "error: tensor 'ids' (int64) differs between a and c: integer and bool tensors cannot be merged"
    assert not (repo / "x.safetensors").exists() and not list(repo.glob(".x.safetensors.*"))  # nothing half-written

"""`mvc diff`: params, metrics and tensors from manifests only; `--stats` figures against numpy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import mvc
from tests.conftest import git
from tests.test_history import assert_one_line_error, repo_from_template, rows

WEIGHTS = "models/net.safetensors"


def tensors(version: int) -> dict[str, np.ndarray]:
    """v1 and v2 of ``net``: a changes content, c shape, d dtype, e is removed, g added; b and f stay."""
    rng = np.random.default_rng(0)
    v1 = {
        "a": rng.standard_normal((16, 8)).astype(np.float32),
        "b": rng.standard_normal(16).astype(np.float32),
        "c": rng.standard_normal((4, 16)).astype(np.float32),
        "d": rng.standard_normal(8).astype(np.float32),
        "e": rng.standard_normal(10).astype(np.float32),
        "f": rng.standard_normal((5, 5)).astype(np.float32),
    }
    if version == 1:
        return v1
    v2 = dict(v1)
    v2["a"] = (v1["a"] * 0.9 + 0.05 * rng.standard_normal((16, 8))).astype(np.float32)
    v2["c"] = rng.standard_normal((4, 8)).astype(np.float32)
    v2["d"] = v1["d"].astype(np.float16)
    del v2["e"]
    v2["g"] = rng.standard_normal((3, 3)).astype(np.float32)
    return v2


def build_diff(repo: Path) -> dict[str, str]:
    """net v1 -> v2 on main; model ``other`` v1 sharing tensor ``a`` with net v2."""
    h = {}
    for n, params, metrics in ((1, {"lr": 0.1, "batch": 32}, {"acc": 0.5}),
                               (2, {"lr": 0.05, "batch": 32, "epochs": 10}, {"acc": 0.75})):
        (repo / "models").mkdir(exist_ok=True)
        save_file(tensors(n), str(repo / WEIGHTS))
        h[f"v{n}"] = mvc.add(repo / WEIGHTS, params=params, metrics=metrics).version.hash
        h[f"v{n}-commit"] = mvc.commit(repo=repo, message=f"net v{n}").commit
    save_file({"a": tensors(2)["a"], "z": np.ones((2, 2), np.float32)}, str(repo / "models/other.safetensors"))
    h["other"] = mvc.add(repo / "models/other.safetensors").version.hash
    mvc.commit(repo=repo, message="other v1")
    return h


@pytest.fixture
def diffrepo(tmp_path, tmp_path_factory, monkeypatch):
    return repo_from_template("diff", build_diff, tmp_path, tmp_path_factory, monkeypatch)


TOTALS = "5 of 7 tensors changed, 81.2% of parameters (1 added, 1 removed, 2 shape/dtype, 1 content, 2 unchanged)"


def test_diff_human_output(diffrepo, cli):
    repo, h = diffrepo
    result = cli("diff", "net@v1", "net@v2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"net@v1 (v1, {h['v1'][:8]})  ->  net@v2 (v2, {h['v2'][:8]})"
    assert lines[1:5] == ["params\ta\tb\tdelta\tchanged", "batch\t32\t32\t+0\t", "epochs\t\t10\t\t*", "lr\t0.1\t0.05\t-0.05\t*"]
    assert lines[5:7] == ["metrics\ta\tb\tdelta\tchanged", "acc\t0.5\t0.75\t+0.25\t*"]
    assert lines[7] == TOTALS
    assert rows("\n".join(lines[8:])) == [
        {"tensor": "a", "change": "content", "a": "float32[16, 8]", "b": "float32[16, 8]"},
        {"tensor": "c", "change": "shape", "a": "float32[4, 16]", "b": "float32[4, 8]"},
        {"tensor": "d", "change": "dtype", "a": "float32[8]", "b": "float16[8]"},
        {"tensor": "e", "change": "removed", "a": "float32[10]", "b": ""},
        {"tensor": "g", "change": "added", "a": "", "b": "float32[3, 3]"},
    ]
    every = cli("diff", "net@v1", "net@v2", "--all").stdout
    assert "b\tunchanged\tfloat32[16]\tfloat32[16]" in every and "f\tunchanged\tfloat32[5, 5]\tfloat32[5, 5]" in every


def test_diff_json_shape(diffrepo, cli):
    repo, h = diffrepo
    result = cli("diff", "net@v1", "net@v2", "--json")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["a"] == {"ref": "net@v1", "name": "net", "version": 1, "hash": h["v1"], "commit": h["v1-commit"]}
    assert d["b"]["hash"] == h["v2"] and d["same_weights"] is False
    assert {"key": "lr", "a": 0.1, "b": 0.05, "delta": pytest.approx(-0.05), "changed": True} in d["params"]
    assert {"key": "epochs", "a": None, "b": 10, "delta": None, "changed": True} in d["params"]
    assert d["metrics"] == [{"key": "acc", "a": 0.5, "b": 0.75, "delta": 0.25, "changed": True}]
    assert d["summary"] == {"total": 7, "added": 1, "removed": 1, "shape_or_dtype": 2, "content": 1, "unchanged": 2,
                            "changed_parameters": 128 + 32 + 8 + 9, "total_parameters": 128 + 16 + 32 + 8 + 25 + 9}
    assert {"name": "c", "status": "shape", "a_dtype": "float32", "a_shape": [4, 16], "b_dtype": "float32",
            "b_shape": [4, 8], "parameters": 32} in d["tensors"]
    assert d["stats"] == [] and d["notes"] == []


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("net@v1", "net@main"),  # version number, branch
        ("net@{v1-commit}", "net@latest"),  # sha, latest
        ("net@{v1-commit:.8}", "net@HEAD"),  # short sha, HEAD
        ("net@v1", "net"),  # the work tree
    ],
)
def test_diff_accepts_every_ref_syntax(diffrepo, cli, a, b):
    repo, h = diffrepo
    a, b = (r.format(**{"v1-commit": h["v1-commit"]}) for r in (a, b))
    d = json.loads(cli("diff", a, b, "--json").stdout)
    assert (d["a"]["hash"], d["b"]["hash"], d["summary"]["content"]) == (h["v1"], h["v2"], 1)
    assert d["a"]["ref"] == a and d["b"]["ref"] == b


def test_same_version_twice(diffrepo, cli):
    result = cli("diff", "net@v2", "net@main")
    assert result.exit_code == 0
    assert "same weights" in result.stdout.splitlines()
    assert "0 of 6 tensors changed, 0.0% of parameters" in result.stdout


def test_diff_across_two_models(diffrepo, cli):
    repo, h = diffrepo
    d = json.loads(cli("diff", "net@v2", "other", "--json").stdout)
    assert (d["a"]["name"], d["b"]["name"], d["b"]["hash"]) == ("net", "other", h["other"])
    status = {t["name"]: t["status"] for t in d["tensors"]}
    assert status == {"b": "removed", "c": "removed", "d": "removed", "f": "removed", "g": "removed", "z": "added"}
    assert d["summary"]["unchanged"] == 1  # tensor a is shared
    human = cli("diff", "net@v2", "other").stdout
    assert "6 of 7 tensors changed, 3.0% of parameters" in human  # z: 4 of other's 132


def expected_stats(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    x = x.astype(np.float64).ravel()
    y = y.astype(np.float64).ravel()
    l2 = float(np.linalg.norm(y - x))
    return l2, l2 / float(np.linalg.norm(x)), float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def assert_stats_match_numpy(d: dict) -> None:
    old, new = tensors(1), tensors(2)
    got = {s["name"]: s for s in d["stats"]}
    assert set(got) == {"a", "d"}  # content and dtype changes; shape changes have no elementwise figure
    for name in ("a", "d"):
        l2, rel, cos = expected_stats(old[name], new[name])
        assert got[name]["l2_diff"] == pytest.approx(l2, rel=1e-9)
        assert got[name]["relative_change"] == pytest.approx(rel, rel=1e-9)
        assert got[name]["cosine"] == pytest.approx(cos, rel=1e-9)
    assert got["d"]["l2_diff"] > 0  # float16 rounding is a real change


def test_stats_against_numpy(diffrepo, cli):
    result = cli("diff", "net@v1", "net@v2", "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    assert_stats_match_numpy(json.loads(result.stdout))
    human = cli("diff", "net@v1", "net@v2", "--stats")
    table = rows("\n".join(human.stdout.splitlines()[8:]))
    a = next(r for r in table if r["tensor"] == "a")
    l2, rel, cos = expected_stats(tensors(1)["a"], tensors(2)["a"])
    assert (a["l2_diff"], a["relative"], a["cosine"]) == (f"{l2:.4g}", f"{rel:.4g}", f"{cos:.6f}")
    assert next(r for r in table if r["tensor"] == "c")["l2_diff"] == ""


def push_every_version(repo: Path, commits: list[str], remote: Path) -> None:
    """Add a remote (after the versions were made) and push each version's weights to it."""
    mvc.remote_add("team", str(remote), repo=repo, default=True)
    config = (repo / ".dvc" / "config").read_text()
    for commit in commits:
        git(repo, "checkout", "-q", commit)
        (repo / ".dvc" / "config").write_text(config)  # old commits do not know the new remote
        assert mvc.push(["net"], repo=repo, remote="team").transferred == 1
        git(repo, "checkout", "-q", "--", ".dvc/config")
    git(repo, "checkout", "-q", "main")
    (repo / ".dvc" / "config").write_text(config)


def test_stats_fetch_old_weights_from_the_remote(diffrepo, cli, tmp_path):
    repo, h = diffrepo
    push_every_version(repo, [h["v1-commit"], h["v2-commit"]], tmp_path / "team-remote")
    shutil.rmtree(repo / ".dvc" / "cache")
    result = cli("diff", "net@v1", "net@v2", "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    assert_stats_match_numpy(json.loads(result.stdout))
    assert (repo / WEIGHTS).read_bytes() == _bytes(tensors(2))  # the work tree was not touched


def _bytes(ts: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(ts)


def test_stats_without_the_weights_anywhere(diffrepo, cli):
    repo = diffrepo[0]
    shutil.rmtree(repo / ".dvc" / "cache")
    assert_one_line_error(cli("diff", "net@v1", "net@v2", "--stats"), 3, "in neither the local cache nor")


def test_plain_diff_reads_no_weight_bytes(diffrepo, cli):
    repo, h = diffrepo
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / WEIGHTS).unlink()
    assert cli("remote", "remove", "local").exit_code == 0
    for refs in (("net@v1", "net@v2"), ("net@v1", "net")):
        result = cli("diff", *refs)
        assert result.exit_code == 0, result.stderr
        assert TOTALS in result.stdout.splitlines()


def test_opaque_models_compare_metadata_only(repo, cli):
    onnx = repo / "model.onnx"
    for n in (1, 2):
        onnx.write_bytes(os.urandom(2048))
        mvc.add(onnx, metrics={"acc": 0.5 + n / 10})
        mvc.commit(repo=repo, message=f"onnx v{n}")
    result = cli("diff", "model@v1", "model@v2")
    assert result.exit_code == 0, result.stderr
    assert "acc\t0.6\t0.7\t+0.1\t*" in result.stdout
    assert "tensors changed" not in result.stdout
    assert "model@v1: no tensor index (opaque format); tensors not compared" in result.stderr
    d = json.loads(cli("diff", "model@v1", "model@v2", "--stats", "--json").stdout)
    assert d["summary"] is None and d["tensors"] == [] and d["stats"] == [] and len(d["notes"]) == 2


def test_diff_bad_refs(diffrepo, cli):
    repo = diffrepo[0]
    assert_one_line_error(cli("diff", "resnet@v1", "net@v2"), 3, "no model named 'resnet' (models: net, other)")
    assert_one_line_error(cli("diff", "net@v1", "net@nope"), 3, "'nope' is not a version")
    assert_one_line_error(cli("diff", "net@v1", "other@v2"), 3, "'other' has no version 2")
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    assert_one_line_error(cli("diff", f"net@{first}", "net@v2"), 3, "did not exist at")

"""Every public API function's docstring example, and every Python block of the README,
runs as written (issue 18), in a copy of one prepared project:

* ``net`` v1 and v2 committed and pushed to the default remote ``local``; v1 released as
  ``v1.0.0`` and in stage ``prod``;
* experiments ``lr-0.1`` and ``lr-0.01`` (one version of ``net`` each), ``main`` checked out;
* ``train.py`` (writes new weights and ``metrics.json``), ``eval.py`` (prints metrics and a
  per-example ``correct`` list), a signing key ``me.pem`` with its public half in ``keys/``,
  and a bare git remote ``origin``.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mvc
import mvc.api
from tests.conftest import git, write_safetensors

TRAIN = """\
import json, os, sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
shapes = {"layer1.weight": (16, 8), "layer1.bias": (16,), "layer2.weight": (4, 16)}
os.makedirs("models", exist_ok=True)
save_file({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, "models/net.safetensors")
json.dump({"acc": float(rng.uniform(0.8, 0.95))}, open("metrics.json", "w"))
"""

EVAL = """\
import json, sys
import numpy as np
from safetensors.numpy import load_file
w = load_file(sys.argv[-1])["layer2.weight"]
correct = [float(x > 0) for x in w.ravel()[:32]]
print(json.dumps({"acc": sum(correct) / len(correct), "correct": correct}))
"""


def _public_functions() -> list[str]:
    return sorted(
        name
        for name, value in vars(mvc.api).items()
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == "mvc.api"
    )


def _example(name: str) -> str:
    """The indented block after ``Example::`` in the function's docstring."""
    doc = inspect.getdoc(getattr(mvc.api, name)) or ""
    match = re.search(r"Example::\n\n((?:(?: {4}.*)?\n)+)", doc + "\n")
    assert match, f"mvc.{name} has no Example:: block in its docstring"
    return textwrap.dedent(match.group(1))


def _build(base: Path) -> None:
    repo, store, origin = base / "repo", base / "store", base / "origin.git"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    git(base, "init", "-q", "--bare", str(origin))
    (repo / "train.py").write_text(TRAIN)
    (repo / "eval.py").write_text(EVAL)
    (repo / ".gitignore").write_text("me.pem\nmetrics.json\ndownloads/\n")
    _write_keys(repo)
    git(repo, "add", "train.py", "eval.py", ".gitignore", "keys")
    git(repo, "commit", "-q", "-m", "scripts")
    git(repo, "remote", "add", "origin", str(origin))
    mvc.init(repo)
    mvc.remote_add("local", str(store), default=True, force=True, repo=repo)
    weights = repo / "models" / "net.safetensors"
    for n, acc in ((1, 0.81), (2, 0.86)):
        write_safetensors(weights, seed=n)
        mvc.add(weights, params={"lr": 0.01}, metrics={"acc": acc}, repo=repo)
        mvc.commit(f"net v{n}", repo=repo)
    if git(repo, "status", "--porcelain"):
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "mvc set-up")
    mvc.push(all_versions=True, repo=repo)
    mvc.tag("net@v1", "v1.0.0", repo=repo)
    mvc.promote("net@v1", stage="prod", repo=repo)
    for n, exp in ((3, "lr-0.1"), (4, "lr-0.01")):
        mvc.exp_new(exp, base="main", params={"lr": float(exp[3:])}, repo=repo)
        write_safetensors(weights, seed=n)
        mvc.add(weights, metrics={"acc": 0.8 + n / 100}, repo=repo)
        mvc.commit(f"net on {exp}", repo=repo)
    git(repo, "checkout", "-q", "main")
    mvc.checkout(repo=repo, force=True)
    mvc.push(all_versions=True, repo=repo)
    git(repo, "push", "-q", "origin", "main")


def _write_keys(repo: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (repo / "me.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (repo / "keys").mkdir()
    (repo / "keys" / "me.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The prepared project, built once (in an environment like ``isolated_env``'s)."""
    base = tmp_path_factory.mktemp("project")
    home = tmp_path_factory.mktemp("project-home")
    (home / ".gitconfig").write_text("[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
            "MVC_REMOTE_HOME": str(home / "remotes"),
            "MVC_NO_PROGRESS": "1",
        }.items():
            mp.setenv(key, value)
        _build(base)
    yield base


@pytest.fixture
def copy(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the project (remote and git origin included), as the cwd."""
    base = tmp_path / "project"
    shutil.copytree(project, base, symlinks=True)
    for config in (base / "repo/.dvc/config", base / "repo/.dvc/config.local", base / "repo/.git/config"):
        if config.exists():
            config.write_text(config.read_text().replace(str(project), str(base)))
    monkeypatch.chdir(base / "repo")
    # `python` in an example's command is this interpreter, as in an activated venv.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return base / "repo"


def _conflict_on_net(repo: Path) -> None:
    git(repo, "merge", "-q", "exp/lr-0.1")
    subprocess.run(["git", "merge", "-q", "exp/lr-0.01"], cwd=repo, capture_output=True)


def _tensors_remote(repo: Path) -> None:
    """A second remote with the tensors layout (issue 15), every version pushed to it."""
    mvc.remote_add("tensors", str(repo.parent / "tensors-store"), layout="tensors")
    mvc.push(all_versions=True, remote="tensors")


SETUP: dict[str, Callable[[Path], None]] = {
    "resolve": _conflict_on_net,
    "push_full": _tensors_remote,
    "storage": _tensors_remote,
    "pull_tensors": _tensors_remote,
}


def test_every_public_function_has_an_example() -> None:
    missing = [name for name in _public_functions() if "Example::" not in (getattr(mvc.api, name).__doc__ or "")]
    assert missing == []


@pytest.mark.parametrize("name", _public_functions())
def test_docstring_example_runs(name: str, copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SETUP.get(name, lambda repo: None)(copy)
    exec(compile(_example(name), f"<mvc.{name} example>", "exec"), {"mvc": mvc})  # noqa: S102 - our own docs
    assert capsys.readouterr().out.strip()  # every example shows its result


# ---- the README's Python blocks --------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _placeholders() -> dict[str, object]:
    """What the README leaves to the reader's own training code."""
    model: dict[str, int] = {"seed": 10}

    def train_one_epoch(model: dict[str, int]) -> None:
        model["seed"] += 1

    def save_weights(model: dict[str, int], path: str) -> None:
        write_safetensors(Path(path), seed=model["seed"])

    return {"model": model, "train_one_epoch": train_one_epoch, "save_weights": save_weights, "loss": 0.5}


def test_the_readme_has_python_examples() -> None:
    assert len(_readme_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_block_runs(index: int, copy: Path) -> None:
    mvc.remote_add("s3", str(copy.parent / "store-s3"), repo=copy)  # the README's second remote
    mvc.push(all_versions=True, remote="s3", repo=copy)
    namespace: dict[str, object] = {"mvc": mvc, **_placeholders()}
    exec(compile(_readme_blocks()[index], f"<README block {index}>", "exec"), namespace)  # noqa: S102 - our own docs


# ---- the signature rule and errors as data -------------------------------------------------


def test_subject_first_calls_just_work(copy: Path) -> None:
    assert mvc.show("net@v2").version == 2
    assert [r.version for r in mvc.log("net")] == [2, 1]
    assert mvc.diff("net@v1", "net@v2").a.version == 1
    assert [s.name for s in mvc.status("net")] == ["net"]  # one NAME where a list is taken
    assert mvc.push("net@v1").versions == ("net v1",)
    assert mvc.show("net", repo=copy / "models").name == "net"  # repo: any path inside it


def test_errors_carry_their_subject_as_fields(copy: Path) -> None:
    with pytest.raises(mvc.RefNotFoundError) as missing_version:
        mvc.show("net@v99")
    assert (missing_version.value.ref, missing_version.value.name) == ("net@v99", "net")

    with pytest.raises(mvc.ModelNotFoundError) as unknown_model:
        mvc.log("nett")
    assert (unknown_model.value.name, unknown_model.value.candidates) == ("nett", ("net",))

    with pytest.raises(mvc.AmbiguousRefError) as ambiguous:
        mvc.show("net@v3")  # v3 exists on both experiment branches, with different weights
    assert ambiguous.value.ref == "net@v3"
    assert sorted(ambiguous.value.candidates) == ["net@exp/lr-0.01", "net@exp/lr-0.1"]

    with pytest.raises(mvc.RemoteNotFoundError) as unknown_remote:
        mvc.push("net", remote="s4")
    assert (unknown_remote.value.remote, unknown_remote.value.candidates) == ("s4", ("local",))

    with pytest.raises(mvc.PathNotFoundError) as no_file:
        mvc.add("models/missing.safetensors")
    assert no_file.value.path == "models/missing.safetensors"
    assert isinstance(no_file.value, mvc.MvcError) and no_file.value.hint


def test_public_results_are_frozen_dataclasses_of_the_library_not_of_an_adapter() -> None:
    import collections.abc
    import dataclasses
    import typing

    namespace = {**vars(mvc.api), **{k: getattr(mvc.api, k) for k in mvc.api._REEXPORTS}, "Callable": collections.abc.Callable}
    leaks = []
    for name in _public_functions():
        returned = eval(getattr(mvc.api, name).__annotations__["return"], namespace)  # noqa: S307 - our own annotations
        for kind in typing.get_args(returned) or (returned,):
            if kind is None or kind is type(None) or kind is str:
                continue
            if not (dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen):
                leaks.append(f"{name} -> {kind}: not a frozen dataclass")
            elif kind.__module__.startswith("mvc.dvc") or kind.__module__ == "mvc.gitstore":
                leaks.append(f"{name} -> {kind.__module__}.{kind.__name__}: an adapter type")
    assert leaks == []

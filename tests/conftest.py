"""Test isolation and fixtures: real git repos in tmp_path, real DVC, a local-directory remote."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest_plugins = ["tests.remote_servers"]


# Host variables that could point a client at a real cloud account or other credentials.
CLOUD_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate HOME, git identity, DVC's site cache, cloud credentials, colour and terminal width for every test."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "MVC_REMOTE_HOME": str(home / "remotes"),
        "MVC_NO_PROGRESS": "1",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "TERM": "dumb",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MVC_DEBUG", raising=False)
    # Keep host credentials and instance metadata out; keep 127.0.0.1 away from proxies.
    for name in CLOUD_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


def assert_one_line_error(result, code: int, *needles: str, first_line: bool = False) -> None:
    """The CLI failed as a user must see it: exit ``code``, one ``error:`` line (and an
    optional ``hint:`` line) naming ``needles`` (in the error line itself with
    ``first_line``), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    where = lines[0] if first_line else result.stderr
    assert lines[0].startswith("error: ") and all(n in where for n in needles), result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    assert "Traceback" not in result.stderr


def ok(result):
    """The CLI command succeeded; returns its result."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return stdout."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def write_safetensors(path: Path, *, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Write a small real safetensors file of float32 tensors; return the tensors."""
    from safetensors.numpy import save_file

    shapes = shapes or {"layer1.weight": (16, 8), "layer1.bias": (16,), "layer2.weight": (4, 16)}
    rng = np.random.default_rng(seed)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return tensors


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git repository with mvc initialised (default local remote), as the cwd."""
    import mvc

    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    monkeypatch.chdir(root)
    mvc.init(root)
    git(root, "commit", "-q", "-m", "init mvc")
    return root


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke the mvc CLI in-process as a user would: ``cli("add", "m.safetensors")``."""
    from mvc.cli.main import app

    runner = CliRunner()

    def invoke(*args: str, cwd: Path | None = None):
        old = os.getcwd()
        if cwd is not None:
            os.chdir(cwd)
        try:
            return runner.invoke(app, list(args), catch_exceptions=False)
        finally:
            os.chdir(old)

    return invoke


@pytest.fixture
def weights(repo: Path) -> Iterator[Path]:
    """A safetensors file inside ``repo``."""
    path = repo / "models" / "net.safetensors"
    write_safetensors(path, seed=1)
    yield path

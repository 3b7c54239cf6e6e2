"""`mvc run`: run the training command, version what it wrote, commit only mvc's files."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import mvc
import mvc.api
from tests.conftest import assert_one_line_error, git, write_safetensors
from tests.integrations.helpers import committed_files, history

TRAIN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from safetensors.numpy import save_file
    seed, path = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((8, 4)).astype(np.float32)}, path)
    json.dump({"acc": 0.5 + seed / 100}, open("metrics.json", "w"))
    print("trained", seed)
    """
)


@pytest.fixture
def project(repo: Path, weights: Path) -> Path:
    """The repo with net v1 committed, a second model, a training script and params.yaml."""
    write_safetensors(repo / "models" / "other.safetensors", seed=5)
    mvc.add(weights)
    mvc.add(repo / "models" / "other.safetensors")
    mvc.commit(repo=repo, message="v1")
    (repo / "train.py").write_text(TRAIN)
    (repo / "params.yaml").write_text("lr: 0.01\nlayers: 2\n")
    return repo


def train(seed: int, path: str = "models/net.safetensors") -> list[str]:
    return [sys.executable, "train.py", str(seed), path]


def test_versions_what_the_command_wrote_on_the_experiment_branch(project, cli):
    (project / "notes.txt").write_text("unrelated, staged\n")
    git(project, "add", "notes.txt")
    result = cli("run", "--exp", "x", "--params-file", "params.yaml", "--metrics-file", "metrics.json", "--", *train(3))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("net: v2 (") and lines[1].endswith("on exp/x: mvc run")
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "exp/x"
    v2 = history(project, "net")[-1]
    assert (v2.version, v2.manifest.params, v2.manifest.metrics) == (2, {"lr": 0.01, "layers": 2}, {"acc": 0.53})
    assert v2.manifest.experiment == "x" and v2.subject == f"mvc run: {sys.executable} train.py 3 models/net.safetensors"
    assert v2.manifest.message == v2.subject
    files = committed_files(project)
    assert "models/net.safetensors.dvc" in files and not files & {"notes.txt", "train.py", "metrics.json", "params.yaml"}
    assert "A  notes.txt" in git(project, "status", "--porcelain").splitlines()
    assert [r.version for r in history(project, "other")] == [1]  # untouched: not versioned


def test_a_failing_command_versions_nothing_and_exits_with_its_code(project, cli):
    head = git(project, "rev-parse", "HEAD")
    pointer = (project / "models" / "net.safetensors.dvc").read_text()
    script = "import sys; from safetensors.numpy import save_file; import numpy as np; "
    script += "save_file({'w': np.zeros(3, np.float32)}, 'models/net.safetensors'); sys.exit(7)"
    result = cli("run", "--", sys.executable, "-c", script)
    assert result.exit_code == 7
    assert "exited with code 7; nothing versioned" in result.stderr
    assert git(project, "rev-parse", "HEAD") == head
    assert (project / "models" / "net.safetensors.dvc").read_text() == pointer


def test_out_names_a_new_model(project, cli):
    result = cli("run", "--out", "models/fresh.safetensors", "--name", "fresh", "--json", "--", *train(1, "models/fresh.safetensors"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["returncode"] == 0 and data["branch"] == "main"
    assert [(v["name"], v["version"], v["created"]) for v in data["versions"]] == [("fresh", 1, True)]
    assert data["commit"] == git(project, "rev-parse", "HEAD")
    assert [m.name for m in mvc.api.models(repo=project)] == ["fresh", "net", "other"]


def test_nothing_written_nothing_versioned(project, cli):
    head = git(project, "rev-parse", "HEAD")
    result = cli("run", "--", sys.executable, "-c", "print('evaluating only')")
    assert result.exit_code == 0 and "nothing versioned" in result.stderr
    assert git(project, "rev-parse", "HEAD") == head


def test_switching_back_to_an_experiment_checks_its_weights_out(project, cli):
    assert cli("run", "--exp", "x", "--", *train(3)).exit_code == 0
    on_x = (project / "models" / "net.safetensors").read_bytes()
    git(project, "checkout", "-q", "main")
    assert cli("checkout").exit_code == 0
    assert (project / "models" / "net.safetensors").read_bytes() != on_x
    result = cli("run", "--exp", "x", "--", sys.executable, "-c", "pass")
    assert result.exit_code == 0, result.stderr
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "exp/x"
    assert (project / "models" / "net.safetensors").read_bytes() == on_x


def test_switching_would_overwrite_unrecorded_weights(project, cli):
    assert cli("run", "--exp", "x", "--", *train(3)).exit_code == 0
    git(project, "checkout", "-q", "main")
    assert cli("checkout").exit_code == 0
    write_safetensors(project / "models" / "net.safetensors", seed=42)  # not recorded
    result = cli("run", "--exp", "x", "--", sys.executable, "-c", "pass")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: models/net.safetensors has changes that no version records\n")
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    forced = cli("run", "--exp", "x", "--force", "--", sys.executable, "-c", "pass")
    assert forced.exit_code == 0, forced.stderr
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "exp/x"


def test_outside_a_git_repository_the_command_does_not_run(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("run", "--", sys.executable, "-c", "open('ran', 'w')")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ") and "not inside a git repository" in result.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--name", "a", "--out", "a.safetensors", "--out", "b.safetensors"], 2, "error: --name needs exactly one --out"),
        (["--out", "/tmp/elsewhere.safetensors"], 2, "error: /tmp/elsewhere.safetensors is outside the repository"),
        (["--exp", "bad name"], 2, "error: 'bad name' is not a valid experiment name"),
    ],
)
def test_bad_options_fail_before_the_command_runs(project, cli, args, code, message):
    result = cli("run", *args, "--", sys.executable, "-c", "open('ran', 'w')")
    assert result.exit_code == code
    assert result.stderr.splitlines()[0].startswith(message)
    assert not (project / "ran").exists()


def test_missing_files_after_the_run(project, cli):
    head = git(project, "rev-parse", "HEAD")
    result = cli("run", "--metrics-file", "nope.json", "--", *train(4))
    assert result.exit_code == 3 and result.stderr.startswith("error: --metrics-file nope.json: no such file")
    result = cli("run", "--out", "models/never.safetensors", "--", sys.executable, "-c", "pass")
    assert result.exit_code == 3 and "error: --out models/never.safetensors: the command did not write it" in result.stderr
    result = cli("run", "--", "no-such-trainer-xyz")
    assert_one_line_error(result, 127, "no-such-trainer-xyz: command not found", first_line=True)  # as a shell
    assert git(project, "rev-parse", "HEAD") == head
    pointer = yaml.safe_load((project / "models" / "net.safetensors.dvc").read_text())
    assert pointer["meta"]["mvc"]["version"] == 1


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGKILL", 137), ("SIGTERM", 143)])
def test_a_command_killed_by_a_signal_exits_128_plus_the_signal(project, cli, sig, code):
    head = git(project, "rev-parse", "HEAD")
    kill = f"import os, signal; signal.signal(signal.{sig}, signal.SIG_DFL) if signal.{sig} != signal.SIGKILL else None; os.kill(os.getpid(), signal.{sig})"
    result = cli("run", "--", sys.executable, "-c", kill)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert f"exited with code {code}; nothing versioned" in result.stderr
    assert mvc.api.run([sys.executable, "-c", kill], repo=project).returncode == code
    assert git(project, "rev-parse", "HEAD") == head


def test_a_command_that_cannot_be_executed_exits_126(project, cli):
    script = project / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = cli("run", "--", str(script))
    assert_one_line_error(result, 126, "train.sh: permission denied", first_line=True)


def test_run_on_a_detached_head_prints_one_warning_line(project, cli):
    git(project, "checkout", "-q", "--detach")
    result = cli("run", "--", *train(4))
    assert result.exit_code == 0, result.stderr
    warnings_ = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    expected = (
        "warning: net v2 committed onto a detached HEAD: no branch holds it, and checking out a branch "
        "leaves it behind; keep it with `git switch -c NAME`"
    )
    assert warnings_ == [expected], result.stderr
    assert "on detached HEAD: mvc run" in result.stdout

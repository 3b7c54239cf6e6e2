"""`mvc add` refusals a user meets that DVC words for its own users (issue 17), and init's remote note."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assert_one_line_error, git, ok, write_safetensors


def test_add_of_a_directory_overlapping_a_tracked_model_names_the_fix(repo: Path, cli) -> None:
    write_safetensors(repo / "models" / "a.safetensors", seed=1)
    ok(cli("add", "models/a.safetensors"))
    before = (repo / "models" / "a.safetensors.dvc").read_text()

    result = cli("add", "models")

    assert_one_line_error(result, 4, "models overlaps models/a.safetensors", "`dvc remove models/a.safetensors.dvc`")
    assert not (repo / "models.dvc").exists()
    assert (repo / "models" / "a.safetensors.dvc").read_text() == before


def test_add_of_a_file_git_tracks_names_git_rm_cached(repo: Path, cli) -> None:
    write_safetensors(repo / "net.safetensors", seed=2)
    git(repo, "add", "net.safetensors")
    git(repo, "commit", "-q", "-m", "weights in git")

    result = cli("add", "net.safetensors")

    assert_one_line_error(result, 4, "net.safetensors is tracked by git", "`git rm --cached net.safetensors`")
    assert not (repo / "net.safetensors.dvc").exists()


def test_add_with_a_dataset_dvc_does_not_track_names_dvc_add(repo: Path, cli) -> None:
    write_safetensors(repo / "net.safetensors", seed=3)
    (repo / "data.csv").write_text("x\n1\n")

    result = cli("add", "net.safetensors", "--dataset", "data.csv")

    assert_one_line_error(result, 3, "--dataset data.csv is not tracked by DVC", "`dvc add data.csv`")
    assert not (repo / "net.safetensors.dvc").exists()


def test_init_says_the_default_local_remote_is_on_this_machine_only(tmp_path: Path, cli) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")

    result = ok(cli("init", cwd=root))

    assert "default remote: local -> " in result.stdout
    assert "a teammate's clone cannot reach it" in result.stderr
    assert "`mvc remote add team s3://BUCKET/PATH --default`" in result.stderr

"""Shared by the training-integration tests: the experiment branch and reading versions back."""

from __future__ import annotations

from pathlib import Path

import mvc.api
from tests.conftest import git


def on_experiment(repo: Path, name: str = "x") -> str:
    """Create and switch to branch ``exp/NAME`` (as `mvc exp new` would); return the branch."""
    branch = f"exp/{name}"
    git(repo, "checkout", "-q", "-b", branch)
    return branch


def history(repo: Path, name: str) -> list[mvc.api.VersionRecord]:
    """The committed versions of ``name``, oldest first."""
    return list(reversed(mvc.api.log(name, repo=repo)))


def committed_files(repo: Path, rev: str = "HEAD") -> set[str]:
    """The paths a commit changed."""
    return set(git(repo, "show", "--name-only", "--format=", rev).splitlines())

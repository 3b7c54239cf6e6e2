"""Files users edit by hand (issue 14, "faults between the steps"): a broken settings or DVC
config file is one clear line naming the file and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import mvc
from tests.conftest import assert_one_line_error


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{garbage", "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),  # deeper than Python's recursion limit
        ("[]", "is not a JSON object of settings"),
        ('{"key_metrics": 5}', "'key_metrics' must be a list of metric names, not 5"),
        ('{"schema": "x"}', "'schema' is 'x', not a number"),
        ('{"require_signed": "yes"}', "'require_signed' must be true or false, not 'yes'"),
        ('{"extra": 3}', "'extra' must be an object, not 3"),
        ('{"schema": 99}', "was written by a newer mvc"),
    ],
)
def test_a_hand_broken_settings_file_is_one_line_exit_6(repo: Path, weights: Path, cli, text: str, problem: str) -> None:
    mvc.add(weights)
    mvc.commit("net v1")
    (repo / ".mvc" / "config.json").write_text(text)
    for args in (("status",), ("log",)):
        assert_one_line_error(cli(*args), 6, ".mvc/config.json", problem, first_line=True)


@pytest.mark.parametrize("name", ["config", "config.local"])
def test_a_hand_broken_dvc_config_is_one_line_exit_6(repo: Path, weights: Path, cli, name: str) -> None:
    (repo / ".dvc" / name).write_text("garbage: [\n")
    for args in (("add", str(weights)), ("push",)):
        result = cli(*args)
        assert_one_line_error(result, 6, "DVC's configuration cannot be read", "Invalid line", first_line=True)
        assert "git checkout -- .dvc/config" in result.stderr
    assert not weights.with_name(weights.name + ".dvc").exists()

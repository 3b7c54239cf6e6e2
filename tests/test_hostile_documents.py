"""YAML alias bombs ("billion laughs") in files a hostile repository ships.

A safe YAML loader runs no code but expands aliases: a pointer of a few hundred bytes
made ``mvc show`` take gigabytes and ``mvc diff`` 11 GiB. mvc and DVC never write
anchors, so a pointer or params file holding an alias is refused before it is expanded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_one_line_error, git, ok, write_safetensors

WEIGHTS = "models/net.safetensors"
PTR = WEIGHTS + ".dvc"


def bomb(indent: str, depth: int = 7) -> str:
    """Nested anchors whose expansion holds 9**depth strings."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def hostile(repo: Path, cli: Callable[..., Any]) -> Path:
    """A repo whose second version's pointer carries a bomb in its params, as committed by someone else."""
    write_safetensors(repo / WEIGHTS, seed=1)
    ok(cli("add", WEIGHTS, "--name", "net"))
    ok(cli("commit", "-m", "v1"))
    write_safetensors(repo / WEIGHTS, seed=2)
    ok(cli("add", WEIGHTS))
    path = repo / PTR
    path.write_text(path.read_text().replace("    name: net\n", "    name: net\n    params:\n" + bomb("      "), 1))
    git(repo, "commit", "-qam", "v2, with a bomb")
    return repo


@pytest.mark.parametrize("args", [["status", "--no-remote"], ["show", "net"], ["show", "net@v2", "--json"], ["diff", "net@v1", "net"], ["verify", "net"]])
def test_a_pointer_holding_a_yaml_alias_is_refused_before_it_is_expanded(hostile: Path, cli: Callable[..., Any], args: list[str]) -> None:
    result = cli(*args)

    assert_one_line_error(result, 6, f"{PTR} holds a YAML alias, which mvc never writes and does not expand (line ")
    assert (hostile / WEIGHTS).exists()


def test_a_params_file_holding_a_yaml_alias_is_refused(repo: Path, cli: Callable[..., Any]) -> None:
    write_safetensors(repo / WEIGHTS, seed=1)
    (repo / "params.yaml").write_text(bomb(""))

    result = cli("add", WEIGHTS, "--params-file", "params.yaml")

    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[0] == "error: --params-file params.yaml holds a YAML alias, which mvc does not expand"
    assert not (repo / PTR).exists()


def test_names_with_stars_and_ampersands_still_load(repo: Path, cli: Callable[..., Any]) -> None:
    write_safetensors(repo / WEIGHTS, seed=1)
    (repo / "params.yaml").write_text('team: "R&D *core*"\nnote: a*b & c\n')

    ok(cli("add", WEIGHTS, "--params-file", "params.yaml", "--message", "R&D *first* & best"))
    shown = ok(cli("show", "net", "--json"))

    assert '"team": "R&D *core*"' in shown.stdout and "R&D *first* & best" in shown.stdout


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit


def test_json_nested_too_deep_is_invalid_json_not_a_recursion_error() -> None:
    import json

    from mvc import documents, signing, tensorstore
    from mvc.errors import IntegrityError, SchemaError

    with pytest.raises(json.JSONDecodeError, match="nested too deep"):
        documents.load_json(DEEP)
    with pytest.raises(IntegrityError, match="unreadable"):  # a recipe from a hostile bucket
        tensorstore.Recipe.from_bytes(DEEP.encode(), "a" * 32)
    with pytest.raises(SchemaError, match="not a valid signature file"):  # a signature file from a hostile repo
        signing.parse_signatures(DEEP, "a" * 32)

"""The README's command reference matches `--help` (issue 17): every command and option is
documented, every documented `mvc ...` command exists, and every help has text and examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_cli_surface import commands, options

README = (Path(__file__).parents[1] / "README.md").read_text()


def _reference_rows() -> dict[str, str]:
    """``command path -> its row`` in the README's "Every command and option" table."""
    section = README.split("### Every command and option", 1)[1].split("\n\n", 3)[2]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `mvc ([a-z-]+(?: [a-z-]+)?)", line)
        if m:
            words = [w for w in m.group(1).split() if not w.isupper()]
            rows[" ".join(words)] = line
    return rows


@pytest.mark.parametrize(("path", "cmd"), commands(), ids=[p for p, _ in commands()])
def test_every_command_and_option_is_in_the_readme(path, cmd):
    rows = _reference_rows()
    assert path in rows, f"`mvc {path}` is missing from the README's command reference"
    for opt in options(cmd):
        if "--help" in opt.opts:
            continue
        long = next(o for o in opt.opts if o.startswith("--"))
        assert f"`{long}`" in rows[path], f"`mvc {path} {long}` is missing from the README"


def test_every_mvc_command_the_readme_names_exists():
    known = {p for p, _ in commands()}
    groups = {p.split()[0] for p in known if " " in p}
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.DOTALL))
    spans = re.findall(r"`(mvc [^`]+)`", README) + re.findall(r"^\s*(?:\$ )?(mvc [^\n#|]+)", blocks, flags=re.MULTILINE)
    bad = set()
    for span in spans:
        for part in re.split(r"&&|;|\|", span):
            words = part.strip().split()
            if len(words) < 2 or words[0] != "mvc" or words[1].startswith(("-", "<", "[")) or not re.match(r"^[a-z-]+$", words[1]):
                continue
            name = words[1]
            if name in groups:
                sub = words[2].split("/")[0] if len(words) > 2 else ""
                if sub and re.match(r"^[a-z-]+$", sub) and f"{name} {sub}" not in known:
                    bad.add(f"mvc {name} {sub}")
            elif name not in known:
                bad.add(f"mvc {name}")
    assert bad == set()


@pytest.mark.parametrize(("path", "cmd"), commands(), ids=[p for p, _ in commands()])
def test_every_command_and_option_has_help_and_examples(path, cmd):
    assert cmd.help and "Examples:" in cmd.help, f"mvc {path}: no Examples: section"
    for p in cmd.params:
        assert getattr(p, "help", None), f"mvc {path}: {p.name} has no help text"

"""Git integration commands: install-hooks, resolve, and the hidden entry points git calls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo


@command(app, "install-hooks")
def install_hooks(repo: Repo = ".", json_output: Json = False) -> None:
    """Install git hooks: checkout/switch/pull/rebase sync the weights, push uploads them first.

    Existing hooks keep working (mvc adds a marked block once); safe to run again. Also
    sets up the merge driver for model pointers in this clone.

    Examples:

      mvc install-hooks
    """
    from mvc import api

    results = api.install_hooks(repo=repo)
    if json_output:
        _output.emit_json(results)
        return
    for r in results:
        _output.out(f"{r.hook}: {r.action} ({r.path})")


@command(app)
def resolve(
    name: Annotated[str, typer.Argument(help="The model git stopped on.")],
    take: Annotated[str, typer.Option("--take", "-t", help="ours, theirs, or any version (v3, main, a commit, NAME@REF).")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Discard work-tree weights that no version records.")] = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Settle a conflict on a model: record the chosen side as a merge version and stage it.

    Then finish what git stopped in: `git commit` after a merge, `git rebase --continue`,
    `git cherry-pick --continue` or `git revert --continue`.

    Examples:

      mvc resolve net --take theirs && git commit --no-edit

      mvc resolve net --take v3
    """
    from mvc import api

    r = api.resolve(name, take=take, repo=repo, remote=remote, force=force)
    if json_output:
        _output.emit_json(r)
        return
    parents = ", ".join(f"v{p.version} ({_output.short(p.hash)})" for p in r.parents)
    _output.out(f"{r.name}: v{r.version} ({_output.short(r.hash)}) from {r.took}, parents {parents}; staged")
    _output.note(f"finish with `{r.next_step}`")


@command(app, "_hook", hidden=True)
def hook(
    name: Annotated[str, typer.Argument(help="The git hook.")],
    args: Annotated[list[str] | None, typer.Argument(help="The hook's arguments.")] = None,
) -> None:
    """Run mvc's part of a git hook (called by the hooks `mvc install-hooks` writes).

    Examples:

      mvc _hook post-checkout OLD NEW 1
    """
    from mvc import api

    stdin = sys.stdin.read() if name == "pre-push" else ""
    result = api.run_hook(Path("."), name, list(args or []), stdin)
    for line in result.messages:
        _output.note(line)
    if result.code:
        raise typer.Exit(result.code)


@command(app, "_merge-driver", hidden=True)
def merge_driver(
    base: Annotated[str, typer.Argument(help="%O: the common ancestor's version.")],
    ours: Annotated[str, typer.Argument(help="%A: ours; the result is written here.")],
    theirs: Annotated[str, typer.Argument(help="%B: theirs.")],
    path: Annotated[str, typer.Argument(help="%P: the pointer's path.")],
) -> None:
    """Merge one model pointer (git's merge driver for *.dvc, set up by `mvc init`).

    Examples:

      git config merge.mvc.driver "python -m mvc _merge-driver %O %A %B %P"
    """
    from mvc import api

    outcome = api.merge_pointers(Path.cwd(), Path(base), Path(ours), Path(theirs), path)
    if outcome.message:
        _output.note(outcome.message)
    if outcome.code:
        raise typer.Exit(outcome.code)

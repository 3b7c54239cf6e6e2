"""``mvc exp``: one git branch per experiment; list, compare and promote the winner."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo

exp_app = typer.Typer(
    help="Experiments: one git branch (exp/NAME) each; list, compare, promote the winner.\n\n"
    "Examples:\n\n  mvc exp new lr-0.1 --param lr=0.1\n\n  mvc exp list --sort acc\n\n  mvc exp promote lr-0.1",
    no_args_is_help=True,
)
app.add_typer(exp_app, name="exp")

Force = Annotated[bool, typer.Option("--force", "-f", help="Discard work-tree weights that no version records.")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _sync_notes(report: Any) -> None:
    from mvc.api import sync_messages

    for line in sync_messages(report):
        _output.note(line)


@command(exp_app, "new")
def exp_new(
    name: Annotated[str, typer.Argument(help="Experiment name; the branch is exp/NAME.")],
    from_: Annotated[str | None, typer.Option("--from", help="Base branch, tag or commit (default: the current commit).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Intended hyperparameter KEY=VALUE (repeatable).")] = None,
    force: Force = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Start an experiment: create branch exp/NAME from the base, switch to it, sync the weights.

    The base and the intended params are committed on the branch in .mvc/experiments/NAME.json.

    Examples:

      mvc exp new lr-0.1 --param lr=0.1

      mvc exp new wide --from v1.0-release --param width=1024
    """
    from mvc import api

    result = api.exp_new(name, repo=repo, base=from_, params=api.parse_pairs(param, option="--param"), remote=remote, force=force)
    if json_output:
        _output.emit_json(result)
        return
    e = result.experiment
    _output.out(f"experiment {e.name}: on branch {e.branch}, from {(e.base or '')[:8]}" + (f" ({e.base_branch})" if e.base_branch else ""))
    _sync_notes(result.sync)


@command(exp_app, "list")
def exp_list(
    git_remotes: Annotated[
        bool, typer.Option("--git-remotes", help="Include the git remotes' exp/* branches (as last fetched); `exp switch` takes them.")
    ] = False,
    sort: Annotated[str | None, typer.Option("--sort", help="METRIC[:asc|desc] (MODEL.METRIC for one model); default: last activity.")] = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """List experiments: base, latest version of each model, key metrics, last activity.

    Reads git objects only (no checkout), so it stays fast with hundreds of branches.

    Examples:

      mvc exp list --sort acc

      mvc exp list --git-remotes --sort loss:asc --json
    """
    from mvc import api

    rows = api.exp_list(repo=repo, git_remotes=git_remotes, sort=sort)
    if json_output:
        _output.emit_json(rows)
        return
    if not rows:
        _output.note("no experiments yet: start one with `mvc exp new NAME`")
        return
    keys = list(dict.fromkeys(k for e in rows for k in e.key_metrics))[:5]
    sort_key = (sort or "").partition(":")[0]
    if sort_key and sort_key not in keys:
        keys.insert(0, sort_key)
    table = []
    for e in rows:
        models = " ".join(f"{m.name} v{m.version} ({_output.short(m.hash)})" for m in e.models)
        base = ((e.base or "")[:8] + (f" ({e.base_branch})" if e.base_branch else "")) or "-"
        table.append(
            [("* " if e.current else "") + e.name, e.branch, base, models, *(_fmt(e.metric(k)) for k in keys), e.last_activity[:19].replace("T", " ")]
        )
    _output.table(["experiment", "branch", "base", "models", *keys, "last activity"], table)


@command(exp_app, "switch")
def exp_switch(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    force: Force = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Check out an experiment's branch and sync its weights (fetching what the cache lacks).

    Refuses when weights that no version records would be overwritten.

    Examples:

      mvc exp switch lr-0.1

      mvc exp switch lr-0.1 --force
    """
    from mvc import api

    result = api.exp_switch(name, repo=repo, remote=remote, force=force)
    if json_output:
        _output.emit_json(result)
        return
    _output.out(f"switched to experiment {result.experiment.name} ({result.experiment.branch})")
    _sync_notes(result.sync)


@command(exp_app, "compare")
def exp_compare(
    names: Annotated[list[str], typer.Argument(help="Two or more experiment names.")],
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Compare experiments: params and metrics side by side, and the tensor diff of their models.

    Examples:

      mvc exp compare lr-0.1 lr-0.01

      mvc exp compare a b c --json
    """
    from mvc import api

    c = api.exp_compare(names or [], repo=repo)
    if json_output:
        _output.emit_json(c)
        return
    headers = ["", *(e.name for e in c.experiments), "differs"]
    for title, rows in (("params", c.params), ("metrics", c.metrics)):
        if rows:
            _output.table(
                [title, *headers[1:]],
                [[(f"{r.model}." if r.model else "") + r.key, *(_fmt(v) for v in r.values), "*" if r.differs else ""] for r in rows],
            )
    for d in c.diffs:
        head = f"{d.a.name} v{d.a.version} ({_output.short(d.a.hash)}) -> v{d.b.version} ({_output.short(d.b.hash)})"
        if d.same_weights:
            _output.out(f"{head}: same weights")
        elif d.summary is not None:
            s = d.summary
            _output.out(f"{head}: {s.changed} of {s.total} tensors changed, {100 * s.changed_fraction:.1f}% of parameters")
        for n in d.notes:
            _output.note(f"note: {n}")


@command(exp_app, "promote")
def exp_promote(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    into: Annotated[str | None, typer.Option("--into", help="Branch to merge into (default: the one it started from, else main).")] = None,
    force: Force = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Merge an experiment into a branch; each model it changed becomes a new version there.

    Examples:

      mvc exp promote lr-0.1

      mvc exp promote lr-0.1 --into release
    """
    from mvc import api

    r = api.exp_promote(name, repo=repo, into=into, remote=remote, force=force)
    if json_output:
        _output.emit_json(r)
        return
    _output.out(f"promoted experiment {r.experiment} into {r.target} [{r.commit[:8]}]")
    for v in r.versions:
        parents = ", ".join(f"v{p.version} ({_output.short(p.hash)})" for p in v.parents)
        _output.out(f"{v.name}: v{v.version} ({_output.short(v.hash)}), parents {parents}")
    _sync_notes(r.sync)


@command(exp_app, "remove")
def exp_remove(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Delete it even if its work is merged nowhere.")] = False,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Delete a finished experiment's branch (its weights stay in the cache and the remote).

    Examples:

      mvc exp remove lr-0.01

      mvc exp remove failed-run --force
    """
    from mvc import api

    r = api.exp_remove(name, repo=repo, force=force)
    if json_output:
        _output.emit_json(r)
        return
    _output.out(f"removed experiment {r.experiment} (branch {r.branch} was at {r.commit[:8]}{'' if r.merged else ', unmerged'})")

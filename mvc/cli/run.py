"""``mvc run``: train and version in one step."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Repo


@command(app, context_settings={"allow_interspersed_args": False})
def run(
    cmd: Annotated[list[str], typer.Argument(help="The training command, after --.", show_default=False)],
    exp: Annotated[str | None, typer.Option("--exp", "-e", help="Run on branch exp/NAME (created from HEAD if new).")] = None,
    params_file: Annotated[str | None, typer.Option("--params-file", help="YAML/JSON file of hyperparameters to record.")] = None,
    metrics_file: Annotated[str | None, typer.Option("--metrics-file", help="YAML/JSON file of metrics the command writes.")] = None,
    out: Annotated[list[str] | None, typer.Option("--out", "-o", help="Weights the command writes (a new model; repeatable).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Model name for the single --out.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="With --exp: discard unrecorded weights when switching.")] = False,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Run a training command, then version the weights it wrote and commit them.

    Every tracked model whose weights the command wrote or changed becomes a new
    version (plus each --out), with params and metrics read from the files; the commit
    holds only mvc's files. A failing command versions nothing and mvc exits with its code.

    Examples:

      mvc run --exp lr-3e4 --params-file params.yaml --metrics-file metrics.json -- python train.py --lr 3e-4

      mvc run --out models/net.safetensors --name net -- python train.py
    """
    import warnings

    from mvc import api

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", api.DetachedHeadWarning)
        result = api.run(
            cmd,
            repo=repo,
            experiment=exp,
            params_file=params_file,
            metrics_file=metrics_file,
            outs=list(out or []),
            name=name,
            force=force,
        )
    for w in caught:
        if issubclass(w.category, api.DetachedHeadWarning):
            _output.note(f"warning: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if json_output:
        _output.emit_json(result)
    if result.returncode != 0:
        _output.note(f"mvc run: the command exited with code {result.returncode}; nothing versioned")
        raise typer.Exit(result.returncode)
    if json_output:
        return
    if not result.versions:
        _output.note("mvc run: the command changed no tracked weights; nothing versioned (name new weights with --out)")
        return
    for v in result.versions:
        if v.created:
            _output.out(f"{v.name}: v{v.version} ({_output.short(v.hash)})")
        else:
            _output.out(f"{v.name}: unchanged, still v{v.version} ({_output.short(v.hash)})")
    if result.commit:
        _output.out(f"[{result.commit[:8]}] on {result.branch or 'detached HEAD'}: mvc run")

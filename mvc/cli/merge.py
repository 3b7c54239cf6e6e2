"""`mvc merge`: combine model versions into new weights (and a new version)."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


@command(app)
def merge(
    refs: Annotated[list[str] | None, typer.Argument(help="Versions to merge: NAME@REF ... (default: the config's inputs).", show_default=False)] = None,
    method: Annotated[str | None, typer.Option("--method", help="linear (default), task-arithmetic, slerp or ties.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="One weight per model, comma-separated, e.g. 0.7,0.3.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base version for task-arithmetic and ties (NAME@REF).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Method parameter KEY=VALUE: t (slerp), density (ties), scale or lambda (task-arithmetic, ties).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Output dtype of floating tensors: float32, float16 or bfloat16.")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output .safetensors file.")] = None,
    add: Annotated[bool, typer.Option("--add", help="Record the output as a new version whose parents are the inputs.")] = False,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Model the new version belongs to (default: the first input's).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Message of the new version (with --add).")] = "",
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML recipe: inputs, method, weights, base, params, per-tensor overrides.")] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Keep tensors only some models hold (merged over those that do).")] = False,
    normalize: Annotated[bool, typer.Option("--normalize", help="Scale the weights to sum to 1 (linear, task-arithmetic).")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite weights at -o that no version records.")] = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Merge model versions (average, task arithmetic, SLERP, TIES) into a new safetensors file.

    Streams one tensor at a time, so memory stays near a few tensors. With --add the
    result becomes a new version listing the inputs as parents (it also resolves a
    pointer conflict left by `git merge`).

    Examples:

      mvc merge net@v3 net@v4 net@exp/wide -o models/soup.safetensors

      mvc merge net@v3 net@v4 --weights 0.7,0.3 -o models/net.safetensors --add

      mvc merge net@v4 net@exp/long --method slerp --param t=0.3 -o slerp.safetensors

      mvc merge net@ft-a net@ft-b --method ties --base net@v1 --param density=0.2 -o ties.safetensors

      mvc merge net@HEAD net@MERGE_HEAD -o models/net.safetensors --add

      mvc merge --config merge.yaml --add
    """
    from mvc import api

    with _output.progress_bar("merging", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
        result = api.merge(
            refs or [],
            repo=repo,
            method=method,
            weights=api.parse_weights(weights) if weights is not None else None,
            base=base,
            params=api.parse_pairs(param, option="--param"),
            dtype=dtype,
            out=out,
            add=add,
            name=name,
            message=message,
            config=config,
            allow_missing=allow_missing,
            normalize=normalize,
            remote=remote,
            force=force,
            progress=cb,
        )
    if json_output:
        _output.emit_json(result)
        return
    how = result.method
    if result.weights:
        how += " weights " + ",".join(f"{w:.4g}" for w in result.weights)
    if result.params:
        how += " " + " ".join(f"{k}={v:g}" for k, v in result.params.items())
    _output.out(
        f"merged {_output.plural(len(result.inputs), 'model')} ({how}) into {result.path}: {result.tensors} tensors "
        f"({result.merged} merged, {result.copied} copied), {_size(result.bytes)}"
    )
    v = result.version
    if v is not None:
        parents = ", ".join(f"v{p.version}" + (f" of {p.name}" if p.name else "") for p in v.manifest.parents)
        if not result.created:
            _output.out(f"{v.name}: unchanged, still v{v.version} ({_output.short(v.hash)}); no new version")
        else:
            _output.out(f"{v.name}: v{v.version} ({_output.short(v.hash)}) merges {parents}")
    if not quiet:
        for n in result.notes:
            _output.note(f"note: {n}")
        if v is not None and result.created:
            step = "conclude the git merge with `git commit`" if result.resolved_conflict else "record it with `mvc commit -m MSG`"
            _output.note(f"staged {', '.join(result.staged)}; {step}")

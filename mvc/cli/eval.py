"""``mvc eval``: run one evaluation against several versions and print a leaderboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo
from mvc.errors import EXIT_INTEGRITY

if TYPE_CHECKING:
    from mvc.api import Comparison, EvalResult


@command(app, name="eval")
def eval_(
    refs: Annotated[list[str] | None, typer.Argument(help="Versions: NAME@v3, NAME@main, NAME@exp/wide, NAME (work tree) ...", show_default=False)] = None,
    cmd: Annotated[str | None, typer.Option("--cmd", help="Command template with {weights} (and {out}, {fold}); writes or prints a JSON dict.")] = None,
    fn: Annotated[str | None, typer.Option("--fn", help="Python function pkg.module:evaluate (imported from the repo root), weights path -> dict.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model for --versions/--all-experiments; bare refs become MODEL@REF.")] = None,
    all_experiments: Annotated[bool, typer.Option("--all-experiments", help="Add the latest version on every exp/* branch.")] = False,
    versions: Annotated[str | None, typer.Option("--versions", help="Add a range of versions, e.g. v3..v7.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Versions evaluated in parallel.")] = 1,
    folds: Annotated[int, typer.Option("--folds", min=1, help="Runs per version with {fold}=0..K-1; reports mean and std.")] = 1,
    per_example: Annotated[str | None, typer.Option("--per-example", help="Key of a per-example score list: paired bootstrap of best vs each other.")] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="METRIC[:asc|desc] to rank by (default: first metric; loss/error ascending).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per run; a version that overruns fails, others go on.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run versions already evaluated the same way.")] = False,
    record: Annotated[bool, typer.Option("--record", help="Write the metrics into the work-tree version's manifest.")] = False,
    report: Annotated[str | None, typer.Option("--report", help="Write an HTML report with a chart per metric (out.html).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine) or ray: one Ray task per version and fold; workers fetch weights from the remote.")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster: ray://HOST:10001, HOST:6379 or auto (default: RAY_ADDRESS / auto).")] = None,
    cpus_per_task: Annotated[float, typer.Option("--cpus-per-task", min=0, help="CPUs Ray reserves per task.")] = 1,
    gpus_per_task: Annotated[float, typer.Option("--gpus-per-task", min=0, help="GPUs Ray reserves per task (0.5 shares a GPU).")] = 0,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate several versions the same way and rank them (weights copied to temp dirs).

    Examples:

      mvc eval net@v1 net@v2 net@main --cmd "python eval.py --weights {weights} --out {out}"

      mvc eval --model net --versions v3..v7 --fn evals.metrics:evaluate --sort loss:asc

      mvc eval net --all-experiments --cmd "python eval.py {weights} --fold {fold}" --folds 5 --per-example correct --report eval.html

      mvc eval --model net --versions v1..v8 --fn evals.metrics:evaluate --folds 5 --executor ray --address ray://head:10001 --gpus-per-task 1
    """
    from mvc import api

    enabled = _output.progress_enabled(quiet=quiet, json_output=json_output)
    with _output.progress_bar("evaluating", enabled=enabled, unit="runs") as cb:
        result = api.evaluate(
            refs,
            repo=repo,
            cmd=cmd,
            fn=fn,
            model=model,
            all_experiments=all_experiments,
            versions=versions,
            jobs=jobs,
            folds=folds,
            per_example=per_example,
            sort=sort,
            timeout=timeout,
            force=force,
            record=record,
            remote=remote,
            report=report,
            progress=cb,
            executor=executor,
            address=address,
            cpus_per_task=cpus_per_task,
            gpus_per_task=gpus_per_task,
        )
    if json_output:
        _output.emit_json(result)
    else:
        _render(result, quiet=quiet)
    if result.failures:
        names = ", ".join(r.ref for r in result.failures)
        error = api.EvalFailedError(
            f"{len(result.failures)} of {len(result.rows)} evaluations failed: {names}",
            hint="see the error column; a re-run runs only the folds that failed or did not run (the others are saved)",
        )
        codes = {r.exit_code for r in result.failures}
        code = codes.pop() if len(codes) == 1 else None
        if code is not None:  # one cause for all, e.g. 6: weights missing or corrupt
            error.exit_code = code
        if code == EXIT_INTEGRITY:
            error.hint = "push their weights from a clone that has them (`mvc push --all-versions`), then run again"
        raise error


def _render(result: EvalResult, *, quiet: bool) -> None:
    ok = [r for r in result.rows if r.status != "failed"]
    metrics = list(dict.fromkeys(k for r in ok for k in r.metrics))
    versus = {c.other: c for c in result.comparisons}
    headers = ["#", "version", "v", "hash", "status", *metrics]
    if result.comparisons:
        headers.append(f"vs best ({result.comparisons[0].key})")
    if result.failures:
        headers.append("error")
    rows = []
    for r in result.rows:
        row: list[object] = ["-" if r.rank is None else r.rank, r.ref, f"v{r.version}", _output.short(r.hash), r.status]
        for m in metrics:
            value = r.metrics.get(m)
            spread = r.std.get(m) if result.spec.folds > 1 else None
            row.append("" if value is None else f"{value:.4g}" + ("" if spread is None else f" ± {spread:.2g}"))
        if result.comparisons:
            c = versus.get(r.ref)
            row.append("best" if r.rank == 1 else _gap(c) if c else "")
        if result.failures:
            row.append(_one_line(r.error, r.stderr_tail) if r.status == "failed" else "")
        rows.append(row)
    _output.table(headers, rows)
    if quiet:
        return
    if result.sort:
        _output.note(f"sorted by {result.sort} ({'higher' if result.descending else 'lower'} is better)")
    if result.comparisons:
        c = result.comparisons[0]
        _output.note(
            f"vs best: mean difference of {c.key} (best - other) over {c.n} examples, "
            f"{round((1 - c.alpha) * 100)}% paired bootstrap interval, p-value; * = significant at alpha {c.alpha:g}"
        )
    for r in result.failures:
        _output.note(f"{r.ref} failed: {r.error}")
        for line in (r.stderr_tail or "").splitlines():
            _output.note(f"  | {line}")
    for n in result.notes:
        _output.note(f"note: {n}")
    cached = sum(r.status == "cached" for r in result.rows)
    if cached:
        _output.note(f"{_output.plural(cached, 'version')} read from {result.saved}/ (evaluated the same way before; --force re-runs)")
    for r in result.rows:
        if r.status != "cached" and r.cached_folds:
            _output.note(f"{r.ref}: {r.cached_folds} of {_output.plural(result.spec.folds, 'fold')} read from {result.saved}/, the rest run")
    if result.written:
        _output.note(f"results saved in {result.saved}/ (staged; commit them with your next commit)")
    for path in result.recorded:
        _output.note(f"recorded the metrics into {path} (staged): commit with `mvc commit -m MSG`")
    if result.report:
        _output.note(f"report written to {result.report}")


def _gap(c: Comparison) -> str:
    mark = "*" if c.significant else "n.s."
    return f"{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] p={c.p_value:.3g} {mark}"


def _one_line(error: str | None, tail: str | None) -> str:
    last = (tail or "").strip().splitlines()[-1:] if tail else []
    return (error or "") + (f" ({last[0][:80]})" if last else "")

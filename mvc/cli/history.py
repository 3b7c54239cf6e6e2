"""History commands: log, show, diff, restore."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo


def _parent(p: Any) -> str:
    return f"{p.name + ' ' if p.name else ''}v{p.version} ({p.hash[:8]})"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _tree(key: str, value: Any, indent: str, sep: str = " = ") -> list[str]:
    """Lines showing ``key`` and ``value`` for people: nested mappings and lists indented, never a Python repr."""
    if isinstance(value, dict):
        if not value:
            return [f"{indent}{key}{sep}-"]
        lines = [f"{indent}{key}:"]
        for k, v in value.items():
            lines += _tree(str(k), v, indent + "  ", sep)
        return lines
    if isinstance(value, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in value):
            return [f"{indent}{key}{sep}{', '.join(_fmt(v) for v in value) or '-'}"]
        lines = [f"{indent}{key}:"]
        for i, v in enumerate(value, 1):
            lines += _tree(f"[{i}]", v, indent + "  ", sep)
        return lines
    return [f"{indent}{key}{sep}{_fmt(value)}"]


def _fmt_opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@command(app)
def log(
    name: Annotated[str | None, typer.Argument(help="Model name (default: every model).")] = None,
    all_branches: Annotated[bool, typer.Option("--all-branches", "-a", help="Walk every local branch.")] = False,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """List the versions of a model, newest first (read from git objects: no checkout).

    Examples:

      mvc log net

      mvc log net --all-branches --json
    """
    from mvc import api

    records = api.log(name, repo=repo, all_branches=all_branches)
    if json_output:
        _output.emit_json(records)
        return
    if not records:
        _output.note("no committed versions yet: `mvc add PATH` then `mvc commit -m MSG`")
        return
    rows = []
    for r in records:
        metrics = " ".join(f"{k}={_fmt(v)}" for k, v in list(r.key_metrics.items())[:3])
        rows.append([
            r.name,
            f"v{r.version}" + (" (outside mvc)" if r.outside_mvc else ""),
            _output.short(r.hash),
            r.commit[:8],
            r.branch or "",
            r.date[:19].replace("T", " "),
            r.author.split(" <")[0],
            "" if r.manifest.step is None else r.manifest.step,
            r.manifest.message or r.subject,
            metrics,
            ", ".join(_parent(p) for p in r.parents),
        ])
    headers = ["model", "version", "hash", "commit", "branch", "date", "author", "step", "message", "metrics", "parents"]
    if not all_branches:
        headers.pop(4)
        rows = [row[:4] + row[5:] for row in rows]
    _output.table(headers, rows)


@command(app)
def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@v3, NAME@main, NAME@prod ...")],
    repo: Repo = ".",
    json_output: Json = False,
) -> None:
    """Show the full manifest of a version: params, metrics, lineage, format, tensors.

    Examples:

      mvc show net

      mvc show net@v2 --json
    """
    from mvc import api

    d = api.show(ref, repo=repo)
    if json_output:
        _output.emit_json(d)
        return
    m = d.manifest
    lines = [
        f"model:      {d.name} v{d.version}" + ("  (added outside mvc: plain dvc add)" if d.outside_mvc else ""),
        f"hash:       {d.hash}",
        f"path:       {d.path}",
        f"commit:     {d.commit or '(work tree)'}",
        f"created:    {m.created} by {m.author}",
        f"message:    {m.message}",
        f"parents:    {', '.join(_parent(p) for p in m.parents) or '-'}",
        f"format:     {m.format}" + (f" ({m.framework})" if m.framework else ""),
    ]
    if d.signed_by:
        lines.append(f"signed by:  {', '.join(d.signed_by)}")
    if m.tensors:
        dtypes = ", ".join(f"{k} {v:,} B" for k, v in m.tensors.bytes_by_dtype.items())
        lines.append(f"tensors:    {m.tensors.count:,} tensors, {m.tensors.parameters:,} parameters, {dtypes}")
    else:
        lines.append("tensors:    none indexed (opaque blob: versioned as bytes; diff and merge cannot look inside)")
    if m.step is not None:
        lines.append(f"step:       {m.step}")
    if m.experiment:
        lines.append(f"experiment: {m.experiment}")
    lines.append(f"code:       {m.code.commit or '-'}{' (dirty)' if m.code.dirty else ''}" + (f" on {m.code.branch}" if m.code.branch else ""))
    for title, values in (("params", m.params), ("metrics", m.metrics)):
        lines.append(f"{title + ':':12}-" if not values else f"{title}:")
        for k, v in values.items():
            lines += _tree(str(k), v, "  ")
    lines.append(f"{'datasets:':12}-" if not m.datasets else "datasets:")
    lines += [f"  {ds.path} ({ds.hash or 'not tracked by DVC'})" for ds in m.datasets]
    if m.labels:
        lines.append(f"labels:     {', '.join(m.labels)}")
    for n in m.notes:
        lines.append(f"note:       {n}")
    for key, value in m.extra.items():
        lines += _tree(str(key), value, "", sep=": ")
    for line in lines:
        _output.out(line)


@command(app)
def diff(
    a: Annotated[str, typer.Argument(help="First version (NAME@REF).")],
    b: Annotated[str, typer.Argument(help="Second version (NAME@REF).")],
    stats: Annotated[bool, typer.Option("--stats", help="Also load changed tensors: L2 of the difference, relative change, cosine.")] = False,
    all_tensors: Annotated[bool, typer.Option("--all", help="List unchanged tensors too.")] = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Compare two versions: params, metrics and tensors (from manifests; no weights read).

    Examples:

      mvc diff net@v1 net@v2

      mvc diff net@main net@exp/wide --stats
    """
    from mvc import api

    d = api.diff(a, b, repo=repo, stats=stats, remote=remote, all_tensors=all_tensors)
    if json_output:
        data = _output.to_json(d)
        _output.out(data)
        return
    _output.out(f"{d.a.ref} (v{d.a.version}, {_output.short(d.a.hash)})  ->  {d.b.ref} (v{d.b.version}, {_output.short(d.b.hash)})")
    if d.same_weights:
        _output.out("same weights")
    for title, changes in (("params", d.params), ("metrics", d.metrics)):
        if not changes:
            continue
        rows = [[c.key, _fmt(c.a), _fmt(c.b), "" if c.delta is None else f"{c.delta:+.6g}", "*" if c.changed else ""] for c in changes]
        _output.table([title, "a", "b", "delta", "changed"], rows)
    if d.summary is not None:
        s = d.summary
        _output.out(
            f"{s.changed} of {s.total} tensors changed, {100 * s.changed_fraction:.1f}% of parameters "
            f"({s.added} added, {s.removed} removed, {s.shape_or_dtype} shape/dtype, {s.content} content, {s.unchanged} unchanged)"
        )
        stats_by_name = {t.name: t for t in d.stats}
        rows = []
        for t in d.tensors:
            st = stats_by_name.get(t.name)
            def shape(dt, sh):
                return "" if dt is None else f"{dt}{list(sh)}"
            row = [t.name, t.status, shape(t.a_dtype, t.a_shape), shape(t.b_dtype, t.b_shape)]
            if stats:
                row += [f"{st.l2_diff:.4g}", _fmt_opt(st.relative_change, ".4g"), _fmt_opt(st.cosine, ".6f")] if st else ["", "", ""]
            rows.append(row)
        if rows:
            headers = ["tensor", "change", "a", "b"] + (["l2_diff", "relative", "cosine"] if stats else [])
            _output.table(headers, rows)
    for n in d.notes:
        _output.note(f"note: {n}")


@command(app)
def restore(
    ref: Annotated[str, typer.Argument(help="The version to bring back (NAME@v2, NAME@<commit> ...).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Message for the new version.")] = "",
    force: Annotated[bool, typer.Option("--force", "-f", help="Discard work-tree weights no version records.")] = False,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Make an old version the new head: a new version with its weights (history is kept).

    Examples:

      mvc restore net@v2 && mvc commit -m "back to v2"
    """
    from mvc import api

    result = api.restore(ref, repo=repo, message=message, remote=remote, force=force)
    if json_output:
        _output.emit_json(result)
        return
    v = result.version
    if not result.created:  # the current version's weights put back in the work tree
        _output.out(f"{v.name}: work-tree weights restored to v{v.version} ({_output.short(v.hash)})")
        return
    _output.out(f"{v.name}: v{v.version} ({_output.short(v.hash)}) restores {ref}; commit it with `mvc commit -m MSG`")

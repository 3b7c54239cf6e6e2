"""The HTML report of an evaluation: leaderboard, paired comparisons, failures, and one
inline SVG bar chart per metric across versions (self-contained; no plotting library).
"""

from __future__ import annotations

import html
from pathlib import Path

from mvc.errors import UsageError
from mvc.evaluation import Comparison, EvalRow, EvalSpec, Leaderboard
from mvc.files import utc_now, write_atomic

_W_BAR = 56
_H = 240
_PAD_LEFT = 64
_PAD_BOTTOM = 64
_PAD_TOP = 24

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.sig{color:#b00020;font-weight:600}.ns{color:#777}.failed{color:#b00020}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}code{background:#f4f4f4;padding:1px 4px}
.chart{display:inline-block;margin:0 2em 2em 0;vertical-align:top}
"""


def check_path(path: str | Path) -> Path:
    """The report path, checked before any evaluation runs.

    Raises:
        UsageError: not an ``.html`` file (PNG needs a plotting library mvc does not depend on).
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in (".html", ".htm"):
        return target
    if suffix == ".png":
        raise UsageError(
            f"cannot write {target.name}: PNG charts need a plotting library mvc does not depend on",
            hint=f"write an HTML report with its charts inline instead: --report {target.with_suffix('.html')}",
        )
    raise UsageError(f"--report {target.name}: the report is an .html file", hint="e.g. --report eval.html")


def write_html(path: str | Path, spec: EvalSpec, board: Leaderboard) -> Path:
    """Write the report (atomically) and return its path."""
    target = check_path(path)
    write_atomic(target, render_html(spec, board).encode())
    return target


def render_html(spec: EvalSpec, board: Leaderboard) -> str:
    """The report as one self-contained HTML page."""
    ok = [r for r in board.rows if r.status != "failed"]
    failed = [r for r in board.rows if r.status == "failed"]
    created = utc_now()
    direction = "higher is better" if board.descending else "lower is better"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mvc eval</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Evaluation across versions</h1>",
        f"<p>{'Command' if spec.kind == 'cmd' else 'Function'}: <code>{_e(spec.spec)}</code>"
        f" &middot; folds: {spec.folds} &middot; eval hash <code>{spec.hash}</code> &middot; {created}</p>",
    ]
    if board.sort:
        parts.append(f"<p>Sorted by <b>{_e(board.sort)}</b> ({direction}).</p>")
    parts.append(_leaderboard(ok, board))
    if board.comparisons:
        parts.append(_comparisons(board))
    if failed:
        parts.append(_failures(failed))
    for note in board.notes:
        parts.append(f"<p class='ns'>{_e(note)}</p>")
    metrics = list(dict.fromkeys(k for r in ok for k in r.metrics))
    if metrics:
        parts.append("<h2>Metrics across versions</h2>")
        best = ok[0].ref if ok else None
        chronological = sorted(ok, key=lambda r: (r.name, r.version, r.ref))
        parts += [_chart(m, chronological, best) for m in metrics]
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _leaderboard(rows: list[EvalRow], board: Leaderboard) -> str:
    metrics = list(dict.fromkeys(k for r in rows for k in r.metrics))
    versus = {c.other: c for c in board.comparisons}
    head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
    out = ["<h2>Leaderboard</h2><table><tr><th>#</th><th>version</th><th>hash</th><th>status</th>", head]
    if board.comparisons:
        out.append(f"<th>vs best ({_e(board.comparisons[0].key)})</th>")
    out.append("</tr>")
    for r in rows:
        cells = "".join(
            f"<td class='num'>{_fmt(r.metrics[m])}" + (f" &plusmn; {_fmt(r.std[m])}" if r.std.get(m) else "") + "</td>"
            if m in r.metrics
            else "<td></td>"
            for m in metrics
        )
        out.append(f"<tr><td>{r.rank}</td><td>{_e(r.ref)} (v{r.version})</td><td><code>{_e(r.hash[:8])}</code></td>")
        out.append(f"<td>{_e(r.status)}</td>{cells}")
        if board.comparisons:
            c = versus.get(r.ref)
            out.append("<td>best</td>" if r.rank == 1 else f"<td>{_gap(c)}</td>" if c else "<td></td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _mark(c: Comparison) -> str:
    return "<span class='sig'>significant</span>" if c.significant else "<span class='ns'>not significant</span>"


def _gap(c: Comparison) -> str:
    return f"{c.difference:+.4g} [{c.ci_low:+.4g}, {c.ci_high:+.4g}] p={c.p_value:.3g} {_mark(c)}"


def _comparisons(board: Leaderboard) -> str:
    c0 = board.comparisons[0]
    out = [
        f"<h2>Paired comparisons</h2><p>Paired bootstrap over {c0.n} examples of <code>{_e(c0.key)}</code>: "
        f"best ({_e(c0.best)}) minus each other version, {round((1 - c0.alpha) * 100)}% interval.</p>",
        "<table><tr><th>other</th><th>difference</th><th>interval</th><th>p-value</th><th></th></tr>",
    ]
    for c in board.comparisons:
        out.append(
            f"<tr><td>{_e(c.other)}</td><td class='num'>{c.difference:+.4g}</td>"
            f"<td class='num'>[{c.ci_low:+.4g}, {c.ci_high:+.4g}]</td><td class='num'>{c.p_value:.3g}</td><td>{_mark(c)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _failures(rows: list[EvalRow]) -> str:
    out = ["<h2>Failed</h2>"]
    for r in rows:
        out.append(f"<p class='failed'><b>{_e(r.ref)}</b> (v{r.version}, <code>{_e(r.hash[:8])}</code>): {_e(r.error)}</p>")
        if r.stderr_tail:
            out.append(f"<pre>{_e(r.stderr_tail)}</pre>")
    return "".join(out)


def _chart(metric: str, rows: list[EvalRow], best: str | None) -> str:
    """An SVG bar chart of ``metric`` for ``rows``, with ±std whiskers when folds vary."""
    points = [(r.ref, r.metrics[metric], r.std.get(metric, 0.0)) for r in rows if metric in r.metrics]
    lo = min([0.0] + [v - s for _, v, s in points])
    hi = max([0.0] + [v + s for _, v, s in points])
    if hi == lo:
        hi = lo + 1.0
    plot_h = _H - _PAD_TOP - _PAD_BOTTOM
    width = _PAD_LEFT + _W_BAR * len(points) + 24

    def y(value: float) -> float:
        return _PAD_TOP + (hi - value) / (hi - lo) * plot_h

    svg = [
        f"<div class='chart'><h3>{_e(metric)}</h3>",
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{_H}' role='img' aria-label='{_e(metric)} by version'>",
    ]
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        svg.append(
            f"<line x1='{_PAD_LEFT}' x2='{width - 12}' y1='{y(value):.1f}' y2='{y(value):.1f}' stroke='#eee'/>"
            f"<text x='{_PAD_LEFT - 6}' y='{y(value) + 4:.1f}' font-size='11' text-anchor='end' fill='#555'>{_fmt(value)}</text>"
        )
    for i, (ref, value, std) in enumerate(points):
        x = _PAD_LEFT + i * _W_BAR + 8
        top, base = sorted((y(value), y(0.0)))
        colour = "#2e7d32" if ref == best else "#5c7cfa"
        svg.append(
            f"<rect x='{x}' y='{top:.1f}' width='{_W_BAR - 16}' height='{max(base - top, 1):.1f}' fill='{colour}'>"
            f"<title>{_e(ref)}: {_fmt(value)}{f' ± {_fmt(std)}' if std else ''}</title></rect>"
        )
        cx = x + (_W_BAR - 16) / 2
        if std:
            svg.append(f"<line x1='{cx}' x2='{cx}' y1='{y(value + std):.1f}' y2='{y(value - std):.1f}' stroke='#222'/>")
        label = ref if len(ref) <= 14 else ref[:13] + "…"
        svg.append(
            f"<text x='{cx}' y='{_H - _PAD_BOTTOM + 14}' font-size='11' text-anchor='end' "
            f"transform='rotate(-35 {cx} {_H - _PAD_BOTTOM + 14})'>{_e(label)}</text>"
        )
    svg.append(f"<line x1='{_PAD_LEFT}' x2='{width - 12}' y1='{y(0.0):.1f}' y2='{y(0.0):.1f}' stroke='#999'/>")
    svg.append("</svg></div>")
    return "".join(svg)

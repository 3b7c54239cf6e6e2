"""``mvc storage``: what each version costs on a remote with the tensors layout (issue 15)."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@command(app)
def storage(
    name: Annotated[str | None, typer.Argument(help="Model name; default: every model on the remote.", show_default=False)] = None,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show what each version costs on a tensors remote: logical size, bytes stored, bytes shared.

    A chunk counts as stored by the first version (per model, oldest first) that uses
    it and as shared by every later one; ratio = stored / logical.

    Examples:

      mvc storage

      mvc storage net --remote s3 --json
    """
    from mvc import api

    report = api.storage(repo, name, remote=remote)
    if json_output:
        _output.emit_json(report)
        return
    rows = [
        [v.name, v.version, v.hash[:8], _bytes(v.logical_bytes), _bytes(v.stored_bytes), _bytes(v.shared_bytes), f"{v.ratio:.3f}"]
        for v in report.versions
    ]
    t = report.totals
    rows.append(["total", "", "", _bytes(t.logical_bytes), _bytes(t.stored_bytes), _bytes(t.shared_bytes), f"{t.ratio:.3f}"])
    _output.table(["model", "version", "hash", "logical", "stored", "shared", "ratio"], rows, title=f"remote {report.remote} ({report.layout} layout)")

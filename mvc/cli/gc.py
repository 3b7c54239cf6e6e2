"""``mvc gc``: free the cache (and a remote) of what no kept version needs, and clean up temp files."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Repo
from mvc.errors import UsageError


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _summary(result: Any) -> str:
    parts = []
    for kind in ("object", "temp file", "temp dir", "upload"):
        n = result.count(kind)
        if n:
            parts.append(f"{n} {kind}{'s' if n != 1 else ''}")
    return ", ".join(parts) or "nothing"


@command(app)
def gc(
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Clean the local cache and the work tree's temp files.")] = True,
    remote: Annotated[
        str | None, typer.Option("--remote", "-r", help="Also clean this remote (objects, temp files, unfinished S3 uploads).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed, and the bytes; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not on a terminal).")] = False,
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="Leave temp files and uploads younger than this many hours.")
    ] = 1.0,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Remove cache (and remote) objects no kept version needs, and leftovers of interrupted commands.

    Kept is every version that a pointer names in any commit reachable from a branch
    (local or remote-tracking), a tag or HEAD, in the index, in the work tree, or in a
    rollback. Temp files of interrupted add/pull/push/merge and unfinished S3 multipart
    uploads older than --older-than hours go too.

    Examples:

      mvc gc --dry-run

      mvc gc --yes

      mvc gc --remote s3 --dry-run --older-than 24
    """
    from mvc import api

    confirm = None
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "mvc gc deletes objects for good and needs confirmation, but this is not a terminal",
                hint="see what would go with `mvc gc --dry-run`, then run `mvc gc --yes`",
            )

        def confirm(plan: Any) -> bool:
            where = "the cache" + (f" and remote {plan.remote}" if plan.remote else "") if plan.cache else f"remote {plan.remote}"
            return typer.confirm(f"remove {_summary(plan)} ({_bytes(plan.removed_bytes)}) from {where}?", err=True)

    result = api.gc(repo=repo, cache=cache, remote=remote, dry_run=dry_run, older_than=older_than, confirm=confirm)
    if json_output:
        _output.emit_json(result)
        return
    if result.removed:
        rows = [
            [r.where, r.kind, _output.short(r.oid) if r.kind == "object" and r.oid else r.path, _bytes(r.size)]
            for r in result.removed
        ]
        _output.table(["where", "kind", "what", "size"], rows)
    if quiet:
        return
    verb = "would remove" if result.dry_run else "removed"
    if not result.removed:
        _output.note(f"nothing to remove; {result.kept} objects kept")
    else:
        _output.note(f"{verb} {_summary(result)} ({_bytes(result.removed_bytes)}); {result.kept} objects kept")
    if result.dry_run and not dry_run:
        _output.note("nothing removed")
    for listing in result.unknown_listings:
        _output.note(f"the listing {_output.short(listing)} of a kept version is in neither cache nor remote: every file object was kept")

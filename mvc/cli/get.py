"""``mvc get``: one model version's weights from a git repository, for deployment machines."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Jobs, Json, Quiet, Remote, RequireSigned, TrustedKeys


@command(app)
def get(
    url: Annotated[str, typer.Argument(help="Git repository: a local path (bare or not) or a URL.")],
    ref: Annotated[str, typer.Argument(help="NAME (default branch) or NAME@REF (v3, tag, branch, commit, stage).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Directory that receives the weights.")] = ".",
    remote: Remote = None,
    jobs: Jobs = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace weights of the same name in --out.")] = False,
    require_signed: RequireSigned = False,
    trusted_keys: TrustedKeys = None,
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Download one model version's weights from a git repository without cloning a work tree.

    The weights come from the repository's default remote (credentials from the
    environment) and are checked against their hash before they are written.

    Examples:

      mvc get git@github.com:team/models.git net@v3 -o /srv/weights

      mvc get /srv/git/models.git net@prod -o deploy/ --remote s3

      mvc get /srv/git/models.git net@prod -o deploy/ --require-signed --trusted-keys keys/
    """
    from mvc import api

    with _output.progress_bar(
        "get", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)
    ) as cb:
        result = api.get(
            url,
            ref,
            out=out,
            remote=remote,
            jobs=jobs,
            force=force,
            progress=cb,
            require_signed=require_signed,
            trusted_keys=trusted_keys,
        )
    if json_output:
        _output.emit_json(result)
        return
    _output.out(f"{result.name} v{result.version} ({_output.short(result.hash)}) -> {result.path}")

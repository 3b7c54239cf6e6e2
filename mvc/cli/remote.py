"""``mvc remote``: where the weights are shared (a local directory, S3, GCS, any DVC remote)."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Repo

remote_app = typer.Typer(
    help="Manage remotes: where weights are shared.\n\nExamples:\n\n  mvc remote add s3 s3://bucket/models --default\n\n  mvc remote list",
    no_args_is_help=True,
)
app.add_typer(remote_app, name="remote")


@command(remote_app, "add")
def remote_add(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix, gs://bucket/prefix or a directory.")],
    default: Annotated[bool, typer.Option("--default", help="Make it the default remote.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace a remote of the same name.")] = False,
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="S3/GCS endpoint (self-hosted, local).")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile name.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="GCP project.")] = None,
    credentialpath: Annotated[str | None, typer.Option("--credentialpath", help="Credentials file (kept in .dvc/config.local).")] = None,
    access_key_id: Annotated[
        str | None, typer.Option("--access-key-id", help="S3 access key id (kept in .dvc/config.local; or set AWS_ACCESS_KEY_ID).")
    ] = None,
    secret_access_key: Annotated[
        str | None,
        typer.Option("--secret-access-key", help="S3 secret key (kept in .dvc/config.local; or set AWS_SECRET_ACCESS_KEY)."),
    ] = None,
    layout: Annotated[
        str, typer.Option("--layout", help="full: plain DVC objects; tensors: deduplicated tensor chunks and deltas.")
    ] = "full",
    repo: Repo = ".",
    json_output: Json = False,
) -> None:
    """Add a remote. Secrets go to .dvc/config.local, never to a tracked file.

    Credentials can also come from the environment (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, an AWS profile, GOOGLE_APPLICATION_CREDENTIALS).

    Examples:

      mvc remote add shared /mnt/nfs/weights --default

      mvc remote add s3 s3://team-models/net --endpoint-url http://127.0.0.1:8333 --default

      mvc remote add gcs gs://team-models/net --project my-project --credentialpath ~/sa.json

      mvc remote add s3 s3://team-models/net --layout tensors --default
    """
    from mvc import api

    options = {
        "endpointurl": endpoint_url,
        "profile": profile,
        "region": region,
        "projectname": project,
        "credentialpath": credentialpath,
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
    }
    api.check_layout(layout)
    result = api.remote_add(
        name, url, repo=repo, default=default, force=force, options={k: v for k, v in options.items() if v is not None}
    )
    api.remote_set_layout(name, layout, repo=repo)
    if json_output:
        _output.emit_json(result)
        return
    _output.out(
        f"remote {result.name} -> {result.url}{' (default)' if result.default else ''}"
        + (f" (layout {layout})" if layout != "full" else "")
    )


@command(remote_app, "list")
def remote_list(repo: Repo = ".", json_output: Json = False) -> None:
    """List the remotes (secrets are never shown).

    Examples:

      mvc remote list --json
    """
    from mvc import api

    rows = api.remote_list(repo)
    if json_output:
        _output.emit_json(rows)
        return
    _output.table(
        ["name", "url", "default", "options", "secrets set"],
        [
            [r.name, r.url, "*" if r.default else "", " ".join(f"{k}={v}" for k, v in r.options.items()), ",".join(r.secrets)]
            for r in rows
        ],
    )


@command(remote_app, "default")
def remote_default(name: Annotated[str, typer.Argument(help="Remote name.")], repo: Repo = ".") -> None:
    """Make a remote the default one.

    Examples:

      mvc remote default s3
    """
    from mvc import api

    api.remote_default(name, repo=repo)
    _output.out(f"default remote: {name}")


@command(remote_app, "remove")
def remote_remove(name: Annotated[str, typer.Argument(help="Remote name.")], repo: Repo = ".") -> None:
    """Remove a remote from the configuration (its objects are not deleted).

    Examples:

      mvc remote remove old-nfs
    """
    from mvc import api

    api.remote_remove(name, repo=repo)
    _output.out(f"removed remote {name}")


@command(remote_app, "modify")
def remote_modify(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    option: Annotated[str, typer.Argument(help="DVC remote option, e.g. endpointurl, region, access_key_id.")],
    value: Annotated[str | None, typer.Argument(help="New value (omit with --unset).", show_default=False)] = None,
    local: Annotated[bool, typer.Option("--local", help="Write to .dvc/config.local (this machine only, never tracked).")] = False,
    unset: Annotated[bool, typer.Option("--unset", "-u", help="Remove the option.")] = False,
    repo: Repo = ".",
    json_output: Json = False,
) -> None:
    """Set or unset one option of a remote; secrets always go to .dvc/config.local.

    Examples:

      mvc remote modify s3 secret_access_key "$KEY"

      mvc remote modify s3 endpointurl http://127.0.0.1:8333 --local

      mvc remote modify gcs allow_anonymous_login true

      mvc remote modify s3 region --unset
    """
    from mvc import api
    from mvc.errors import UsageError

    if unset == (value is not None):
        raise UsageError(
            "give either a VALUE or --unset", hint=f"e.g. `mvc remote modify {name} {option} VALUE`"
        )
    result = api.remote_modify(name, option, value, repo=repo, local=local)
    if json_output:
        _output.emit_json(result)
        return
    verb = "unset" if result.unset else "set"
    _output.out(f"{verb} {result.option} of remote {result.remote} in {result.file}")

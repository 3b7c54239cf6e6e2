"""Protecting weights: ``mvc verify`` (re-hash, remote, signatures) and ``mvc sign``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo, TrustedKeys
from mvc.errors import UsageError


def read_password(var: str | None) -> bytes | None:
    """The passphrase held by environment variable ``var`` (never taken from the command line).

    Raises:
        UsageError: the variable is not set.
    """
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise UsageError(f"environment variable {var} is not set", hint=f"export {var}=... with the key's passphrase")
    return value.encode()


@command(app)
def verify(
    refs: Annotated[list[str] | None, typer.Argument(help="NAME or NAME@REF (default: every model).", show_default=False)] = None,
    remote: Remote = None,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every committed version, on any branch.")] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Re-fetch corrupt cache objects; re-upload corrupt remote ones.")] = False,
    signatures: Annotated[bool, typer.Option("--signatures", help="Check that a trusted key signed each version.")] = False,
    trusted_keys: TrustedKeys = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Re-hash weights in the work tree and cache against their pointers; check remote and signatures.

    Each version is ok, modified, corrupt or missing (or unsigned / untrusted / invalid
    with --signatures). Exit 6 on corruption or tampering, 3 on missing weights.

    Examples:

      mvc verify

      mvc verify net@v3 --remote s3

      mvc verify --all-versions --remote s3 --repair

      mvc verify net --signatures --trusted-keys keys/
    """
    from mvc import api

    with _output.progress_bar("hashing", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
        result = api.verify(
            refs,
            repo=repo,
            remote=remote,
            all_versions=all_versions,
            repair=repair,
            signatures=signatures,
            trusted_keys=trusted_keys,
            progress=cb,
        )
    if json_output:
        _output.emit_json(result)
    else:
        _render(result)
    error = result.error()
    if error is not None:
        raise error


def _render(result: object) -> None:
    from mvc.api import VerifyResult

    assert isinstance(result, VerifyResult)
    if not result.checks:
        _output.note("no models yet: track weights with `mvc add PATH`")
        return
    headers = ["model", "version", "hash", "commit", "status", "workspace", "cache", "remote"]
    signed = any(c.signature != "not checked" for c in result.checks)
    if signed:
        headers.append("signature")
    rows = []
    for c in result.checks:
        row = [c.name, f"v{c.version}", _output.short(c.hash), c.commit[:8] if c.commit else "(work tree)", c.status, c.workspace, c.cache, c.remote]
        if signed:
            row.append(c.signature + (f" ({c.signed_by})" if c.signed_by and c.signature == "ok" else ""))
        rows.append(row)
    _output.table(headers, rows)
    for c in result.checks:
        for line in c.repaired:
            _output.note(f"repaired {c.name} v{c.version}: {line}")
        for line in c.problems:
            _output.note(f"{c.name} v{c.version}: {line}")


@command(app)
def sign(
    ref: Annotated[str, typer.Argument(help="The version to sign: NAME, NAME@v3, NAME@main ...")],
    key: Annotated[str, typer.Option("--key", "-k", help="ECDSA (P-256/384/521) PEM private key.")],
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="Environment variable holding the key's passphrase.")
    ] = None,
    remote: Remote = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Sign a version's weights (OpenSSF model signing); the bundle is staged in .mvc/signatures/.

    Examples:

      mvc sign net --key ~/.keys/me.pem

      MVC_KEY_PASS=... mvc sign net@v3 --key me.pem --password-env MVC_KEY_PASS
    """
    from mvc import api

    result = api.sign(ref, repo=repo, key=key, password=read_password(password_env), remote=remote)
    if json_output:
        _output.emit_json(result)
        return
    _output.out(f"{result.name}: v{result.version} ({_output.short(result.hash)}) signed by {result.signer} (key {result.key[:16]})")
    _output.note(f"staged {result.signature_file}; record it with `mvc commit -m MSG`")

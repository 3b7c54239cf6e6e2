"""The everyday commands: init, add, commit, status, push, pull, checkout."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from mvc.cli import _output

if TYPE_CHECKING:
    from mvc.api import AddResult
from mvc.cli._app import app, command
from mvc.cli._options import (
    Jobs,
    Json,
    Names,
    Quiet,
    Remote,
    Repo,
    RequireSigned,
    TrustedKeys,
)

# Signature options (issue 11), shared with `mvc verify` in mvc/cli/verify.py.


@command(app)
def init(
    path: Annotated[str, typer.Argument(help="Directory inside the git repository.")] = ".",
    git: Annotated[bool, typer.Option("--git", help="Run `git init` first if this is not a git repository.")] = False,
    remote: Annotated[str | None, typer.Option("--remote", help="Directory for the default local remote.")] = None,
    json_output: Json = False,
) -> None:
    """Set up mvc in a git repository (DVC, settings, a default local remote).

    Safe to run twice.

    Examples:

      mvc init

      mvc init --git --remote /mnt/shared/weights
    """
    from mvc import api

    result = api.init(path, git=git, remote=remote)
    if json_output:
        _output.emit_json(result)
        return
    done = "initialised" if result.created_settings or result.created_dvc else "already initialised"
    _output.out(f"mvc {done} in {result.root}")
    if result.remote:
        _output.out(f"default remote: {result.remote} -> {result.remote_url}")
        if result.remote_url and "://" not in result.remote_url:  # issue 17: a path only this machine has
            _output.note(
                "this remote is a directory on this machine: a teammate's clone cannot reach it; "
                "for a team, set a shared one: `mvc remote add team s3://BUCKET/PATH --default`"
            )


@command(app)
def add(
    path: Annotated[list[str], typer.Argument(help="Weight files or checkpoint directories (one model each).", metavar="PATH")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Model name (default: file name without suffix).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Hyperparameter KEY=VALUE (repeatable).")] = None,
    params_file: Annotated[list[str] | None, typer.Option("--params-file", help="YAML/JSON file of hyperparameters.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric KEY=VALUE (repeatable; no short form: -m is the message).")] = None,
    metrics_file: Annotated[list[str] | None, typer.Option("--metrics-file", help="YAML/JSON file of metrics.")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="DVC-tracked data set used (repeatable).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed in this version.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label (repeatable).")] = None,
    sign: Annotated[str | None, typer.Option("--sign", help="Sign the version with this ECDSA PEM private key.")] = None,
    sign_password_env: Annotated[str | None, typer.Option("--sign-password-env", help="Environment variable holding the signing key's passphrase.")] = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Track weights as a new model version (manifest, tensor index, DVC cache) and stage the pointer.

    Examples:

      mvc add models/net.safetensors --param lr=0.01 --metric acc=0.91

      mvc add checkpoints/run7/ --name llm --params-file params.yaml --dataset data/train

      mvc add models/encoder.safetensors models/decoder.safetensors -m "joint fine-tune"
    """
    from mvc import api
    from mvc.cli.verify import read_password
    from mvc.errors import PathNotFoundError, UsageError

    if name is not None and len(path) > 1:
        raise UsageError(f"--name names one model, but {len(path)} paths were given", hint="add them one at a time, or leave out --name")
    missing = [p for p in path if not os.path.exists(os.path.expanduser(p))]
    if missing:  # before any is added: all or nothing, as `git add` does
        raise PathNotFoundError.weights(missing[0])
    password = read_password(sign_password_env)
    params, metrics = api.parse_pairs(param, option="--param"), api.parse_pairs(metric, option="--metric")
    if len(path) > 1:
        api.check_addable(path)
    results = []
    staged: list[str] = []
    for one in path:
        with _output.progress_bar("indexing", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
            result = api.add(
                one,
                repo=repo,
                name=name,
                params=params,
                params_files=params_file,
                metrics=metrics,
                metrics_files=metrics_file,
                datasets=dataset,
                message=message,
                labels=label,
                progress=cb,
                sign_key=sign,
                sign_password=password,
            )
        results.append(result)
        staged += [p for p in result.staged if p not in staged]
        if not json_output:
            _say_added(result)
    if json_output:
        _output.emit_json(results[0] if len(results) == 1 else results)
    elif staged and not quiet:
        _output.note(f"staged {', '.join(staged)}; record it with `mvc commit -m MSG` (or git commit)")


def _say_added(result: AddResult) -> None:
    v = result.version
    if not result.created:
        _output.out(f"{v.name}: unchanged, still v{v.version} ({_output.short(v.hash)}); no new version")
        return
    tensors = v.manifest.tensors
    detail = f", {tensors.count} tensors, {tensors.parameters:,} parameters" if tensors else f", {v.manifest.format}"
    _output.out(f"{v.name}: v{v.version} ({_output.short(v.hash)}{detail})")


@command(app)
def commit(
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")],
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Commit the model changes (pointers, .gitignore, .mvc/) and nothing else.

    Examples:

      mvc commit -m "net: fine-tune on v2 data"
    """
    from mvc import api

    result = api.commit(message, repo=repo)
    if json_output:
        _output.emit_json(result)
        return
    _output.out(f"[{result.commit[:8]}] {message} ({_output.plural(len(result.paths), 'file')})")


@command(app)
def status(
    names: Names = None,
    remote: Remote = None,
    no_remote: Annotated[bool, typer.Option("--no-remote", help="Do not ask the remote (offline).")] = False,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show each model's version and whether work tree, cache and remote are in sync.

    Examples:

      mvc status

      mvc status net --remote s3 --json
    """
    from mvc import api

    rows = api.status(names, repo=repo, remote=remote, check_remote=not no_remote)
    if json_output:
        _output.emit_json(rows)
        return
    if not rows:
        _output.note("no models yet: track weights with `mvc add PATH`")
        return
    _output.table(
        ["model", "version", "hash", "path", "committed", "workspace", "cache", "remote"],
        [
            [
                s.name,
                f"v{s.version}",
                _output.short(s.hash),
                s.path,
                "yes" if s.committed else "no",
                s.workspace,
                s.cache,
                f"{s.remote} ({s.remote_name})" if s.remote_name else s.remote,
            ]
            for s in rows
        ],
    )
    for s in rows:
        if s.workspace == "conflict":  # issue 17
            _output.note(f"hint: a merge left {s.name} unresolved: settle it with `mvc resolve {s.name} --take ours|theirs|REF`")


@command(app)
def push(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="NAME (the work tree's version) or NAME@REF (any committed version); default: every model.", show_default=False),
    ] = None,
    remote: Remote = None,
    jobs: Jobs = None,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Also every version any branch or tag records (committed but never pushed too).")
    ] = False,
    tags: Annotated[bool, typer.Option("--tags", help="Also upload the weights of every registry tag (releases, stages) and push the tags to git.")] = False,
    git_remote: Annotated[str, typer.Option("--git-remote", help="The git remote that receives the tags (with --tags).")] = "origin",
    full: Annotated[
        bool, typer.Option("--full", help="Upload the plain DVC object (for `dvc pull`), whatever the remote's layout.")
    ] = False,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Upload model weights from the cache to the remote.

    Examples:

      mvc push

      mvc push net --remote s3 --jobs 8

      mvc push net@v1 net@v2

      mvc push --all-versions

      mvc push --tags

      mvc push --full net@v3
    """
    from mvc import api
    from mvc.errors import MissingObjectError

    if full:  # issue 15: a tensors remote gets the plain DVC object too
        pushed = api.push_full(names or [], repo=repo, remote=remote, jobs=jobs)
        if json_output:
            _output.emit_json(pushed)
        else:
            _output.out(f"pushed {_output.plural(pushed.transferred, 'full object')} of {', '.join(pushed.versions)} to {pushed.remote}")
        return

    with _output.progress_bar("push", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
        result = api.push(names, repo=repo, remote=remote, jobs=jobs, progress=cb, all_versions=all_versions)
    registry = api.push_registry([n.partition("@")[0] for n in names or []] or None, repo=repo, remote=remote, git_remote=git_remote) if tags else None
    if json_output:
        _output.emit_json({"push": result, "registry": registry} if tags else result)
    else:
        _output.out(f"pushed {_output.plural(result.transferred, 'object')} of {_output.plural(len(result.models), 'model')} to {result.remote}")
        if result.versions and not result.missing:
            _output.note(f"versions: {', '.join(result.versions)}")
        if registry is not None:
            _output.out(
                f"registry: {_output.plural(len(registry.tags), 'tag')} pushed to {registry.git_remote}, "
                f"{_output.plural(registry.transferred, 'object')} uploaded"
            )
    if result.missing:
        raise MissingObjectError(
            f"the weights of {', '.join(result.missing)} are in neither the local cache nor remote {result.remote!r}",
            hint="push them from the machine that added them; the other versions were pushed",
        )


@command(app)
def pull(
    names: Names = None,
    remote: Remote = None,
    jobs: Jobs = None,
    require_signed: RequireSigned = False,
    trusted_keys: TrustedKeys = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip re-hashing downloaded weights (one md5 pass; for remotes you trust).")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite work-tree weights no version records.")] = False,
    tensors: Annotated[
        list[str] | None,
        typer.Option("--tensors", help="Only the tensors matching this pattern, into a new safetensors file (tensors remote)."),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Where --tensors writes (default: WEIGHTS.partial.safetensors).")] = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Download model weights from the remote and put them in the work tree.

    Examples:

      mvc pull

      mvc pull net --remote s3 --jobs 8

      mvc pull --no-verify   # trusted remote: skip re-hashing the downloads

      mvc pull net@v3 --tensors 'encoder.*'   # a partial safetensors file, from a tensors remote
    """
    from mvc import api
    from mvc.errors import UsageError

    if tensors:
        if len(names or []) != 1:
            raise UsageError("--tensors takes exactly one NAME or NAME@REF", hint="e.g. `mvc pull net@v3 --tensors 'encoder.*'`")
        part = api.pull_tensors((names or [""])[0], tensors, repo=repo, out=out, remote=remote, jobs=jobs)
        if json_output:
            _output.emit_json(part)
        else:
            _output.out(f"wrote {part.path}: {_output.plural(len(part.tensors), 'tensor')}, {part.bytes} bytes ({part.downloaded} downloaded)")
        return
    if out is not None:
        raise UsageError("--out goes with --tensors", hint="`mvc pull` puts whole versions in the work tree")

    with _output.progress_bar("pull", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
        result = api.pull(
            names,
            repo=repo,
            remote=remote,
            jobs=jobs,
            progress=cb,
            require_signed=require_signed or None,
            trusted_keys=trusted_keys,
            verify=not no_verify,
            force=force,
        )
    if json_output:
        _output.emit_json(result)
        return
    changed = len(result.added) + len(result.modified)
    _output.out(f"fetched {_output.plural(result.fetched, 'object')} from {result.remote}; {_output.plural(changed, 'path')} updated in the work tree")


@command(app)
def checkout(
    refs: Annotated[list[str] | None, typer.Argument(help="NAME (as committed) or NAME@REF (roll back); default: every model.", show_default=False)] = None,
    remote: Remote = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Discard work-tree weights no version records.")] = False,
    require_signed: RequireSigned = False,
    trusted_keys: TrustedKeys = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Put weights in the work tree: as the current commit records them, or an older version.

    NAME@REF rolls back without moving the branch; `mvc checkout NAME` returns.

    Examples:

      mvc checkout

      mvc checkout net@v3

      mvc checkout net
    """
    from mvc import api

    with _output.progress_bar("checkout", enabled=_output.progress_enabled(quiet=quiet, json_output=json_output)) as cb:
        result = api.checkout(
            refs, repo=repo, remote=remote, force=force, progress=cb, require_signed=require_signed or None, trusted_keys=trusted_keys
        )
    if json_output:
        _output.emit_json(result)
        return
    changed = len(result.added) + len(result.modified)
    _output.out(f"{_output.plural(changed, 'path')} updated in the work tree")

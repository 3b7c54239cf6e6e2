"""The registry commands: tag (releases), promote (stages), registry (show); GTO-compatible git tags."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import _output
from mvc.cli._app import app, command
from mvc.cli._options import Json, Quiet, Remote, Repo

Message = Annotated[str, typer.Option("--message", "-m", help="Tag message (default: what was registered).")]
Push = Annotated[
    bool, typer.Option("--push", help="Upload the version's weights to the remote, then push the tags to the git remote.")
]
GitRemote = Annotated[str, typer.Option("--git-remote", help="Git remote the tags go to with --push.")]


@command(app)
def tag(
    ref: Annotated[str, typer.Argument(help="The version: NAME (committed head), NAME@v3, NAME@main ...")],
    release: Annotated[str, typer.Argument(help="Release number vMAJOR.MINOR.PATCH.")],
    message: Message = "",
    push: Push = False,
    remote: Remote = None,
    git_remote: GitRemote = "origin",
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Register a version as a release: annotated git tag NAME@vX.Y.Z (read by `gto show` too).

    Examples:

      mvc tag net v1.0.0 -m "first release"

      mvc tag net@v3 v1.1.0 --push
    """
    from mvc import api

    r = api.tag(ref, release, repo=repo, message=message, push=push, remote=remote, git_remote=git_remote)
    if json_output:
        _output.emit_json(r)
        return
    _output.out(f"{r.tag}: {r.name} v{r.version} ({_output.short(r.hash)}) at {r.commit[:8]}")
    if not push:
        _output.note(f"share it with `git push {git_remote} {r.tag}` (weights first: `mvc tag ... --push` does both)")


@command(app)
def promote(
    ref: Annotated[str, typer.Argument(help="The version: NAME (committed head), NAME@v3, NAME@v1.2.0 ...")],
    stage: Annotated[str, typer.Option("--stage", "-s", help="Stage to assign, e.g. prod or staging.")],
    release: Annotated[
        str | None, typer.Option("--release", help="Release number to register the version as, if it has none (default: next patch).")
    ] = None,
    unassign: Annotated[bool, typer.Option("--unassign", help="Take the stage off the version that holds it instead.")] = False,
    message: Message = "",
    push: Push = False,
    remote: Remote = None,
    git_remote: GitRemote = "origin",
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Assign a stage to a version: annotated git tag NAME#STAGE#N; then NAME@STAGE resolves to it.

    The version's weights must be in the remote already (--push uploads them first). A version
    without a release is registered as one first, as `gto assign` does.

    Examples:

      mvc promote net --stage prod

      mvc promote net@v3 --stage staging --push

      mvc promote net --stage prod --unassign
    """
    from mvc import api

    if unassign:
        u = api.unassign(ref.partition("@")[0], stage=stage, repo=repo, message=message, push=push, git_remote=git_remote)
        if json_output:
            _output.emit_json(u)
            return
        _output.out(f"{u.tag}: {u.name} is no longer in {u.stage}")
        return
    r = api.promote(ref, stage=stage, repo=repo, release=release, message=message, push=push, remote=remote, git_remote=git_remote)
    if json_output:
        _output.emit_json(r)
        return
    if r.release_tag:
        _output.out(f"{r.release_tag}: registered {r.name} v{r.version} as release {r.release}")
    _output.out(f"{r.tag}: {r.name} v{r.version} ({_output.short(r.hash)}, {r.release}) is now {r.stage}")
    if not push:
        _output.note(f"share it with `git push {git_remote} --tags` (or promote with --push)")


@command(app)
def registry(
    name: Annotated[str | None, typer.Argument(help="Model name (default: every model in the registry).")] = None,
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show the registry: releases, their versions, and which version each stage points to.

    Examples:

      mvc registry

      mvc registry net --json
    """
    from mvc import api

    models = api.registry_show(name, repo=repo)
    if json_output:
        _output.emit_json(models)
        return
    if not models:
        _output.note("the registry is empty: register a release with `mvc tag NAME vX.Y.Z` or `mvc promote NAME --stage prod`")
        return

    def version(v: int | None, h: str | None) -> str:
        return "-" if v is None else f"v{v} ({_output.short(h or '')})"

    if name is None:
        stages = sorted({s.stage for m in models for s in m.stages})
        rows = []
        for m in models:
            by_stage = {s.stage: s.release or s.commit[:8] for s in m.stages}
            rows.append([m.name, m.latest or "-", *(by_stage.get(s, "-") for s in stages)])
        _output.table(["model", "latest", *(f"#{s}" for s in stages)], rows)
        return
    for m in models:
        stages_of: dict[str, list[str]] = {}
        for s in m.stages:
            stages_of.setdefault(s.release or s.commit, []).append(s.stage)
        rows = [
            [r.release, version(r.version, r.hash), r.commit[:8], ", ".join(stages_of.get(r.release, [])), r.created[:19].replace("T", " "), "" if r.active else "deregistered"]
            for r in m.releases
        ]
        rows += [[s.commit[:8], version(s.version, s.hash), s.commit[:8], s.stage, s.created[:19].replace("T", " "), "unregistered"] for s in m.stages if s.release is None]
        _output.table(["release", "version", "commit", "stages", "created", "note"], rows, title=m.name)


@command(app)
def rename(
    old: Annotated[str, typer.Argument(help="The model's current name.")],
    new: Annotated[str, typer.Argument(help="The new name.")],
    repo: Repo = ".",
    json_output: Json = False,
    quiet: Quiet = False,
) -> None:
    """Rename a model: rewrite the name in its pointer's manifest and stage it (no new weights, no new version).

    Earlier versions and registry tags keep the name they were recorded with.

    Examples:

      mvc rename ñet-模型 net && mvc commit -m "rename the model to net"
    """
    from mvc import api

    r = api.rename(old, new, repo=repo)
    if json_output:
        _output.emit_json(r)
        return
    _output.out(f"{r.old} -> {r.new}: v{r.version} ({_output.short(r.hash)}), staged {r.pointer}")
    _output.note("record it with `mvc commit -m MSG`")

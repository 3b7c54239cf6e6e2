"""A repository's mvc set-up: ``init`` and the remotes (add, list, default, remove, modify).

The one place that changes ``.dvc/config`` for the user; each change it makes to that
tracked file is staged (and later committed by ``mvc commit``), secrets go to
``.dvc/config.local`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvc import dvcremotes, dvcstore, gitstore, hooks, settings, tensorsync, versioning, workspace
from mvc.errors import ConflictError, UsageError


@dataclass(frozen=True)
class InitResult:
    """What ``init`` set up."""

    root: str
    created_git: bool
    created_dvc: bool
    created_settings: bool
    remote: str | None
    remote_url: str | None


@dataclass(frozen=True)
class Remote:
    """A remote as mvc shows it: secrets are never included, only the names of those set."""

    name: str
    url: str
    default: bool
    options: Mapping[str, str]
    secrets: tuple[str, ...] = ()
    layout: str = "full"  # "full": plain DVC objects; "tensors": deduplicated tensor chunks (issue 15)


@dataclass(frozen=True)
class RemoteOption:
    """Which remote option ``remote_modify`` changed, and in which file (never the value)."""

    remote: str
    option: str
    file: str  # ".dvc/config" (tracked by git) or ".dvc/config.local" (never tracked)
    unset: bool


def init(path: Path, *, git: bool, remote: str | None) -> InitResult:
    """Set up mvc in the git repository at ``path`` (``git init`` first with ``git``).

    Raises:
        NotARepoError: not a git repository and ``git`` is False.
        ConflictError: ``remote`` given but the repository has a remote already.
    """
    created_git = False
    if git and not gitstore.is_repo(path):
        gitstore.init_repo(path)
        created_git = True
    ws = workspace.Workspace(root=gitstore.find_root(path)) if path.exists() else workspace.open_workspace(path)
    root = ws.root
    created_dvc = not dvcstore.is_initialized(root)
    dvcstore.init(root)
    created_settings = not settings.is_mvc_repo(root)
    if created_settings:
        settings.save(root, settings.Settings())
    existing = dvcremotes.remotes(root)
    if not existing:
        target = Path(remote).expanduser().resolve() if remote else workspace.default_remote_dir(root)
        target.mkdir(parents=True, exist_ok=True)
        name, url = "local", str(target)
        dvcremotes.add_remote(root, name, url, default=True)
    else:
        default = next((r for r in existing if r.default), existing[0])
        name, url = default.name, default.url
        if remote:
            raise ConflictError(
                f"this repository has a remote already ({default.name}: {default.url})",
                hint="add another with `mvc remote add NAME URL --default`",
            )
    gitstore.stage(root, [p for p in (".dvc/config", ".dvc/.gitignore", ".dvcignore", settings.CONFIG_FILE) if (root / p).exists()])
    hooks.setup_merge_driver(root)  # issue 5: `*.dvc merge=mvc` + the driver config
    return InitResult(
        root=str(root),
        created_git=created_git,
        created_dvc=created_dvc,
        created_settings=created_settings,
        remote=name,
        remote_url=url,
    )


def remotes(ws: workspace.Workspace) -> list[Remote]:
    """The remotes of the repository (no secrets)."""
    return [
        Remote(
            name=r.name,
            url=r.url,
            default=r.default,
            options=dict(r.options),
            secrets=r.secrets,
            layout=tensorsync.layout(ws.root, r.name),
        )
        for r in dvcremotes.remotes(ws.root)
    ]


def add_remote(
    ws: workspace.Workspace,
    name: str,
    url: str,
    *,
    default: bool,
    force: bool,
    options: Mapping[str, Any] | None,
    layout: str = tensorsync.FULL,
) -> Remote:
    """Add (or with ``force`` replace) a remote; secrets in ``options`` go to ``.dvc/config.local``.

    The layout is kept in ``.mvc/config.json`` (tracked and staged like ``.dvc/config``), so
    every clone uses the remote the same way; ``.dvc/config`` stays a plain DVC config.

    Raises:
        UsageError: an unknown layout (checked before anything is written).
    """
    if layout not in tensorsync.LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}", hint="use --layout full or --layout tensors")
    dvcremotes.add_remote(ws.root, name, url, options=dict(options) if options is not None else None, default=default, force=force)
    versioning.stage_config(ws.root)
    before = _settings_bytes(ws)
    tensorsync.set_layout(ws.root, name, layout)
    if _settings_bytes(ws) != before:
        gitstore.stage(ws.root, [settings.CONFIG_FILE])
    return next(r for r in remotes(ws) if r.name == name)


def _settings_bytes(ws: workspace.Workspace) -> bytes | None:
    path = settings.config_path(ws.root)
    return path.read_bytes() if path.is_file() else None


def set_default_remote(ws: workspace.Workspace, name: str) -> None:
    dvcremotes.set_default_remote(ws.root, name)
    versioning.stage_config(ws.root)


def remove_remote(ws: workspace.Workspace, name: str) -> None:
    dvcremotes.remove_remote(ws.root, name)
    versioning.stage_config(ws.root)


def modify_remote(ws: workspace.Workspace, name: str, option: str, value: str | None, *, local: bool) -> RemoteOption:
    """Set (``value=None``: unset) one option; secrets and ``local`` ones go to ``.dvc/config.local``."""
    written = dvcremotes.modify_remote(ws.root, name, option, value, local=local)
    if written == ".dvc/config":
        versioning.stage_config(ws.root)
    return RemoteOption(remote=name, option=option, file=written, unset=value is None)

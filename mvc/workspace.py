"""The models of the checked-out work tree: finding the repository, listing and naming models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvc import dvcstore, gitstore, journal, pointer, settings
from mvc.errors import ModelNotFoundError, NotARepoError, PathNotFoundError, SchemaError, UsageError
from mvc.pointer import Pointer


@dataclass(frozen=True)
class Workspace:
    """An opened mvc repository."""

    root: Path

    def rel(self, path: str | Path) -> str:
        """``path`` (absolute, or relative to the current directory) relative to the root.

        Raises:
            UsageError: the path lies outside the repository.
        """
        full = Path(path).expanduser().resolve()
        try:
            return full.relative_to(self.root).as_posix()
        except ValueError:
            raise UsageError(
                f"{path} is outside the repository {self.root}",
                hint="move the weights into the repository, or run mvc from the repository that holds them",
            ) from None


def open_workspace(repo: str | Path = ".", *, require_init: bool = True) -> Workspace:
    """Find the git root above ``repo`` and check that mvc is set up there.

    Raises:
        NotARepoError: not a git repository, or (with ``require_init``) DVC/mvc not initialised.
    """
    if not Path(repo).exists():
        raise PathNotFoundError(f"{repo} does not exist", hint="pass an existing repository directory", path=str(repo))
    root = gitstore.find_root(repo)
    if require_init and not dvcstore.is_initialized(root):
        raise NotARepoError(f"{root} is a git repository but not an mvc repository", hint="run `mvc init` there")
    journal.recover(root)  # undo an `mvc add` killed half-way (issue 14)
    return Workspace(root=root)


def pointer_paths(ws: Workspace) -> list[str]:
    """Paths of all DVC pointers git knows (tracked or staged) plus untracked ones on disk next to them."""
    paths = set(gitstore.tracked_files(ws.root, suffix=pointer.SUFFIX))
    paths.update(p for p in gitstore.changed_paths(ws.root) if p.endswith(pointer.SUFFIX))
    return sorted(p for p in paths if (ws.root / p).is_file())


def models(ws: Workspace) -> list[Pointer]:
    """Every pointer in the work tree that carries an mvc manifest, sorted by model name."""
    found = []
    for path in pointer_paths(ws):
        try:
            ptr = pointer.read(ws.root, path)
        except SchemaError:
            # A pointer git left with conflict markers (a merge) names no version yet:
            # skip it, so that NAME@HEAD and NAME@MERGE_HEAD still resolve (to settle it).
            if path in gitstore.unmerged_paths(ws.root):
                continue
            raise
        if ptr is not None and ptr.is_model:
            found.append(ptr)
    return sorted(found, key=lambda p: p.manifest.name if p.manifest else p.path)


def find_model(ws: Workspace, name: str) -> Pointer:
    """The work-tree pointer of the model called ``name`` (or whose weights path is ``name``).

    Raises:
        ModelNotFoundError: no such model; the message lists the known ones.
    """
    all_models = models(ws)
    for ptr in all_models:
        assert ptr.manifest is not None
        if name in (ptr.manifest.name, ptr.out, ptr.path):
            return ptr
    known = tuple(p.manifest.name for p in all_models if p.manifest)
    raise ModelNotFoundError.among(name, known, hint="see `mvc status`, or track weights with `mvc add PATH`")


def select(ws: Workspace, names: list[str] | None) -> list[Pointer]:
    """The pointers of ``names`` (all models when empty)."""
    if not names:
        return models(ws)
    return [find_model(ws, n) for n in names]


def is_initialized(ws: Workspace) -> bool:
    """True when both DVC and mvc's settings exist."""
    return dvcstore.is_initialized(ws.root) and settings.is_mvc_repo(ws.root)


def default_remote_dir(root: Path) -> Path:
    """Where ``mvc init`` puts the local remote when none is given.

    ``$MVC_REMOTE_HOME`` or ``$XDG_DATA_HOME/mvc/remotes`` (``~/.local/share``), one
    folder per repository, named after it plus a short random id so two repos
    with the same name never share objects by accident.
    """
    import os
    import secrets

    base = os.environ.get("MVC_REMOTE_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "mvc", "remotes"
    )
    return Path(base) / f"{root.name}-{secrets.token_hex(4)}"

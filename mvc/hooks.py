"""Git integration: hooks that keep weights in step with git, and the merge driver for pointers.

* ``post-checkout`` / ``post-merge`` / ``post-rewrite`` (after ``git rebase`` and
  ``git pull --rebase``) sync the work-tree weights to what the new commit records (from
  the cache, fetching what is missing); ``pre-push`` uploads the weights of the commits
  (and tags) being pushed, and aborts the push when that fails.
* Weights of a model the new commit does not track (its pointer and ``.gitignore`` are
  gone, e.g. ``git checkout`` of an older branch) stay in the work tree, and stay
  git-ignored through a marked block in ``.git/info/exclude``, so ``git add -A`` never
  commits them (issue 17); the block drops a path once its pointer is back.
* The merge driver (``*.dvc merge=mvc`` in ``.gitattributes``) never leaves conflict
  markers in a pointer: when both sides changed a model's weights it keeps ours, says
  which two versions collided and exits non-zero so git reports a conflict;
  :func:`resolve` then records the chosen side as a merge version.

Hooks run ``<the python that installed them> -m mvc _hook NAME``; an existing hook keeps
its body, with mvc's block (between marker lines) inserted once after the shebang.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mvc import experiments, files, gitstore, history, pointer, refs, rollback, sync, workspace
from mvc.errors import (
    ConflictError,
    MissingObjectError,
    MvcError,
    NotFoundError,
    SchemaError,
    UsageError,
)
from mvc.manifest import Parent
from mvc.pointer import Pointer
from mvc.workspace import Workspace

HOOKS = ("post-checkout", "post-merge", "post-rewrite", "pre-push")
BEGIN = "# >>> mvc (managed by `mvc install-hooks`; delete this block to turn it off) >>>"
END = "# <<< mvc <<<"
EXCLUDE_BEGIN = "# >>> mvc: weights of models this commit does not track (kept in the work tree, never committed) >>>"
EXCLUDE_END = "# <<< mvc: untracked weights <<<"
ATTRIBUTES = ".gitattributes"
ATTRIBUTE_LINE = f"*{pointer.SUFFIX} merge=mvc"
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "ash")
_ZERO = "0" * 40


@dataclass(frozen=True)
class HookInstall:
    """What ``install`` did to one hook."""

    hook: str
    path: str
    action: str  # created | chained | updated | unchanged


@dataclass(frozen=True)
class HookRun:
    """What a hook run did: its exit code and the lines it has to say."""

    code: int
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class MergeOutcome:
    """The merge driver's verdict on one pointer."""

    code: int  # 0 merged, 1 conflict (git reports it)
    message: str | None


@dataclass(frozen=True)
class Resolution:
    """The version ``resolve`` recorded."""

    name: str
    took: str
    version: int
    hash: str
    pointer: str
    parents: tuple[Parent, ...]
    staged: tuple[str, ...]
    next_step: str = "git commit"  # what finishes the operation git stopped in (issue 17)


# ---- merge driver set-up and hooks -------------------------------------------------------


def _python() -> str:
    return shlex.quote(sys.executable)


def setup_merge_driver(root: Path) -> bool:
    """Route ``*.dvc`` merges to mvc: the ``.gitattributes`` line (staged) and the git config.

    Idempotent. The git config is per clone, so a fresh clone needs ``mvc init`` or
    ``mvc install-hooks`` again.

    Returns:
        True when something changed.
    """
    changed = False
    attributes = root / ATTRIBUTES
    text = attributes.read_text() if attributes.exists() else ""
    if ATTRIBUTE_LINE not in text.splitlines():
        files.write_atomic(attributes, (text + ("" if not text or text.endswith("\n") else "\n") + ATTRIBUTE_LINE + "\n").encode())
        gitstore.stage(root, [ATTRIBUTES])
        changed = True
    driver = f"{_python()} -m mvc _merge-driver %O %A %B %P"
    if gitstore.config_get(root, "merge.mvc.driver") != driver:
        gitstore.config_set(root, "merge.mvc.name", "mvc model pointers")
        gitstore.config_set(root, "merge.mvc.driver", driver)
        changed = True
    return changed


def _block(hook: str) -> str:
    run = f"{_python()} -m mvc _hook {hook}"
    if hook == "pre-push":
        # Keep the ref lines on stdin for the rest of the hook (an existing body reads them too).
        body = (
            "MVC_PUSH_REFS=$(cat)\n"
            f'printf \'%s\\n\' "$MVC_PUSH_REFS" | {run} "$@" || exit 1\n'
            "exec 0<<MVC_EOF\n$MVC_PUSH_REFS\nMVC_EOF\n"
        )
    else:
        body = f'{run} "$@" || true\n'
    return f"{BEGIN}\n{body}{END}\n"


def _is_shell(first_line: str) -> bool:
    if not first_line.startswith("#!"):
        return False
    words = first_line[2:].split()
    prog = Path(words[0]).name if words else ""
    if prog == "env" and len(words) > 1:
        prog = words[1]
    return prog in _SHELLS


def install(ws: Workspace) -> list[HookInstall]:
    """Install (or refresh) mvc's hooks and the merge driver config; safe to run again.

    An existing shell hook keeps its body with mvc's block after the shebang; a hook in
    another language moves to ``NAME.pre-mvc`` and runs after mvc's block.
    """
    setup_merge_driver(ws.root)
    hooks_dir = gitstore.git_path(ws.root, "hooks")
    hooks_dir.mkdir(parents=True, exist_ok=True)
    return [_install_one(hooks_dir / hook, hook) for hook in HOOKS]


def _install_one(path: Path, hook: str) -> HookInstall:
    block = _block(hook)
    if not path.exists():
        text, action = f"#!/bin/sh\n{block}", "created"
    else:
        old = path.read_text()
        if BEGIN in old and END in old:
            start, end = old.index(BEGIN), old.index(END) + len(END)
            text = old[:start] + block.rstrip("\n") + old[end:]
            action = "unchanged" if text == old else "updated"
        elif not old.strip() or _is_shell(old.splitlines()[0]):
            first, _, rest = old.partition("\n") if old.startswith("#!") else ("#!/bin/sh", "", old)
            text, action = f"{first}\n{block}{rest}", "chained"
        else:
            keep = path.with_name(f"{hook}.pre-mvc")
            os.replace(path, keep)
            text = f'#!/bin/sh\n{block}exec "$(dirname "$0")/{keep.name}" "$@"\n'
            action = "chained"
    if action != "unchanged":
        files.write_atomic(path, text.encode())
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return HookInstall(hook=hook, path=str(path), action=action)


def run_hook(start: Path, hook: str, args: list[str], stdin: str = "", env: Mapping[str, str] | None = None) -> HookRun:
    """Run mvc's part of git hook ``hook`` in the repository at ``start``.

    A post-checkout/post-merge hook never fails (git has moved already) but reports what it
    could not sync; pre-push fails (aborting the push) when weights cannot be uploaded.
    """
    env = os.environ if env is None else env
    if env.get("MVC_NO_HOOKS") == "1":
        return HookRun(0)
    try:
        ws = workspace.open_workspace(start)
    except NotFoundError:
        return HookRun(0)  # not an mvc repository (any more): nothing to do
    if hook == "pre-push":
        return _pre_push(ws, args, stdin)
    if hook == "post-checkout" and (len(args) > 2 and args[2] == "0"):
        return HookRun(0)  # a file checkout, not a branch switch
    if hook == "post-rewrite" and args[:1] != ["rebase"]:
        return HookRun(0)  # `git commit --amend` keeps the work tree as it is
    # A rebase checks out its base once (post-checkout, inside the rebase) and runs
    # post-rewrite at the end when it replayed commits: both sync, so a fast-forward
    # `git rebase` / `git pull --rebase` (no post-rewrite) ends synced too (issue 14).
    old = args[0] if hook == "post-checkout" and args else gitstore.resolve_rev(ws.root, "ORIG_HEAD")
    try:
        hidden = keep_untracked_ignored(ws, old)
        report = experiments.sync_worktree(ws)
    except MvcError as exc:
        return HookRun(0, (f"mvc: could not sync the weights: {exc.message}; run `mvc pull` later",))
    return HookRun(0, sync_messages(report) + tuple(
        f"mvc: {out} is not tracked at this commit: its weights stay in the work tree, git-ignored (.git/info/exclude)"
        for out in hidden
    ))


def _exclude_block(text: str) -> tuple[str, list[str], str]:
    """(text before mvc's block, the block's paths, text after it) of ``.git/info/exclude``."""
    if EXCLUDE_BEGIN not in text or EXCLUDE_END not in text:
        return text, [], ""
    start, end = text.index(EXCLUDE_BEGIN), text.index(EXCLUDE_END)
    paths = [line.strip() for line in text[start + len(EXCLUDE_BEGIN) : end].splitlines() if line.strip()]
    return text[:start], paths, text[end + len(EXCLUDE_END) :].lstrip("\n")


def keep_untracked_ignored(ws: Workspace, old: str | None) -> tuple[str, ...]:
    """Keep git ignoring the weights of models that ``old`` tracked and the work tree no longer does.

    Their pointer and ``.gitignore`` left with the checkout; the weights stay (never
    delete user weights), listed in ``.git/info/exclude`` (local to this clone, never
    committed). Paths whose pointer is back, or whose weights are gone, leave the list.

    Returns:
        The weight paths newly ignored this way.
    """
    root = ws.root
    exclude = gitstore.git_path(root, "info/exclude")
    text = exclude.read_text() if exclude.exists() else ""
    before, listed, after = _exclude_block(text)
    keep = [p for p in listed if (root / p.lstrip("/")).exists() and not (root / pointer.pointer_path(p.lstrip("/"))).exists()]
    added: list[str] = []
    if old is not None:
        with gitstore.blob_reader(root) as blob:
            for path in gitstore.list_files(root, old, suffix=pointer.SUFFIX):
                if (root / path).exists():
                    continue
                ptr = _parse(blob(old, path), path)
                if ptr is None:
                    continue
                entry = f"/{ptr.out}"
                if entry in keep or not (root / ptr.out).exists() or gitstore.is_ignored(root, ptr.out):
                    continue
                keep.append(entry)
                added.append(ptr.out)
    if keep == listed:
        return ()
    block = f"{EXCLUDE_BEGIN}\n" + "".join(f"{p}\n" for p in keep) + f"{EXCLUDE_END}\n" if keep else ""
    if before and not before.endswith("\n"):
        before += "\n"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(exclude, (before + block + after).encode())
    return tuple(added)


def sync_messages(report: experiments.SyncReport) -> tuple[str, ...]:
    """Lines telling people what a weight sync did and what it left alone."""
    lines = []
    if report.updated:
        n = len(report.updated)
        lines.append(f"mvc: synced the weights of {n} path{'' if n == 1 else 's'}")
    for out in report.kept:
        lines.append(f"mvc: kept {out}: it holds changes no version records (`mvc add {out}` keeps them, `mvc checkout --force` discards them)")
    for out in report.missing:
        lines.append(f"mvc: the weights of {out} are in no cache or remote yet; `mvc pull` once they are pushed")
    lines += [f"mvc: {e}" for e in report.errors]
    return tuple(lines)


def _pre_push(ws: Workspace, args: list[str], stdin: str) -> HookRun:
    remote_name = args[0] if args else ""
    known = set(gitstore.git_remotes(ws.root))
    commits: list[str] = []
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) != 4 or set(parts[1]) == {"0"}:
            continue  # blank, or a deletion
        tip = gitstore.resolve_rev(ws.root, parts[1])
        if tip is None:
            continue
        new = gitstore.new_commits(ws.root, tip, remote=remote_name) if remote_name in known else [tip]
        commits += [tip] + gitstore.commits_touching(ws.root, new, f"*{pointer.SUFFIX}")
    commits = list(dict.fromkeys(commits))
    if not commits:
        return HookRun(0)
    try:
        rname, count = push_commits(ws, commits)
    except MvcError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        return HookRun(1, (f"mvc: git push stopped: {exc.message}{hint}", "mvc: `git push --no-verify` pushes without the weights"))
    return HookRun(0, (f"mvc: pushed {count} weight object{'' if count == 1 else 's'} to {rname}",) if count else ())


def push_commits(ws: Workspace, commits: list[str], *, remote: str | None = None) -> tuple[str, int]:
    """Upload the weights of every model at ``commits`` that the remote lacks.

    Returns:
        (remote name, objects uploaded).

    Raises:
        RemoteNotFoundError: no remote. MissingObjectError: weights in neither the cache
        nor the remote. RemoteError: the upload failed.
    """
    rname = sync.remote_name(ws, remote)
    labels = version_labels(ws, commits)
    if not labels:
        return rname, 0
    pushed = sync.push_versions(ws, labels, remote=rname)
    if pushed.missing:
        raise MissingObjectError(
            f"the weights of {', '.join(pushed.missing)} are in neither the local cache nor remote {rname!r}",
            hint="pull them first, or push from the machine that added them",
        )
    return rname, pushed.transferred


def version_labels(ws: Workspace, commits: list[str]) -> dict[str, str]:
    """``md5 -> "NAME vN"`` of every model version recorded at ``commits`` (one ``git cat-file --batch``)."""
    labels: dict[str, str] = {}
    with gitstore.blob_reader(ws.root) as blob:
        for commit in commits:
            for path in gitstore.list_files(ws.root, commit, suffix=pointer.SUFFIX):
                ptr = _parse(blob(commit, path), path)
                if ptr is not None and ptr.manifest is not None and ptr.md5:
                    labels.setdefault(ptr.md5, f"{ptr.manifest.name} v{ptr.manifest.version + (1 if ptr.outside_mvc else 0)}")
    return labels


def _parse(data: bytes | None, path: str) -> Pointer | None:
    if data is None:
        return None
    try:
        return pointer.parse(data, path)
    except SchemaError:
        return None


# ---- the merge driver --------------------------------------------------------------------


def merge_pointers(root: Path, base: Path, ours: Path, theirs: Path, path: str, env: Mapping[str, str] | None = None) -> MergeOutcome:
    """Three-way merge of one pointer file, as git's merge driver (result written to ``ours``).

    Same weights on both sides, or only one side changed them: merged cleanly. Both
    changed them: ``ours`` stays as it is (valid YAML) and the outcome explains how to
    choose. Files that are not mvc pointers get git's plain text merge.
    """
    env = os.environ if env is None else env
    b, o, t = (_parse(p.read_bytes(), path) if p.read_bytes().strip() else None for p in (base, ours, theirs))
    if o is None or t is None or o.manifest is None or t.manifest is None:
        conflicts = gitstore.merge_file(ours, base, theirs, ("ours", "base", "theirs"))
        return MergeOutcome(1 if conflicts else 0, None)
    if o.md5 == t.md5 or (b is not None and t.md5 == b.md5):
        return MergeOutcome(0, None)
    if b is not None and o.md5 == b.md5:
        files.write_atomic(ours, theirs.read_bytes())
        return MergeOutcome(0, None)
    their_sha, their_branch = _their_side(env)
    our_branch = gitstore.current_branch(root) or "HEAD"
    name = o.manifest.name
    width = max(len(our_branch), len(their_branch))
    message = "\n".join(
        [
            f"mvc: both sides changed model {name!r} ({path}); the pointer keeps ours for now (no conflict markers):",
            f"  ours    {_label(o)} on {our_branch:<{width}}",
            f"  theirs  {_label(t)} on {their_branch:<{width}}" + (f" ({their_sha[:8]})" if their_sha else ""),
            f"mvc: choose one with `mvc resolve {name} --take ours|theirs|REF`, "
            f"or combine both with `mvc merge`; then commit",
        ]
    )
    return MergeOutcome(1, message)


def _label(ptr: Pointer) -> str:
    assert ptr.manifest is not None
    return f"{ptr.manifest.name} v{ptr.manifest.version + (1 if ptr.outside_mvc else 0)} ({ptr.md5[:8]})"


def _their_side(env: Mapping[str, str]) -> tuple[str | None, str]:
    """(sha, name) of the branch being merged in: git exports ``GITHEAD_<sha>=<name>`` to drivers."""
    heads = [(k.removeprefix("GITHEAD_"), v) for k, v in env.items() if k.startswith("GITHEAD_")]
    if len(heads) == 1:
        return heads[0]
    return None, "theirs"


# ---- resolving a model conflict ------------------------------------------------------------


def resolve(ws: Workspace, name: str, take: str, *, remote: str | None = None, force: bool = False) -> Resolution:
    """Settle a merge conflict on model ``name``: ``take`` ours, theirs, or any REF.

    Writes the chosen pointer with a merge manifest (version max(ours, theirs)+1, parents
    both), puts its weights in the work tree and stages it; the user then commits.

    Raises:
        ConflictError: the model has no merge conflict, or the work-tree weights hold
            changes no version records (without ``force``).
        UsageError: a side is missing (the model was deleted on one side).
    """
    root = ws.root
    path = history.pointer_for(ws, name)
    if path not in gitstore.unmerged_paths(root):
        raise ConflictError(
            f"model {name!r} has no merge conflict to resolve",
            hint="`mvc resolve` settles a model after a `git merge` stopped on it",
        )
    ours, theirs = (_parse(gitstore.read_stage(root, path, s), path) for s in (2, 3))
    if ours is None or theirs is None or ours.manifest is None or theirs.manifest is None:
        raise UsageError(f"{path} was deleted on one side of the merge", hint=f"keep or delete it with git (`git add/rm {path}`)")
    other = next(
        (c for c in (gitstore.merge_head(root), *(gitstore.resolve_rev(root, h) for h in ("CHERRY_PICK_HEAD", "REBASE_HEAD", "REVERT_HEAD"))) if c),
        None,
    )
    if take == "ours":
        chosen, commit, data = ours, gitstore.head_commit(root), gitstore.read_stage(root, path, 2)
    elif take == "theirs":
        chosen, commit, data = theirs, other, gitstore.read_stage(root, path, 3)
    else:
        res = refs.resolve(ws, take if "@" in take else f"{name}@{take}")
        if res.commit is None:
            raise UsageError(f"--take {take}: name a committed version", hint="e.g. --take v3, --take main or --take ours")
        chosen, commit, data = res.pointer, res.commit, gitstore.read_blob(root, res.commit, path)
    assert chosen.manifest is not None and data is not None
    work = pointer.read(root, path)
    if not force and work is not None:
        rollback.refuse_unsaved(ws, [work])
    sync.ensure_cached(ws, chosen, commit, remote=remote)
    files.write_atomic(root / path, data)
    parents = (Parent(hash=ours.md5, version=ours.version), Parent(hash=theirs.md5, version=theirs.version))
    manifest = chosen.manifest.evolve(
        version=history.merge_number([ours, theirs]),
        hash=chosen.md5,
        parents=parents,
        created=files.utc_now(),
        author=gitstore.identity(root),
        message=f"merge: take {take} ({_label(chosen)})",
        extra={**chosen.manifest.extra, "resolved": {"take": take, "hash": chosen.md5}},
        **({"index": None, "tensors": None} if chosen.outside_mvc else {}),
    )
    pointer.write_manifest(root, path, manifest)
    staged = [path]
    if manifest.index and not (root / manifest.index).exists() and commit is not None:
        sidecar = gitstore.read_blob(root, commit, manifest.index)
        if sidecar is not None:
            files.write_atomic(root / manifest.index, sidecar)
            staged.append(manifest.index)
    written = pointer.read(root, path)
    assert written is not None
    sync.checkout(ws, [written])
    gitstore.stage(root, staged)
    return Resolution(
        name=manifest.name,
        took=take,
        version=manifest.version,
        hash=chosen.md5,
        pointer=path,
        parents=parents,
        staged=tuple(staged),
        next_step=next_step(root),
    )


def next_step(root: Path) -> str:
    """The git command that finishes the operation stopped on a conflict: merge, rebase, cherry-pick, revert."""
    if any(gitstore.git_path(root, d).exists() for d in ("rebase-merge", "rebase-apply")):
        return "git rebase --continue"
    if gitstore.resolve_rev(root, "CHERRY_PICK_HEAD"):
        return "git cherry-pick --continue"
    if gitstore.resolve_rev(root, "REVERT_HEAD"):
        return "git revert --continue"
    return "git commit"

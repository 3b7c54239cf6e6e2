"""The only module that talks to git (through GitPython).

Every function takes the repository root and returns plain Python data; no
GitPython object leaks out. Git failures become :class:`mvc.errors.MvcError`
subclasses in :func:`_translate`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mvc.errors import ConflictError, LockedError, MvcError, NotARepoError, RefNotFoundError

if TYPE_CHECKING:
    import git

_EMPTY = ""


@dataclass(frozen=True)
class CommitInfo:
    """One commit as the history commands need it."""

    sha: str
    parents: tuple[str, ...]
    author: str
    email: str
    date: str  # ISO 8601 with offset
    subject: str


def _translate(exc: Exception, root: Path | None = None) -> MvcError:
    """Turn a GitPython exception into an MvcError, keeping the cause."""
    import git

    if isinstance(exc, git.exc.InvalidGitRepositoryError | git.exc.NoSuchPathError):
        err: MvcError = NotARepoError(
            f"{root or exc} is not inside a git repository",
            hint="run `git init` (or `mvc init --git`) first",
        )
    elif isinstance(exc, git.exc.GitCommandError):
        text = (exc.stderr or str(exc)).strip().replace("stderr: ", "").strip("' \n")
        first = text.splitlines()[-1] if text else str(exc)
        if "index.lock" in text:
            err = LockedError(
                "the git index is locked by another process (.git/index.lock)",
                hint="wait for the other git command to finish, or remove a stale .git/index.lock",
            )
        elif "unknown revision" in text or "bad revision" in text or "Not a valid object" in text:
            err = RefNotFoundError(first)
        else:
            err = MvcError(f"git {exc.command[1] if len(exc.command) > 1 else ''} failed: {first}")
    else:
        err = MvcError(f"git failed: {exc}")
    err.__cause__ = exc
    return err


def _open(root: str | Path) -> git.Repo:
    import git

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError) as exc:
        raise _translate(exc, Path(root)) from exc


def _git(root: Path, *args: str, **kwargs) -> str:
    """Run one git command in ``root`` and return its stdout (stripped)."""
    import git

    try:
        return _open(root).git.execute(["git", *args], **kwargs)
    except git.exc.GitCommandError as exc:
        raise _translate(exc, root) from exc


def find_root(path: str | Path = ".") -> Path:
    """Return the work-tree root of the git repository containing ``path``.

    Raises:
        NotARepoError: ``path`` is not inside a git work tree.
    """
    start = Path(path).resolve()
    probe = start if start.is_dir() else start.parent
    repo = _open(probe)
    if repo.bare or repo.working_tree_dir is None:
        raise NotARepoError(f"{start} is a bare git repository", hint="clone it to get a work tree")
    return Path(repo.working_tree_dir).resolve()


def init_repo(path: str | Path) -> Path:
    """Create a git repository at ``path`` (``git init``) and return its root."""
    import git

    Path(path).mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path)
    return Path(repo.working_tree_dir).resolve()


def is_repo(path: str | Path) -> bool:
    """True when ``path`` is inside a git work tree."""
    try:
        find_root(path)
    except NotARepoError:
        return False
    return True


def head_commit(root: Path) -> str | None:
    """The full sha of HEAD, or None in a repository without commits."""
    try:
        return _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}") or None
    except MvcError:
        return None


def current_branch(root: Path) -> str | None:
    """The checked-out branch name, or None when HEAD is detached."""
    try:
        name = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    except MvcError:
        return None
    return name or None


def identity(root: Path) -> str:
    """``Name <email>`` of the configured git user, or an empty string."""
    name = _config_get(root, "user.name")
    email = _config_get(root, "user.email")
    if name and email:
        return f"{name} <{email}>"
    return name or email


def _config_get(root: Path, key: str) -> str:
    try:
        return _git(root, "config", "--get", key)
    except MvcError:
        return _EMPTY


def config_get(root: Path, key: str) -> str | None:
    """Read one git config value (any level), or None when unset."""
    return _config_get(root, key) or None


def config_set(root: Path, key: str, value: str) -> None:
    """Set one git config value in the repository's own config."""
    _git(root, "config", "--local", key, value)


def is_dirty(root: Path, *, ignore: Iterable[str] = ()) -> bool:
    """True when tracked files differ from HEAD, ignoring paths matched by prefix/suffix in ``ignore``."""
    out = _git(root, "status", "--porcelain", "--untracked-files=no", strip_newline_in_stdout=False)
    patterns = tuple(ignore)
    for line in out.splitlines():
        path = line[3:].strip().strip('"')
        if " -> " in path:
            path = path.split(" -> ", 1)[1]
        if not any(path.endswith(p) or path.startswith(p) for p in patterns):
            return True
    return False


def changed_paths(root: Path) -> list[str]:
    """Paths (relative to root) with staged or unstaged changes against HEAD, untracked included."""
    out = _git(root, "status", "--porcelain", "-z", "--untracked-files=all", strip_newline_in_stdout=False)
    entries = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        if not entry:
            i += 1
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in status or "C" in status:
            i += 1  # the next entry is the rename source
        i += 1
    return paths


def _retry_locked(fn, *args, attempts: int = 20, delay: float = 0.1):
    """Run ``fn`` and retry briefly while the git index is locked by another process."""
    for attempt in range(attempts):
        try:
            return fn(*args)
        except LockedError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def stage(root: Path, paths: Iterable[str]) -> None:
    """``git add`` the given paths (relative to root); missing paths are staged as removals."""
    paths = [p for p in paths]
    if not paths:
        return
    _retry_locked(lambda: _git(root, "add", "-A", "--", *paths))


def commit(root: Path, message: str, *, only: Iterable[str] | None = None) -> str:
    """Make a commit and return its sha.

    Args:
        root: repository root.
        message: commit message.
        only: when given, commit exactly these paths (``git commit --only``),
            leaving every other staged or unstaged change alone.

    Raises:
        ConflictError: nothing to commit.
        LockedError: the index stayed locked.
    """
    args = ["commit", "-q", "-m", message]
    if only is not None:
        only = list(only)
        if not only:
            raise ConflictError("nothing to commit", hint="run `mvc add PATH` first")
        args += ["--only", "--", *only]
    try:
        _retry_locked(lambda: _git(root, *args))
    except LockedError:
        raise
    except MvcError as exc:
        text = str(exc.__cause__ or exc)
        if "nothing to commit" in text or "no changes added" in text:
            raise ConflictError("nothing to commit", hint="run `mvc add PATH` first") from exc
        raise
    sha = head_commit(root)
    assert sha is not None
    return sha


def resolve_rev(root: Path, rev: str) -> str | None:
    """Full commit sha of ``rev`` (branch, tag, sha, HEAD~2...), or None when it does not resolve."""
    try:
        return _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}") or None
    except MvcError:
        return None


def read_blob(root: Path, rev: str, relpath: str) -> bytes | None:
    """The bytes of ``relpath`` at ``rev``, or None when the file does not exist there."""
    repo = _open(root)
    try:
        tree = repo.commit(rev).tree
        blob = tree / relpath
    except KeyError:
        return None
    except Exception as exc:  # bad rev
        raise RefNotFoundError(f"unknown revision {rev!r}", hint="check `git log` or `mvc log`") from exc
    return blob.data_stream.read()


def list_files(root: Path, rev: str, *, suffix: str = "") -> list[str]:
    """Paths of all files at ``rev`` ending with ``suffix`` (one ``git ls-tree``)."""
    out = _git(root, "ls-tree", "-r", "-z", "--name-only", rev, strip_newline_in_stdout=False)
    return [p for p in out.split("\0") if p and p.endswith(suffix)]


def tracked_files(root: Path, *, suffix: str = "") -> list[str]:
    """Paths of files in the index (``git ls-files``) ending with ``suffix``."""
    out = _git(root, "ls-files", "-z", strip_newline_in_stdout=False)
    return [p for p in out.split("\0") if p and p.endswith(suffix)]


@contextmanager
def blob_reader(root: Path) -> Iterator[Callable[[str, str], bytes | None]]:
    """Yield ``read(rev, path) -> bytes | None`` backed by one ``git cat-file --batch`` process.

    Reading hundreds of pointers this way costs one process, not one per file.
    """
    import subprocess

    proc = subprocess.Popen(
        ["git", "cat-file", "--batch"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def read(rev: str, path: str) -> bytes | None:
        stdin.write(f"{rev}:{path}\n".encode())
        stdin.flush()
        header = stdout.readline().split()
        if len(header) != 3:  # "<spec> missing" or "ambiguous"
            return None
        data = stdout.read(int(header[2]))
        stdout.read(1)  # the newline after the object
        return data if header[1] == b"blob" else None

    try:
        yield read
    finally:
        stdin.close()
        proc.wait()
        stdout.close()


def is_ignored(root: Path, relpath: str) -> bool:
    """True when git ignores ``relpath``."""
    import git

    try:
        _open(root).git.check_ignore("-q", relpath)
    except git.exc.GitCommandError:
        return False
    return True


def relpath_in_repo(root: Path, path: str | Path) -> str:
    """``path`` relative to ``root`` with forward slashes (no check that it exists)."""
    return Path(os.path.relpath(Path(path).resolve(), root)).as_posix()


def log_path(
    root: Path,
    path: str,
    *,
    rev: str = "HEAD",
    all_branches: bool = False,
    remotes: bool = False,
) -> list[tuple[CommitInfo, str | None]]:
    """Commits that changed ``path``, newest first, with the branch each was reached from.

    One ``git log`` process. With ``all_branches`` every local branch (and with
    ``remotes`` every remote-tracking branch) is walked; otherwise ``rev``'s history.
    """
    fmt = "%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%s%x1f%S%x1e"
    args = ["log", f"--format={fmt}", "--full-history", "--source"]
    if all_branches:
        args.append("--branches")
        if remotes:
            args.append("--remotes")
    else:
        if resolve_rev(root, rev) is None:
            return []
        args.append(rev)
    args += ["--", path]
    out = _git(root, *args, strip_newline_in_stdout=False)
    result = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, parents, name, email, date, subject, source = record.split("\x1f")
        branch = source.removeprefix("refs/heads/").removeprefix("refs/remotes/") if source else None
        info = CommitInfo(sha=sha, parents=tuple(parents.split()), author=name, email=email, date=date, subject=subject)
        result.append((info, branch if all_branches else None))
    return result


def branches(root: Path, *, pattern: str | None = None, remotes: bool = False) -> list[tuple[str, str]]:
    """``(branch name, tip sha)`` of local (and optionally remote-tracking) branches."""
    refs = ["refs/heads/"] + (["refs/remotes/"] if remotes else [])
    if pattern:
        refs = [r + pattern for r in refs]
    out = _git(root, "for-each-ref", "--format=%(refname)%00%(objectname)", *refs)
    result = []
    for line in out.splitlines():
        ref, sha = line.split("\0")
        name = ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
        if not name.endswith("/HEAD"):
            result.append((name, sha))
    return result


def is_ancestor(root: Path, ancestor: str, descendant: str) -> bool:
    """True when ``ancestor`` is reachable from ``descendant``."""
    import git

    try:
        _open(root).git.merge_base("--is-ancestor", ancestor, descendant)
    except git.exc.GitCommandError:
        return False
    return True

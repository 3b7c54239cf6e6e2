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
    elif isinstance(exc, git.exc.GitCommandError | _GitFailed):
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


class _GitFailed(Exception):
    """A git command exited non-zero (shaped like GitPython's GitCommandError)."""

    def __init__(self, command: list[str], status: int, stderr: str) -> None:
        super().__init__(f"{' '.join(command)}: exit {status}: {stderr.strip()}")
        self.command = command
        self.status = status
        self.stderr = stderr


def _git(root: Path, *args: str, strip_newline_in_stdout: bool = True, env: dict[str, str] | None = None) -> str:
    """Run one git command in ``root`` and return its stdout (trailing newline stripped).

    A plain subprocess: importing GitPython and building a ``Repo`` costs more than
    the command itself on the read paths (log, diff, status).
    """
    import subprocess

    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    command = ["git", *args]
    proc = subprocess.run(command, cwd=root, capture_output=True, env=full_env)
    if proc.returncode != 0:
        raise _translate(_GitFailed(command, proc.returncode, proc.stderr.decode(errors="replace")), root)
    out = proc.stdout.decode(errors="surrogateescape")
    return out[:-1] if strip_newline_in_stdout and out.endswith("\n") else out


def find_root(path: str | Path = ".") -> Path:
    """Return the work-tree root of the git repository containing ``path``.

    Raises:
        NotARepoError: ``path`` is not inside a git work tree.
    """
    start = Path(path).resolve()
    probe = start if start.is_dir() else start.parent
    if not probe.is_dir():
        raise NotARepoError(f"{start} is not inside a git repository", hint="run `git init` (or `mvc init --git`) first")
    try:
        top = _git(probe, "rev-parse", "--show-toplevel")
    except MvcError as exc:
        text = str(exc.__cause__ or exc)
        if "must be run in a work tree" in text:
            raise NotARepoError(f"{start} is a bare git repository", hint="clone it to get a work tree") from exc
        raise NotARepoError(f"{start} is not inside a git repository", hint="run `git init` (or `mvc init --git`) first") from exc
    return Path(top).resolve()


def init_repo(path: str | Path) -> Path:
    """Create a git repository at ``path`` (``git init``) and return its root."""
    import git

    Path(path).mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path)
    return Path(repo.working_tree_dir or path).resolve()


def is_repo(path: str | Path) -> bool:
    """True when ``path`` is inside a git work tree (a path that does not exist is not)."""
    if not Path(path).exists():
        return False
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


def staged_blob(root: Path, relpath: str) -> str | None:
    """The object id of ``relpath`` in the index (what the next commit would hold), or None."""
    try:
        return _git(root, "rev-parse", "-q", "--verify", f":{relpath}") or None
    except MvcError:
        return None


def unchanged_since(root: Path, rev: str, relpaths: Iterable[str]) -> set[str]:
    """Those of ``relpaths`` whose work-tree bytes are the ones ``rev`` records (one git call).

    What ``read_blob(root, rev, p) == (root / p).read_bytes()`` says for each path, for
    all of them at once: the work-tree file's blob id is computed here and compared with
    the one ``git ls-tree`` lists (``mvc status`` with many models).
    """
    import hashlib

    wanted = sorted(set(relpaths))
    if not wanted:
        return set()
    listed = _git(root, "ls-tree", "-z", "--full-tree", rev, "--", *wanted, strip_newline_in_stdout=False)
    ids = {}
    for entry in listed.split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            ids[path] = meta.split()[2]
    same = set()
    for path in wanted:
        try:
            data = (root / path).read_bytes()
        except OSError:
            continue
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id
        if ids.get(path) == blob:
            same.add(path)
    return same


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


def read_blobs(root: Path, specs: Iterable[tuple[str, str]]) -> list[bytes | None]:
    """The bytes of each ``(rev, path)`` in ``specs`` (None where it does not exist), in order.

    One ``git cat-file --batch`` process, fed by a thread while the answers are read, so
    hundreds of blobs cost one round trip instead of one each (``mvc log`` of 500 versions).
    """
    import subprocess
    import threading

    specs = list(specs)
    if not specs:
        return []
    request = "".join(f"{rev}:{path}\n" for rev, path in specs).encode()
    proc = subprocess.Popen(
        ["git", "cat-file", "--batch"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def feed() -> None:
        try:
            stdin.write(request)
        except BrokenPipeError:  # git exited early; the reader sees EOF
            pass
        finally:
            stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    blobs: list[bytes | None] = []
    try:
        for _ in specs:
            line = stdout.readline().rstrip(b"\n")
            if not line or line.endswith((b" missing", b" ambiguous")):  # the spec may hold spaces
                blobs.append(None)
                continue
            _, kind, size = line.rsplit(b" ", 2)
            data = stdout.read(int(size))
            stdout.read(1)  # the newline after the object
            blobs.append(data if kind == b"blob" else None)
    finally:
        writer.join()
        stdout.close()
        proc.wait()
    return blobs


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
    args = ["log", f"--format={fmt}", "--full-history", "--date-order", "--source"]  # children before parents
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


# ---- branches, merges, tags, hooks (issue 5) ------------------------------------------

# Set while mvc itself runs a git command that fires hooks: the hooks mvc installed
# then skip their work (mvc syncs the weights itself), user hooks still run.
NO_HOOKS_ENV = {"MVC_NO_HOOKS": "1"}


@dataclass(frozen=True)
class RefInfo:
    """A branch (local or remote-tracking) with its tip and the tip's committer date."""

    name: str  # "exp/a" or "origin/exp/a"
    ref: str  # the full ref name
    sha: str
    date: str  # ISO 8601 with offset


@dataclass(frozen=True)
class TagInfo:
    """One git tag; ``annotated`` is False for lightweight tags."""

    name: str
    annotated: bool
    commit: str  # the peeled commit
    timestamp: int  # tagger date (unix seconds); 0 for lightweight tags
    tagger: str
    email: str
    message: str


def valid_branch_name(root: Path, name: str) -> bool:
    """True when ``name`` is a valid branch name (``git check-ref-format --branch``)."""
    try:
        _git(root, "check-ref-format", "--branch", name)
    except MvcError:
        return False
    return not name.startswith("-")


def create_branch(root: Path, branch: str, start: str) -> None:
    """Create ``branch`` at ``start`` and switch to it (``git checkout -b``)."""
    _git(root, "checkout", "-q", "-b", branch, start, env=NO_HOOKS_ENV)


def track_branch(root: Path, branch: str, upstream: str) -> None:
    """Create local ``branch`` from remote-tracking ``upstream`` and track it (as ``git switch`` does)."""
    _git(root, "branch", "-q", "--track", branch, upstream)


def checkout_branch(root: Path, branch: str, *, force: bool = False) -> None:
    """Check out ``branch`` with mvc's hooks skipped; with ``force`` discard local changes to tracked files.

    Raises:
        ConflictError: local changes to tracked files would be overwritten.
    """
    args = ["checkout", "-q", *(["--force"] if force else []), branch]
    try:
        _git(root, *args, env=NO_HOOKS_ENV)
    except MvcError as exc:
        text = str(exc.__cause__ or exc)
        if "would be overwritten" in text or "conflict" in text.lower():
            paths = [ln.strip() for ln in text.splitlines() if ln.startswith(("\t", "        "))]
            raise ConflictError(
                f"switching to {branch} would overwrite uncommitted changes to {', '.join(paths) or 'tracked files'}",
                hint="commit them (`mvc commit -m MSG` for model versions), or pass --force to discard them",
            ) from exc
        raise


def delete_branch(root: Path, branch: str) -> None:
    """Delete the local ``branch`` (whether merged or not)."""
    _git(root, "branch", "-q", "-D", branch)


def merge(root: Path, rev: str, *, message: str) -> list[str]:
    """Start a ``--no-ff --no-commit`` merge of ``rev`` into HEAD.

    Returns:
        The paths git left conflicted (empty: the merge is ready to commit).
    """
    try:
        _git(root, "merge", "-q", "--no-ff", "--no-commit", "-m", message, rev, env=NO_HOOKS_ENV)
    except MvcError:
        conflicted = unmerged_paths(root)
        if not conflicted:
            raise
        return conflicted
    return []


def abort_merge(root: Path) -> None:
    """``git merge --abort``."""
    _git(root, "merge", "--abort", env=NO_HOOKS_ENV)


def unmerged_paths(root: Path) -> list[str]:
    """Paths with unresolved merge conflicts."""
    out = _git(root, "diff", "--name-only", "-z", "--diff-filter=U", strip_newline_in_stdout=False)
    return sorted({p for p in out.split("\0") if p})


def read_stage(root: Path, path: str, stage: int) -> bytes | None:
    """The bytes of ``path`` at index stage ``stage`` (1 base, 2 ours, 3 theirs), or None."""
    try:
        data = _open(root).git.execute(
            ["git", "cat-file", "blob", f":{stage}:{path}"], stdout_as_string=False, strip_newline_in_stdout=False
        )
    except Exception:  # noqa: BLE001 - no such stage entry
        return None
    return data  # type: ignore[return-value]


def merge_head(root: Path) -> str | None:
    """The commit being merged in (``MERGE_HEAD``), or None outside a merge."""
    return resolve_rev(root, "MERGE_HEAD")


def branch_refs(root: Path, prefixes: Iterable[str]) -> list[RefInfo]:
    """Branches under ``prefixes`` (e.g. ``refs/heads/exp/``) with tip and date, one process."""
    fmt = "%(refname)%00%(objectname)%00%(committerdate:iso-strict)"
    out = _git(root, "for-each-ref", f"--format={fmt}", *prefixes)
    result = []
    for line in out.splitlines():
        ref, sha, date = line.split("\0")
        name = ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
        if not name.endswith("/HEAD"):
            result.append(RefInfo(name=name, ref=ref, sha=sha, date=date))
    return result


def paths_changed(root: Path, include: Iterable[str], exclude: Iterable[str], pathspec: str) -> set[str]:
    """Paths matching ``pathspec`` changed by commits reachable from ``include`` but not ``exclude`` (one ``git log``)."""
    include = list(include)
    if not include:
        return set()
    out = _git(
        root, "log", "--format=", "--name-only", "-z", *include, "--not", *exclude, "--", pathspec, strip_newline_in_stdout=False
    )
    return {p.strip("\n") for p in out.split("\0") if p.strip("\n")}


def tags(root: Path) -> list[TagInfo]:
    """Every tag with its peeled commit, tagger, date and message (one ``for-each-ref``)."""
    fmt = "%(refname:strip=2)%00%(objecttype)%00%(objectname)%00%(*objectname)%00%(taggerdate:unix)%00%(taggername)%00%(taggeremail)%00%(contents)%1e"
    out = _git(root, "for-each-ref", f"--format={fmt}", "refs/tags", strip_newline_in_stdout=False)
    result = []
    for record in out.split("\x1e"):
        record = record.lstrip("\n")
        if not record:
            continue
        name, kind, obj, peeled, stamp, tagger, email, message = record.split("\0")
        annotated = kind == "tag"
        result.append(
            TagInfo(
                name=name,
                annotated=annotated,
                commit=peeled if annotated else obj,
                timestamp=int(stamp or 0),
                tagger=tagger,
                email=email.strip("<>"),
                message=message.strip(),
            )
        )
    return result


def create_tag(root: Path, name: str, commit: str, message: str) -> None:
    """Create the annotated tag ``name`` on ``commit``.

    Raises:
        ConflictError: the tag exists.
    """
    if resolve_rev(root, f"refs/tags/{name}") is not None:
        raise ConflictError(f"tag {name} exists already", hint="pick another name")
    _git(root, "tag", "-a", name, "-m", message, commit)


def push_refs(root: Path, remote: str, refspecs: Iterable[str]) -> None:
    """``git push REMOTE REFSPEC...`` (mvc's own hooks skip: mvc pushed the weights already).

    Raises:
        RemoteError: the git remote refused or could not be reached.
    """
    from mvc.errors import RemoteError

    specs = list(refspecs)
    if not specs:
        return
    try:
        _git(root, "push", "-q", remote, *specs, env=NO_HOOKS_ENV)
    except MvcError as exc:
        raise RemoteError(f"git push to {remote!r} failed: {exc.message}", hint="check `git remote -v` and your access") from exc


def git_remotes(root: Path) -> list[str]:
    """Names of the git remotes (``git remote``)."""
    return [r for r in _git(root, "remote").splitlines() if r]


def git_path(root: Path, name: str) -> Path:
    """The path of ``name`` inside the git directory (``git rev-parse --git-path``; honours core.hooksPath)."""
    rel = _git(root, "rev-parse", "--git-path", name)
    return (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel)


def new_commits(root: Path, tip: str, *, remote: str) -> list[str]:
    """Commits reachable from ``tip`` that no remote-tracking branch of ``remote`` has, newest first."""
    out = _git(root, "rev-list", tip, "--not", f"--remotes={remote}")
    return [c for c in out.split() if c]


def last_change(root: Path, rev: str, path: str) -> str | None:
    """The newest commit at or before ``rev`` that changed ``path``, or None."""
    return _git(root, "log", "-1", "--format=%H", rev, "--", path) or None


def commits_touching(root: Path, commits: Iterable[str], pathspec: str) -> list[str]:
    """Those of ``commits`` that changed files matching ``pathspec`` (one ``git log --no-walk``)."""
    commits = list(commits)
    if not commits:
        return []
    out = _git(root, "log", "--no-walk=unsorted", "--format=%H", *commits, "--", pathspec)
    return [c for c in out.split() if c]


def all_commits_touching(root: Path, pathspec: str) -> list[str]:
    """Every commit reachable from any ref (branches, tags, remote-tracking) that changed ``pathspec``."""
    return [c for c in _git(root, "log", "--all", "--format=%H", "--", pathspec).split() if c]


def merge_base(root: Path, a: str, b: str) -> str | None:
    """The best common ancestor of ``a`` and ``b``, or None when they share no history."""
    try:
        return _git(root, "merge-base", a, b) or None
    except MvcError:
        return None


def merge_file(ours: Path, base: Path, theirs: Path, labels: tuple[str, str, str]) -> int:
    """``git merge-file`` (a plain text three-way merge into ``ours``); returns the conflict count."""
    import subprocess

    args = ["git", "merge-file", "-L", labels[0], "-L", labels[1], "-L", labels[2], str(ours), str(base), str(theirs)]
    return subprocess.run(args, capture_output=True, check=False).returncode


def clone_for_reading(url: str, dest: Path) -> Path:
    """Clone ``url`` into ``dest`` without a work tree, every branch as a local branch (issue 3).

    Nothing is checked out and the index stays empty: models and versions are then read
    from git objects only, which is what ``mvc get`` needs. Tags come along.

    Raises:
        NotARepoError: ``url`` is not a git repository, or does not exist.
        RemoteError: git could not read it (network, authentication).
    """
    import git

    from mvc.errors import RemoteError

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        git.Git().execute(["git", "clone", "-q", "--no-checkout", str(url), str(dest)], env=env)
        # Branches other than the default one arrive as origin/*; make them local so the
        # resolver sees them as it would in the user's own clone.
        git.Git(dest).execute(
            ["git", "fetch", "-q", "--update-head-ok", "origin", "+refs/heads/*:refs/heads/*"], env=env
        )
    except git.exc.GitCommandError as exc:
        text = str(exc.stderr or exc).replace("stderr:", "").strip().strip("'\n ")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1].removeprefix("fatal: ") if lines else "git clone failed"
        if any(m in text for m in ("does not exist", "not a git repository", "not found", "No such file")):
            raise NotARepoError(
                f"{url} is not a git repository ({last})", hint="pass the path or URL of a git repository"
            ) from exc
        raise RemoteError(f"cannot clone {url}: {last}", hint="check the URL, the network and your git credentials") from exc
    return Path(dest).resolve()


# ---- gc: the pointers every kept ref names (issue 14) ----------------------------------


def kept_pointer_blobs(root: Path, *, suffix: str = ".dvc", names: Iterable[str] = ("dvc.lock",)) -> list[bytes]:
    """The text of every pointer file (``*suffix`` or a file called one of ``names``) that a
    kept commit or the index holds, each distinct blob once.

    Kept commits are those reachable from any ref (local and remote-tracking branches, tags,
    stash) or from ``HEAD`` and ``MERGE_HEAD``; the index contributes its staged entries,
    the unmerged stages of a conflict included. Work-tree files are not read here.
    """
    names = tuple(names)

    def wanted(path: str) -> bool:
        return path.endswith(suffix) or path.rsplit("/", 1)[-1] in names

    shas: set[str] = set()
    extra = ["MERGE_HEAD"] if git_path(root, "MERGE_HEAD").is_file() else []
    for line in _git(root, "rev-list", "--objects", "--all", *extra).splitlines():
        sha, _, path = line.partition(" ")
        if path and wanted(path):
            shas.add(sha)
    for line in _git(root, "ls-files", "-s", "-z", strip_newline_in_stdout=False).split("\0"):
        info, _, path = line.partition("\t")
        if path and wanted(path):
            shas.add(info.split()[1])
    return _read_blobs_by_sha(root, sorted(shas))


def _read_blobs_by_sha(root: Path, shas: list[str]) -> list[bytes]:
    """The bytes of the blobs ``shas`` (missing ones left out), through one ``git cat-file --batch``."""
    import subprocess

    if not shas:
        return []
    proc = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=root, input="".join(f"{s}\n" for s in shas).encode(), capture_output=True, check=False
    )
    out, pos, blobs = proc.stdout, 0, []
    for _ in shas:
        end = out.find(b"\n", pos)
        if end < 0:
            break
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3:  # "<sha> missing"
            continue
        size = int(header[2])
        if header[1] == b"blob":
            blobs.append(out[pos : pos + size])
        pos += size + 1
    return blobs

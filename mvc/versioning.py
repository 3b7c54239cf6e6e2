"""Making a new model version: track the weights with DVC, write the manifest and tensor index.

All-or-nothing: if any step fails, the previous pointer is restored (or the new one
removed), so a pointer never exists without its cache object and manifest.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mvc import dvcintegrity, dvcstore, files, gitstore, history, journal, lineage, pointer, tensorindex
from mvc.errors import ConflictError, CorruptFileError, LockedError, PathNotFoundError, UsageError
from mvc.manifest import DatasetRef, Manifest, Parent, TensorSummary
from mvc.pointer import Pointer
from mvc.progress import Progress
from mvc.workspace import Workspace, models


@dataclass(frozen=True)
class VersionRequest:
    """What the user asked to record with the weights."""

    name: str | None = None
    params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    datasets: tuple[DatasetRef, ...] = ()
    message: str = ""
    labels: tuple[str, ...] = ()
    step: int | None = None
    experiment: str | None = None
    extra: dict[str, Any] | None = None
    parents: tuple[Parent, ...] | None = None  # override (merges); default: the version at HEAD


@dataclass(frozen=True)
class Recorded:
    """Result of :func:`record`: the pointer as now on disk and whether it is a new version."""

    pointer: Pointer
    created: bool
    staged: tuple[str, ...]


def default_name(rel: str) -> str:
    """Model name from its path: ``models/bert.safetensors`` -> ``bert``, ``ckpt/`` -> ``ckpt``."""
    p = PurePosixPath(rel)
    name = p.name
    for suffix in WEIGHT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return p.stem or name


def check_name(name: str) -> None:
    """Refuse a model name that cannot be a ref, a tag or a line of output (issue 14).

    Raises:
        UsageError: empty, ``.``/``..``, a leading ``-`` or ``.``, or any of ``@ # : ! / \\``,
            whitespace or a control character (newlines, terminal escapes).
    """
    if (
        not name
        or name.startswith(("-", "."))
        or any(c in name for c in "@#:!/\\")
        or any(c.isspace() or not c.isprintable() for c in name)
    ):
        raise UsageError(
            f"model name {name!r} is not allowed (no spaces, control characters or @ # : ! / \\, no leading - or .)",
            hint="pick a name such as --name my-model",
        )


def _check_name(ws: Workspace, name: str, pointer_rel: str) -> None:
    check_name(name)
    for other in models(ws):
        assert other.manifest is not None
        if other.manifest.name == name and other.path != pointer_rel:
            raise UsageError(
                f"model name {name!r} is already used by {other.out}",
                hint="choose another name with --name",
            )


def _head_pointer(root: Path, path: str) -> Pointer | None:
    if gitstore.head_commit(root) is None:
        return None
    data = gitstore.read_blob(root, "HEAD", path)
    return pointer.parse(data, path) if data is not None else None


def _parent_of(ptr: Pointer | None) -> Parent | None:
    """The version a new version derives from (see :attr:`Pointer.effective`)."""
    if ptr is None or ptr.manifest is None or not ptr.md5:
        return None
    return Parent(hash=ptr.md5, version=ptr.version)


def _default_parents(ws: Workspace, path: str, head: Pointer | None) -> tuple[Parent, ...]:
    """The version HEAD records and, during an unfinished ``git merge``, the one MERGE_HEAD records.

    So ``mvc add`` while resolving a merge of two branches that both changed the model
    records a merge version with both parents (numbered max(parents) + 1, DESIGN.md).
    """
    root = ws.root
    found = [_parent_of(head)]
    if head is not None and found[0] is not None:
        found[0] = Parent(hash=found[0].hash, version=history.effective_number(ws, head))
    merging = gitstore.merge_head(root)
    if merging is not None:
        data = gitstore.read_blob(root, merging, path)
        found.append(_parent_of(pointer.parse(data, path)) if data is not None else None)
    unique: dict[str, Parent] = {}
    for parent in found:
        if parent is not None:
            unique.setdefault(parent.hash, parent)
    return tuple(unique.values())


def _summary(index: Any) -> TensorSummary | None:
    if index is None or not index.tensors:
        return None
    return TensorSummary(
        count=index.tensor_count,
        parameters=index.parameter_count,
        total_bytes=index.total_bytes,
        bytes_by_dtype=dict(index.bytes_by_dtype),
    )


WEIGHT_SUFFIXES = (".safetensors", ".weights.h5", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".h5", ".keras", ".gguf")


def record(ws: Workspace, path: str | Path, request: VersionRequest, *, progress: Progress | None = None) -> Recorded:
    """Track ``path`` and write its manifest: the heart of ``mvc add``.

    Raises:
        PathNotFoundError: the weights do not exist.
        UsageError: the path is outside the repo, inside .git/.dvc or a tracked directory
            model, a directory holding symlinks or no weight files; or the name is taken.
        ConflictError: the weights changed while they were being added.
        CorruptFileError: a weight file cannot be parsed.
        LockedError: another process is adding in this repository.
    """
    from mvc import formats

    root = ws.root
    given = Path(path).expanduser()
    full = given.resolve()
    if not full.exists():
        raise PathNotFoundError.weights(path)
    rel = ws.rel(full)
    if rel == "." or rel.split("/")[0] in (".git", ".dvc", ".mvc") or rel.endswith(pointer.SUFFIX):
        raise UsageError(f"{path} cannot be tracked as a model", hint="pass a weight file or a checkpoint directory")
    _refuse_inside_tracked_dir(root, rel, path)
    if full.is_dir():
        _check_directory(full, path)
    ptr_rel = pointer.pointer_path(rel)
    name = request.name or default_name(rel)

    with dvcstore.lock(root):
        current = pointer.read(root, ptr_rel)
        if current is not None and current.manifest is not None and request.name is None:
            name = current.manifest.name
        _check_name(ws, name, ptr_rel)
        head = _head_pointer(root, ptr_rel)
        saved = _snapshot(root, [ptr_rel, _gitignore_of(rel)])
        journal.begin(root, saved)
        new_sidecar: Path | None = None  # a sidecar this add wrote: removed again if the add fails
        try:
            before = _stamp(full)
            # DVC hashes and caches the file while the tensor index is built from the
            # same (page-cached) bytes in a second thread; both release the GIL.
            changed = ConflictError(
                f"{path} changed while adding",
                hint="wait until the weights are completely written, then run `mvc add` again",
            )
            with ThreadPoolExecutor(max_workers=1) as pool:
                index_job = pool.submit(formats.build_index, full, progress=_bytes_meter(rel, full, progress))
                out = dvcstore.add(root, rel)
                try:
                    index = index_job.result()
                except CorruptFileError:
                    if _stamp(full) != before:  # the bytes were still being written, not corrupt
                        _drop_if_corrupt(root, out.md5)
                        raise changed from None
                    raise
            journal.fault("add:after-dvc-add")
            if _stamp(full) != before:
                # The hash DVC recorded may describe bytes that exist nowhere (issue 14).
                _drop_if_corrupt(root, out.md5)
                raise changed
            if full.is_dir() and not index.tensors and not _has_weight_file(full):
                raise UsageError(f"{path} holds no weight files", hint="add the directory once it holds the weights")
            same = _same_version(out.md5, current, head)
            if same is not None:
                journal.end(root)
                _restore(root, saved)
                if same is head and (current is None or current.md5 != out.md5):
                    # Weights went back to what HEAD records: so does the pointer.
                    files.write_atomic(root / ptr_rel, gitstore.read_blob(root, "HEAD", ptr_rel) or b"")
                    gitstore.stage(root, [ptr_rel])
                return Recorded(pointer=same, created=False, staged=())
            if index.tensors and not (root / tensorindex.sidecar_path(out.md5)).exists():
                new_sidecar = root / tensorindex.sidecar_path(out.md5)
            adopted = _adopted(out.md5, current, head)
            if adopted is not None:
                # Weights a teammate re-added with plain `dvc add`: that is one version
                # already (numbered once, parent the version before); record it.
                version, parents = history.effective_number(ws, adopted), _effective(adopted).parents
            else:
                parents = request.parents if request.parents is not None else _default_parents(ws, ptr_rel, head)
                version = _next_number(ws, ptr_rel, parents, head)
            manifest = Manifest(
                name=name,
                version=version,
                hash=out.md5,
                created=files.utc_now(),
                author=gitstore.identity(root),
                message=request.message,
                parents=parents,
                format=index.format,
                framework=index.framework,
                params=dict(request.params or {}),
                metrics=dict(request.metrics or {}),
                datasets=request.datasets,
                code=lineage.code_ref(root),
                labels=request.labels,
                index=tensorindex.save(root, out.md5, index) if index.tensors else None,
                tensors=_summary(index),
                notes=tuple(index.notes),
                step=request.step,
                experiment=request.experiment,
                extra=dict(request.extra or {}),
            )
            manifest = tensorindex.bind(root, manifest)
            journal.fault("add:before-manifest")
            pointer.write_manifest(root, ptr_rel, manifest)
            journal.end(root)
        except BaseException:
            _restore(root, saved)
            if new_sidecar is not None:
                new_sidecar.unlink(missing_ok=True)
            journal.end(root)
            raise
    staged = [ptr_rel, _gitignore_of(rel)]
    if manifest.index:
        staged.append(manifest.index)
    staged += [p for p in setup_files(root) if p not in staged]
    try:
        gitstore.stage(root, [p for p in staged if (root / p).exists() or p == ptr_rel])
    except LockedError as exc:
        # The version is recorded whole (a training run must not lose it); say so, and how to finish.
        raise LockedError(
            f"{rel}: the new version is recorded in {ptr_rel} but not staged: "
            "the git index is locked by another process (.git/index.lock)",
            hint="when the other git command is done, run `mvc commit -m MSG` (or remove a stale .git/index.lock)",
        ) from exc
    written = pointer.read(root, ptr_rel)
    assert written is not None
    return Recorded(pointer=written, created=True, staged=tuple(staged))


def refresh_index(ws: Workspace, ptr: Pointer) -> Manifest:
    """The effective manifest of a pointer plain ``dvc add`` wrote, with its tensor index
    rebuilt from the weights (the work tree's when they still match, else the cache's).

    The sidecar is written (and staged with the next ``mvc add``); the pointer is not changed.
    """
    from mvc import formats

    manifest = ptr.effective
    assert manifest is not None
    index = tensorindex.load(ws.root, ptr.md5)
    if index is None:
        full = ws.root / ptr.out
        if full.exists() and not ptr.isdir and dvcstore.file_md5(full) == ptr.md5:
            index = formats.build_index(full)
        else:
            index = tensorindex.build_from_cache(ws.root, ptr.md5, PurePosixPath(ptr.out).name)
    if index is None or not index.tensors:
        return manifest
    rel = tensorindex.save(ws.root, ptr.md5, index)
    return tensorindex.bind(ws.root, manifest.evolve(index=rel, tensors=_summary(index), format=index.format, framework=index.framework))


# What `mvc init` writes (the merge driver's .gitattributes line, DVC's and mvc's set-up).
SETUP_FILES = (".gitattributes", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".mvc/config.json")
MERGE_ATTRIBUTE = "*.dvc merge=mvc"


CONFIG_STAGED = ".dvc/tmp/mvc-config-staged"  # the .dvc/config blob mvc itself staged last


def stage_config(root: Path) -> None:
    """Stage ``.dvc/config`` after mvc changed it (a remote added, removed or made default), and
    remember the staged blob: the next ``mvc commit`` carries exactly that change, while edits
    the user stages by hand stay the user's to commit (issue 14)."""
    gitstore.stage(root, [".dvc/config"])
    blob = gitstore.staged_blob(root, ".dvc/config")
    if blob is not None:
        files.write_atomic(root / CONFIG_STAGED, blob.encode())


def _config_staged_by_mvc(root: Path) -> bool:
    marker = root / CONFIG_STAGED
    return marker.is_file() and marker.read_text().strip() == gitstore.staged_blob(root, ".dvc/config")


def setup_files(root: Path) -> list[str]:
    """mvc's own set-up files that HEAD does not have yet: committed with the next version (issue 14).

    ``.gitattributes`` counts while HEAD lacks the merge-driver line (clones need it);
    the others only while HEAD lacks them altogether, so later edits (a remote added to
    ``.dvc/config``) stay the user's to commit.
    """
    head = gitstore.head_commit(root) is not None
    found = []
    for rel in SETUP_FILES:
        if not (root / rel).is_file():
            continue
        at_head = gitstore.read_blob(root, "HEAD", rel) if head else None
        if rel == ".gitattributes":
            if MERGE_ATTRIBUTE in (root / rel).read_text(errors="replace").splitlines() and (
                at_head is None or MERGE_ATTRIBUTE not in at_head.decode(errors="replace").splitlines()
            ):
                found.append(rel)
        elif at_head is None or (rel == ".dvc/config" and _config_staged_by_mvc(root)):
            found.append(rel)
    return found


def _next_number(ws: Workspace, ptr_rel: str, parents: tuple[Parent, ...], head: Pointer | None) -> int:
    """max(parents) + 1, above the branch's head version; if an older version on this branch
    already has that number (after ``git revert``), the branch's highest + 1 (issue 14)."""
    # Parents from other models (named) do not count towards this one's numbers.
    known = [p.version for p in parents if p.name is None]
    head_parent = _parent_of(head)
    if head_parent is not None:
        known.append(history.effective_number(ws, head) if head is not None else head_parent.version)
    number = max(known, default=0) + 1
    if gitstore.head_commit(ws.root) is not None and (ws.root / ptr_rel).exists():
        taken = {rec.version for rec in history.versions(ws, "", path=ptr_rel)}
        if number in taken:
            number = max(taken) + 1
    return number


def _effective(ptr: Pointer) -> Manifest:
    manifest = ptr.effective
    assert manifest is not None
    return manifest


def _drop_if_corrupt(root: Path, md5: str) -> None:
    """Remove cache objects of ``md5`` whose bytes do not match their name (a file that
    changed between DVC's hash and its copy into the cache)."""
    for check in dvcintegrity.check_cache(root, md5):
        if check.state == "corrupt":
            dvcintegrity.delete_cache_object(root, check.oid)


def _adopted(md5: str, current: Pointer | None, head: Pointer | None) -> Pointer | None:
    """The pointer plain ``dvc add`` wrote for exactly these weights, if any."""
    for known in (current, head):
        if known is not None and known.outside_mvc and known.md5 == md5:
            return known
    return None


_HEADER_FORMATS = ("safetensors", "gguf", "npz")  # formats whose reader opens only a header


def check_readable(paths: list[str | Path]) -> None:
    """Open the header of every safetensors, gguf and npz file among ``paths`` (and in the
    directories among them), so ``mvc add A B`` refuses a damaged ``B`` before ``A`` is
    recorded: all or nothing, as ``git add`` does.

    Raises:
        CorruptFileError: a weight file is damaged.
    """
    from mvc.formats import detect, reader

    for given in paths:
        full = Path(given).expanduser()
        found = [(full, detect.sniff(full))] if full.is_file() else [(f.path, f.format) for f in detect.walk(full)]
        for file, fmt in found:
            if fmt in _HEADER_FORMATS:
                with reader.open_file(file, fmt, str(given) if file == full else f"{given}/{file.relative_to(full)}"):
                    pass


def _refuse_inside_tracked_dir(root: Path, rel: str, given: str | Path) -> None:
    """Refuse a file inside a directory model: its pointer would be rewritten (issue 14)."""
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts)):
        outer = "/".join(parts[:i])
        if (root / pointer.pointer_path(outer)).is_file():
            raise UsageError(
                f"{given} is inside the tracked directory model {outer}",
                hint=f"add the whole directory: `mvc add {outer}`",
            )


def _check_directory(full: Path, given: str | Path) -> None:
    """Refuse a directory model holding symlinks (they would copy outside files) or nothing."""
    files = []
    for entry in sorted(full.rglob("*")):
        if entry.is_symlink():
            raise UsageError(
                f"{given} holds a symlink: {entry.relative_to(full).as_posix()}",
                hint="replace the link with the file it points to, or remove it, then add again",
            )
        if entry.is_file():
            files.append(entry)
    if not files:
        raise UsageError(f"{given} is an empty directory", hint="add the directory once it holds the weights")


def _has_weight_file(full: Path) -> bool:
    return any(f.is_file() and f.name.endswith(WEIGHT_SUFFIXES) for f in full.rglob("*"))


def _stamp(full: Path) -> list[tuple[str, int, int, int]]:
    """(path, size, mtime, inode) of the weights, to see whether they change while being added."""
    files = [full] if full.is_file() else sorted(f for f in full.rglob("*") if f.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append((f.as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return out


def _bytes_meter(task: str, full: Path, progress: Progress | None) -> Any:
    """Adapt mvc's ``progress(task, advance, total)`` to the formats layer's ``progress(n)``."""
    if progress is None:
        return None
    total = full.stat().st_size if full.is_file() else sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
    return lambda n: progress(task, n, total)


def _gitignore_of(rel: str) -> str:
    parent = PurePosixPath(rel).parent
    return (parent / ".gitignore").as_posix() if str(parent) != "." else ".gitignore"


def _same_version(md5: str, current: Pointer | None, head: Pointer | None) -> Pointer | None:
    """The pointer that already records ``md5`` with a trustworthy manifest (unchanged weights)."""
    for known in (current, head):
        if known is not None and known.manifest is not None and not known.outside_mvc and known.md5 == md5:
            return known
    return None


def _snapshot(root: Path, paths: list[str]) -> dict[str, bytes | None]:
    """The current bytes of ``paths`` (None for missing ones), to undo a failed add."""
    saved: dict[str, bytes | None] = {}
    for rel in paths:
        try:
            saved[rel] = (root / rel).read_bytes()
        except FileNotFoundError:
            saved[rel] = None
    return saved


def _restore(root: Path, saved: dict[str, bytes | None]) -> None:
    """Put files back as :func:`_snapshot` saw them (removing ones that did not exist)."""
    for rel, data in saved.items():
        with contextlib.suppress(OSError):
            if data is None:
                (root / rel).unlink(missing_ok=True)
            else:
                files.write_atomic(root / rel, data)


@dataclass(frozen=True)
class CommitResult:
    """The commit that recorded model changes."""

    commit: str
    paths: tuple[str, ...]


def commit_models(ws: Workspace, message: str) -> CommitResult:
    """Commit the model changes (pointers, their .gitignore files, mvc's own files) and nothing else.

    Raises:
        UsageError: empty message.
        ConflictError: no model change to commit.
    """
    if not message.strip():
        raise UsageError("the commit message is empty", hint='pass one with -m "what changed"')
    paths = [p for p in gitstore.changed_paths(ws.root) if _mvc_owned(p)]
    paths += [p for p in setup_files(ws.root) if p not in paths]  # issue 14: .gitattributes too
    if not paths:
        raise ConflictError("no model changes to commit", hint="record weights with `mvc add PATH` first")
    gitstore.stage(ws.root, paths)
    sha = gitstore.commit(ws.root, message, only=paths)
    return CommitResult(commit=sha, paths=tuple(paths))


def _mvc_owned(path: str) -> bool:
    """Pointers, the .gitignore files beside them, and what mvc keeps under ``.mvc/`` (settings,
    tensor indexes, eval results); a changed ``.dvc/config`` is the user's to commit (issue 14)."""
    return (path.endswith((".dvc", ".gitignore")) and not path.startswith(".dvc/")) or path.startswith(".mvc/")

"""Making a new model version: track the weights with DVC, write the manifest and tensor index.

All-or-nothing: if any step fails, the previous pointer is restored (or the new one
removed), so a pointer never exists without its cache object and manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mvc import dvcstore, gitstore, lineage, pointer, tensorindex
from mvc.errors import PathNotFoundError, UsageError
from mvc.manifest import CodeRef, DatasetRef, Manifest, Parent, TensorSummary
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
    for suffix in (".safetensors", ".weights.h5", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".h5", ".keras", ".gguf"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return p.stem or name


def _check_name(ws: Workspace, name: str, pointer_rel: str) -> None:
    if not name or any(c in name for c in "@#:!/ \t") or name.startswith("-"):
        raise UsageError(
            f"model name {name!r} is not allowed (no spaces or @ # : ! /, no leading -)",
            hint="pick a name such as --name my-model",
        )
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
    """The version a new version derives from; a version added by plain dvc counts as one more."""
    if ptr is None or ptr.manifest is None or not ptr.md5:
        return None
    bump = 1 if ptr.outside_mvc else 0
    return Parent(hash=ptr.md5, version=ptr.manifest.version + bump)


def _default_parents(root: Path, path: str, head: Pointer | None) -> tuple[Parent, ...]:
    """The version HEAD records and, during an unfinished ``git merge``, the one MERGE_HEAD records.

    So ``mvc add`` while resolving a merge of two branches that both changed the model
    records a merge version with both parents (numbered max(parents) + 1, DESIGN.md).
    """
    found = [_parent_of(head)]
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


def record(ws: Workspace, path: str | Path, request: VersionRequest, *, progress: Progress | None = None) -> Recorded:
    """Track ``path`` and write its manifest: the heart of ``mvc add``.

    Raises:
        PathNotFoundError: the weights do not exist.
        UsageError: the path is outside the repo or inside .git/.dvc, or the name is taken.
        CorruptFileError: a weight file cannot be parsed.
        LockedError: another process is adding in this repository.
    """
    from mvc import formats

    root = ws.root
    full = Path(path).expanduser().resolve()
    if not full.exists():
        raise PathNotFoundError(f"{path}: no such file or directory", hint="check the path of the weights")
    rel = ws.rel(full)
    if rel == "." or rel.split("/")[0] in (".git", ".dvc", ".mvc") or rel.endswith(pointer.SUFFIX):
        raise UsageError(f"{path} cannot be tracked as a model", hint="pass a weight file or a checkpoint directory")
    ptr_rel = pointer.pointer_path(rel)
    name = request.name or default_name(rel)

    with dvcstore.lock(root):
        current = pointer.read(root, ptr_rel)
        if current is not None and current.manifest is not None and request.name is None:
            name = current.manifest.name
        _check_name(ws, name, ptr_rel)
        head = _head_pointer(root, ptr_rel)
        saved = _snapshot(root, [ptr_rel, _gitignore_of(rel)])
        try:
            # DVC hashes and caches the file while the tensor index is built from the
            # same (page-cached) bytes in a second thread; both release the GIL.
            with ThreadPoolExecutor(max_workers=1) as pool:
                index_job = pool.submit(formats.build_index, full, progress=_bytes_meter(rel, full, progress))
                out = dvcstore.add(root, rel)
                index = index_job.result()
            same = _same_version(out.md5, current, head)
            if same is not None:
                _restore(root, saved)
                if same is head and (current is None or current.md5 != out.md5):
                    # Weights went back to what HEAD records: so does the pointer.
                    pointer.write_atomic(root / ptr_rel, gitstore.read_blob(root, "HEAD", ptr_rel) or b"")
                    gitstore.stage(root, [ptr_rel])
                return Recorded(pointer=same, created=False, staged=())
            parents = request.parents if request.parents is not None else _default_parents(root, ptr_rel, head)
            manifest = Manifest(
                name=name,
                # Above the branch's head version too: a merge of old versions (v1 + v2
                # while HEAD is v5) must not reuse a number this branch already has.
                # Parents from other models (named) do not count towards this one's numbers.
                version=max([p.version for p in parents if p.name is None] + [p.version for p in [_parent_of(head)] if p], default=0) + 1,
                hash=out.md5,
                created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
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
            pointer.write_manifest(root, ptr_rel, manifest)
        except BaseException:
            _restore(root, saved)
            raise
    staged = [ptr_rel, _gitignore_of(rel)]
    if manifest.index:
        staged.append(manifest.index)
    gitstore.stage(root, [p for p in staged if (root / p).exists() or p == ptr_rel])
    written = pointer.read(root, ptr_rel)
    assert written is not None
    return Recorded(pointer=written, created=True, staged=tuple(staged))


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
                pointer.write_atomic(root / rel, data)

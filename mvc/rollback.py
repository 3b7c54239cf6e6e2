"""Putting an older version's weights into the work tree without moving the branch.

A rollback is remembered in ``.dvc/tmp/mvc-rollback.json`` (DVC ignores ``.dvc/tmp``; git
never sees it) with the file's size and mtime, so ``mvc status`` can say "rolled back to vN"
without re-hashing the weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mvc import documents, dvcstore, files, pointer
from mvc.errors import ConflictError
from mvc.pointer import Pointer
from mvc.refs import Resolved
from mvc.workspace import Workspace

STATE_FILE = ".dvc/tmp/mvc-rollback.json"


@dataclass(frozen=True)
class Rollback:
    """A model whose work-tree weights are an older version than its pointer records."""

    pointer: str
    version: int
    hash: str
    ref: str
    stamp: tuple[int, int]  # (size, mtime_ns) of the weights when rolled back


def _stamp(path: Path) -> tuple[int, int]:
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file()]
        return (sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0))
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _load(root: Path) -> dict[str, dict]:
    try:
        return documents.load_json((root / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save(root: Path, state: dict[str, dict]) -> None:
    files.write_atomic(root / STATE_FILE, json.dumps(state, indent=1).encode())


def current(ws: Workspace, ptr_path: str, out: str) -> Rollback | None:
    """The rollback in effect for ``ptr_path``, if its weights are still the rolled-back ones."""
    entry = _load(ws.root).get(ptr_path)
    full = ws.root / out
    if entry is None or not full.exists():
        return None
    rb = Rollback(pointer=ptr_path, version=entry["version"], hash=entry["hash"], ref=entry["ref"], stamp=tuple(entry["stamp"]))
    return rb if _stamp(full) == rb.stamp else None


def clear(ws: Workspace, ptr_paths: list[str]) -> None:
    """Forget rollbacks of ``ptr_paths`` (the weights are back to what the pointer records)."""
    state = _load(ws.root)
    if any(p in state for p in ptr_paths):
        for p in ptr_paths:
            state.pop(p, None)
        _save(ws.root, state)


def refuse_unsaved(ws: Workspace, ptrs: list[Pointer]) -> None:
    """Refuse to overwrite work-tree weights that hold changes no version records.

    Weights of a recorded version (a rollback in effect, or another branch's version
    after ``git checkout``) are in the cache and may be replaced.

    Raises:
        ConflictError: some weights are modified and their content is in no cache.
    """
    candidates = [p for p in ptrs if (ws.root / p.out).exists() and current(ws, p.path, p.out) is None]
    if not candidates:
        return
    unsaved = set(dvcstore.unsaved_outputs(ws.root, [p.path for p in candidates]))
    outs = [p.out for p in candidates if p.path in unsaved]
    if outs:
        raise ConflictError(
            f"{', '.join(outs)} {'has' if len(outs) == 1 else 'have'} changes that no version records",
            hint=f"record them first with `mvc add {outs[0]}`, or pass --force to discard them",
        )


def place(ws: Workspace, res: Resolved, *, force: bool = False) -> Rollback:
    """Copy the (cached) weights of ``res`` over the model's work-tree weights, atomically.

    The branch and the pointer stay as they are; the rollback is remembered so
    ``mvc status`` can show it.

    Args:
        ws: the repository.
        res: the version to put in the work tree (its weights must be in the cache).
        force: overwrite work-tree weights even when they hold unrecorded changes.

    Returns:
        The rollback now in effect.

    Raises:
        ConflictError: the work-tree weights hold changes no version records (without ``force``).
        MissingObjectError: the weights of ``res`` are not in the local cache.
    """
    root = ws.root
    work = pointer.read(root, res.pointer.path)
    target = root / (work.out if work else res.pointer.out)
    if work is not None and not force:
        refuse_unsaved(ws, [work])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mvc-checkout-", dir=target.parent))
    try:
        staged = dvcstore.export(root, res.hash, tmp / target.name, verify=False)
        if target.is_dir():
            trash = tmp / ".old"
            os.replace(target, trash)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rb = Rollback(pointer=res.pointer.path, version=res.version, hash=res.hash, ref=res.ref, stamp=_stamp(target))
    state = _load(root)
    state[rb.pointer] = {"version": rb.version, "hash": rb.hash, "ref": rb.ref, "stamp": list(rb.stamp)}
    with contextlib.suppress(OSError):
        _save(root, state)
    return rb

"""An undo record for ``mvc add``, so a process killed half-way leaves no half-written pointer.

DVC rewrites a pointer in place (truncate, then write): ``kill -9`` in between leaves a
0-byte ``.dvc`` file that every mvc and dvc command then refuses (issue 14). Before DVC
touches anything, :func:`begin` saves the bytes an add may change in
``.dvc/tmp/mvc-journal-<pid>.json`` (git and DVC ignore ``.dvc/tmp``); :func:`end`
drops it. The next mvc command finding the journal of a dead process puts the saved
bytes back (:func:`recover`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
from pathlib import Path

from mvc import documents
from mvc.files import write_atomic

JOURNAL_DIR = ".dvc/tmp"
PREFIX = "mvc-journal-"
FAULT_ENV = "MVC_FAULT"  # test hook: the step at which the process kills itself (SIGKILL)


def _path(root: Path, pid: int) -> Path:
    return root / JOURNAL_DIR / f"{PREFIX}{pid}.json"


def begin(root: Path, saved: dict[str, bytes | None]) -> None:
    """Remember ``saved`` (path -> bytes, None for absent) until :func:`end`."""
    doc = {rel: (base64.b64encode(data).decode() if data is not None else None) for rel, data in saved.items()}
    write_atomic(_path(root, os.getpid()), json.dumps({"pid": os.getpid(), "files": doc}).encode())


def end(root: Path) -> None:
    """The operation finished (or was undone in-process): forget the undo record."""
    _path(root, os.getpid()).unlink(missing_ok=True)


def fault(step: str) -> None:
    """Die here like ``kill -9`` when ``$MVC_FAULT`` names ``step`` (crash-safety tests only)."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (so its temp files and journal are still its own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(root: Path) -> list[str]:
    """Undo the adds of processes that died half-way; return the paths put back."""
    folder = root / JOURNAL_DIR
    if not folder.is_dir():
        return []
    restored: list[str] = []
    for entry in sorted(folder.glob(f"{PREFIX}*.json")):
        try:
            doc = documents.load_json(entry.read_bytes())
            pid = int(doc["pid"])
            files = dict(doc["files"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        if pid == os.getpid() or alive(pid):
            continue
        for rel, data in files.items():
            target = root / rel
            with contextlib.suppress(OSError):
                if data is None:
                    target.unlink(missing_ok=True)
                else:
                    write_atomic(target, base64.b64decode(data))
                restored.append(rel)
        with contextlib.suppress(OSError):
            entry.unlink()
    return restored

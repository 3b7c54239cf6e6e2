"""The one owner of atomic file writes and of timestamps.

Every file mvc writes (pointers, settings, indexes, journals, signatures, weights the
callbacks save) goes through a temp file beside the target and ``os.replace``: a crash
mid-write never leaves half a file where mvc or the user reads it. The file gets the
permissions the umask gives a new file (``mkstemp`` makes it 0600, which teammates
sharing a work tree could not read).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created), flushed to disk before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    replace_atomic(path, write)


def replace_atomic(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    The temp file is removed on any failure (Ctrl-C included); ``path`` is untouched then.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


TEMP_SUFFIX = ".tmp"
"""The suffix of :func:`replace_atomic`'s temp files (``.<name>.<random>.tmp``); gc removes stale ones."""


def umask() -> int:
    """The process umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def utc_now() -> str:
    """Now, as mvc records every time: UTC, whole seconds, ISO 8601 with ``Z`` (``2026-12-01T03:10:21Z``)."""
    return utc_iso(dt.datetime.now(dt.UTC).timestamp())


def utc_iso(timestamp: float) -> str:
    """A POSIX ``timestamp`` in :func:`utc_now`'s form."""
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).isoformat().replace("+00:00", "Z")

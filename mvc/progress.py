"""The progress-callback contract between the library and the CLI.

The library never draws anything: long operations accept ``progress=`` and call
it as work advances. The CLI (``mvc/cli/_output.py``) turns the calls into a rich
progress bar on stderr.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    """Receives progress reports.

    ``task`` names one unit of work (a file being transferred or hashed);
    ``total`` is its size in bytes when known, ``advance`` the bytes done since
    the previous call for that task.
    """

    def __call__(self, task: str, advance: int, total: int | None) -> None: ...


def no_progress(task: str, advance: int, total: int | None) -> None:
    """A progress callback that ignores every report."""


def models_label(labels: list[str]) -> str:
    """How a transfer's bar names what moves, from the versions' labels (``NAME vN``).

    ``clf v3`` for one version, ``2 versions of clf`` for several of one model,
    ``3 models`` otherwise.
    """
    unique = list(dict.fromkeys(labels))
    if len(unique) <= 1:
        return unique[0] if unique else "weights"
    models = {label.rsplit(" v", 1)[0] for label in unique}
    if len(models) == 1:
        return f"{len(unique)} versions of {models.pop()}"
    return f"{len(models)} models" if len(models) == len(unique) else f"{len(unique)} versions of {len(models)} models"


class ByteMeter:
    """One transfer as one byte count: a label, a total known before any byte moves.

    DVC and :mod:`mvc.transfer` report bytes per file, as each file's copy advances;
    the meter forwards them to ``progress`` under ``label`` alone, so the bar shows one
    line for the command, never passes ``total`` (a retried part is not counted twice
    past it) and reaches it exactly on success (:meth:`finish`: bytes a reflink or an
    already-present object moved without reporting). Thread-safe: worker threads report.
    """

    def __init__(self, progress: Progress | None, label: str, total: int) -> None:
        self._progress = progress
        self.label = label
        self.total = max(0, total)
        self.done = 0
        self._lock = threading.Lock()
        if progress is not None and self.total:
            progress(label, 0, self.total)

    def __call__(self, task: str, advance: int, total: int | None) -> None:
        """Count ``advance`` bytes of any file of the transfer (``task`` and ``total`` are the file's)."""
        if self._progress is None:
            return
        with self._lock:
            step = min(advance, self.total - self.done)
            if step <= 0:
                return
            self.done += step
            self._progress(self.label, step, self.total)

    def finish(self) -> None:
        """The transfer succeeded: the bar reaches its total."""
        self(self.label, self.total - self.done, self.total)

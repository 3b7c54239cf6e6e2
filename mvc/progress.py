"""The progress-callback contract between the library and the CLI.

The library never draws anything: long operations accept ``progress=`` and call
it as work advances. The CLI (``mvc/cli/_output.py``) turns the calls into a rich
progress bar on stderr.
"""

from __future__ import annotations

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

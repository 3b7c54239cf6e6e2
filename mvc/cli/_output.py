"""The one place that writes to the terminal: data to stdout, everything else to stderr.

JSON comes from one serializer; people get rich tables (plain text when stdout is
not a TTY); progress bars live on stderr and only when it is a TTY.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mvc.errors import counted


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def to_json(data: Any) -> str:
    """The JSON text of API results (dataclasses, lists of them, plain values)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    elif isinstance(data, list):
        data = [dataclasses.asdict(d) if dataclasses.is_dataclass(d) and not isinstance(d, type) else d for d in data]
    return json.dumps(data, default=_default, indent=2, sort_keys=False)


def emit_json(data: Any) -> None:
    """Print API results as JSON on stdout."""
    sys.stdout.write(to_json(data) + "\n")


def out(text: str = "") -> None:
    """Print a line of data on stdout."""
    sys.stdout.write(text + "\n")


_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Turn the notes on stderr off (``--quiet``) or back on (each invocation starts on)."""
    _state["quiet"] = quiet


def note(text: str) -> None:
    """Print a note for people on stderr (nothing with ``--quiet``)."""
    if not _state["quiet"]:
        sys.stderr.write(text + "\n")


plural = counted  # ``1 file``, ``2 files``: the one owner is mvc.errors.counted


def silence_stdout() -> None:
    """Point stdout at /dev/null after the reader went away (``mvc log | head``).

    Later writes, and the flush at exit, then cannot raise BrokenPipeError again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (CliRunner): nothing to redirect
        pass


def error(message: str, hint: str | None) -> None:
    """Print ``error: ...`` and ``hint: ...`` on stderr."""
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def short(md5: str) -> str:
    """A content hash shortened for people (``.dir`` kept)."""
    return md5[:8] + (".dir" if md5.endswith(".dir") else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    """Print a table on stdout: rich when stdout is a TTY, tab-separated otherwise."""
    if not sys.stdout.isatty():
        out("\t".join(headers))
        for row in rows:
            out("\t".join("" if c is None else str(c) for c in row))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_edge=False, header_style="bold")
    for h in headers:
        t.add_column(h)
    for row in rows:
        t.add_row(*("" if c is None else str(c) for c in row))
    Console(no_color="NO_COLOR" in os.environ).print(t)


def progress_enabled(*, quiet: bool = False, json_output: bool = False) -> bool:
    """Bars only for people: stderr is a TTY, not --quiet/--json, and MVC_NO_PROGRESS unset."""
    return not (quiet or json_output or os.environ.get("MVC_NO_PROGRESS") == "1" or not sys.stderr.isatty())


@contextmanager
def progress_bar(description: str, *, enabled: bool, unit: str = "bytes") -> Iterator[Any]:
    """A rich progress bar on stderr (of bytes, or of ``unit`` counted); yields the callback the library calls.

    The callback receives ``(task, advance, total)``; all tasks feed one bar, labelled
    ``DESCRIPTION TASK`` (the task that reported last), whose total is the sum of the
    task sizes and which never shows more than it. The bar appears with the first
    report, so a command that moves nothing shows none.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    amounts = (
        (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        if unit == "bytes"
        else (MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn())
    )

    lock = threading.Lock()
    sizes: dict[str, int] = {}  # each task's total, of the tasks that reported one
    done: dict[str, int] = {}
    finished = [0]  # bytes of finished tasks that a later report named again
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *amounts,
        console=Console(stderr=True, no_color="NO_COLOR" in os.environ),
        transient=True,
        # Data goes to stdout untouched; libraries' raw escape codes are not re-rendered.
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        task_id = bar.add_task(description, total=None, visible=False)

        def report(task: str, advance: int, total: int | None) -> None:
            with lock:
                if total is not None and sizes.get(task) != total:
                    if task in sizes and done.get(task, 0) >= sizes[task]:  # a finished task named again: a new one
                        finished[0] += sizes.pop(task)
                        done.pop(task)
                    sizes[task] = total
                done[task] = done.get(task, 0) + advance
                capped = finished[0] + sum(min(n, sizes[t]) if t in sizes else n for t, n in done.items())
                grand = finished[0] + sum(sizes.values()) if sizes else None
                bar.update(task_id, total=grand, completed=capped, description=f"{description} {task}", visible=True)

        yield report


def size(n: int) -> str:
    """A byte count for people: ``512 B``, ``3.2 MiB``, ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns

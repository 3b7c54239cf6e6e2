"""build_index: the tensor index of a weight file or a model directory."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mvc.errors import PathNotFoundError
from mvc.formats import (
    detect,
    gguf_format,
    npz_format,
    opaque,
    safetensors_format,
    torch_format,
)
from mvc.formats.base import FileIndex
from mvc.formats.index import TensorIndex, TensorInfo

_INDEXERS = {
    "safetensors": safetensors_format.index_file,
    "npz": npz_format.index_file,
    "gguf": gguf_format.index_file,
    "torch": torch_format.index_file,
}


class _FileMeter:
    """Forwards one file's progress, never past its size, and tops it up at the end.

    Format indexers report the bytes they hash; this makes every file count exactly
    its size, whatever the format (headers, padding, compressed members).
    """

    def __init__(self, progress: Callable[[int], None] | None, size: int) -> None:
        self.progress, self.left = progress, size
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            n = min(n, self.left)
            self.left -= n
        if n and self.progress is not None:
            self.progress(n)

    def finish(self) -> None:
        self(self.left)


def index_file(
    path: Path, fmt: str, *, label: str, progress: Callable[[int], None] | None, threads: int | None
) -> FileIndex:
    """Index one file of a known (sniffed) format."""
    meter = _FileMeter(progress, path.stat().st_size)
    indexer = _INDEXERS.get(fmt)
    result = indexer(path, label=label, progress=meter, threads=threads) if indexer else opaque.index_file(path)
    meter.finish()
    return result


def build_index(
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> TensorIndex:
    """Build the tensor index of a weight file or a model directory.

    A directory (a sharded checkpoint) is walked recursively: every weight file is
    indexed, in path order, each tensor recording its ``file``; a tensor name found
    in several files is prefixed with ``"<file>:"``. Other files (config.json,
    tokenizers, hidden files) hold no tensors and are ignored.

    Args:
        path: a weight file or a model directory.
        progress: called with byte counts as the weights are read; the counts add up
            to the size of the file, or of all regular files under the directory
            (ignored and opaque files are counted when skipped). It may be called
            from worker threads, one call at a time.
        threads: hashing threads per file; None picks a default (up to 4), 1 hashes
            in the calling thread.

    Returns:
        The index; formats mvc cannot read come back as ``opaque`` with a note.

    Raises:
        PathNotFoundError: ``path`` does not exist.
        CorruptFileError: a weight file is damaged (truncated, bad header).
    """
    path = Path(path)
    if path.is_dir():
        return _index_directory(path, progress, threads)
    if not path.exists():
        raise PathNotFoundError(f"{path} does not exist", "check the path of the weights", path=str(path))
    result = index_file(path, detect.sniff(path), label=path.name, progress=progress, threads=threads)
    return TensorIndex(result.format, result.framework, tuple(result.tensors), tuple(result.notes))


def qualified_names(files: list[tuple[str, list[str]]]) -> dict[tuple[str, str], str]:
    """(file, name) -> name in the directory index: prefixed with ``file:`` if repeated."""
    counts = Counter(name for _, names in files for name in names)
    return {(rel, name): f"{rel}:{name}" if counts[name] > 1 else name for rel, names in files for name in names}


def _index_directory(root: Path, progress: Callable[[int], None] | None, threads: int | None) -> TensorIndex:
    results: list[tuple[str, FileIndex]] = []
    for f in detect.walk(root):
        if f.format is None:
            if progress is not None and f.size:
                progress(f.size)
            continue
        results.append((f.rel, index_file(f.path, f.format, label=f.rel, progress=progress, threads=threads)))
    names = qualified_names([(rel, [t.name for t in r.tensors]) for rel, r in results])
    tensors = [
        TensorInfo(names[(rel, t.name)], t.dtype, t.shape, t.nbytes, t.hash, rel)
        for rel, r in results
        for t in r.tensors
    ]
    notes = [f"{rel}: {note}" for rel, r in results for note in r.notes]
    if not results:
        notes.append("no weight files found in the directory; versioned as a blob")
    frameworks = {r.framework for _, r in results if r.framework}
    framework = frameworks.pop() if len(frameworks) == 1 else None
    return TensorIndex(detect.combine([r.format for _, r in results]), framework, tuple(tensors), tuple(notes))

"""open_tensors: streaming, one-tensor-at-a-time access to any readable model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mvc.errors import MvcError, PathNotFoundError, UsageError
from mvc.formats import detect
from mvc.formats.base import TensorReader
from mvc.formats.build import qualified_names
from mvc.formats.gguf_format import GgufReader
from mvc.formats.index import TensorSpec
from mvc.formats.npz_format import NpzReader
from mvc.formats.safetensors_format import SafetensorsReader
from mvc.formats.torch_format import TorchReader

if TYPE_CHECKING:
    import numpy as np

_READERS: dict[str, type[TensorReader]] = {
    "safetensors": SafetensorsReader,
    "npz": NpzReader,
    "gguf": GgufReader,
    "torch": TorchReader,
}
OPAQUE_HINT = "only safetensors, npz, torch and gguf files have readable tensors"


def open_file(path: Path, fmt: str, label: str) -> TensorReader:
    """A reader for one file of a sniffed format; UsageError for opaque ones."""
    reader = _READERS.get(fmt)
    if reader is None:
        raise UsageError(f"cannot read tensors of an opaque blob: {label}", OPAQUE_HINT)
    return reader(path, label)


def open_tensors(path: Path) -> TensorReader:
    """Open a weight file or model directory for streaming tensor reads.

    Use as a context manager::

        with open_tensors(path) as reader:
            for name in reader.names():
                array = reader.read(name, as_float32=True)

    Directory models expose every tensor of their readable weight files, named as in
    :func:`build_index` (``"<file>:<name>"`` when a name repeats across files);
    unreadable files inside (opaque, unsafe pickles) are skipped and listed in
    ``reader.notes``.

    Raises:
        PathNotFoundError: ``path`` does not exist.
        UsageError: the file is an opaque blob (or a checkpoint that cannot be loaded
            safely), so it has no readable tensors.
        CorruptFileError: the file is damaged.
    """
    path = Path(path)
    if path.is_dir():
        return DirectoryReader(path)
    if not path.exists():
        raise PathNotFoundError(f"{path} does not exist", "check the path of the weights", path=str(path))
    return open_file(path, detect.sniff(path), path.name)


class DirectoryReader(TensorReader):
    """The readable weight files of a directory, behind one set of names."""

    format = "directory"

    def __init__(self, root: Path) -> None:
        super().__init__(root, root.name)
        self.notes: list[str] = []
        self._readers: dict[str, TensorReader] = {}
        try:
            for f in detect.walk(root):
                if f.format is None:
                    continue
                try:
                    self._readers[f.rel] = open_file(f.path, f.format, f.rel)
                except UsageError as exc:
                    self.notes.append(f"{f.rel}: {exc.message}; skipped")
        except BaseException:
            self.close()
            raise
        names = qualified_names([(rel, r.stored_order()) for rel, r in self._readers.items()])
        self._where: dict[str, tuple[str, str]] = {q: key for key, q in names.items()}
        self._specs = {}
        for q, (rel, name) in self._where.items():
            s = self._readers[rel].info(name)
            self._specs[q] = TensorSpec(q, s.dtype, s.shape, s.nbytes, rel)
        formats = {r.format for r in self._readers.values()}
        self.format = formats.pop() if len(formats) == 1 else ("mixed" if formats else "opaque")

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return self._specs

    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        rel, name = self._where[spec.name]
        return self._readers[rel].read(name, as_float32=as_float32)

    def close(self) -> None:
        errors: list[BaseException] = []
        for reader in self._readers.values():
            try:
                reader.close()
            except (OSError, MvcError) as exc:  # close the rest before reporting
                errors.append(exc)
        self._readers = {}
        if errors:
            raise errors[0]

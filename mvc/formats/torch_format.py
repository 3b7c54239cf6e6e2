"""PyTorch checkpoints (``torch.save`` zip archives), loaded safely or not at all.

The only load is ``torch.load(path, weights_only=True, map_location="cpu", mmap=True)``:
the restricted unpickler refuses any global outside torch's allowlist, so a file
never runs code here; tensors stay memory-mapped until hashed. A checkpoint whose
pickle needs other classes is indexed as opaque with a note. TorchScript archives
(they contain code) and legacy pre-zip pickles (mmap needs the zip format) are
opaque too, without calling ``torch.load``. Without torch installed, opaque with an
install hint.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import CorruptFileError, UsageError
from mvc.formats import dtypes
from mvc.formats.base import RE_EXPORT, FileIndex, TensorReader
from mvc.formats.hashing import Progress, hash_buffers
from mvc.formats.index import TensorInfo, TensorSpec

if TYPE_CHECKING:
    import numpy as np

NOT_INSTALLED = "torch not installed: pip install 'mvc[torch]' to index .pt files"
UNSAFE = "needs arbitrary code to unpickle; not loaded (safe loading)"
TORCHSCRIPT = "TorchScript archive (contains code); not loaded"
LEGACY = "legacy torch pickle (not a zip archive); re-save it with a current torch.save to index it"


def archive_kind(path: Path) -> str | None:
    """``"torch"`` for a torch.save zip, ``"torchscript"`` for a TorchScript zip, else None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None
    # torch.save writes "<archive>/data.pkl"; TorchScript adds "<archive>/constants.pkl"
    # and "<archive>/code/..." (torch.serialization._is_torchscript_zip checks the same).
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch"
    return None


class Unloadable(Exception):
    """The checkpoint is not loaded; ``str()`` is the note."""


def load(path: Path, label: str) -> Any:
    """``torch.load`` the safe way, or raise Unloadable with the note to record.

    Raises:
        Unloadable: torch missing, TorchScript, or the pickle needs arbitrary code.
        CorruptFileError: torch cannot read the archive.
    """
    import zipfile

    try:
        import torch
    except ImportError:
        raise Unloadable(NOT_INSTALLED) from None
    kind = archive_kind(path)
    if kind == "torchscript":
        raise Unloadable(TORCHSCRIPT)
    if kind is None:
        raise Unloadable(LEGACY)
    try:
        with warnings.catch_warnings():
            # torch warns about storage / pickle details; the library must not print.
            warnings.simplefilter("ignore")
            return torch.load(str(path), weights_only=True, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as exc:
        raise Unloadable(UNSAFE) from exc
    except (RuntimeError, ValueError, EOFError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise CorruptFileError(f"{label} is not a loadable torch checkpoint: {_first_line(exc)}", RE_EXPORT) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def flatten(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """Tensors of a (nested) state dict by dotted name, and notes on skipped ones.

    Dict keys and list / tuple positions join with dots; non-tensor values are
    ignored. A checkpoint that is a bare tensor is named ``tensor``.
    """
    import torch

    found: dict[str, Any] = {}
    notes: list[str] = []
    seen: set[int] = set()

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            name = prefix or "tensor"
            if name in found:
                n = 2
                while f"{name}#{n}" in found:
                    n += 1
                name = f"{name}#{n}"
            if value.layout != torch.strided or value.is_quantized:
                notes.append(f"{name}: {value.layout} / quantized tensor; not indexed")
                return
            found[name] = value
            return
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                return
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                walk(child, f"{prefix}.{key}" if prefix else str(key))

    walk(obj, "")
    return found, notes


def dtype_name(tensor: Any) -> str:
    """Canonical dtype name of a torch tensor (``torch.bfloat16`` -> ``bfloat16``)."""
    return str(tensor.dtype).removeprefix("torch.")


def _byte_view(tensor: Any) -> Any:
    """The tensor's elements as a flat uint8 numpy array, C order (no copy if possible)."""
    import numpy as np
    import torch

    flat = tensor.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.numel() == 0:
        return np.empty(0, dtype=np.uint8)
    return flat.view(torch.uint8).numpy()


def index_file(path: Path, *, label: str, progress: Progress | None = None, threads: int | None = None) -> FileIndex:
    """Index a torch checkpoint, or return it as opaque with the reason in a note."""
    try:
        obj = load(path, label)
    except Unloadable as exc:
        return FileIndex("opaque", "pytorch", [], [f"opaque: {exc}"])
    tensors, notes = flatten(obj)
    names = sorted(tensors)
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    # Views are made lazily: a non-contiguous tensor is copied only while it is hashed.
    getters = [lambda t=tensors[n]: _byte_view(t) for n in names]
    digests = hash_buffers(getters, sizes=sizes, progress=progress, threads=threads)
    infos = [
        TensorInfo(n, dtype_name(tensors[n]), tuple(tensors[n].shape), size, d)
        for n, size, d in zip(names, sizes, digests)
    ]
    return FileIndex("torch", "pytorch", infos, notes)


class TorchReader(TensorReader):
    """Loads the checkpoint once (memory-mapped, weights only); reads copy one tensor."""

    format = "torch"

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        try:
            obj = load(path, label)
        except Unloadable as exc:
            raise UsageError(f"cannot read tensors of {label}: {exc}", None) from exc
        self._tensors, self.notes = flatten(obj)
        self._specs = {
            n: TensorSpec(n, dtype_name(t), tuple(t.shape), t.numel() * t.element_size())
            for n, t in self._tensors.items()
        }

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return self._specs

    def _read(self, spec: TensorSpec, as_float32: bool) -> np.ndarray:
        import numpy as np
        import torch

        t = self._tensors[spec.name].detach().resolve_conj().resolve_neg()
        if as_float32 and t.is_floating_point():
            if t.dtype == torch.float32:
                return np.array(t.numpy(), order="C")
            return np.ascontiguousarray(t.to(torch.float32).numpy())
        if spec.dtype not in dtypes.NUMPY_NATIVE:
            raise UsageError(
                f"tensor {spec.name!r} of {self.label} is {spec.dtype}, which numpy cannot hold",
                "read it with as_float32=True" if t.is_floating_point() else None,
            )
        return np.array(t.numpy(), order="C")

    def close(self) -> None:
        self._tensors = {}

"""Files mvc versions as blobs, with no tensor index, and the note that says so."""

from __future__ import annotations

from pathlib import Path

from mvc.formats.base import FileIndex

# Suffixes of weight files whose layout mvc does not read, with the framework they
# usually come from. In a directory model these are noted; other unknown files
# (config.json, tokenizer files) are ignored.
OPAQUE_WEIGHT_SUFFIXES: dict[str, str | None] = {
    ".onnx": "onnx",
    ".h5": "keras",
    ".hdf5": "keras",
    ".keras": "keras",
    ".tflite": "tensorflow",
    ".pb": "tensorflow",
    ".msgpack": "flax",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": None,
    ".ckpt": None,
    ".pkl": None,
    ".pickle": None,
    ".joblib": "scikit-learn",
    ".npy": "numpy",
    ".mlmodel": "coreml",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".caffemodel": "caffe",
    ".params": "mxnet",
    ".pdparams": "paddle",
    ".ggml": "llama.cpp",
    ".gguf": "llama.cpp",
    ".safetensors": None,
    ".npz": "numpy",
}
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})


def is_opaque_weight(path: Path) -> bool:
    """True if the suffix marks a weight file mvc keeps as a blob."""
    return path.suffix.lower() in OPAQUE_WEIGHT_SUFFIXES


def index_file(path: Path, reason: str | None = None) -> FileIndex:
    """The index of a blob: no tensors, one note naming why."""
    from mvc.formats import torch_format

    suffix = path.suffix.lower()
    framework = OPAQUE_WEIGHT_SUFFIXES.get(suffix)
    if reason is None:
        if torch_format.archive_kind(path) == "torchscript":
            reason, framework = torch_format.TORCHSCRIPT, "pytorch"
        elif suffix in TORCH_SUFFIXES and _is_pickle(path):
            reason, framework = torch_format.LEGACY, "pytorch"
    if reason:
        note = f"opaque: {reason}"
    else:
        what = suffix or "a file without a known weight format"
        note = f"opaque: {what} is versioned as a blob; no tensor index"
    return FileIndex("opaque", framework, [], [note])


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    # Pickle protocol 2+ starts with PROTO (0x80) and the protocol number.
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5

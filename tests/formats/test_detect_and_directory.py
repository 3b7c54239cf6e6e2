"""Format detection, opaque blobs, and directory (sharded) models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mvc.errors import PathNotFoundError, UsageError
from mvc.formats import build_index, detect_format, open_tensors
from tests.formats.helpers import make_gguf, xxh


def test_detect_by_magic_bytes_and_suffix(tmp_path: Path) -> None:
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "m.safetensors"))
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "no_suffix"))
    np.savez(tmp_path / "m.npz", a=np.zeros(2))
    with open(tmp_path / "arrays.zip", "wb") as f:  # np.savez would add ".npz" to a name
        np.savez(f, a=np.zeros(2))
    make_gguf(tmp_path / "m.gguf", [("a", [2], 0, b"\0" * 8)])
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07onnx-ish")
    (tmp_path / "fake.safetensors.txt").write_text("{}")
    (tmp_path / "empty.bin").write_bytes(b"")
    assert detect_format(tmp_path / "m.safetensors") == "safetensors"
    assert detect_format(tmp_path / "no_suffix") == "safetensors"
    assert detect_format(tmp_path / "m.npz") == "npz"
    assert detect_format(tmp_path / "arrays.zip") == "npz"
    assert detect_format(tmp_path / "m.gguf") == "gguf"
    assert detect_format(tmp_path / "m.onnx") == "opaque"
    assert detect_format(tmp_path / "fake.safetensors.txt") == "opaque"
    assert detect_format(tmp_path / "empty.bin") == "opaque"
    # A damaged file keeps the format its suffix claims, so indexing reports it as corrupt.
    (tmp_path / "bad.safetensors").write_bytes(b"\x01")
    assert detect_format(tmp_path / "bad.safetensors") == "safetensors"


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    for call in (detect_format, build_index, open_tensors):
        with pytest.raises(PathNotFoundError, match="does not exist"):
            call(tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    ("name", "framework"), [("model.onnx", "onnx"), ("model.h5", "keras"), ("model.keras", "keras"), ("blob", None)]
)
def test_opaque_files_get_a_note_and_no_tensors(tmp_path: Path, name: str, framework: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    seen: list[int] = []
    index = build_index(path, progress=seen.append)
    assert index.format == "opaque" and index.tensors == () and index.framework == framework
    suffix = path.suffix or "a file without a known weight format"
    assert index.notes == (f"opaque: {suffix} is versioned as a blob; no tensor index",)
    assert sum(seen) == path.stat().st_size
    with pytest.raises(UsageError, match=f"cannot read tensors of an opaque blob: {name}"):
        open_tensors(path)


def _sharded(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    rng = np.random.default_rng(7)
    t = {f"layers.{i}.weight": rng.standard_normal((4, 4)).astype(np.float32) for i in range(4)}
    pt = {"format": "pt"}
    shard1 = {k: t[k] for k in ("layers.0.weight", "layers.1.weight")}
    shard2 = {k: t[k] for k in ("layers.2.weight", "layers.3.weight")}
    save_file(shard1, str(root / "model-00001-of-00002.safetensors"), metadata=pt)
    save_file(shard2, str(root / "model-00002-of-00002.safetensors"), metadata=pt)
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    (root / "config.json").write_text("{}")
    (root / "tokenizer.json").write_text("{}")
    # Hidden files are never weights, even if they look like them.
    save_file({"hidden": np.ones(1, np.float32)}, str(root / ".cache" / "x.safetensors"))
    # The same name in two files: both get the file prefix.
    t["extra.bias"] = np.ones(3, np.float32)
    adapter = {"layers.0.weight": t["layers.0.weight"], "extra.bias": t["extra.bias"]}
    save_file(adapter, str(root / "sub" / "adapter.safetensors"), metadata=pt)
    return root, t


def test_directory_model_indexes_every_weight_file(tmp_path: Path) -> None:
    root, t = _sharded(tmp_path)
    assert detect_format(root) == "safetensors"
    seen: list[int] = []
    index = build_index(root, progress=seen.append, threads=2)
    assert index.format == "safetensors" and index.framework == "pytorch" and index.notes == ()
    assert [(x.name, x.file) for x in index.tensors] == [
        ("extra.bias", "sub/adapter.safetensors"),
        ("layers.1.weight", "model-00001-of-00002.safetensors"),
        ("layers.2.weight", "model-00002-of-00002.safetensors"),
        ("layers.3.weight", "model-00002-of-00002.safetensors"),
        ("model-00001-of-00002.safetensors:layers.0.weight", "model-00001-of-00002.safetensors"),
        ("sub/adapter.safetensors:layers.0.weight", "sub/adapter.safetensors"),
    ]
    by = index.by_name
    assert by["layers.2.weight"].hash == xxh(t["layers.2.weight"].tobytes())
    assert (
        by["sub/adapter.safetensors:layers.0.weight"].hash
        == by["model-00001-of-00002.safetensors:layers.0.weight"].hash
    )
    assert sum(seen) == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_directory_reader_uses_the_same_names(tmp_path: Path) -> None:
    root, t = _sharded(tmp_path)
    with open_tensors(root) as reader:
        assert reader.names() == [x.name for x in build_index(root).tensors]
        assert reader.info("layers.3.weight").file == "model-00002-of-00002.safetensors"
        np.testing.assert_array_equal(reader.read("layers.3.weight"), t["layers.3.weight"])
        np.testing.assert_array_equal(reader.read("sub/adapter.safetensors:layers.0.weight"), t["layers.0.weight"])


def test_mixed_and_empty_directories(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    save_file({"a": np.zeros(2, np.float32)}, str(root / "a.safetensors"))
    np.savez(root / "b.npz", b=np.zeros(2, np.float32))
    (root / "c.onnx").write_bytes(b"onnx")
    (root / "notes.txt").write_text("not weights")
    assert detect_format(root) == "mixed"
    index = build_index(root)
    assert index.format == "mixed" and index.framework is None
    assert [(x.name, x.file) for x in index.tensors] == [("a", "a.safetensors"), ("b", "b.npz")]
    assert index.notes == ("c.onnx: opaque: .onnx is versioned as a blob; no tensor index",)
    with open_tensors(root) as reader:
        assert reader.names() == ["a", "b"]
        assert reader.notes == ["c.onnx: cannot read tensors of an opaque blob: c.onnx; skipped"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("hi")
    assert detect_format(empty) == "opaque"
    index = build_index(empty)
    assert index.format == "opaque" and index.tensors == ()
    assert index.notes == ("no weight files found in the directory; versioned as a blob",)

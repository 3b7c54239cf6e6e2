"""safetensors: index from the header, per-tensor hashes, validation, streaming reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mvc.errors import CorruptFileError, UsageError
from mvc.formats import build_index, detect_format, open_tensors
from tests.formats.helpers import raw_safetensors, xxh


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "emb.weight": rng.standard_normal((10, 4)).astype(np.float32),
        "layer.0.weight": rng.standard_normal((4, 4)).astype(np.float16),
        "layer.0.bias": rng.standard_normal(4),  # float64
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([True, False, True]),
        "u8": np.arange(5, dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.int32),
    }


def test_index_names_dtypes_shapes_hashes_and_totals(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})

    index = build_index(path)

    assert index.format == "safetensors"
    assert index.framework == "pytorch"
    assert index.notes == ()
    assert [t.name for t in index.tensors] == sorted(tensors)
    for t in index.tensors:
        arr = tensors[t.name]
        assert t.dtype == arr.dtype.name
        assert t.shape == arr.shape
        assert t.nbytes == arr.nbytes
        assert t.hash == xxh(np.ascontiguousarray(arr).tobytes())
        assert t.file is None
    assert index.tensor_count == len(tensors)
    assert index.parameter_count == sum(a.size for a in tensors.values())
    assert index.total_bytes == sum(a.nbytes for a in tensors.values())
    assert index.bytes_by_dtype["float32"] == 10 * 4 * 4 + 4
    assert index.by_name["empty"].hash == xxh(b"")


def test_bfloat16_and_float8_from_hand_written_header(tmp_path: Path) -> None:
    bf16 = np.array([0x3F80, 0xC000, 0x7F80, 0x0000], dtype="<u2")  # 1, -2, inf, 0
    f8 = np.array([0x38, 0xB8, 0x7F], dtype=np.uint8)  # e4m3fn: 1, -1, nan
    path = tmp_path / "m.safetensors"
    raw_safetensors(
        path,
        {"b": ("BF16", [2, 2], bf16.tobytes()), "f": ("F8_E4M3", [3], f8.tobytes())},
        metadata={"format": "flax"},
    )
    index = build_index(path)
    assert index.framework == "flax"
    assert index.by_name["b"].dtype == "bfloat16"
    assert index.by_name["b"].hash == xxh(bf16.tobytes())
    assert index.by_name["f"].dtype == "float8_e4m3fn"
    assert index.bytes_by_dtype == {"bfloat16": 8, "float8_e4m3fn": 3}
    with open_tensors(path) as reader:
        with pytest.raises(UsageError, match="numpy cannot hold"):
            reader.read("b")
        np.testing.assert_array_equal(reader.read("b", as_float32=True), np.array([[1, -2], [np.inf, 0]], np.float32))
        got = reader.read("f", as_float32=True)
        assert got[:2].tolist() == [1.0, -1.0] and np.isnan(got[2])


@pytest.mark.parametrize(
    ("fmt", "framework"), [("pt", "pytorch"), ("tf", "tensorflow"), ("np", "numpy"), ("mlx", "mlx"), ("weird", None)]
)
def test_framework_from_metadata(tmp_path: Path, fmt: str, framework: str | None) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, str(path), metadata={"format": fmt})
    assert build_index(path).framework == framework


def test_no_metadata_means_unknown_framework(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, str(path))
    assert build_index(path).framework is None


def test_identical_tensors_hash_identically_and_a_change_changes_only_that_hash(tmp_path: Path) -> None:
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "a.safetensors"))
    # Same values, different file (different insertion order, extra tensor).
    tensors_b = dict(reversed(list(tensors.items())))
    tensors_b["extra"] = np.ones(3, np.float32)
    save_file(tensors_b, str(tmp_path / "b.safetensors"))
    changed = dict(tensors)
    changed["emb.weight"] = tensors["emb.weight"].copy()
    changed["emb.weight"][3, 2] += 1e-3
    save_file(changed, str(tmp_path / "c.safetensors"))

    a = build_index(tmp_path / "a.safetensors").by_name
    b = build_index(tmp_path / "b.safetensors").by_name
    c = build_index(tmp_path / "c.safetensors").by_name

    assert all(a[n].hash == b[n].hash for n in tensors)
    differing = {n for n in tensors if a[n].hash != c[n].hash}
    assert differing == {"emb.weight"}


def test_same_bytes_different_dtype_or_shape_keep_the_hash_but_not_the_entry(tmp_path: Path) -> None:
    data = np.arange(8, dtype=np.int32)
    save_file({"x": data}, str(tmp_path / "a.safetensors"))
    save_file({"x": data.view(np.float32).reshape(2, 4)}, str(tmp_path / "b.safetensors"))
    a = build_index(tmp_path / "a.safetensors").by_name["x"]
    b = build_index(tmp_path / "b.safetensors").by_name["x"]
    assert a.hash == b.hash  # the hash is of bytes; dtype and shape are recorded beside it
    assert (a.dtype, a.shape) != (b.dtype, b.shape)


def test_progress_adds_up_to_the_file_size_and_threads_do_not_change_the_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # Over the threading threshold (32 MiB), with big and small tensors mixed.
    tensors = {f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(10)}
    tensors.update({f"b{i}": rng.standard_normal(7).astype(np.float32) for i in range(50)})
    path = tmp_path / "big.safetensors"
    save_file(tensors, str(path))
    seen: list[int] = []
    threaded = build_index(path, progress=seen.append, threads=4)
    serial = build_index(path, threads=1)
    assert threaded == serial
    assert sum(seen) == path.stat().st_size
    assert all(n > 0 for n in seen)
    assert threaded.by_name["w3"].hash == xxh(tensors["w3"].tobytes())


def test_truncated_file_is_corrupt_and_named(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    raw_safetensors(path, {"w": ("F32", [262144], b"\0" * 1048576)})
    data = path.read_bytes()
    header_end = len(data) - 1048576
    path.write_bytes(data[: header_end + 1000])
    with pytest.raises(CorruptFileError) as err:
        build_index(path)
    assert str(err.value) == "model.safetensors is truncated: header says 1048576 bytes of data, file has 1000"
    assert err.value.hint and "re-export" in err.value.hint
    assert detect_format(path) == "safetensors"


def test_header_length_larger_than_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    raw_safetensors(path, {"w": ("F32", [2], b"\0" * 8)}, header_len=10_000)
    with pytest.raises(CorruptFileError, match="m.safetensors is truncated: header says 10000 bytes of header"):
        build_index(path)


def test_header_length_over_the_cap_is_rejected_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CorruptFileError, match="exceeds the 100000000 byte limit"):
        build_index(path)


def test_header_length_shorter_than_the_json(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    blob = raw_safetensors(path, {"w": ("F32", [2], b"\0" * 8)})
    raw_safetensors(path, {"w": ("F32", [2], b"\0" * 8)}, header_len=len(blob) - 5)
    with pytest.raises(CorruptFileError, match="header is not valid JSON"):
        build_index(path)


@pytest.mark.parametrize("header", [b"not json at all", b"[1, 2]", b'{"a": 1}', b"\xff\xfe{}"])
def test_header_not_json_or_not_a_tensor_table(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CorruptFileError, match="m.safetensors"):
        build_index(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "should take 12 bytes"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "bad shape"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "bad data_offsets"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}, "not contiguous"),
    ],
)
def test_inconsistent_entries_are_corrupt(tmp_path: Path, entry: dict, message: str) -> None:
    blob = json.dumps({"w": entry}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 12)
    with pytest.raises(CorruptFileError, match=message):
        build_index(path)


def test_overlapping_tensors_and_trailing_bytes_are_corrupt(tmp_path: Path) -> None:
    blob = json.dumps(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        }
    ).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 12)
    with pytest.raises(CorruptFileError, match="not contiguous"):
        build_index(path)
    raw_safetensors(path, {"w": ("F32", [2], b"\0" * 8)}, extra=b"junk")
    with pytest.raises(CorruptFileError, match="4 bytes follow the 8 bytes of data"):
        build_index(path)


def test_duplicate_names_in_header_are_corrupt(tmp_path: Path) -> None:
    blob = (
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    )
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 8)
    with pytest.raises(CorruptFileError, match="appears twice"):
        build_index(path)


def test_open_tensors_streams_values_equal_to_the_originals(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    with open_tensors(path) as reader:
        assert reader.format == "safetensors"
        assert reader.names() == sorted(tensors)
        assert "ids" in reader and len(reader) == len(tensors)
        info = reader.info("layer.0.weight")
        assert (info.dtype, info.shape, info.nbytes) == ("float16", (4, 4), 32)
        for name, arr in reader.items():
            np.testing.assert_array_equal(arr, tensors[name])
            assert arr.dtype == tensors[name].dtype and arr.flags.c_contiguous
        as32 = reader.read("layer.0.weight", as_float32=True)
        assert as32.dtype == np.float32
        np.testing.assert_array_equal(as32, tensors["layer.0.weight"].astype(np.float32))
        assert reader.read("ids", as_float32=True).dtype == np.int64
        with pytest.raises(UsageError, match="no tensor named 'nope'"):
            reader.read("nope")
    # Arrays outlive the reader (they are copies, not views of a closed file).
    assert arr.sum() is not None

"""Streaming atomic safetensors writer: round trips, bfloat16, failures leave nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from mvc.errors import PathNotFoundError, UsageError
from mvc.formats import SafetensorsWriter, build_index, open_tensors, write_safetensors
from mvc.formats.dtypes import float32_to_bfloat16_bits
from tests.formats.helpers import xxh


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "f64": rng.standard_normal((3, 2)),
        "f32": rng.standard_normal((4, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": rng.integers(-(2**40), 2**40, 3),
        "i32": rng.integers(-100, 100, (2, 2)).astype(np.int32),
        "i16": np.array([-3, 4], np.int16),
        "i8": np.array([-1, 1], np.int8),
        "u8": np.array([0, 255], np.uint8),
        "u16": np.array([65535], np.uint16),
        "u32": np.array([2**32 - 1], np.uint32),
        "u64": np.array([2**64 - 1], np.uint64),
        "bool": np.array([[True, False]]),
        "c64": np.array([1 + 2j], np.complex64),
        "scalar": np.array(1.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "bigendian": np.arange(3, dtype=">i4"),
    }


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("as_iterable", [False, True])
def test_round_trip_every_numpy_dtype(tmp_path: Path, as_iterable: bool) -> None:
    tensors = _tensors()
    path = tmp_path / "out.safetensors"
    source = iter(tensors.items()) if as_iterable else tensors
    write_safetensors(source, path, metadata={"format": "np", "note": "ünï"})
    assert _leftovers(tmp_path) == []
    # The safetensors library reads what we wrote.
    loaded = load_file(str(path))
    for name, arr in tensors.items():
        np.testing.assert_array_equal(loaded[name], arr)
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"format": "np", "note": "ünï"}
    index = build_index(path)
    assert index.framework == "numpy"
    for t in index.tensors:
        expected = np.ascontiguousarray(tensors[t.name], dtype=tensors[t.name].dtype.newbyteorder("<"))
        assert t.hash == xxh(expected.tobytes()), t.name
        assert t.dtype == tensors[t.name].dtype.name
    with open_tensors(path) as reader:
        for name, arr in reader.items():
            np.testing.assert_array_equal(arr, tensors[name])
    # Header is 8-byte aligned, as the safetensors library writes it.
    assert int.from_bytes(path.read_bytes()[:8], "little") % 8 == 0


def test_bfloat16_written_by_rounding_float32(tmp_path: Path) -> None:
    values = np.array(
        [1.0, -2.0, 0.0, -0.0, np.inf, -np.inf, 1e-40, 3.0e38, 3.4e38, 1.00390625, 1.01171875, 65504.0],
        dtype=np.float32,
    )
    path = tmp_path / "bf.safetensors"
    write_safetensors({"x": values}, path, header=[("x", "bfloat16", values.shape)])
    with open_tensors(path) as reader:
        assert reader.info("x").dtype == "bfloat16"
        got = reader.read("x", as_float32=True)
    # Exactly representable values survive; ties round to even; overflow goes to inf.
    assert got[:6].tolist() == [1.0, -2.0, 0.0, -0.0, np.inf, -np.inf]
    assert np.signbit(got[3])
    assert got[8] == np.inf
    assert got[9] == 1.0  # 1 + 2**-8 is a tie between 1 and 1 + 2**-7: even mantissa wins
    assert got[10] == 1.015625  # 1 + 3 * 2**-8 ties up to 1 + 2**-6 (even)
    bits = float32_to_bfloat16_bits(np.array([np.nan, -np.nan, 1.0], np.float32))
    assert (bits[0] & 0x7F80) == 0x7F80 and (bits[0] & 0x7F) != 0  # still NaN
    assert bits[2] == 0x3F80
    # Raw uint16 bits are stored as they are.
    raw = np.array([0x3F80, 0x4049], np.uint16)
    write_safetensors({"y": raw}, path, header=[("y", "BF16", (2,))])
    assert build_index(path).by_name["y"].hash == xxh(raw.astype("<u2").tobytes())


def test_streaming_writer_in_header_order(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    specs = [("a", "float32", (2, 2)), ("b", np.float16, (3,)), ("c", "I64", ())]
    with SafetensorsWriter(path, specs, metadata={"format": "pt"}) as writer:
        assert writer.pending == ["a", "b", "c"]
        writer.write("a", np.eye(2))  # float64 -> float32, same kind
        writer.write("b", np.ones(3, np.float32))
        writer.write("c", np.int64(7))
        assert writer.pending == []
    loaded = load_file(str(path))
    assert loaded["a"].dtype == np.float32 and loaded["b"].dtype == np.float16
    assert loaded["c"].shape == () and loaded["c"] == 7
    assert build_index(path).framework == "pytorch"


@pytest.mark.parametrize(
    ("name", "array", "message"),
    [
        ("b", np.ones(3), "expected tensor 'a' next"),
        ("a", np.ones(4), "has shape \\[4\\], declared \\[3\\]"),
        ("a", np.ones(3, np.complex64), "cannot store complex64"),
    ],
)
def test_writer_rejects_bad_writes_and_leaves_no_file(
    tmp_path: Path, name: str, array: np.ndarray, message: str
) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"previous version")
    with pytest.raises(UsageError, match=message):
        with SafetensorsWriter(path, [("a", "int32", (3,)), ("b", "float32", (3,))]) as writer:
            writer.write(name, array)
    assert path.read_bytes() == b"previous version"
    assert _leftovers(tmp_path) == []


def test_unwritten_tensors_fail_close(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    with pytest.raises(UsageError, match="1 declared tensors were not written \\(b\\)"):
        with SafetensorsWriter(path, [("a", "int32", (1,)), ("b", "int32", (1,))]) as writer:
            writer.write("a", np.ones(1, np.int32))
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_failing_generator_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "merged.safetensors"
    path.write_bytes(b"old")

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        yield "a", np.ones(1000, np.float32)
        raise RuntimeError("merge failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_safetensors(tensors(), path)
    with pytest.raises(RuntimeError, match="half way"):
        write_safetensors(tensors(), path, header=[("a", "float32", (1000,)), ("b", "float32", (1,))])
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "specs",
    [
        [("a", "float32", (1,)), ("a", "float32", (1,))],
        [("", "float32", (1,))],
        [("__metadata__", "float32", (1,))],
        [("a", "float128", (1,))],
        [("a", "float32", (-1,))],
        [("a", "float4_e2m1fn", (2,))],
        [("a", "float32")],
    ],
)
def test_bad_specs_are_usage_errors(tmp_path: Path, specs: list) -> None:
    with pytest.raises(UsageError):
        SafetensorsWriter(tmp_path / "x.safetensors", specs)
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="does not exist"):
        write_safetensors({"a": np.ones(1)}, tmp_path / "no" / "x.safetensors")


def test_float8_raw_bits_round_trip(tmp_path: Path) -> None:
    bits = np.array([0x38, 0xB8, 0x00, 0x7E], np.uint8)  # e4m3fn: 1, -1, 0, 448
    path = tmp_path / "f8.safetensors"
    write_safetensors([("q", bits)], path, header=[("q", "float8_e4m3fn", (4,))])
    with open_tensors(path) as reader:
        assert reader.read("q", as_float32=True).tolist() == [1.0, -1.0, 0.0, 448.0]
    with pytest.raises(UsageError, match="cannot store float32 tensor 'q' as float8_e4m3fn") as err:
        write_safetensors([("q", bits.astype(np.float32))], path, header=[("q", "float8_e4m3fn", (4,))])
    assert err.value.hint == "pass its raw bits as a uint8 array"


@pytest.mark.parametrize("declared", [False, True])
def test_writer_holds_one_tensor_at_a_time(tmp_path: Path, declared: bool) -> None:
    import tracemalloc

    n, size = 12, 1 << 20  # 12 tensors of 4 MiB (float32)

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for i in range(n):
            yield f"t{i:02d}", np.full(size, i, np.float32)

    header = [(f"t{i:02d}", "float32", (size,)) for i in range(n)] if declared else None
    tracemalloc.start()
    try:
        write_safetensors(tensors(), tmp_path / "big.safetensors", header=header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * size * 4, peak  # far below the 48 MiB of all tensors
    with open_tensors(tmp_path / "big.safetensors") as reader:
        assert reader.read("t07")[123] == 7


def test_mapping_with_a_header_is_written_in_header_order(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors(
        {"a": np.ones(2, np.float32), "b": np.zeros(3)},
        path,
        header=[("b", "float16", (3,)), ("a", "bfloat16", (2,))],
    )
    with open_tensors(path) as reader:
        assert reader.info("a").dtype == "bfloat16" and reader.info("b").dtype == "float16"
        assert reader.read("a", as_float32=True).tolist() == [1.0, 1.0]
    with pytest.raises(UsageError, match="name different tensors"):
        write_safetensors({"a": np.ones(2)}, path, header=[("c", "float32", (2,))])

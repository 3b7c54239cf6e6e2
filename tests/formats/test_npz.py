"""numpy .npz: members indexed without unpickling, hashes comparable with safetensors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mvc.errors import CorruptFileError
from mvc.formats import build_index, detect_format, open_tensors
from tests.formats.helpers import xxh


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "w": rng.standard_normal((5, 3)).astype(np.float32),
        "b": rng.standard_normal(3),
        "i": np.arange(4, dtype=np.int16),
        "flag": np.array(True),
        "empty": np.zeros((2, 0), np.float16),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_index_matches_the_arrays(tmp_path: Path, save) -> None:
    tensors = _tensors()
    path = tmp_path / "weights.npz"
    save(path, **tensors)
    assert detect_format(path) == "npz"
    seen: list[int] = []
    index = build_index(path, progress=seen.append)
    assert index.format == "npz" and index.framework == "numpy" and index.notes == ()
    assert [t.name for t in index.tensors] == sorted(tensors)
    for t in index.tensors:
        arr = tensors[t.name]
        assert (t.dtype, t.shape, t.nbytes) == (arr.dtype.name, arr.shape, arr.nbytes)
        assert t.hash == xxh(arr.tobytes())
    assert sum(seen) == path.stat().st_size


def test_same_arrays_hash_the_same_in_npz_and_safetensors(tmp_path: Path) -> None:
    tensors = _tensors()
    np.savez(tmp_path / "a.npz", **tensors)
    save_file(tensors, str(tmp_path / "a.safetensors"))
    assert build_index(tmp_path / "a.npz").tensors == build_index(tmp_path / "a.safetensors").tensors


def test_fortran_order_and_big_endian_hash_as_c_order_little_endian(tmp_path: Path) -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(
        tmp_path / "odd.npz",
        fortran=np.asfortranarray(base),
        big=base.astype(">f4"),
        bigf=np.asfortranarray(base.astype(">i8")),
    )
    index = build_index(tmp_path / "odd.npz").by_name
    assert index["fortran"].hash == xxh(base.tobytes())
    assert index["big"].hash == xxh(base.tobytes())
    assert index["big"].dtype == "float32"
    assert index["bigf"].hash == xxh(base.astype("<i8").tobytes())
    with open_tensors(tmp_path / "odd.npz") as reader:
        for name in ("fortran", "big"):
            arr = reader.read(name)
            np.testing.assert_array_equal(arr, base)
            assert arr.flags.c_contiguous and arr.dtype.isnative


def test_object_arrays_are_noted_and_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "mixed.npz"
    np.savez(path, good=np.ones(3), bad=np.array([{"a": 1}, None], dtype=object))
    index = build_index(path)
    assert [t.name for t in index.tensors] == ["good"]
    assert index.notes == ("bad: object array (loading it needs pickle); not indexed",)
    with open_tensors(path) as reader:
        assert reader.names() == ["good"]


def test_non_npy_members_are_noted(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, a=np.ones(2))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("README.txt", "hello")
    index = build_index(path)
    assert [t.name for t in index.tensors] == ["a"]
    assert index.notes == ("README.txt: not a .npy member; skipped",)


def test_damaged_npz_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, a=np.ones(1000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="w.npz"):
        build_index(path)
    path.write_bytes(b"definitely not a zip")
    with pytest.raises(CorruptFileError, match="w.npz is not a valid .npz"):
        build_index(path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_open_tensors_reads_npz_members(tmp_path: Path, save) -> None:
    tensors = _tensors()
    path = tmp_path / "w.npz"
    save(path, **tensors)
    with open_tensors(path) as reader:
        assert reader.format == "npz"
        assert reader.names() == sorted(tensors)
        for name, arr in reader.items():
            np.testing.assert_array_equal(arr, tensors[name])
            assert arr.dtype == tensors[name].dtype
        assert reader.read("b", as_float32=True).dtype == np.float32

"""Issue 14 / 17 hardening of weight formats, merges and diffs: hostile or damaged files
are refused with one line (exit 6) and nothing written; merges keep what they were given."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy
import pytest

from mvc.formats import build_index, npz_format
from tests.conftest import assert_one_line_error, git, ok, write_safetensors
from tests.formats.helpers import make_gguf, raw_safetensors


def _nothing_staged(repo: Path, weights: str) -> None:
    assert not (repo / f"{weights}.dvc").exists()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == f"?? {weights}"


# ---- 1. bounded memory, validated headers ---------------------------------------------------


def _npz_member(path: Path, header: dict, data: bytes, compression: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as zf, zf.open("w.npy", "w", force_zip64=True) as f:
        npy.write_array_header_1_0(f, header)
        f.write(data)


def test_big_endian_compressed_npz_member_is_hashed_in_chunks_not_loaded_whole(tmp_path: Path, monkeypatch) -> None:
    # A 2 MB npz declaring gigabytes of big-endian zeros once made `mvc add` hold two
    # copies of the array (4.3 GB); now it streams. Scaled down: 32 MiB of zeros.
    n = 8 << 20
    path = tmp_path / "big.npz"
    _npz_member(path, {"descr": ">f4", "fortran_order": False, "shape": (n,)}, bytes(4 * n))
    assert path.stat().st_size < 1 << 20
    loads: list[str] = []
    real = npz_format._load_member
    monkeypatch.setattr(npz_format, "_load_member", lambda zf, raw, m, label: loads.append(m.name) or real(zf, raw, m, label))

    index = build_index(path)

    assert loads == []  # never materialised as one array
    (t,) = index.tensors
    assert (t.name, t.dtype, t.shape, t.nbytes) == ("w", "float32", (n,), 4 * n)
    little = tmp_path / "little.npz"
    np.savez(little, w=np.zeros(n, "<f4"))
    assert t.hash == build_index(little).tensors[0].hash


def test_stored_big_endian_member_hashes_as_little_endian(tmp_path: Path) -> None:
    values = np.arange(1000, dtype=">i8").reshape(10, 100)
    np.savez(tmp_path / "be.npz", w=values)
    np.savez(tmp_path / "le.npz", w=values.astype("<i8"))
    assert build_index(tmp_path / "be.npz").tensors[0].hash == build_index(tmp_path / "le.npz").tensors[0].hash


def test_add_safetensors_with_a_200000_deep_header_exits_6(repo: Path, cli) -> None:
    blob = b'{"w":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    (repo / "deep.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    result = cli("add", "deep.safetensors")
    assert_one_line_error(result, 6, "deep.safetensors", "nests too deep", first_line=True)
    _nothing_staged(repo, "deep.safetensors")


@pytest.mark.parametrize("shape", [[0, 2**64], [0, 2**63], [2**40, 0, 2**40]])
def test_add_safetensors_with_an_impossible_dimension_exits_6(repo: Path, cli, shape: list[int]) -> None:
    header = {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}
    blob = json.dumps(header).encode()
    (repo / "huge.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    result = cli("add", "huge.safetensors")
    assert_one_line_error(result, 6, "huge.safetensors", "'w'", "impossible shape", first_line=True)
    _nothing_staged(repo, "huge.safetensors")


def test_add_npz_with_an_impossible_dimension_exits_6(repo: Path, cli) -> None:
    _npz_member(repo / "huge.npz", {"descr": "<f4", "fortran_order": False, "shape": (0, 2**64)}, b"", zipfile.ZIP_STORED)
    result = cli("add", "huge.npz")
    assert_one_line_error(result, 6, "huge.npz", "impossible shape", first_line=True)
    _nothing_staged(repo, "huge.npz")


def test_add_gguf_with_an_impossible_dimension_exits_6(repo: Path, cli) -> None:
    make_gguf(repo / "huge.gguf", [("w", [2**64 - 1, 0], 0, b"")])
    result = cli("add", "huge.gguf")
    assert_one_line_error(result, 6, "huge.gguf", "impossible shape", first_line=True)
    _nothing_staged(repo, "huge.gguf")


def test_gguf_with_a_gigantic_tensor_name_is_corrupt_without_reading_it(repo: Path, cli) -> None:
    data = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 2**40) + b"x" * 64)
    (repo / "name.gguf").write_bytes(bytes(data))
    result = cli("add", "name.gguf")
    assert_one_line_error(result, 6, "name.gguf", "tensor name of 1099511627776 bytes", first_line=True)
    _nothing_staged(repo, "name.gguf")


# ---- 2. corrupt known formats are refused, not versioned as blobs ------------------------------


def test_add_truncated_torch_checkpoint_exits_6_and_writes_nothing(repo: Path, cli) -> None:
    torch = pytest.importorskip("torch")
    whole = repo / "whole.pt"
    torch.save({"w": torch.ones(64, 64)}, whole)
    (repo / "net.pt").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    result = cli("add", "net.pt")
    assert_one_line_error(result, 6, "net.pt", "truncated or damaged", first_line=True)
    _nothing_staged(repo, "net.pt")


@pytest.mark.parametrize("head", [b"GGUF", b""], ids=["magic-then-garbage", "all-garbage"])
def test_add_garbage_gguf_exits_6_and_writes_nothing(repo: Path, cli, head: bytes) -> None:
    rng = np.random.default_rng(7)
    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (repo / "llm.gguf").write_bytes(head + b"\xfe\xca\xad\xde" + garbage)
    result = cli("add", "llm.gguf")
    assert_one_line_error(result, 6, "llm.gguf", "gguf", first_line=True)
    _nothing_staged(repo, "llm.gguf")


def test_torch_checkpoint_with_code_is_never_run_and_stays_opaque(repo: Path, cli, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"w": torch.ones(2), "x": Evil()}, repo / "evil.pt")
    ok(cli("add", "evil.pt"))
    assert not marker.exists()


def test_valid_files_still_add(repo: Path, cli) -> None:
    write_safetensors(repo / "net.safetensors")
    np.savez_compressed(repo / "arr.npz", w=np.ones((3, 4), ">f4"))
    make_gguf(repo / "m.gguf", [("w", [4], 0, np.ones(4, "<f4").tobytes())])
    for f in ("net.safetensors", "arr.npz", "m.gguf"):
        ok(cli("add", f))
    raw_safetensors(repo / "hand.safetensors", {"w": ("F32", [0, 5], b"")})
    ok(cli("add", "hand.safetensors"))


# ---- 3. diff --stats of a quantized gguf --------------------------------------------------------


def _gguf_version(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q8 = rng.integers(0, 256, 34 * 4, dtype=np.uint8).tobytes()  # q8_0: 4 blocks of 32
    make_gguf(
        path,
        [
            ("blk.0.attn_q.weight", [32, 4], 8, q8),
            ("blk.0.ffn_down.weight", [32, 4], 8, q8[::-1]),
            ("output_norm.weight", [8], 0, rng.standard_normal(8).astype("<f4").tobytes()),
        ],
    )


def test_diff_stats_of_quantized_gguf_shows_the_rest_and_names_the_skipped(repo: Path, cli) -> None:
    import mvc

    _gguf_version(repo / "llm.gguf", 1)
    mvc.add(repo / "llm.gguf")
    mvc.commit(repo, message="v1")
    _gguf_version(repo / "llm.gguf", 2)
    mvc.add(repo / "llm.gguf")
    mvc.commit(repo, message="v2")

    result = ok(cli("diff", "llm@v1", "llm@v2", "--stats", "--json"))
    d = json.loads(result.stdout)
    assert [s["name"] for s in d["stats"]] == ["output_norm.weight"]
    assert d["notes"] == [
        "--stats skipped 2 tensor(s), quantized q8_0 (mvc does not dequantize gguf): "
        "blk.0.attn_q.weight, blk.0.ffn_down.weight"
    ]
    human = ok(cli("diff", "llm@v1", "llm@v2", "--stats"))
    assert "output_norm.weight" in human.stdout
    assert "note: --stats skipped 2 tensor(s), quantized q8_0" in human.stderr

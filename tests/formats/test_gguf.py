"""gguf: header parsing (metadata of every type), per-tensor hashes, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvc.errors import CorruptFileError, UsageError
from mvc.formats import build_index, detect_format, open_tensors
from tests.formats import helpers as h
from tests.formats.helpers import make_gguf, xxh

F32, F16, Q8_0, Q4_K, BF16 = 0, 1, 8, 12, 30

KVS = [
    ("general.architecture", h.STRING, "llama"),
    ("general.name", h.STRING, "tiny ünïcode"),
    ("llama.block_count", h.U32, 2),
    ("llama.rope.freq_base", h.F32, 10000.0),
    ("general.file_type", h.I32, 7),
    ("x.bool", h.BOOL, True),
    ("x.u8", h.U8, 1),
    ("x.i8", h.I8, -1),
    ("x.u16", h.U16, 2),
    ("x.i16", h.I16, -2),
    ("x.u64", h.U64, 3),
    ("x.i64", h.I64, -3),
    ("x.f64", h.F64, 0.5),
    ("tokenizer.ggml.tokens", h.ARRAY, (h.STRING, ["<s>", "</s>", "hello", ""])),
    ("tokenizer.ggml.scores", h.ARRAY, (h.F32, [0.0, -1.5, 2.0, 0.25])),
    ("nested", h.ARRAY, (h.ARRAY, [(h.U8, [1, 2]), (h.STRING, ["a"])])),
]


def _model(tmp_path: Path, kvs: list = KVS, **kwargs) -> tuple[Path, dict, dict]:
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((3, 8)).astype(np.float32)  # torch shape (3, 8): ne = [8, 3]
    norm = rng.standard_normal(8).astype(np.float16)
    q8 = rng.integers(0, 256, 4 * 34, dtype=np.uint8).tobytes()  # ne [64, 2]: 4 blocks of 34 bytes
    q4k = rng.integers(0, 256, 144, dtype=np.uint8).tobytes()  # ne [256, 1]: one 144-byte block
    bf = np.array([0x3F80, 0x4000], dtype="<u2")  # 1.0, 2.0
    tensors = [
        ("token_embd.weight", [8, 3], F32, emb.tobytes()),
        ("output_norm.weight", [8], F16, norm.tobytes()),
        ("blk.0.attn_q.weight", [64, 2], Q8_0, q8),
        ("blk.0.ffn.weight", [256, 1], Q4_K, q4k),
        ("scale", [2], BF16, bf.tobytes()),
    ]
    path = tmp_path / "tiny.gguf"
    ranges = make_gguf(path, tensors, kvs=kvs, **kwargs)
    arrays = {"token_embd.weight": emb, "output_norm.weight": norm}
    data = {name: raw for name, _, _, raw in tensors}
    return path, arrays, {"ranges": ranges, "data": data}


@pytest.mark.parametrize("alignment", [32, 64])
def test_gguf_index(tmp_path: Path, alignment: int) -> None:
    kvs = KVS + ([("general.alignment", h.U32, alignment)] if alignment != 32 else [])
    path, _, info = _model(tmp_path, kvs=kvs, alignment=alignment)
    assert detect_format(path) == "gguf"
    seen: list[int] = []
    index = build_index(path, progress=seen.append)
    assert index.format == "gguf" and index.framework == "llama.cpp"
    t = index.by_name
    assert (t["token_embd.weight"].dtype, t["token_embd.weight"].shape) == ("float32", (3, 8))
    assert (t["output_norm.weight"].dtype, t["output_norm.weight"].shape) == ("float16", (8,))
    assert (t["blk.0.attn_q.weight"].dtype, t["blk.0.attn_q.weight"].shape) == ("q8_0", (2, 64))
    assert t["blk.0.attn_q.weight"].nbytes == 136
    assert (t["blk.0.ffn.weight"].dtype, t["blk.0.ffn.weight"].nbytes) == ("q4_k", 144)
    assert t["scale"].dtype == "bfloat16"
    for name, raw in info["data"].items():
        assert t[name].hash == xxh(raw)
        start, end = info["ranges"][name]
        assert path.read_bytes()[start:end] == raw
    assert index.parameter_count == 24 + 8 + 128 + 256 + 2
    assert sum(seen) == path.stat().st_size


def test_open_tensors_reads_plain_gguf_tensors_and_refuses_quantized(tmp_path: Path) -> None:
    path, arrays, _ = _model(tmp_path)
    with open_tensors(path) as reader:
        assert reader.format == "gguf"
        for name, arr in arrays.items():
            np.testing.assert_array_equal(reader.read(name), arr)
        np.testing.assert_array_equal(reader.read("scale", as_float32=True), [1.0, 2.0])
        with pytest.raises(UsageError, match="quantized"):
            reader.read("blk.0.attn_q.weight")


def test_truncated_gguf_is_corrupt(tmp_path: Path) -> None:
    path, _, _ = _model(tmp_path, truncate=10)
    with pytest.raises(CorruptFileError, match="tiny.gguf is truncated: tensor"):
        build_index(path)


def test_gguf_cut_inside_the_metadata_is_corrupt(tmp_path: Path) -> None:
    path, _, _ = _model(tmp_path)
    path.write_bytes(path.read_bytes()[:120])
    with pytest.raises(CorruptFileError, match="tiny.gguf is truncated"):
        build_index(path)


def test_bad_block_multiple_and_bad_alignment_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    make_gguf(path, [("q", [33, 1], Q8_0, b"\0" * 34)])  # 33 is not a multiple of 32
    with pytest.raises(CorruptFileError, match="not a multiple of the q8_0 block"):
        build_index(path)
    make_gguf(path, [("a", [2], F32, b"\0" * 8)], kvs=[("general.alignment", h.U32, 48)], alignment=48)
    with pytest.raises(CorruptFileError, match="alignment 48 is not a power of two"):
        build_index(path)


def test_misaligned_tensor_offset_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    make_gguf(path, [("a", [2], F32, b"\0" * 8), ("b", [2], F32, b"\0" * 8)], alignment=8)
    # Written with 8-byte alignment but read with the default 32: b's offset 8 is misaligned.
    with pytest.raises(CorruptFileError, match="offset 8 is not 32-aligned"):
        build_index(path)


@pytest.mark.parametrize(("version", "note"), [(1, "gguf version 1 is not supported"), (4, "gguf version 4 is newer")])
def test_unsupported_versions_are_opaque_with_a_note(tmp_path: Path, version: int, note: str) -> None:
    path = tmp_path / "old.gguf"
    make_gguf(path, [("a", [2], F32, b"\0" * 8)], version=version)
    index = build_index(path)
    assert index.format == "opaque" and index.tensors == ()
    assert len(index.notes) == 1 and note in index.notes[0]
    with pytest.raises(UsageError):
        open_tensors(path)


def test_unknown_ggml_type_is_opaque(tmp_path: Path) -> None:
    path = tmp_path / "new.gguf"
    make_gguf(path, [("a", [2], 999, b"\0" * 8)])
    index = build_index(path)
    assert index.format == "opaque"
    assert "ggml type 999" in index.notes[0]

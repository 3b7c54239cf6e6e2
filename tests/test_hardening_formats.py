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


@pytest.mark.parametrize("keep", [0.003, 0.5, -1], ids=["inside-a-pickle", "inside-a-storage", "last-byte"])
def test_add_truncated_legacy_torch_pickle_exits_6_and_writes_nothing(repo: Path, cli, keep: float) -> None:
    """A pre-zip torch.save file is read as opcodes (never unpickled) and must hold every storage it lists."""
    torch = pytest.importorskip("torch")
    whole = repo / "whole.pt"
    sd = {"w": torch.ones(300, 20), "b": torch.zeros(7, dtype=torch.float64), "step": torch.arange(5)}
    torch.save(sd, whole, _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    whole.unlink()
    (repo / "old.pt").write_bytes(data)
    ok(cli("add", "old.pt"))  # complete: versioned as an opaque blob, as before
    ok(cli("commit", "-m", "old checkpoint"))
    (repo / "net.pt").write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:-1])
    result = cli("add", "net.pt")
    assert_one_line_error(result, 6, "net.pt", "not a valid torch file", first_line=True)
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
    mvc.commit(repo=repo, message="v1")
    _gguf_version(repo / "llm.gguf", 2)
    mvc.add(repo / "llm.gguf")
    mvc.commit(repo=repo, message="v2")

    result = ok(cli("diff", "llm@v1", "llm@v2", "--stats", "--json"))
    d = json.loads(result.stdout)
    assert [s["name"] for s in d["stats"]] == ["output_norm.weight"]
    assert d["notes"] == [
        (
            "--stats skipped 2 tensors, quantized q8_0 (mvc does not dequantize gguf): "
            "blk.0.attn_q.weight, blk.0.ffn_down.weight"
        )
    ]
    human = ok(cli("diff", "llm@v1", "llm@v2", "--stats"))
    assert "output_norm.weight" in human.stdout
    assert "note: --stats skipped 2 tensors, quantized q8_0" in human.stderr


# ---- 4, 5, 10, 11: merge -------------------------------------------------------------------------


def _header_keys(path: Path) -> list[str]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return list(json.loads(f.read(n)))


def _committed_net(repo: Path, seed: int = 1) -> Path:
    import mvc

    path = repo / "models" / "net.safetensors"
    write_safetensors(path, seed=seed)
    mvc.add(path)
    mvc.commit(repo=repo, message=f"net seed {seed}")
    return path


def test_merging_a_model_with_itself_gives_the_same_file_and_no_new_version(repo: Path, cli) -> None:
    from safetensors.numpy import save_file

    import mvc

    # Mixed dtypes: the safetensors library stores them by dtype, not by name.
    path = repo / "models" / "net.safetensors"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    save_file(
        {"a.weight": rng.standard_normal((4, 4)).astype(np.float16), "b.weight": rng.standard_normal(4).astype(np.float32),
         "step": np.arange(2, dtype=np.int64)},
        str(path),
        metadata={"format": "pt"},
    )
    assert _header_keys(path) != ["__metadata__", "a.weight", "b.weight", "step"]
    mvc.add(path)
    mvc.commit(repo=repo, message="v1")
    before = path.read_bytes()
    result = ok(cli("merge", "net@v1", "net@v1", "-o", "models/net.safetensors", "--add"))
    assert "net: unchanged, still v1" in result.stdout
    assert path.read_bytes() == before
    assert git(repo, "status", "--porcelain") == ""


def test_merge_keeps_the_first_inputs_tensor_order_and_metadata(repo: Path, cli) -> None:
    import mvc

    rng = np.random.default_rng(0)
    order = ["z.weight", "a.weight", "m.bias"]
    for seed in (1, 2):
        raw_safetensors(
            repo / "net.safetensors",
            {n: ("F32", [4], rng.standard_normal(4).astype("<f4").tobytes()) for n in order},
            metadata={"format": "pt"},
        )
        mvc.add(repo / "net.safetensors")
        mvc.commit(repo=repo, message=f"v{seed}")
    ok(cli("merge", "net@v1", "net@v2", "-o", "soup.safetensors"))
    assert _header_keys(repo / "soup.safetensors") == ["__metadata__", *order]


def test_merge_add_refuses_to_overwrite_unrecorded_weights(repo: Path, cli) -> None:
    path = _committed_net(repo)
    write_safetensors(path, seed=9)  # new training output, not added yet
    mine = path.read_bytes()
    result = cli("merge", "net@v1", "net@v1", "-o", "models/net.safetensors", "--add")
    assert_one_line_error(result, 4, "models/net.safetensors has changes that no version records", "--force")
    assert path.read_bytes() == mine
    assert not list(path.parent.glob(".net.safetensors.*"))

    forced = ok(cli("merge", "net@v1", "net@v1", "-o", "models/net.safetensors", "--add", "--force"))
    assert "net: unchanged, still v1" in forced.stdout
    assert path.read_bytes() != mine


def test_merge_add_refuses_an_untracked_file_at_the_output(repo: Path, cli) -> None:
    _committed_net(repo)
    other = repo / "models" / "soup.safetensors"
    other.write_bytes(b"my notes, not weights")
    result = cli("merge", "net@v1", "net@v1", "-o", "models/soup.safetensors", "--add", "--name", "soup")
    assert_one_line_error(result, 4, "models/soup.safetensors exists and no version records it", "--force")
    assert other.read_bytes() == b"my notes, not weights"
    ok(cli("merge", "net@v1", "net@v1", "-o", "models/soup.safetensors"))  # a plain output may be replaced


def test_integer_dtype_mismatch_hint_does_not_suggest_dtype(repo: Path, cli) -> None:
    from safetensors.numpy import save_file

    import mvc

    for dt in (np.int64, np.int32):
        save_file({"w": np.ones(4, np.float32), "step": np.arange(3, dtype=dt)}, str(repo / "net.safetensors"))
        mvc.add(repo / "net.safetensors")
        mvc.commit(repo=repo, message=str(dt))
    result = cli("merge", "net@v1", "net@v2", "--dtype", "float32", "-o", "soup.safetensors")
    assert_one_line_error(result, 4, "integer/bool dtype mismatch", "step (int64 in net@v1, int32 in net@v2)")
    hint = result.stderr.splitlines()[1]
    assert "--dtype" not in hint and "re-save the models so step has one dtype" in hint, hint
    assert not (repo / "soup.safetensors").exists()


def test_interrupted_merge_leaves_no_temp_file(repo: Path) -> None:
    import mvc

    _committed_net(repo, seed=1)
    _committed_net(repo, seed=2)

    def interrupt(task: str, n: int, total: int | None) -> None:
        if task.startswith("merging"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mvc.merge(["net@v1", "net@v2"], repo=repo, out=repo / "models" / "soup.safetensors", progress=interrupt)
    assert sorted(p.name for p in (repo / "models").iterdir()) == [".gitignore", "net.safetensors", "net.safetensors.dvc"]


def test_terminated_merge_leaves_no_temp_file(repo: Path) -> None:
    import os
    import subprocess
    import sys

    _committed_net(repo, seed=1)
    _committed_net(repo, seed=2)
    script = (
        "import os, signal, mvc\n"
        "def stop(task, n, total):\n"
        "    if task.startswith('merging'):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "mvc.merge(['net@v1', 'net@v2'], repo='.', out='models/soup.safetensors', progress=stop)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode in (143, -15), proc.stderr
    assert sorted(p.name for p in (repo / "models").iterdir()) == [".gitignore", "net.safetensors", "net.safetensors.dvc"]

"""torch checkpoints: safe loading only; unsafe pickles are never executed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mvc.errors import UsageError
from mvc.formats import build_index, detect_format, open_tensors, write_safetensors
from mvc.formats.dtypes import float32_to_bfloat16_bits, to_float32
from tests.formats.helpers import xxh

torch = pytest.importorskip("torch")


def _make_marker(path: str) -> None:
    """What a malicious checkpoint would run on load."""
    Path(path).write_text("code from a checkpoint ran")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_make_marker, (self.marker,))


def _state_dict() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {
            "embed.weight": torch.randn(6, 4, generator=g),
            "norm.weight": torch.randn(4, generator=g).to(torch.bfloat16),
            "head.weight": torch.randn(2, 4, generator=g).to(torch.float16),
        },
        "optimizer": {
            "state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(5.0)}},
            "param_groups": [{"lr": 0.1}],
        },
        "buffers": [torch.arange(3), torch.ones(2, dtype=torch.bool)],
        "epoch": 3,
        "name": "run-1",
        "transposed": torch.arange(6, dtype=torch.int32).reshape(2, 3).t(),
    }


def _bytes(t) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_torch_state_dict_is_flattened_and_hashed(tmp_path: Path) -> None:
    sd = _state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save(sd, path)
    assert detect_format(path) == "torch"
    seen: list[int] = []
    index = build_index(path, progress=seen.append)
    assert index.format == "torch" and index.framework == "pytorch" and index.notes == ()
    by = index.by_name
    assert sorted(by) == [
        "buffers.0",
        "buffers.1",
        "model.embed.weight",
        "model.head.weight",
        "model.norm.weight",
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.step",
        "transposed",
    ]
    assert (by["model.norm.weight"].dtype, by["model.norm.weight"].shape) == ("bfloat16", (4,))
    assert by["model.head.weight"].dtype == "float16"
    assert by["buffers.1"].dtype == "bool"
    assert by["optimizer.state.0.step"].shape == ()
    assert by["transposed"].shape == (3, 2)
    assert by["transposed"].hash == xxh(_bytes(sd["transposed"]))  # C order of the view
    assert by["model.norm.weight"].hash == xxh(_bytes(sd["model"]["norm.weight"]))
    assert by["model.embed.weight"].nbytes == 6 * 4 * 4
    assert sum(seen) == path.stat().st_size


def test_same_tensors_hash_the_same_in_torch_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in _state_dict()["model"].items()}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    a = build_index(tmp_path / "pytorch_model.bin")
    b = build_index(tmp_path / "model.safetensors")
    assert a.tensors == b.tensors
    assert a.framework == b.framework == "pytorch"


def test_malicious_pickle_is_not_executed_and_indexed_opaque(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": Payload(marker)}, path)
    assert detect_format(path) == "torch"

    index = build_index(path)

    assert not marker.exists()
    assert index.format == "opaque" and index.tensors == ()
    assert index.notes == ("opaque: needs arbitrary code to unpickle; not loaded (safe loading)",)
    with pytest.raises(UsageError, match="needs arbitrary code"):
        open_tensors(path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code from a checkpoint ran"


def test_legacy_and_torchscript_files_are_opaque_without_loading(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    index = build_index(tmp_path / "legacy.pt")
    assert index.format == "opaque" and index.framework == "pytorch"
    assert "legacy torch pickle" in index.notes[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in 2.13
        scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "scripted.pt"))
    assert detect_format(tmp_path / "scripted.pt") == "opaque"
    index = build_index(tmp_path / "scripted.pt")
    assert index.notes == ("opaque: TorchScript archive (contains code); not loaded",)


def test_open_tensors_reads_torch_checkpoints(tmp_path: Path) -> None:
    sd = _state_dict()
    path = tmp_path / "c.pt"
    torch.save(sd, path)
    with open_tensors(path) as reader:
        assert reader.format == "torch"
        np.testing.assert_array_equal(reader.read("model.embed.weight"), sd["model"]["embed.weight"].numpy())
        np.testing.assert_array_equal(reader.read("transposed"), sd["transposed"].numpy())
        with pytest.raises(UsageError, match="is bfloat16, which numpy cannot hold") as err:
            reader.read("model.norm.weight")
        assert err.value.hint == "read it with as_float32=True"
        got = reader.read("model.norm.weight", as_float32=True)
        np.testing.assert_array_equal(got, sd["model"]["norm.weight"].float().numpy())
        assert reader.read("model.head.weight", as_float32=True).dtype == np.float32
        # Arrays are private copies: writing to them does not touch the mapped file.
        arr = reader.read("model.embed.weight")
        arr[:] = 0
        assert reader.read("model.embed.weight").any()


def test_bfloat16_rounding_matches_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate(
        [
            rng.standard_normal(10000).astype(np.float32)
            * np.float32(10.0) ** rng.integers(-30, 30, 10000).astype(np.float32),
            np.array([np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45, 1.00390625], np.float32),
        ]
    ).astype(np.float32)
    ours = float32_to_bfloat16_bits(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    # And the writer's file is what torch's safetensors loader gets.
    from safetensors.torch import load_file

    path = tmp_path / "bf.safetensors"
    write_safetensors([("v", values)], path, header=[("v", "bfloat16", values.shape)])
    assert torch.equal(load_file(str(path))["v"], torch.from_numpy(values).to(torch.bfloat16))


@pytest.mark.parametrize(
    "name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]
)
def test_float8_tables_match_torch(name: str) -> None:
    codes = np.arange(256, dtype=np.uint8)
    ours = to_float32(codes, name)
    theirs = torch.from_numpy(codes).view(getattr(torch, name)).float().numpy()
    np.testing.assert_array_equal(ours, theirs)  # NaNs compare equal here

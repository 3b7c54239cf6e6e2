"""TensorIndex: totals, JSON round trip, schema checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mvc.errors import SchemaError
from mvc.formats import TensorIndex, TensorInfo


def _index() -> TensorIndex:
    return TensorIndex(
        format="safetensors",
        framework="pytorch",
        tensors=(
            TensorInfo("z.weight", "bfloat16", (4, 8), 64, "a" * 32),
            TensorInfo("a.bias", "float32", (8,), 32, "b" * 32),
            TensorInfo("scalar", "float32", (), 4, "c" * 32),
            TensorInfo("ünï", "int8", (0, 3), 0, "d" * 32, "sub/x.safetensors"),
        ),
        notes=("a note",),
    )


def test_tensors_are_sorted_and_totals_derived() -> None:
    index = _index()
    assert [t.name for t in index.tensors] == ["a.bias", "scalar", "z.weight", "ünï"]
    assert index.tensor_count == 4
    assert index.parameter_count == 8 + 1 + 32 + 0
    assert index.total_bytes == 100
    assert index.bytes_by_dtype == {"bfloat16": 64, "float32": 36, "int8": 0}
    assert index.by_name["scalar"].shape == ()


def test_json_round_trip_is_exact_and_deterministic() -> None:
    index = _index()
    data = index.to_json()
    assert isinstance(data, bytes)
    assert b" " not in data.replace(b"a note", b"")  # compact separators
    assert TensorIndex.from_json(data) == index
    assert TensorIndex.from_json(data.decode()) == index
    # Same content in another order gives the same bytes.
    shuffled = TensorIndex("safetensors", "pytorch", tuple(reversed(index.tensors)), index.notes)
    assert shuffled.to_json() == data
    doc = json.loads(data)
    assert doc["schema"] == 1
    assert doc["tensor_count"] == 4 and doc["parameter_count"] == 41 and doc["total_bytes"] == 100
    assert doc["bytes_by_dtype"] == {"bfloat16": 64, "float32": 36, "int8": 0}


def test_newer_schema_is_rejected_with_upgrade_hint() -> None:
    doc = json.loads(_index().to_json())
    doc["schema"] = 2
    with pytest.raises(SchemaError, match="schema 2 is newer") as err:
        TensorIndex.from_json(json.dumps(doc))
    assert "upgrade" in (err.value.hint or "")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("schema"),
        lambda d: d.update(schema="1"),
        lambda d: d.update(format="pickle"),
        lambda d: d.update(tensors="nope"),
        lambda d: d["tensors"][0].pop(),
        lambda d: d["tensors"][0].__setitem__(2, [-1]),
        lambda d: d["tensors"][0].__setitem__(3, 1.5),
        lambda d: d["tensors"].append(list(d["tensors"][0])),
        lambda d: d.update(total_bytes=99),
        lambda d: d.update(columns=["name"]),
        lambda d: d.pop("tensors"),
    ],
)
def test_malformed_index_raises_schema_error(mutate) -> None:
    doc = json.loads(_index().to_json())
    mutate(doc)
    with pytest.raises(SchemaError):
        TensorIndex.from_json(json.dumps(doc))


def test_any_name_round_trips_and_json_is_ascii() -> None:
    index = TensorIndex("npz", None, (TensorInfo("bad\ud800name ü", "float32", (1,), 4, "e" * 32),))
    data = index.to_json()
    assert data.isascii()
    assert TensorIndex.from_json(data) == index


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"\xff\xfe"])
def test_garbage_raises_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError):
        TensorIndex.from_json(data)


def test_import_loads_no_numpy_torch_or_safetensors() -> None:
    code = "import sys, mvc.formats; print(sorted(m for m in ('numpy', 'torch', 'safetensors') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

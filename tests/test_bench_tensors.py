"""scripts/bench_tensors.py (issue 15): the checkpoint chains are real and the reference
encoding (XOR with the parent + byte grouping + zstd-3) rebuilds every file exactly.

No timing assertions: speed and ratios are the bench's job.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_tensors.py"


@pytest.fixture(scope="module")
def bt():
    spec = importlib.util.spec_from_file_location("bench_tensors_under_test", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chains(bt, tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return bt.train_chains(tmp_path_factory.mktemp("chains"), size="tiny", every=2, count=5)


def _tensors(path: Path) -> dict[str, bytes]:
    from safetensors.numpy import load_file

    return {name: arr.tobytes() for name, arr in load_file(str(path)).items()}


def test_chains_are_real_fine_tune_checkpoints(chains):
    assert sorted(chains) == ["bf16", "fp32", "frozen"]
    for paths in chains.values():
        assert len(paths) == 5 and all(p.stat().st_size > 0 for p in paths)
    first, last = _tensors(chains["fp32"][0]), _tensors(chains["fp32"][-1])
    assert first.keys() == last.keys()
    assert all(first[n] != last[n] for n in first if n.endswith(".weight")), "every trained weight moves"
    frozen_first, frozen_last = _tensors(chains["frozen"][0]), _tensors(chains["frozen"][-1])
    changed = {n for n in frozen_first if frozen_first[n] != frozen_last[n]}
    assert changed and all(n.startswith(("bert.pooler.", "classifier.")) for n in changed), changed
    with open(chains["bf16"][0], "rb") as f:
        assert b'"BF16"' in f.read(1 << 16)


def test_estimate_encoding_rebuilds_every_file_exactly(bt, chains):
    for paths in chains.values():
        for i, path in enumerate(paths):
            parent = paths[i - 1] if i else None
            recipe = bt.encode_file(path, parent)
            rebuilt = bt.decode_file(recipe, parent.read_bytes() if parent else None)
            assert rebuilt == path.read_bytes(), path
            if i:
                assert {p[3] for p in recipe.pieces} & {"xor", "same"}, "a child version is stored against its parent"


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
def test_tensor_encodings_round_trip(bt, itemsize):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(itemsize)
    parent = rng.standard_normal(4096).astype(np.float64).tobytes()[: 1024 * itemsize]
    child = bytearray(parent)
    child[::7] = bytes((b + 1) % 256 for b in child[::7])
    for data, base in ((bytes(child), parent), (bytes(child), None), (parent, parent), (b"\x00" * len(parent), None)):
        kind, payload = bt.encode_tensor(data, itemsize, base)
        assert bt.decode_tensor(kind, payload, itemsize, len(data), base) == data, kind
    assert bt.encode_tensor(parent, itemsize, parent) == ("same", b"")
    assert bt.ungroup(bt.bytegroup(bytes(child), itemsize), itemsize) == bytes(child)


def test_storage_schemes_measure_the_chain(bt, chains):
    paths = chains["frozen"]
    full = bt.full_sizes(paths)
    names, frozen_full = bt.frozen_names(paths)
    est, est_frozen, _ = bt.estimate_sizes(paths, names)
    cdc = bt.cdc_sizes(paths)
    assert names and all(f > 0 for f in frozen_full)
    assert est_frozen[1:] == [0] * (len(paths) - 1), "unchanged tensors cost nothing"
    assert sum(est) < sum(full) and sum(cdc) <= sum(full)


def test_tensors_layout_column_reads_the_real_remote(bt, chains, tmp_path):
    import os

    env = dict(os.environ)
    if not bt.tensors_layout_available(env):
        pytest.skip("mvc remote add has no --layout yet (issue 15)")
    paths = chains["fp32"]
    scheme = bt.measure_tensors_layout(paths, "fp32", tmp_path, env)
    assert len(scheme.per_version) == len(paths) and all(b > 0 for b in scheme.per_version), scheme
    assert scheme.reported is not None and len(scheme.reported) == len(paths), scheme.note
    assert sum(scheme.per_version[1:]) < sum(bt.full_sizes(paths)[1:]), "a child version costs less than a full copy"
    assert not (tmp_path / "store-fp32").exists() and not (tmp_path / "repo-fp32").exists()


def test_wire_rows_report_each_file_size_with_its_own_dvc_baseline(bt):
    seconds = {"dvc push": 10.0, "dvc pull": 5.0, "mvc push delta": 5.0, "mvc pull delta": 4.0, "mvc pull no base": 5.0}
    rss = {k: 100.0 for k in seconds}
    result = {
        "chains": {},
        "wire": [
            {"label": "default fp32 chain", "seconds": seconds, "rss_mib": rss, "file_mib": 86.7, "repeat": 2},
            {"label": "BERT-base fp32, 20 steps apart", "seconds": seconds, "rss_mib": rss, "file_mib": 417.7, "repeat": 2},
            {"label": "BERT-base fp32", "failed": "training: out of memory"},
        ],
    }

    rows = bt.rows(result)

    names = [r["benchmark"] for r in rows]
    assert names[:3] == [
        "tensors wire 87 MiB: push delta version, local S3",
        "tensors wire 87 MiB: pull delta version (base cached), local S3",
        "tensors wire 87 MiB: pull, no local base, local S3",
    ]
    assert names[3].startswith("tensors wire 418 MiB: push delta version") and len(rows) == 7
    assert [(r["ratio"], r["met"]) for r in rows[3:6]] == [(0.5, True), (0.8, False), (1.0, True)]
    assert rows[6]["met"] is False and "out of memory" in rows[6]["note"]
    assert set(rows[0]) == {"benchmark", "mvc", "baseline", "unit", "ratio", "target", "met", "note"}

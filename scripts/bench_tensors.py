#!/usr/bin/env python
"""Issue 15's storage targets, side by side in one run: what a chain of real fine-tune
checkpoints costs on a remote under each storage scheme.

The script trains a BERT/MiniLM-sized model built from a config (no download, no network)
with AdamW (lr 2e-5) on synthetic token batches and saves a safetensors checkpoint every K
steps. That yields three chains of >= 5 checkpoints:

- ``fp32``   the checkpoints as trained (float32);
- ``bf16``   the same checkpoints cast to bfloat16 (fp32 master weights, bf16 export);
- ``frozen`` a second run where the backbone is frozen and only the head (pooler +
  classifier) trains.

For each chain it measures the bytes stored by:

a. ``full``      the sum of the file sizes: what DVC (and mvc's default layout) stores;
b. ``cdc``       Xet-style content-defined chunking (FastCDC, ~64 KiB chunks) deduplicated
                 across the chain: the unique chunk bytes;
c. ``zstd``      each file compressed with zstd level 3 (no dedup);
d. ``tensors``   mvc's ``--layout tensors`` remote, through the real CLI (``mvc add`` each
                 checkpoint as the next version, ``mvc commit``, ``mvc push``): the remote's
                 size on disk and ``mvc storage --json``; "n/a" while mvc lacks the layout;
e. ``estimate``  the algorithm the tensors layout implements, computed here: per tensor the
                 smallest of raw, byte-grouped + zstd-3, or XOR with the parent checkpoint's
                 same tensor + byte grouping + zstd-3; an unchanged tensor costs nothing.

Two ratios per scheme: ``chain`` = stored bytes of all versions / full bytes of all versions,
and ``delta`` = stored bytes of versions 2..N / their full bytes (what a new version costs; the
published 43-47% figure for fp32 is this one). The frozen chain's target is on the frozen part:
exact for the estimate, an upper bound (all new bytes counted as frozen) for the other columns.

With the tensors layout present it also times push/pull of a delta version to local S3
(SeaweedFS, scripts/servers.py) against ``dvc push``/``dvc pull`` of the same file: the last
two checkpoints of the fp32 chain and (not with ``--quick``) a BERT-base-sized pair (~418 MiB
fp32, trained for real, ``WIRE_STEPS`` steps apart), where transfer bytes rather than each
process's fixed start-up (imports, opening the DVC repository) decide the ratio.

Usage:
    .venv/bin/python scripts/bench_tensors.py            # ~22M-param model, 6 checkpoints, a few minutes
    .venv/bin/python scripts/bench_tensors.py --quick    # a tiny model: seconds
    .venv/bin/python scripts/bench_tensors.py --json --no-wire --keep /tmp/chains

Targets (issue 15): tensors layout <= 0.45x full (fp32), <= 0.35x (bf16), <= 0.05x for the
frozen part; delta push/pull to local S3 <= 0.6x dvc push/pull; pull without a local base
<= 1.1x dvc pull.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MVC = str(BIN / "mvc")
DVC = str(BIN / "dvc")
MiB = 2**20
KiB = 2**10
ZSTD_LEVEL = 3
# Xet's chunker: 64 KiB target, 8 KiB min, 128 KiB max. pyfastcdc's mean chunk is avg + min.
CDC_AVG, CDC_MIN, CDC_MAX = 56 * KiB, 8 * KiB, 128 * KiB
TARGETS = {"fp32": 0.45, "bf16": 0.35, "frozen": 0.05}
HEAD_PREFIXES = ("bert.pooler.", "classifier.")

# Model sizes: "default" is MiniLM-L6-sized (~22.7M parameters, ~91 MB fp32).
SIZES: dict[str, dict[str, int]] = {
    "default": {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512},
    "quick": {"vocab_size": 4000, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512, "max_position_embeddings": 128},
    # BERT-base-sized (~110M parameters, ~418 MiB fp32): the second wire row, where transfer bytes dominate
    "wire": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512},
    "tiny": {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32},
}
BATCH = {"default": (8, 32), "quick": (4, 16), "tiny": (2, 8), "wire": (4, 32)}  # (batch, sequence length)
WIRE_STEPS = 20  # optimizer steps between the two checkpoints of the wire-size pair (the chains' spacing)

DTYPE_SIZES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


# ---------------------------------------------------------------- training: the chains


def train_chains(out: Path, *, size: str = "default", every: int = 20, count: int = 6, seed: int = 0) -> dict[str, list[Path]]:
    """Train for real and save checkpoint chains under ``out``.

    Args:
        out: Directory for the checkpoints (created).
        size: A key of ``SIZES``.
        every: Optimizer steps between two checkpoints.
        count: Checkpoints per chain (the first is the starting point, before any step).
        seed: Seed for the initial weights and the synthetic data.

    Returns:
        ``{"fp32": [...], "bf16": [...], "frozen": [...]}``, each ``count`` paths in order.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    config = BertConfig(**SIZES[size], num_labels=2)
    batch, seq = BATCH[size]
    chains: dict[str, list[Path]] = {"fp32": [], "bf16": [], "frozen": []}
    for chain in chains:
        (out / chain).mkdir(parents=True, exist_ok=True)

    def batches():
        gen = torch.Generator().manual_seed(seed + 1)
        pool = []
        for _ in range(16):
            ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
            pool.append((ids, (ids[:, 1] % 2).long()))  # a learnable label
        while True:
            yield from pool

    def save(model, chain: str, step: int, *, bf16_chain: str | None = None) -> None:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        path = out / chain / f"step-{step:05d}.safetensors"
        save_file(state, str(path))
        chains[chain].append(path)
        if bf16_chain:
            cast = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
            path = out / bf16_chain / f"step-{step:05d}.safetensors"
            save_file(cast, str(path))
            chains[bf16_chain].append(path)

    for run in ("full", "frozen"):
        torch.manual_seed(seed)  # the same "pretrained" starting point for both runs
        model = BertForSequenceClassification(config)
        model.train()
        if run == "frozen":
            for name, param in model.named_parameters():
                param.requires_grad = name.startswith(HEAD_PREFIXES)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
        data = batches()
        chain, bf16 = ("fp32", "bf16") if run == "full" else ("frozen", None)
        save(model, chain, 0, bf16_chain=bf16)
        for step in range(1, every * (count - 1) + 1):
            ids, labels = next(data)
            opt.zero_grad()
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            if step % every == 0:
                save(model, chain, step, bf16_chain=bf16)
    return chains


def train_pair(out: Path, *, size: str = "wire", steps: int = WIRE_STEPS, seed: int = 0) -> tuple[Path, Path]:
    """Train a model of ``size`` for real and save two fp32 checkpoints ``steps`` optimizer steps apart.

    The parent is the starting point (as the chains' first version), the child the weights
    after ``steps`` AdamW steps (lr 2e-5) on synthetic token batches. Reused when ``out``
    already holds both files.

    Returns:
        (parent, child) safetensors paths.
    """
    parent, child = out / "step-00000.safetensors", out / f"step-{steps:05d}.safetensors"
    if parent.is_file() and child.is_file():
        return parent, child
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**SIZES[size], num_labels=2)
    batch, seq = BATCH[size]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed + 1)

    def save(path: Path) -> None:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(state, str(tmp))
        os.replace(tmp, path)

    save(parent)
    for _ in range(steps):
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
        opt.zero_grad()
        model(input_ids=ids, labels=(ids[:, 1] % 2).long()).loss.backward()
        opt.step()
    save(child)
    return parent, child


# ---------------------------------------------------------------- safetensors layout


@dataclass(frozen=True)
class TensorSpan:
    name: str
    dtype: str
    start: int  # absolute file offsets
    end: int


def read_layout(data: bytes | memoryview) -> tuple[int, list[TensorSpan]]:
    """Parse a safetensors header: (data offset, tensors in file order)."""
    n = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8 : 8 + n]))
    base = 8 + n
    spans = [
        TensorSpan(name, meta["dtype"], base + meta["data_offsets"][0], base + meta["data_offsets"][1])
        for name, meta in header.items()
        if name != "__metadata__"
    ]
    return base, sorted(spans, key=lambda s: s.start)


# ---------------------------------------------------------------- (e) the algorithmic estimate


def bytegroup(buf: bytes | memoryview, itemsize: int) -> bytes:
    """Byte-plane grouping: all first bytes of the elements, then all second bytes, ..."""
    import numpy as np

    arr = np.frombuffer(buf, dtype=np.uint8)
    if itemsize <= 1 or arr.size % itemsize:
        return arr.tobytes()
    return arr.reshape(-1, itemsize).T.tobytes()


def ungroup(buf: bytes, itemsize: int) -> bytes:
    """Inverse of :func:`bytegroup`."""
    import numpy as np

    arr = np.frombuffer(buf, dtype=np.uint8)
    if itemsize <= 1 or arr.size % itemsize:
        return arr.tobytes()
    return arr.reshape(itemsize, -1).T.tobytes()


def xor_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    import numpy as np

    return np.bitwise_xor(np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8)).tobytes()


def _compressor():
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)


def encode_tensor(data: bytes | memoryview, itemsize: int, parent: bytes | memoryview | None = None) -> tuple[str, bytes]:
    """Encode one tensor's bytes the way the tensors layout may store them; the smallest wins.

    Kinds: ``same`` (identical to the parent's tensor: nothing stored), ``raw``, ``zstd``
    (byte-grouped + zstd-3), ``xor`` (XOR with the parent's tensor, byte-grouped, zstd-3).

    Returns:
        (kind, payload).
    """
    cctx = _compressor()
    if parent is not None and len(parent) == len(data) and bytes(parent) == bytes(data):
        return "same", b""
    best = ("raw", bytes(data))
    for kind, source in (("zstd", data), ("xor", xor_bytes(data, parent) if parent is not None and len(parent) == len(data) else None)):
        if source is None:
            continue
        payload = cctx.compress(bytegroup(source, itemsize))
        if len(payload) < len(best[1]):
            best = (kind, payload)
    return best


def decode_tensor(kind: str, payload: bytes, itemsize: int, size: int, parent: bytes | memoryview | None = None) -> bytes:
    """Inverse of :func:`encode_tensor`: the tensor's exact bytes (``size`` of them)."""
    import zstandard

    if kind == "same":
        assert parent is not None
        return bytes(parent)
    if kind == "raw":
        return payload
    plain = ungroup(zstandard.ZstdDecompressor().decompress(payload, max_output_size=size), itemsize)
    if kind == "zstd":
        return plain
    assert parent is not None
    return xor_bytes(plain, parent)


@dataclass
class Recipe:
    """How to rebuild one file: the header bytes, then pieces in file order."""

    header: bytes
    pieces: list[tuple[str, str, int, str, bytes]] = field(default_factory=list)  # (name, dtype, size, kind, payload)

    @property
    def stored(self) -> int:
        return len(self.header) + sum(len(p[4]) for p in self.pieces)


def encode_file(path: Path, parent: Path | None = None) -> Recipe:
    """Encode a safetensors file against its parent version (same-name tensors)."""
    data = path.read_bytes()
    base, spans = read_layout(data)
    parent_data = parent.read_bytes() if parent is not None else b""
    parent_spans = {s.name: s for s in read_layout(parent_data)[1]} if parent is not None else {}
    recipe = Recipe(header=data[:base])
    pos = base
    for span in spans:
        if span.start > pos:  # padding between tensors: kept raw
            recipe.pieces.append(("", "U8", span.start - pos, "raw", data[pos : span.start]))
        itemsize = DTYPE_SIZES.get(span.dtype, 1)
        ps = parent_spans.get(span.name)
        pbytes = memoryview(parent_data)[ps.start : ps.end] if ps is not None and ps.dtype == span.dtype else None
        kind, payload = encode_tensor(memoryview(data)[span.start : span.end], itemsize, pbytes)
        recipe.pieces.append((span.name, span.dtype, span.end - span.start, kind, payload))
        pos = span.end
    if pos < len(data):
        recipe.pieces.append(("", "U8", len(data) - pos, "raw", data[pos:]))
    return recipe


def decode_file(recipe: Recipe, parent: bytes | None = None) -> bytes:
    """Rebuild a file's exact bytes from its recipe (and the parent version's bytes)."""
    parent_spans = {s.name: s for s in read_layout(parent)[1]} if parent else {}
    out = [recipe.header]
    for name, _dtype, size, kind, payload in recipe.pieces:
        ps = parent_spans.get(name) if name else None
        pbytes = memoryview(parent)[ps.start : ps.end] if ps is not None and parent is not None else None
        out.append(decode_tensor(kind, payload, DTYPE_SIZES.get(_dtype, 1), size, pbytes))
    return b"".join(out)


# ---------------------------------------------------------------- measuring a chain


@dataclass
class Scheme:
    """Bytes one storage scheme stores for each version of a chain."""

    per_version: list[int]
    frozen_part: list[int] | None = None  # bytes stored for the frozen tensors, per version (frozen chain)
    note: str = ""
    reported: list[int] | None = None  # tensors layout: stored_bytes per version as `mvc storage --json` reports them


def full_sizes(paths: list[Path]) -> list[int]:
    return [p.stat().st_size for p in paths]


def cdc_sizes(paths: list[Path]) -> list[int]:
    """New unique chunk bytes each version adds (FastCDC ~64 KiB, deduplicated across the chain)."""
    from pyfastcdc import FastCDC

    cdc = FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)
    seen: set[bytes] = set()
    sizes = []
    for path in paths:
        new = 0
        for chunk in cdc.cut_file(str(path)):
            digest = hashlib.blake2b(chunk.data, digest_size=20).digest()
            if digest not in seen:
                seen.add(digest)
                new += chunk.length
        sizes.append(new)
    return sizes


def zstd_sizes(paths: list[Path]) -> list[int]:
    cctx = _compressor()
    return [len(cctx.compress(p.read_bytes())) for p in paths]


def estimate_sizes(paths: list[Path], frozen: Iterable[str] = ()) -> tuple[list[int], list[int], dict[str, int]]:
    """(stored bytes per version, stored bytes of the ``frozen`` tensors per version, piece kinds)."""
    frozen = set(frozen)
    sizes, frozen_sizes, kinds = [], [], {}
    for i, path in enumerate(paths):
        recipe = encode_file(path, paths[i - 1] if i else None)
        sizes.append(recipe.stored)
        frozen_sizes.append(sum(len(p[4]) for p in recipe.pieces if p[0] in frozen))
        if i:
            for piece in recipe.pieces:
                kinds[piece[3]] = kinds.get(piece[3], 0) + 1
    return sizes, frozen_sizes, kinds


def frozen_names(paths: list[Path]) -> tuple[set[str], list[int]]:
    """Tensors of a chain that never change, and their bytes per version."""
    datas = [p.read_bytes() for p in paths[:2]]
    spans = [dict((s.name, s) for s in read_layout(d)[1]) for d in datas]
    names = set()
    for name, s in spans[0].items():
        t = spans[1].get(name)
        if not name.startswith(HEAD_PREFIXES) and t is not None and datas[0][s.start : s.end] == datas[1][t.start : t.end]:
            names.add(name)
    per = [sum(s.end - s.start for s in read_layout(p.read_bytes())[1] if s.name in names) for p in paths]
    return names, per


# ---------------------------------------------------------------- (d) mvc's tensors layout via the CLI


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stdout


def tensors_layout_available(env: dict[str, str]) -> bool:
    proc = subprocess.run([MVC, "remote", "add", "--help"], env=env, capture_output=True, text=True)
    return proc.returncode == 0 and "--layout" in proc.stdout


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _storage_entries(data) -> tuple[list[dict], dict | None]:
    """Per-version entries (dicts with logical_bytes/stored_bytes) and the totals, wherever they sit in the JSON."""
    versions: list[dict] = []
    totals: dict | None = None

    def walk(node, key: str = "") -> None:
        nonlocal totals
        if isinstance(node, dict):
            if "stored_bytes" in node and "logical_bytes" in node:
                if key == "totals" or "totals" in key:
                    totals = totals or node
                else:
                    versions.append(node)
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)

    walk(data)
    # a model entry carrying its own totals would also match: keep the version-like ones
    with_version = [v for v in versions if "version" in v]
    versions = with_version or versions
    def number(v: dict) -> int:
        text = str(v.get("version", "")).lstrip("v")
        return int(text) if text.isdigit() else 0

    versions.sort(key=number)
    return versions, totals


def _new_repo(root: Path, env: dict[str, str]) -> None:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    _run([MVC, "init"], root, env)


def measure_tensors_layout(paths: list[Path], chain: str, work: Path, env: dict[str, str]) -> Scheme:
    """Run the real CLI: each checkpoint as the next version of one model, pushed to a tensors remote."""
    root, store = work / f"repo-{chain}", work / f"store-{chain}"
    _new_repo(root, env)
    _run([MVC, "remote", "add", "store", str(store), "--layout", "tensors", "--default"], root, env)
    target = root / "models" / f"{chain}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    pushes, du = [], []
    for i, path in enumerate(paths):
        shutil.copyfile(path, target)
        _run([MVC, "add", "--quiet", "--name", chain, str(target.relative_to(root))], root, env)
        _run([MVC, "commit", "--quiet", "-m", f"{chain} checkpoint {i}"], root, env)
        pushes.append(_run([MVC, "push", "--quiet", "-r", "store"], root, env)[0])
        du.append(_du(store))
    per_disk = [du[0]] + [b - a for a, b in zip(du, du[1:])]
    note = f"remote on disk {du[-1] / MiB:.1f} MiB; push {sum(pushes):.1f} s total"
    stored: list[int] | None = None
    try:
        out = _run([MVC, "storage", chain, "--remote", "store", "--json"], root, env)[1]
        versions, totals = _storage_entries(json.loads(out))
        stored = [int(v["stored_bytes"]) for v in versions]
        if totals is not None:
            note += f"; mvc storage totals stored {int(totals['stored_bytes']) / MiB:.1f} of {int(totals['logical_bytes']) / MiB:.1f} MiB"
        if len(stored) == len(paths):
            ratios = ", ".join(f"{float(v.get('ratio', 0)):.3f}" for v in versions)
            note += f"; mvc storage per-version ratios {ratios}"
    except (RuntimeError, ValueError, KeyError) as exc:
        note += f"; mvc storage unavailable ({str(exc)[:120]})"
    shutil.rmtree(root)
    shutil.rmtree(store)
    # The bytes on the remote's disk are the truth; mvc storage's own view goes in the note.
    return Scheme(per_disk, note=note, reported=stored)


# ---------------------------------------------------------------- push/pull wall time vs dvc (local S3)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _cache_object(root: Path, pointer: Path) -> Path:
    import yaml

    md5 = yaml.safe_load(pointer.read_text())["outs"][0]["md5"]
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


# Runs a command and reports (seconds, peak RSS KiB, exit code) into a file. A child forked from
# this (large) bench process would count the bench's own RSS in its ru_maxrss (Linux records the
# old image's high-water mark at exec), so the command is forked from this small launcher.
def measure_wire(parent: Path, child: Path, work: Path, env: dict[str, str], *, repeat: int = 1) -> dict:
    """mvc push/pull of ``child`` as a delta of ``parent`` (tensors remote) vs dvc push/pull of ``child``.

    Each operation runs ``repeat`` times on fresh remote prefixes; the best time counts (a shared,
    loaded machine adds noise, never speed).

    Returns:
        ``{"seconds": {...}, "rss_mib": {...}, "file_mib": size, "repeat": n}``, keyed by operation.
    """
    servers = _load("servers", HERE / "servers.py")
    server = servers.start_s3(work / "s3")
    measured = _load("main", HERE / "bench.py")._measured  # this process tree's wall, peak RSS, CPU
    t: dict[str, float] = {}
    rss: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(key: str, cmd: list[str], cwd: Path, senv: dict[str, str]) -> None:
        seconds, peak, used = measured(cmd, cwd, senv)
        if seconds < t.get(key, float("inf")):
            t[key], cpu[key] = seconds, used  # the CPU of the run that counts
        rss[key] = max(rss.get(key, peak), peak)

    try:
        senv = {**env, **servers.client_env(server)}
        for r in range(repeat):
            # dvc: the same file, full layout
            droot = work / f"wire-dvc-{r}"
            droot.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=droot, env=senv, check=True)
            _run([DVC, "init", "-q"], droot, senv)
            _run([DVC, "remote", "add", "-d", "s3", f"s3://{server.bucket}/tb-dvc-{os.getpid()}-{r}"], droot, senv)
            _run([DVC, "remote", "modify", "s3", "endpointurl", server.endpoint_url], droot, senv)
            shutil.copyfile(child, droot / "model.safetensors")
            _run([DVC, "add", "-q", "model.safetensors"], droot, senv)
            timed("dvc push", [DVC, "push", "-q", "-r", "s3"], droot, senv)
            shutil.rmtree(droot / ".dvc" / "cache")
            (droot / "model.safetensors").unlink()
            timed("dvc pull", [DVC, "pull", "-q", "-r", "s3"], droot, senv)
            shutil.rmtree(droot)
            # mvc: the parent pushed first (not timed), then the child goes as a delta
            root = work / f"wire-mvc-{r}"
            _new_repo(root, senv)
            url = f"s3://{server.bucket}/tb-mvc-{os.getpid()}-{r}"
            _run([MVC, "remote", "add", "s3", url, "--layout", "tensors", "--endpoint-url", server.endpoint_url, "--default"], root, senv)
            model = root / "models" / "net.safetensors"
            model.parent.mkdir()
            for i, src in enumerate((parent, child)):
                shutil.copyfile(src, model)
                _run([MVC, "add", "--quiet", "--name", "net", "models/net.safetensors"], root, senv)
                _run([MVC, "commit", "--quiet", "-m", f"v{i + 1}"], root, senv)
                push = [MVC, "push", "--quiet", "-r", "s3"]
                if i == 0:
                    _run(push, root, senv)
                else:
                    timed("mvc push delta", push, root, senv)
            _cache_object(root, root / "models" / "net.safetensors.dvc").unlink()  # the parent stays in the cache
            model.unlink()
            timed("mvc pull delta", [MVC, "pull", "--quiet", "-r", "s3"], root, senv)
            shutil.rmtree(root / ".dvc" / "cache")
            model.unlink()
            timed("mvc pull no base", [MVC, "pull", "--quiet", "-r", "s3"], root, senv)
            shutil.rmtree(root)
        return {"seconds": t, "rss_mib": rss, "cpu_seconds": cpu, "file_mib": child.stat().st_size / MiB, "repeat": repeat}
    finally:
        servers.stop(server)


# ---------------------------------------------------------------- the whole run


def _ratio(stored: Iterable[int], full: Iterable[int]) -> float:
    s, f = sum(stored), sum(full)
    return s / f if f else 0.0


def load_chains(folder: Path) -> dict[str, list[Path]]:
    """Chains written earlier by ``--keep DIR``."""
    return {chain: sorted((folder / chain).glob("*.safetensors")) for chain in ("fp32", "bf16", "frozen")}


def run(
    work: Path,
    env: dict[str, str],
    *,
    size: str,
    every: int,
    count: int,
    cli: bool,
    wire: bool,
    keep: Path | None = None,
    reuse: Path | None = None,
    repeat: int = 1,
    big_wire: bool = False,
    pair_dir: Path | None = None,
) -> dict:
    """Train the chains (or reuse earlier ones), measure every scheme; return a JSON-able result."""
    t0 = time.perf_counter()
    chains = load_chains(reuse) if reuse else train_chains(keep or work / "chains", size=size, every=every, count=count)
    train_seconds = time.perf_counter() - t0
    count = len(chains["fp32"])
    have_layout = cli and tensors_layout_available(env)
    result: dict = {"reused": str(reuse) if reuse else None, "size": size, "every": every, "count": count, "train_seconds": train_seconds, "tensors_layout": have_layout, "chains": {}}
    for chain, paths in chains.items():
        full = full_sizes(paths)
        frozen, frozen_full = frozen_names(paths) if chain == "frozen" else (set(), [0] * len(paths))
        est, est_frozen, kinds = estimate_sizes(paths, frozen)
        schemes = {
            "full": Scheme(full),
            "cdc": Scheme(cdc_sizes(paths)),
            "zstd": Scheme(zstd_sizes(paths)),
            "estimate": Scheme(est, est_frozen if chain == "frozen" else None, note=f"delta-version pieces: {kinds}"),
        }
        if have_layout:
            try:
                schemes["tensors"] = measure_tensors_layout(paths, chain, work, env)
            except RuntimeError as exc:
                schemes["tensors"] = Scheme([], note=f"failed: {exc}")
        entry: dict = {"files": len(paths), "full_bytes": sum(full), "schemes": {}}
        for name, s in schemes.items():
            data = asdict(s)
            if s.per_version:
                data["chain_ratio"] = _ratio(s.per_version, full)
                data["delta_ratio"] = _ratio(s.per_version[1:], full[1:])
                if chain == "frozen":
                    if s.frozen_part is not None:  # exact
                        data["frozen_ratio"] = _ratio(s.frozen_part[1:], frozen_full[1:])
                    else:  # every new byte counted as frozen: an upper bound
                        data["frozen_ratio"] = _ratio(s.per_version[1:], frozen_full[1:])
            entry["schemes"][name] = data
        if chain == "frozen":
            entry["frozen_tensors"] = len(frozen)
            entry["frozen_fraction"] = _ratio(frozen_full, full)
        result["chains"][chain] = entry
    if have_layout and wire and "tensors" in result["chains"]["fp32"]["schemes"] and result["chains"]["fp32"]["schemes"]["tensors"]["per_version"]:
        pairs: list[tuple[str, Path, Path]] = [(f"{size} fp32 chain", chains["fp32"][-2], chains["fp32"][-1])]
        result["wire"] = []
        if big_wire:  # the model where transfer bytes, not per-process costs, dominate
            t0 = time.perf_counter()
            try:
                parent, child = train_pair(pair_dir or (reuse or keep or work / "chains") / "wire")
                pairs.append((f"BERT-base fp32, {WIRE_STEPS} steps apart", parent, child))
            except Exception as exc:  # noqa: BLE001 - reported, not fatal to the other figures
                result["wire"].append({"label": "BERT-base fp32", "failed": f"training: {str(exc)[:300]}"})
            result["wire_train_seconds"] = time.perf_counter() - t0
        for label, parent, child in pairs:
            try:
                result["wire"].append({"label": label, **measure_wire(parent, child, work, env, repeat=repeat)})
            except Exception as exc:  # reported, not fatal to the storage figures
                result["wire"].append({"label": label, "failed": str(exc)[:400]})
    return result


def rows(result: dict) -> list[dict]:
    """Rows in scripts/bench.py's format: one per (chain, scheme), the target judged per delta version."""
    out = []
    for chain, entry in result["chains"].items():
        target = TARGETS[chain]
        key = "frozen_ratio" if chain == "frozen" else "delta_ratio"
        what = "frozen part" if chain == "frozen" else "per delta version"
        full = entry["full_bytes"]
        for name in ("tensors", "estimate", "cdc", "zstd"):
            s = entry["schemes"].get(name)
            label = f"tensors {chain} x{entry['files']}: {name}"
            if s is None:  # noted on the estimate row: bench.py's rows all carry a measurement
                continue
            if not s["per_version"]:
                note = s["note"]
                out.append({"benchmark": label, "mvc": None, "baseline": full / MiB, "unit": "MiB", "ratio": None, "target": f"<= {target}x full ({what})", "met": None, "note": note})
                continue
            stored = sum(s["per_version"])
            ratio = s[key]
            note = f"chain total {s['chain_ratio']:.3f}x; per delta version {s['delta_ratio']:.3f}x"
            if name in ("tensors", "cdc", "zstd") and chain == "frozen":
                note += " (frozen part: upper bound)"
            if s["note"]:
                note += f"; {s['note']}"
            if name == "estimate" and "tensors" not in entry["schemes"]:
                note += "; tensors layout not available"
            met = ratio <= target if name in ("tensors", "estimate") else None
            out.append({"benchmark": label, "mvc": stored / MiB, "baseline": full / MiB, "unit": "MiB", "ratio": ratio, "target": f"<= {target}x full ({what})", "met": met, "note": note})
    for wire in result.get("wire") or []:
        if "failed" in wire:
            out.append({"benchmark": f"tensors wire ({wire['label']}), local S3", "mvc": None, "baseline": None, "unit": "s", "ratio": None, "target": "<= 0.6x dvc", "met": False, "note": f"failed: {wire['failed']}"})
            continue
        for label, mvc_key, dvc_key, want in (
            ("push delta version", "mvc push delta", "dvc push", 0.6),
            ("pull delta version (base cached)", "mvc pull delta", "dvc pull", 0.6),
            ("pull, no local base", "mvc pull no base", "dvc pull", 1.1),
        ):
            sec, rss = wire["seconds"], wire["rss_mib"]
            ratio = sec[mvc_key] / sec[dvc_key]
            note = (
                f"{wire['label']}, best of {wire['repeat']}; mvc verified; peak RSS mvc {rss[mvc_key]:.0f} MiB, dvc {rss[dvc_key]:.0f} MiB"
            )
            out.append({"benchmark": f"tensors wire {wire['file_mib']:.0f} MiB: {label}, local S3", "mvc": sec[mvc_key], "baseline": sec[dvc_key], "unit": "s", "ratio": ratio, "target": f"<= {want}x dvc", "met": ratio <= want, "note": note})
    return out


def render(result: dict) -> str:
    lines = [
        f"chains reused from {result['reused']}, {result['count']} checkpoints each"
        if result.get("reused")
        else f"model size '{result['size']}', checkpoints every {result['every']} steps, {result['count']} per chain; training {result['train_seconds']:.0f} s",
        "ratio = stored / full layout; chain = all versions, delta = versions 2..N, frozen = the frozen tensors of versions 2..N",
        f"{'chain':7} {'full MiB':>9}  " + "  ".join(f"{n:>22}" for n in ("cdc 64K (chain/delta)", "zstd-3 (chain/delta)", "estimate (chain/delta)", "tensors (chain/delta)")) + f"  {'target':>7}",
    ]
    for chain, entry in result["chains"].items():
        cells = []
        for name in ("cdc", "zstd", "estimate", "tensors"):
            s = entry["schemes"].get(name)
            if s is None or not s["per_version"]:
                cells.append(f"{'n/a':>22}")
                continue
            cell = f"{s['chain_ratio']:.3f}/{s['delta_ratio']:.3f}"
            if "frozen_ratio" in s:
                cell += f" fz {s['frozen_ratio']:.3f}"
            cells.append(f"{cell:>22}")
        lines.append(f"{chain:7} {entry['full_bytes'] / MiB:9.1f}  " + "  ".join(cells) + f"  {'<= ' + str(TARGETS[chain]):>7}")
    if not result["tensors_layout"]:
        lines.append("tensors layout not available (mvc remote add has no --layout): the tensors column and the wire rows are skipped")
    for chain, entry in result["chains"].items():
        for name, s in entry["schemes"].items():
            if s.get("note"):
                lines.append(f"{chain} {name}: {s['note']}")
    for wire in result.get("wire") or []:
        if "failed" in wire:
            lines.append(f"wire (local S3, {wire['label']}) failed: {wire['failed']}")
        else:
            lines.append(f"wire (local S3, {wire['label']}, {wire['file_mib']:.0f} MiB file), seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in wire["seconds"].items()))
            lines.append("  peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in wire["rss_mib"].items()))
            if wire.get("cpu_seconds"):  # 2 cores, shared with the server: a CPU-bound tool cannot beat its CPU / 2
                lines.append("  CPU seconds (user + system): " + ", ".join(f"{k} {v:.2f}" for k, v in wire["cpu_seconds"].items()))
    return "\n".join(lines)


def _standalone_env(work: Path) -> dict[str, str]:
    bench = _load("main", HERE / "bench.py")
    return bench._env(work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small model and short chains: seconds")
    parser.add_argument("--size", choices=sorted(SIZES), help="model size (default: 'default', or 'quick' with --quick)")
    parser.add_argument("--every", type=int, help="optimizer steps between checkpoints (default 20, 3 with --quick)")
    parser.add_argument("--count", type=int, default=5, help="checkpoints per chain (>= 5 for the targets)")
    parser.add_argument("--no-cli", action="store_true", help="skip the real mvc tensors-layout column")
    parser.add_argument("--no-wire", action="store_true", help="skip the push/pull timings against local S3")
    parser.add_argument("--no-big-wire", action="store_true", help="skip the BERT-base-sized (~418 MiB) wire pair (on by default, not with --quick)")
    parser.add_argument("--wire-pair", type=Path, help="keep / reuse the BERT-base-sized wire pair here (default: beside the chains)")
    parser.add_argument("--repeat", type=int, help="runs of each push/pull timing, best counts (default 2, 1 with --quick)")
    parser.add_argument("--keep", type=Path, help="write the checkpoint chains here and keep them")
    parser.add_argument("--chains", type=Path, help="reuse the chains a --keep run wrote (no training)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (with bench.py rows under 'rows')")
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "default")
    every = args.every or (3 if args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="mvc-bench-tensors-") as tmp:
        work = Path(tmp)
        env = _standalone_env(work)
        os.environ.update(env)
        result = run(work, env, size=size, every=every, count=args.count, cli=not args.no_cli, wire=not args.no_wire, keep=args.keep, reuse=args.chains, repeat=args.repeat or (1 if args.quick else 2), big_wire=not (args.quick or args.no_big_wire), pair_dir=args.wire_pair)
    result["rows"] = rows(result)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    """Rows for ``scripts/bench.py``; runs this script in a subprocess (torch stays out of the bench process)."""
    args = ["--quick"] if quick else []
    proc = subprocess.run([sys.executable, __file__, "--json", *args], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"bench_tensors failed: {tail[0]}")
    return json.loads(proc.stdout)["rows"]


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Peak memory of `mvc merge`: three 1 GiB models (16 float32 tensors of 64 MiB each), linear.

Target (DESIGN.md): peak RSS < 1.5x the largest single tensor + 300 MiB. The merge runs
as the real CLI (`mvc merge NAME@v1 NAME@v2 NAME@v3 -o ...`) in a fresh process whose
only child it is, so ``RUSAGE_CHILDREN.ru_maxrss`` of that wrapper is the merge's own
peak RSS (imports of DVC, GitPython and numpy included). The big files are deleted
afterwards. ``scripts/bench.py`` calls :func:`bench`; run this file alone for one row:

    python scripts/bench_merge.py            # 3 x 1 GiB
    python scripts/bench_merge.py --quick    # 3 x 32 MiB (16 tensors of 2 MiB)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MiB = 2**20
GiB = 2**30

_PEAK = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "if proc.returncode:\n"
    "    sys.exit(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB on Linux
)


def peak_rss_mib(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of running ``cmd`` as the only child of a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    return int(proc.stdout.split()[-1]) / 1024, elapsed


def write_model(path: Path, *, tensors: int, tensor_bytes: int, seed: int) -> None:
    """A float32 safetensors file of ``tensors`` tensors, written one tensor at a time."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from mvc.formats import SafetensorsWriter

    per = tensor_bytes // 4
    specs = [(f"layers.{i}.weight", "float32", (per // 1024, 1024)) for i in range(tensors)]
    rng = np.random.default_rng(seed)
    with SafetensorsWriter(path, specs) as writer:
        for name, _, shape in specs:
            writer.write(name, rng.random(shape, dtype=np.float32))


def measure(work: Path, env: dict[str, str], *, tensors: int = 16, tensor_bytes: int = 64 * MiB, models: int = 3) -> dict:
    """Version ``models`` random models as NAME v1..vN, merge them (linear), return the figures.

    Everything lives under ``work`` and is deleted before returning.
    """
    mvc = str(BIN / "mvc")
    root = work / "merge-repo"
    root.mkdir(parents=True)
    try:
        subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
        subprocess.run([mvc, "init"], cwd=root, env=env, check=True, capture_output=True)
        # Hardlinked cache: each version's bytes exist once on disk.
        subprocess.run([str(BIN / "dvc"), "config", "cache.type", "hardlink"], cwd=root, env=env, check=True)
        weights = root / "net.safetensors"
        for v in range(1, models + 1):
            write_model(weights, tensors=tensors, tensor_bytes=tensor_bytes, seed=v)
            subprocess.run([mvc, "add", "--quiet", str(weights)], cwd=root, env=env, check=True, capture_output=True)
            subprocess.run([mvc, "commit", "-m", f"v{v}"], cwd=root, env=env, check=True, capture_output=True)
        out = work / "merged.safetensors"
        refs = [f"net@v{v}" for v in range(1, models + 1)]
        peak, seconds = peak_rss_mib([mvc, "merge", *refs, "-o", str(out), "--quiet"], root, env)
        size = out.stat().st_size
        idle, _ = peak_rss_mib([sys.executable, "-c", "import numpy, dvc.repo, mvc.api"], root, env)
        return {
            "peak_rss_mib": round(peak, 1),
            "largest_tensor_mib": tensor_bytes / MiB,
            "model_mib": tensors * tensor_bytes / MiB,
            "models": models,
            "output_bytes": size,
            "seconds": round(seconds, 2),
            "imports_rss_mib": round(idle, 1),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        (work / "merged.safetensors").unlink(missing_ok=True)


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    """The row for scripts/bench.py: peak RSS of merging 3 x 1 GiB (quick: 3 x 32 MiB)."""
    tensor_bytes = 2 * MiB if quick else 64 * MiB
    fig = measure(work, env, tensors=16, tensor_bytes=tensor_bytes)
    largest = fig["largest_tensor_mib"]
    limit = 1.5 * largest + 300
    size = fig["model_mib"]
    label = f"{size / 1024:.3g} GiB" if size >= 1024 else f"{size:.0f} MiB"
    return [
        {
            "benchmark": f"merge 3 x {label} (linear) peak RSS",
            "mvc": fig["peak_rss_mib"],
            "baseline": largest,
            "unit": "MiB",
            "ratio": fig["peak_rss_mib"] / largest,
            "target": "< 1.5x largest tensor + 300 MiB",
            "met": fig["peak_rss_mib"] < limit,
            "note": f"baseline: largest tensor; limit {limit:.0f} MiB; imports alone {fig['imports_rss_mib']:.0f} MiB; {fig['seconds']:.1f} s",
        }
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 x 32 MiB instead of 3 x 1 GiB")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import bench as suite  # scripts/bench.py: the shared, isolated environment

    with tempfile.TemporaryDirectory(prefix="mvc-bench-merge-") as tmp:
        work = Path(tmp)
        rows = bench(work=work, env=suite._env(work), quick=args.quick)
    print(json.dumps(rows, indent=2))
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training-time overhead of versioning every epoch (issue 10), printed as a table.

A torch MLP of ~100 MB (float32) trains for a few epochs on the CPU in a fresh git + mvc
repository with a local-directory remote, four ways:

1. no versioning (the baseline);
2. writing safetensors each epoch only (what any checkpointing costs);
3. ``save_version`` each epoch (safetensors + ``mvc.log_model``: DVC cache, tensor index,
   a git commit of mvc's files);
4. the same with ``push=True`` (upload in the background thread), plus the final
   ``mvc.wait()``.

Usage: .venv/bin/python scripts/bench_training.py [--epochs 5] [--steps 20] [--width 2048]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _repo(base: Path, name: str) -> Path:
    import mvc

    root = base / name
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    mvc.init(root, remote=str(base / f"{name}-remote"))
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=root, check=True)
    return root


def _model(width: int, layers: int):
    import torch

    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks[:-1])


def _train_epoch(model, opt, x, steps: int) -> float:
    import torch

    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
    return float(loss.detach())


def run(mode: str, base: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train ``args.epochs`` epochs in ``mode``; return timings in seconds."""
    import torch
    from safetensors.torch import save_file

    import mvc
    from mvc.integrations.torch import save_version

    root = _repo(base, mode)
    model = _model(args.width, args.layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.width)
    path = root / "models" / "mlp.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs: list[float] = []
    saves: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, opt, x, args.steps)
        t1 = time.perf_counter()
        if mode == "safetensors only":
            save_file(model.state_dict(), str(path))
        elif mode == "save_version":
            save_version(model, path, step=epoch, metrics={"loss": loss}, params={"lr": 1e-4})
        elif mode == "save_version push=True":
            save_version(model, path, step=epoch, metrics={"loss": loss}, params={"lr": 1e-4}, push=True)
        t2 = time.perf_counter()
        epochs.append(t1 - t0)
        saves.append(t2 - t1)
    loop = time.perf_counter() - start
    wait = 0.0
    if mode.endswith("push=True"):
        t = time.perf_counter()
        report = mvc.wait()
        wait = time.perf_counter() - t
        assert len(report.uploaded) == args.epochs, report
    return {"loop": loop, "train": sum(epochs), "save": sum(saves), "wait": wait}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per epoch")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the raw timings as JSON")
    args = parser.parse_args()
    model_mb = args.layers * (args.width * args.width + args.width) * 4 / 1e6
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    modes = ["no versioning", "safetensors only", "save_version", "save_version push=True"]
    with tempfile.TemporaryDirectory(prefix="mvc-bench-training-") as tmp:
        base = Path(tmp)
        os.environ["DVC_SITE_CACHE_DIR"] = str(base / "dvc-site")
        results = {mode: run(mode, base, args) for mode in modes}
    if args.json:
        import json

        print(json.dumps({"model_mb": model_mb, "epochs": args.epochs, "results": results}))
        return 0
    # The training steps' own time varies run to run (a shared 2-core machine), so the
    # overhead is what each epoch spent outside them, against that mode's own training time.
    print(f"model {model_mb:.0f} MB (float32), {args.epochs} epochs x {args.steps} steps, batch {args.batch}")
    print(f"{'mode':<24} {'train s/epoch':>14} {'versioning s/epoch':>19} {'overhead':>9} {'final wait s':>13}")
    for mode, r in results.items():
        print(
            f"{mode:<24} {r['train'] / args.epochs:14.2f} {r['save'] / args.epochs:19.2f} "
            f"{r['save'] / r['train']:8.1%} {r['wait']:13.2f}"
        )
    return 0


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    """Rows for ``scripts/bench.py``: versioning time per epoch vs training time per epoch.

    Runs this script in a subprocess (torch stays out of the bench process); needs the
    ``integrations`` extra.
    """
    import json

    args = ["--epochs", "2", "--steps", "5", "--width", "512"] if quick else ["--epochs", "5", "--steps", "10", "--width", "2048"]
    proc = subprocess.run([sys.executable, __file__, "--json", *args], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"bench_training failed: {tail[0]}")
    data = json.loads(proc.stdout)
    epochs, rows = data["epochs"], []
    for mode in ("save_version", "save_version push=True"):
        r = data["results"][mode]
        rows.append({
            "benchmark": f"log_model every epoch, {data['model_mb']:.0f} MB ({mode.replace('save_version', 'no push') if mode == 'save_version' else 'push=True'})",
            "mvc": r["save"] / epochs, "baseline": r["train"] / epochs, "unit": "s", "ratio": r["save"] / r["train"],
            "target": "report (overhead per epoch)", "met": None,
            "note": f"baseline: training time per epoch; final wait {r['wait']:.2f} s",
        })
    return rows


if __name__ == "__main__":
    sys.exit(main())

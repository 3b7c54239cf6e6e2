"""Benchmark for `mvc eval --executor ray` (issue 16): 8 versions x 5 folds of a CPU-bound evaluation.

Starts a local S3 server and a one-node Ray head (2 CPUs, 127.0.0.1), pushes 8 versions,
and times the same evaluation with the local executor (``--jobs 2``) and with Ray. On this
2-core machine the ratio is expected near 1x; the point is the same numbers on a cluster.
The per-task overhead of the Ray path is measured with a no-op ``--fn`` evaluation: the
marginal cost of a task (5 vs 20 folds, best of 3 each, so the connect and the fixed costs
cancel), and the whole run's time per task with everything included.
Run by scripts/bench.py (area ``eval-ray``); skipped when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS, FOLDS = 8, 5
MORE_FOLDS = 20  # the marginal per-task cost: 8 x 20 vs 8 x 5 no-op tasks

EVAL = """\
import json, sys
import numpy as np
from safetensors.numpy import load_file
w = load_file(sys.argv[1])["w"]
x = np.float64(0)
for _ in range({loops}):  # CPU-bound: pure Python arithmetic
    x += float(w[0]) * 1.0000001
print(json.dumps({{"score": float(w.sum()) + int(sys.argv[2]), "x": float(x)}}))
"""

NOOP = "def evaluate(weights, fold=0):\n    return {'fold': fold}\n"


def _load_servers():
    spec = importlib.util.spec_from_file_location("bench_servers_ray", HERE / "servers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    if importlib.util.find_spec("ray") is None:
        return [{"benchmark": "eval ray: skipped", "mvc": None, "baseline": None, "unit": "s", "ratio": None, "target": "",
                     "met": None, "note": "ray is not installed"}]  # fmt: skip
    import numpy as np
    from safetensors.numpy import save_file

    import mvc
    from mvc import dvcpush

    servers = _load_servers()
    s3 = servers.start_s3(work / "s3")
    root = str(HERE.parent)
    head = servers.start_ray(work / "ray", num_cpus=2, env={"PYTHONPATH": root, "MVC_WORKER_CACHE": str(work / "wcache")})
    os.environ.update(servers.RAY_ENV)
    old = os.getcwd()
    try:
        repo = work / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        os.chdir(repo)
        mvc.init(repo)
        (repo / "evalpkg_bench.py").write_text(NOOP)
        (repo / "eval.py").write_text(EVAL.format(loops=200_000 if quick else 2_000_000))
        hashes = []
        for i in range(VERSIONS):
            path = repo / "models/m.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"w": np.random.default_rng(i).standard_normal(4096).astype(np.float32)}, str(path))
            hashes.append(mvc.add(path, name="m").version.hash)
            mvc.commit(repo=repo, message=f"v{i + 1}")
        mvc.remote_add("s3", f"s3://{s3.bucket}/bench", repo=repo, default=True, options={
            "endpointurl": s3.endpoint_url, "access_key_id": s3.access_key, "secret_access_key": s3.secret_key})  # fmt: skip
        dvcpush.push_objects(repo, hashes, remote="s3")
        refs = [f"m@v{i + 1}" for i in range(VERSIONS)]
        cmd = f"{sys.executable} eval.py {{weights}} {{fold}}"

        def timed(folds: int = FOLDS, **kw) -> float:
            began = time.perf_counter()
            result = mvc.evaluate(refs, repo=repo, folds=folds, force=True, **kw)
            assert not result.failures, result.failures[0].error
            return time.perf_counter() - began

        local = timed(cmd=cmd, jobs=2)
        ray = timed(cmd=cmd, executor="ray", address=head.address)
        timed(fn="evalpkg_bench:evaluate", executor="ray", address=head.address)  # warm the workers
        noop = min(timed(fn="evalpkg_bench:evaluate", executor="ray", address=head.address) for _ in range(3))
        noop_more = min(timed(MORE_FOLDS, fn="evalpkg_bench:evaluate", executor="ray", address=head.address) for _ in range(3))
        noop_local = min(timed(fn="evalpkg_bench:evaluate", jobs=2) for _ in range(3))
    finally:
        os.chdir(old)
        servers.stop(head)
        servers.stop(s3)
    tasks = VERSIONS * FOLDS
    per_task_ms = noop * head.num_cpus / tasks * 1000
    more = VERSIONS * (MORE_FOLDS - FOLDS)
    marginal_ms = (noop_more - noop) * head.num_cpus / more * 1000
    local_ms = noop_local * 2 / tasks * 1000
    return [
        {"benchmark": f"eval {VERSIONS}x{FOLDS} CPU-bound: ray vs local -j2", "mvc": ray, "baseline": local, "unit": "s",
             "ratio": ray / local, "target": "~1x on 2 cores", "met": None, "note": "same results cache and leaderboard"},
        {"benchmark": "eval ray: per-task overhead (no-op --fn, marginal)", "mvc": marginal_ms if marginal_ms > 0 else None,
             "baseline": None, "unit": "ms", "ratio": None, "target": "informative", "met": None,
             "note": f"{more} more tasks on {head.num_cpus} slots: {noop_more - noop:+.2f} s (best of 3)"
             + ("" if marginal_ms > 0 else f"; below this run's noise ({marginal_ms:+.1f} ms)")},
        {"benchmark": "eval ray: per-task time, whole run (no-op --fn)", "mvc": per_task_ms, "baseline": local_ms,
             "unit": "ms", "ratio": per_task_ms / local_ms, "target": "informative", "met": None,
             "note": f"{tasks} tasks on {head.num_cpus} slots, connect included: {noop:.2f} s; baseline: local -j2 (best of 3)"},
    ]  # fmt: skip

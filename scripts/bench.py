#!/usr/bin/env python
"""mvc benchmarks: ratios against plain DVC and raw I/O, measured side by side in one run.

Creates its own fixtures in a temp dir and prints a table (or ``--json``):

    python scripts/bench.py            # full run (1 and 4 GiB files; several minutes)
    python scripts/bench.py --quick    # small sizes; a smoke run for CI (no timing assertion)
    python scripts/bench.py --only add,index --json

Targets (DESIGN.md): mvc add <= 1.0x dvc add; push/pull throughput >= 0.9x dvc;
log over 500 versions and exp list over 100 branches < 1 s; diff of two 300-tensor
manifests < 0.3 s; mvc --help < 0.3 s; merge peak RSS < 1.5x largest tensor + 300 MiB.
Issue 15 (bench_tensors.py): tensors layout <= 0.45x full (fp32), <= 0.35x (bf16), <= 0.05x frozen part.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MVC = str(BIN / "mvc")
DVC = str(BIN / "dvc")
MiB = 2**20
GiB = 2**30


@dataclass
class Row:
    """One measured comparison."""

    benchmark: str
    mvc: float | None  # seconds (or MB/s, or MiB for memory rows: see unit)
    baseline: float | None
    unit: str
    ratio: float | None  # mvc / baseline for times; baseline / mvc ... see note
    target: str
    met: bool | None
    note: str = ""


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HOME": str(work / "home"),
            "GIT_CONFIG_GLOBAL": str(work / "home" / ".gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_SITE_CACHE_DIR": str(work / "dvc-site"),
            "DVC_NO_ANALYTICS": "1",
            "MVC_REMOTE_HOME": str(work / "remotes"),
            "MVC_NO_PROGRESS": "1",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
    )
    (work / "home").mkdir(parents=True, exist_ok=True)
    (work / "home" / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 * MiB):
            pass


def make_safetensors(path: Path, size: int, tensor_bytes: int = 64 * MiB) -> int:
    """Write a float32 safetensors file of about ``size`` bytes, tensor by tensor; return the largest tensor size."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from mvc.formats import SafetensorsWriter

    n = max(1, size // tensor_bytes)
    per = min(size, tensor_bytes) // 4
    specs = [(f"layer{i}.weight", "float32", (per,)) for i in range(n)]
    rng = np.random.default_rng(0)
    with SafetensorsWriter(path, specs) as writer:
        for name, _, shape in specs:
            writer.write(name, rng.standard_normal(shape, dtype=np.float32))
    return per * 4


def _repo(work: Path, name: str, env: dict[str, str], *, mvc: bool) -> Path:
    root = work / name
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    if mvc:
        subprocess.run([MVC, "init"], cwd=root, env=env, check=True, capture_output=True)
    else:
        subprocess.run([DVC, "init", "-q"], cwd=root, env=env, check=True)
    return root


def bench_add(work: Path, env: dict[str, str], size: int) -> list[Row]:
    """mvc add vs dvc add of the same safetensors file (same cache type), warm page cache."""
    src = work / f"model-{size}.safetensors"
    make_safetensors(src, size)
    times: dict[str, float] = {}
    for tool in ("dvc", "mvc"):
        root = _repo(work, f"add-{tool}-{size}", env, mvc=tool == "mvc")
        shutil.copyfile(src, root / "model.safetensors")
        _warm(root / "model.safetensors")
        cmd = [DVC, "add", "-q", "model.safetensors"] if tool == "dvc" else [MVC, "add", "--quiet", "model.safetensors"]
        times[tool] = _run(cmd, root, env)
        shutil.rmtree(root)
    raw_start = time.perf_counter()
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    raw = time.perf_counter() - raw_start
    src.unlink()
    ratio = times["mvc"] / times["dvc"]
    label = f"{size / GiB:.3g} GiB" if size >= GiB else f"{size // MiB} MiB"
    return [Row(f"add {label} safetensors (index included)", times["mvc"], times["dvc"], "s", ratio, "<= 1.0x dvc add", ratio <= 1.0, f"raw read (cat) {raw:.2f} s")]


def bench_status(work: Path, env: dict[str, str], models: int, versions: int) -> list[Row]:
    """mvc status (every model's number along the branch, cache state) vs dvc status, same repo.

    The first mvc run after a commit walks each model's history once; later runs read the
    numbers kept for that HEAD (.dvc/tmp/mvc-numbers.json).
    """
    import numpy as np
    from safetensors.numpy import save_file

    root = _repo(work, "status", env, mvc=True)
    (root / "models").mkdir()
    rng = np.random.default_rng(0)
    for v in range(versions):
        for m in range(models):
            save_file({"w": rng.standard_normal((64, 64), dtype=np.float32)}, str(root / "models" / f"m{m}.safetensors"))
        for m in range(models):
            _run([MVC, "add", "--quiet", f"models/m{m}.safetensors"], root, env)
        _run([MVC, "commit", "-m", f"round {v}"], root, env)
    first = _run([MVC, "status", "--no-remote"], root, env)
    again = min(_run([MVC, "status", "--no-remote"], root, env) for _ in range(3))
    dvc = min(_run([DVC, "status"], root, env) for _ in range(3))
    log = min(_run([MVC, "log"], root, env) for _ in range(3))
    label = f"{models} models x {versions} versions"
    return [
        Row(f"status, {label} (first after a commit)", first, dvc, "s", first / dvc, "<= 2.0x dvc status", first / dvc <= 2.0),
        Row(f"status, {label} (again)", again, dvc, "s", again / dvc, "<= 1.5x dvc status", again / dvc <= 1.5),
        Row(f"log, {label}", log, dvc, "s", log / dvc, "<= 1.0x dvc status", log / dvc <= 1.0, "every model's versions, from git objects"),
    ]


def bench_index(work: Path, env: dict[str, str], size: int) -> list[Row]:
    """The tensor-index pass vs a raw read of the file (cat > /dev/null)."""
    sys.path.insert(0, str(HERE.parent))
    from mvc.formats import build_index

    src = work / "index.safetensors"
    make_safetensors(src, size)
    _warm(src)
    best_raw = best_idx = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
        best_raw = min(best_raw, time.perf_counter() - t)
        t = time.perf_counter()
        build_index(src)
        best_idx = min(best_idx, time.perf_counter() - t)
    src.unlink()
    ratio = best_idx / best_raw
    return [Row(f"tensor index pass, {size // MiB} MiB", best_idx, best_raw, "s", ratio, "~ raw read", ratio <= 1.5, "baseline: cat > /dev/null")]


def bench_help(work: Path, env: dict[str, str]) -> list[Row]:
    """`mvc --help` start-up (best of 5)."""
    best = min(_run([MVC, "--help"], work, env) for _ in range(5))
    python = min(_run([sys.executable, "-c", "pass"], work, env) for _ in range(5))
    return [Row("mvc --help start-up", best, python, "s", best / python, "< 0.3 s", best < 0.3, "baseline: bare python start")]


def bench_transfer(work: Path, env: dict[str, str], size: int) -> list[Row]:
    """mvc push/pull vs dvc push/pull of the same file against the local S3 server (MB/s)."""
    servers = _load("servers", HERE / "servers.py")
    server = servers.start_s3(work / "s3")
    try:
        senv = dict(env)
        senv.update(servers.client_env(server))
        src = work / "xfer.safetensors"
        make_safetensors(src, size)
        rows = []
        speed: dict[tuple[str, str], float] = {}
        for tool in ("dvc", "mvc"):
            root = _repo(work, f"xfer-{tool}", senv, mvc=tool == "mvc")
            shutil.copyfile(src, root / "model.safetensors")
            url = f"s3://{server.bucket}/bench-{tool}-{os.getpid()}"
            subprocess.run([DVC, "remote", "add", "-f", "-d", "s3", url], cwd=root, env=senv, check=True, capture_output=True)
            subprocess.run([DVC, "remote", "modify", "s3", "endpointurl", server.endpoint_url], cwd=root, env=senv, check=True)
            for key, value in (("access_key_id", server.access_key), ("secret_access_key", server.secret_key)):
                subprocess.run([DVC, "remote", "modify", "--local", "s3", key, value], cwd=root, env=senv, check=True)
            add = [DVC, "add", "-q", "model.safetensors"] if tool == "dvc" else [MVC, "add", "--quiet", "model.safetensors"]
            _run(add, root, senv)
            push = [DVC, "push", "-q", "-r", "s3"] if tool == "dvc" else [MVC, "push", "--quiet", "-r", "s3"]
            speed[(tool, "push")] = size / MiB / _run(push, root, senv)
            shutil.rmtree(root / ".dvc" / "cache")
            (root / "model.safetensors").unlink()
            pull = [DVC, "pull", "-q", "-r", "s3"] if tool == "dvc" else [MVC, "pull", "--quiet", "-r", "s3"]
            speed[(tool, "pull")] = size / MiB / _run(pull, root, senv)
            if tool == "mvc":  # the same pull without mvc's re-hash of the downloads
                shutil.rmtree(root / ".dvc" / "cache")
                (root / "model.safetensors").unlink()
                speed[(tool, "pull --no-verify")] = size / MiB / _run([*pull, "--no-verify"], root, senv)
            shutil.rmtree(root)
        src.unlink()
        for op, base, note in (
            ("push", "push", "ratio = mvc/dvc throughput"),
            ("pull", "pull", "mvc re-hashes every download (one md5 pass); dvc does not"),
            ("pull --no-verify", "pull", "mvc without the re-hash, like dvc"),
        ):
            ratio = speed[("mvc", op)] / speed[("dvc", base)]
            rows.append(Row(f"{op} {size // MiB} MiB, local S3", speed[("mvc", op)], speed[("dvc", base)], "MB/s", ratio, ">= 0.9x dvc throughput", ratio >= 0.9, note))
        return rows
    finally:
        servers.stop(server)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; return (seconds, peak RSS of the process in MiB)."""
    seconds, rss, _ = _measured(cmd, cwd, env)
    return seconds, rss


# Forks and waits for the measured command from a small process: a child forked from a big
# one (bench_tensors holds checkpoints) counts the parent's pages in its peak RSS until exec.
_LAUNCH = """
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime} {os.waitstatus_to_exitcode(status)}")
"""


def _measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (seconds, peak RSS in MiB, CPU seconds) of its own process tree only.

    ``os.wait4`` on the command's process: its usage includes the children it waited for
    (git, ...), and nothing of this script or of any other process on the machine.
    """
    with tempfile.TemporaryDirectory(prefix="mvc-bench-measured-") as tmp:
        report = Path(tmp) / "report"
        proc = subprocess.run([sys.executable, "-c", _LAUNCH, str(report), *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        fields = report.read_text().split() if report.exists() else ["0", "0", "0", str(proc.returncode)]
    elapsed, rss_kib, cpu, code = float(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
    if code != 0 or proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {proc.stderr.strip()[-400:]}")
    return elapsed, rss_kib / 1024, cpu


def bench_wire(work: Path, env: dict[str, str], size: int, files: int, reps: int = 2) -> list[Row]:
    """Issue 19: mvc pull (verified) / push vs plain dvc and s5cmd, one large file and a
    directory model of ``files`` x 5 MiB, against the local S3 server; peak RSS of mvc.

    The three tools take turns, ``reps`` rounds (each push to a fresh prefix, each pull
    into an empty cache and work tree), and each keeps its best round: on a shared
    machine the load moves between rounds, so turns keep the comparison fair. Every
    figure is of the tool's own process tree (:func:`_measured`); CPU seconds go in the note.
    """
    servers = _load("servers", HERE / "servers.py")
    server = servers.start_s3(work / "s3")
    s5cmd = [str(BIN / "s5cmd"), "--endpoint-url", server.endpoint_url]
    try:
        senv = {**env, **servers.client_env(server)}
        data = work / "data"
        (data / "dir").mkdir(parents=True)
        with open(data / "big.bin", "wb") as f:
            f.writelines(os.urandom(min(left, 64 * MiB)) for left in range(size, 0, -64 * MiB))
        for i in range(files):
            (data / "dir" / f"shard-{i:03d}.bin").write_bytes(os.urandom(5 * MiB))
        rows: list[Row] = []
        load = "load avg {:.1f} {:.1f} {:.1f} at start".format(*os.getloadavg())
        for name, label, nbytes in (("big.bin", f"{size / GiB:.3g} GiB" if size >= GiB else f"{size // MiB} MiB", size), ("dir", f"{files} x 5 MiB", files * 5 * MiB)):
            seconds: dict[tuple[str, str], float] = {}
            cpu: dict[tuple[str, str], float] = {}
            rss: dict[str, float] = {}

            def keep(tool: str, op: str, measured: tuple[float, float, float], seconds: dict = seconds, cpu: dict = cpu, rss: dict = rss) -> None:
                if measured[0] < seconds.get((tool, op), float("inf")):
                    seconds[(tool, op)], cpu[(tool, op)] = measured[0], measured[2]
                rss[f"{tool} {op}"] = max(rss.get(f"{tool} {op}", 0.0), measured[1])

            roots: dict[str, Path] = {}
            for tool in ("dvc", "mvc"):
                root = roots[tool] = _repo(work, f"wire-{tool}", senv, mvc=tool == "mvc")
                src = data / name
                shutil.copytree(src, root / name) if src.is_dir() else shutil.copyfile(src, root / name)
                add = [DVC, "add", "-q", name] if tool == "dvc" else [MVC, "add", "--quiet", name]
                _run(add, root, senv)
            for rep in range(reps):
                for tool, root in roots.items():
                    url = f"s3://{server.bucket}/wire-{tool}-{name}-{os.getpid()}-{rep}"
                    subprocess.run([DVC, "remote", "add", "-f", "-d", "s3", url], cwd=root, env=senv, check=True, capture_output=True)
                    subprocess.run([DVC, "remote", "modify", "s3", "endpointurl", server.endpoint_url], cwd=root, env=senv, check=True)
                    push = [DVC, "push", "-q", "-r", "s3"] if tool == "dvc" else [MVC, "push", "--quiet", "-r", "s3"]
                    keep(tool, "push", _measured(push, root, senv))
                    shutil.rmtree(root / ".dvc" / "cache")
                    shutil.rmtree(root / name) if (root / name).is_dir() else (root / name).unlink()
                    pull = [DVC, "pull", "-q", "-r", "s3"] if tool == "dvc" else [MVC, "pull", "--quiet", "-r", "s3"]
                    keep(tool, "pull", _measured(pull, root, senv))
                target = f"s3://{server.bucket}/wire-s5cmd-{os.getpid()}-{rep}/{name}"
                up = [*s5cmd, "cp", str(data / name) + ("/*" if name == "dir" else ""), target + ("/" if name == "dir" else "")]
                keep("s5cmd", "push", _measured(up, work, senv))
                out = work / "s5cmd-out"
                down = [*s5cmd, "cp", target + ("/*" if name == "dir" else ""), str(out) + "/"]
                keep("s5cmd", "pull", _measured(down, work, senv))
                shutil.rmtree(out)
            for root in roots.values():
                shutil.rmtree(root)
            end = f"{os.getloadavg()[0]:.1f}"
            for op in ("push", "pull"):
                mvc, dvc, s5 = (nbytes / MiB / seconds[(tool, op)] for tool in ("mvc", "dvc", "s5cmd"))
                if name == "dir":
                    want, met = ">= 1.5x dvc", mvc >= 1.5 * dvc
                else:
                    need = 1.5 if op == "pull" else 1.3
                    want, met = f">= 0.8x s5cmd, >= {need}x dvc", mvc >= 0.8 * s5 and mvc >= need * dvc
                verified = " (mvc verified)" if op == "pull" else ""
                times = ", ".join(f"{tool} {seconds[(tool, op)]:.1f} s / {cpu[(tool, op)]:.1f} s cpu" for tool in ("mvc", "dvc", "s5cmd"))
                note = f"best of {reps}: {times}; s5cmd {s5:.0f} MB/s, mvc/s5cmd {mvc / s5:.2f}{verified}; {load}, {end} at end"
                rows.append(Row(f"wire {op} {label}, local S3", mvc, dvc, "MB/s", mvc / dvc, want, met, note))
            if name == "big.bin":
                peak = max(rss["mvc push"], rss["mvc pull"])
                note = f"dvc push {rss['dvc push']:.0f}, dvc pull {rss['dvc pull']:.0f} MiB"
                rows.append(Row(f"wire peak RSS mvc push/pull {label}", peak, max(rss["dvc push"], rss["dvc pull"]), "MiB", None, "< 300 MiB", peak < 300, note))
        return rows
    finally:
        servers.stop(server)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _external(script: str, function: str) -> Callable[..., list[Row]] | None:
    """A benchmark function contributed by scripts/bench_<area>.py, when present."""
    path = HERE / script
    if not path.exists():
        return None
    module = _load(path.stem, path)
    fn = getattr(module, function, None)
    if fn is None:
        return None

    def run(work: Path, env: dict[str, str], quick: bool) -> list[Row]:
        results = fn(work=work, env=env, quick=quick)
        return [Row(**r) if isinstance(r, dict) else r for r in results]

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--only", default="", help="comma-separated subset: add,index,help,status,transfer,wire,history,experiments,merge,training,security,eval-ray,tensors"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    benches: list[tuple[str, Callable[[Path, dict[str, str]], list[Row]]]] = [
        ("help", lambda w, e: bench_help(w, e)),
        ("index", lambda w, e: bench_index(w, e, 64 * MiB if quick else GiB)),
        ("add", lambda w, e: bench_add(w, e, 32 * MiB if quick else GiB)),
        ("status", lambda w, e: bench_status(w, e, 4 if quick else 20, 2 if quick else 3)),
    ]
    if not quick:
        benches.append(("add", lambda w, e: bench_add(w, e, 4 * GiB)))
    benches.append(("transfer", lambda w, e: bench_transfer(w, e, 32 * MiB if quick else GiB)))
    benches.append(("wire", lambda w, e: bench_wire(w, e, 64 * MiB if quick else GiB, 20 if quick else 200, 1 if quick else 2)))
    if not quick:
        benches.append(("wire", lambda w, e: bench_wire(w, e, 4 * GiB, 200)))
    for area, script, function in (
        ("history", "bench_history.py", "bench"),
        ("experiments", "bench_experiments.py", "bench"),
        ("merge", "bench_merge.py", "bench"),
        ("training", "bench_training.py", "bench"),
        ("security", "bench_security.py", "bench"),
        ("eval-ray", "bench_eval_ray.py", "bench"),
        ("tensors", "bench_tensors.py", "bench"),  # issue 15: storage of real fine-tune chains
    ):
        ext = _external(script, function)
        if ext is not None:
            benches.append((area, lambda w, e, ext=ext: ext(w, e, quick)))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mvc-bench-") as tmp:
        work = Path(tmp)
        env = _env(work)
        os.environ.update(env)  # fixtures built in-process stay in the temp dir too
        for i, (area, bench) in enumerate(benches):
            if only and area not in only:
                continue
            sub = work / f"{i}-{area}"
            sub.mkdir()
            try:
                rows += bench(sub, env)
            except Exception as exc:  # a broken benchmark is reported, not fatal to the others
                rows.append(Row(area, None, None, "", None, "", False, f"failed: {exc}"))
            finally:
                shutil.rmtree(sub, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(f"{'benchmark':44} {'mvc':>10} {'baseline':>10} {'unit':>5} {'ratio':>7}  {'target':26} met   note")
        for r in rows:
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            met = "-" if r.met is None else ("yes" if r.met else "NO")
            print(f"{r.benchmark:44} {fmt(r.mvc):>10} {fmt(r.baseline):>10} {r.unit:>5} {fmt(r.ratio):>7}  {r.target:26} {met:5} {r.note}")
    return 1 if any(r.mvc is None and r.note.startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

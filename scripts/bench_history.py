"""Fixtures and timings for the history commands: `mvc log` over many versions, `mvc diff`.

Running DVC hundreds of times would take minutes, so the fixture writes what `mvc add`
would write (pointer with manifest, tensor-index sidecar) with mvc's own modules and
commits it with one ``git fast-import`` process. No weight files exist: `mvc log` and
`mvc diff` must not need them.

Usage::

    .venv/bin/python scripts/bench_history.py [--versions 500] [--tensors 300] [--repeat 5]

``scripts/bench.py`` calls :func:`bench`; :func:`build_history_repo` is the fixture builder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WEIGHTS = "models/net.safetensors"
MVC = str(Path(sys.executable).parent / "mvc")


def _tensor_index(version: int, tensors: int, changed_every: int):
    """A synthetic tensor index: ``tensors`` float32 tensors; every ``changed_every``-th differs per version."""
    from mvc.formats import TensorIndex, TensorInfo

    rows = []
    for i in range(tensors):
        shape = (64, 32) if i % 2 else (64,)
        salt = version if i % changed_every == 0 else 0
        digest = hashlib.blake2b(f"t{i}:{salt}".encode(), digest_size=16).hexdigest()
        rows.append(TensorInfo(f"layers.{i:04d}.weight", "float32", shape, 4 * (64 * 32 if i % 2 else 64), digest))
    return TensorIndex("safetensors", "pytorch", tuple(rows))


def _pointer_bytes(scratch: Path, md5: str, size: int, manifest) -> bytes:
    """The pointer file mvc writes after `dvc add`, produced by mvc.pointer itself."""
    import yaml

    from mvc import pointer

    rel = pointer.pointer_path(WEIGHTS)
    (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
    base = {"outs": [{"md5": md5, "size": size, "hash": "md5", "path": Path(WEIGHTS).name}]}
    (scratch / rel).write_text(yaml.safe_dump(base, sort_keys=False))
    pointer.write_manifest(scratch, rel, manifest)
    return (scratch / rel).read_bytes()


def build_history_repo(
    root: Path, *, versions: int = 500, tensors: int = 8, changed_every: int = 4, env: dict[str, str] | None = None
) -> Path:
    """Create a git + mvc repository at ``root`` whose model ``net`` has ``versions`` committed versions.

    Each version is one commit changing ``models/net.safetensors.dvc`` (manifest with params,
    metrics, parent) and adding its tensor-index sidecar; every ``changed_every``-th of the
    ``tensors`` tensors changes from one version to the next. The default remote is a
    directory next to ``root``. Returns ``root``.
    """
    from mvc import pointer, tensorindex
    from mvc.manifest import Manifest, Parent, TensorSummary

    env = dict(env or os.environ)
    env.update({"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"})
    root.mkdir(parents=True, exist_ok=True)
    run = lambda *cmd, **kw: subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True, **kw)  # noqa: E731
    run("git", "init", "-q", "-b", "main")
    run(MVC, "init", "--remote", str(root.parent / f"{root.name}-remote"))
    run("git", "commit", "-q", "-m", "init mvc")
    stream: list[bytes] = []
    parent: Parent | None = None
    start = 1_700_000_000
    with tempfile.TemporaryDirectory(prefix="mvc-bench-") as scratch:
        for n in range(1, versions + 1):
            index = _tensor_index(n, tensors, changed_every)
            md5 = hashlib.md5(f"net-v{n}".encode()).hexdigest()  # noqa: S324 - a fake content address
            manifest = Manifest(
                name="net",
                version=n,
                hash=md5,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 60 * n)),
                author="Bench <bench@example.com>",
                message=f"epoch {n}",
                parents=(parent,) if parent else (),
                format=index.format,
                framework=index.framework,
                params={"lr": 0.001 * n, "epochs": n},
                metrics={"acc": round(0.5 + n / (2 * versions), 6), "loss": round(1.0 / n, 6)},
                index=tensorindex.sidecar_path(md5),
                tensors=TensorSummary(index.tensor_count, index.parameter_count, index.total_bytes, index.bytes_by_dtype),
            )
            files = {
                pointer.pointer_path(WEIGHTS): _pointer_bytes(Path(scratch), md5, index.total_bytes, manifest),
                manifest.index: index.to_json(),
            }
            message = f"net v{n}".encode()
            stream.append(b"commit refs/heads/main\n")
            stream.append(f"committer Bench <bench@example.com> {start + 60 * n} +0000\n".encode())
            stream.append(b"data %d\n%s\n" % (len(message), message))
            if n == 1:
                stream.append(b"from refs/heads/main^0\n")
            for path, data in files.items():
                stream.append(f"M 100644 inline {path}\n".encode())
                stream.append(b"data %d\n%s\n" % (len(data), data))
            parent = Parent(hash=md5, version=n)
    run("git", "fast-import", "--quiet", "--force", input=b"".join(stream))
    run("git", "reset", "-q", "--hard", "main")
    return root


def time_command(args: list[str], cwd: Path, *, repeat: int = 5, env: dict[str, str] | None = None) -> float:
    """Best wall time in seconds of ``repeat`` runs of ``mvc ARGS`` as a subprocess in ``cwd`` (after one warm-up run).

    Byte-compiled modules are allowed (in a cache outside the source tree), as for an
    installed mvc, even when ``PYTHONDONTWRITEBYTECODE`` is set.
    """
    env = dict(env or os.environ)
    env.update({"MVC_NO_PROGRESS": "1", "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "mvc-bench-pycache")})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run([MVC, *args], cwd=cwd, check=True, env=env, stdout=subprocess.DEVNULL)
        if i:
            times.append(time.perf_counter() - t0)
    return min(times)


def measure(work: Path, env: dict[str, str] | None = None, *, versions: int = 500, tensors: int = 300, repeat: int = 5) -> dict[str, float]:
    """Build both fixtures under ``work`` and time `mvc log`, `mvc log --json`, `mvc diff` and `mvc --help`."""
    t0 = time.perf_counter()
    log_repo = build_history_repo(work / "log", versions=versions, env=env)
    built = time.perf_counter() - t0
    diff_repo = build_history_repo(work / "diff", versions=2, tensors=tensors, changed_every=25, env=env)
    return {
        "build": built,
        "log": time_command(["log", "net"], log_repo, repeat=repeat, env=env),
        "log_json": time_command(["log", "net", "--json"], log_repo, repeat=repeat, env=env),
        "diff": time_command(["diff", "net@v1", "net@v2"], diff_repo, repeat=repeat, env=env),
        "help": time_command(["--help"], log_repo, repeat=repeat, env=env),
    }


def bench(work: Path, env: dict[str, str], quick: bool) -> list[dict]:
    """Rows for ``scripts/bench.py``: log over 500 versions (< 1 s), diff of 300-tensor manifests (< 0.3 s)."""
    versions, tensors = (100, 300) if quick else (500, 300)
    t = measure(work, env, versions=versions, tensors=tensors, repeat=2 if quick else 5)
    note = f"baseline: mvc --help; best of runs; fixture of {versions} versions built in {t['build']:.1f} s"
    full = not quick  # the log target is for 500 versions
    return [
        {"benchmark": f"mvc log, {versions} versions", "mvc": t["log"], "baseline": t["help"], "unit": "s",
         "ratio": t["log"] / t["help"], "target": "< 1 s (500 versions)", "met": t["log"] < 1.0 if full else None, "note": note},
        {"benchmark": f"mvc log --json, {versions} versions", "mvc": t["log_json"], "baseline": t["help"], "unit": "s",
         "ratio": t["log_json"] / t["help"], "target": "< 1 s (500 versions)", "met": t["log_json"] < 1.0 if full else None,
         "note": note},
        {"benchmark": f"mvc diff, two {tensors}-tensor manifests", "mvc": t["diff"], "baseline": t["help"], "unit": "s",
         "ratio": t["diff"] / t["help"], "target": "< 0.3 s, no weight bytes", "met": t["diff"] < 0.3,
         "note": "baseline: mvc --help; no weights exist in the fixture"},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=500)
    ap.add_argument("--tensors", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvc-bench-history-") as tmp:
        t = measure(Path(tmp), versions=opts.versions, tensors=opts.tensors, repeat=opts.repeat)
    print(f"fixture: {opts.versions} versions built in {t['build']:.2f} s")
    print(f"mvc log ({opts.versions} versions):         {t['log']:.3f} s   (target < 1 s)")
    print(f"mvc log --json ({opts.versions} versions):  {t['log_json']:.3f} s")
    print(f"mvc diff ({opts.tensors}-tensor manifests): {t['diff']:.3f} s   (target < 0.3 s)")
    print(f"mvc --help:                      {t['help']:.3f} s")


if __name__ == "__main__":
    main()

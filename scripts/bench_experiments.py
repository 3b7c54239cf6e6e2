"""Fixture and timing for `mvc exp list` over many experiment branches.

:func:`build_experiments_repo` writes what `mvc exp new` + `mvc add` + `mvc commit` leave on
each branch (the experiment record and a model pointer with its manifest) straight into git
with one ``git fast-import`` process: 100 branches take well under a second to build, where
driving DVC would take minutes. No weight files exist: `mvc exp list` must not need them.

Usage::

    .venv/bin/python scripts/bench_experiments.py [--branches 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_history import WEIGHTS, _pointer_bytes, time_command  # noqa: E402

_START = 1_700_000_000
_BENCH = "Bench <bench@example.com>"


def _blob(path: str, data: bytes) -> list[bytes]:
    return [f"M 100644 inline {path}\n".encode(), b"data %d\n%s\n" % (len(data), data)]


def build_experiments_repo(root: Path, *, branches: int = 100) -> Path:
    """Create an mvc repository at ``root`` with ``branches`` experiment branches ``exp/e000``...

    ``main`` holds model ``net`` v1; each branch adds its record ``.mvc/experiments/eNNN.json``
    (base, params) and a version v2 of ``net`` with its own params and metrics, one commit
    each, as `mvc exp new` and `mvc add` would. Returns ``root``.
    """
    import mvc
    from mvc import experiments, pointer
    from mvc.manifest import Manifest, Parent

    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, env=env)
    mvc.init(root)
    subprocess.run(["git", "commit", "-q", "-m", "init mvc"], cwd=root, check=True, env=env)
    scratch = Path(tempfile.mkdtemp(prefix="mvc-bench-exp-"))
    ptr_path = pointer.pointer_path(WEIGHTS)

    def manifest(version: int, md5: str, parent: Parent | None, params: dict, metrics: dict, experiment: str | None) -> Manifest:
        return Manifest(
            name="net", version=version, hash=md5, author=_BENCH, message=f"v{version}",
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_START)), parents=(parent,) if parent else (),
            format="safetensors", params=params, metrics=metrics, experiment=experiment,
        )

    base_md5 = hashlib.md5(b"net-base").hexdigest()  # noqa: S324 - a fake content address
    stream = [b"commit refs/heads/main\n", f"committer {_BENCH} {_START} +0000\n".encode(), b"data 7\nnet v1\n",
              b"from refs/heads/main^0\n"]
    stream += _blob(ptr_path, _pointer_bytes(scratch, base_md5, 1024, manifest(1, base_md5, None, {"lr": 0.1}, {"acc": 0.5}, None)))
    subprocess.run(["git", "fast-import", "--quiet", "--force"], cwd=root, input=b"".join(stream), check=True, env=env)
    base = subprocess.run(["git", "rev-parse", "main"], cwd=root, check=True, env=env, capture_output=True, text=True).stdout.strip()
    stream = []
    for i in range(branches):
        name = f"e{i:03d}"
        lr = round(0.001 * (i + 1), 6)
        md5 = hashlib.md5(f"net-{name}".encode()).hexdigest()  # noqa: S324
        record = {"schema": 1, "name": name, "base": base, "base_ref": "main", "base_branch": "main",
                  "params": {"lr": lr}, "created": "2023-11-14T22:13:20Z", "author": _BENCH}
        m = manifest(2, md5, Parent(hash=base_md5, version=1), {"lr": lr}, {"acc": round(0.5 + (i * 37 % branches) / (2 * branches), 6)}, name)
        message = f"{name}: net v2".encode()
        stream += [f"commit refs/heads/{experiments.branch_of(name)}\n".encode(),
                   f"committer {_BENCH} {_START + 60 * (i + 1)} +0000\n".encode(),
                   b"data %d\n%s\n" % (len(message), message), f"from {base}\n".encode()]
        stream += _blob(experiments.record_path(name), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        stream += _blob(ptr_path, _pointer_bytes(scratch, md5, 1024, m))
    subprocess.run(["git", "fast-import", "--quiet", "--force"], cwd=root, input=b"".join(stream), check=True, env=env)
    subprocess.run(["git", "reset", "-q", "--hard", "main"], cwd=root, check=True, env=env)
    return root


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    """The row for ``scripts/bench.py``: `mvc exp list --sort acc` over 100 branches (quick: 30)."""
    branches = 30 if quick else 100
    t0 = time.perf_counter()
    repo = build_experiments_repo(work / "exp-repo", branches=branches)
    built = time.perf_counter() - t0
    cli_s = time_command(["exp", "list", "--sort", "acc"], repo, repeat=2 if quick else 5, env=env)
    help_s = time_command(["--help"], repo, repeat=2 if quick else 5, env=env)
    return [
        {"benchmark": f"mvc exp list, {branches} branches", "mvc": cli_s, "baseline": help_s, "unit": "s",
         "ratio": cli_s / help_s, "target": "< 1 s (100 branches)", "met": cli_s < 1.0 if not quick else None,
         "note": f"baseline: mvc --help; fixture built in {built:.1f} s with git fast-import"},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--branches", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvc-bench-exp-") as tmp:
        os.environ.setdefault("MVC_REMOTE_HOME", str(Path(tmp) / "remotes"))
        t0 = time.perf_counter()
        repo = build_experiments_repo(Path(tmp) / "repo", branches=opts.branches)
        built = time.perf_counter() - t0
        import mvc

        rows = mvc.exp_list(repo=repo, sort="acc")
        assert len(rows) == opts.branches, len(rows)
        t0 = time.perf_counter()
        for _ in range(opts.repeat):
            mvc.exp_list(repo=repo, sort="acc")
        api_s = (time.perf_counter() - t0) / opts.repeat
        cli_s = time_command(["exp", "list", "--sort", "acc"], repo, repeat=opts.repeat)
        json_s = time_command(["exp", "list", "--sort", "acc", "--json"], repo, repeat=opts.repeat)
    print(f"fixture: {opts.branches} experiment branches built in {built:.2f} s")
    print(f"mvc.exp_list ({opts.branches} branches, in-process): {api_s:.3f} s")
    print(f"mvc exp list --sort acc ({opts.branches} branches):  {cli_s:.3f} s   (target < 1 s)")
    print(f"mvc exp list --json ({opts.branches} branches):      {json_s:.3f} s")


if __name__ == "__main__":
    main()

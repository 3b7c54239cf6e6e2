"""Time `mvc sign` and `mvc verify --signatures` on a big model next to `sha256sum` on it.

One-off measurement for the closing note of issue 11. It builds a throw-away repository in
a temp dir, writes SIZE random bytes as an opaque model, adds it, and times (warm page
cache, best of ``--repeat`` runs):

* ``sha256sum FILE`` (coreutils) and ``openssl dgst -sha256 FILE``: one sha256 pass, the
  floor (OpenSSL uses the CPU's SHA extensions, as Python's hashlib and model-signing do;
  coreutils may not);
* ``mvc sign NAME --key KEY`` (CLI, in a subprocess): checks the cache object against DVC's
  state (no extra read when unchanged), then model-signing's sha256 pass, and the ECDSA
  signature;
* ``mvc verify NAME --signatures --trusted-keys DIR`` (CLI): re-hashes the work tree and
  the cache object (md5, two passes) and checks the signature (one sha256 pass);
* the signature check alone (``mvc.signing.verify``, in process).

Everything is deleted afterwards.

Usage:
    .venv/bin/python scripts/bench_security.py [--size-mib 1024] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _write_random(path: Path, size: int, chunk: int = 64 * 2**20) -> None:
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            n = min(chunk, left)
            handle.write(os.urandom(n))
            left -= n


def _keys(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / "signer.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    trusted = folder / "trusted"
    trusted.mkdir()
    (trusted / "signer.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, trusted


def bench_sign_verify(size: int = 2**30, repeat: int = 2, workdir: str | None = None) -> dict[str, float]:
    """Measure sign / verify / sha256sum on a ``size``-byte model; return seconds (best of ``repeat``).

    Args:
        size: bytes of the model file.
        repeat: runs per command; the best is kept.
        workdir: parent directory for the temp repository (default: the system temp dir).

    Returns:
        ``{"mvc_add", "sha256sum", "openssl_sha256", "mvc_sign", "mvc_verify_signatures",
        "signature_check_only"}`` -> seconds.
    """
    top = Path(tempfile.mkdtemp(prefix="mvc-bench-security-", dir=workdir))
    env = dict(os.environ, MVC_NO_PROGRESS="1", DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(top / "dvc-site"))
    env["MVC_REMOTE_HOME"] = str(top / "remotes")
    try:
        repo = top / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com")):
            subprocess.run(["git", "config", key, value], cwd=repo, check=True)
        mvc_bin = str(VENV_BIN / "mvc")
        subprocess.run([mvc_bin, "init"], cwd=repo, env=env, check=True, capture_output=True)
        model = repo / "model.bin"
        _write_random(model, size)
        private, trusted = _keys(top)
        figures = {"mvc_add": _timed([mvc_bin, "add", "model.bin", "-q"], repo, env)}
        names = ("sha256sum", "openssl_sha256", "mvc_sign", "mvc_verify_signatures", "signature_check_only")
        runs: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(repeat):
            runs["sha256sum"].append(_timed(["sha256sum", str(model)], repo, env))
            runs["openssl_sha256"].append(_timed(["openssl", "dgst", "-sha256", str(model)], repo, env))
            runs["mvc_sign"].append(_timed([mvc_bin, "sign", "model", "--key", str(private)], repo, env))
            runs["mvc_verify_signatures"].append(
                _timed([mvc_bin, "verify", "model", "--signatures", "--trusted-keys", str(trusted)], repo, env)
            )
            runs["signature_check_only"].append(_signature_check(repo, trusted, env))
        figures.update({k: min(v) for k, v in runs.items()})
        return figures
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _signature_check(repo: Path, trusted: Path, env: dict[str, str]) -> float:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mvc import signing, workspace\n"
        "root = Path(sys.argv[1]); ptr = workspace.find_model(workspace.open_workspace(root), 'model')\n"
        "keys = signing.trusted_keys(sys.argv[2]); import model_signing.verifying\n"
        "t = time.perf_counter(); v = signing.verify(root, name='model', md5=ptr.md5, trusted=keys)\n"
        "assert v.status == 'ok', v; print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(repo), str(trusted)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def bench(*, work: Path, env: dict[str, str], quick: bool = False) -> list[dict]:
    """Rows for ``scripts/bench.py``: mvc sign / verify --signatures next to sha256sum on one model."""
    size = 32 * 2**20 if quick else 2**30
    f = bench_sign_verify(size, repeat=1 if quick else 2, workdir=str(work))
    label = f"{size // 2**20} MiB"
    return [
        {"benchmark": f"mvc sign, {label}", "mvc": f["mvc_sign"], "baseline": f["sha256sum"], "unit": "s",
         "ratio": f["mvc_sign"] / f["sha256sum"], "target": "report (no target)", "met": None,
         "note": f"baseline: sha256sum; openssl sha256 {f['openssl_sha256']:.2f} s"},
        {"benchmark": f"mvc verify --signatures, {label}", "mvc": f["mvc_verify_signatures"], "baseline": f["sha256sum"],
         "unit": "s", "ratio": f["mvc_verify_signatures"] / f["sha256sum"], "target": "report (no target)", "met": None,
         "note": f"signature check alone {f['signature_check_only']:.2f} s"},
    ]


def main() -> None:
    """Run the measurement and print the figures as JSON (seconds and ratios to sha256sum)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    figures = bench_sign_verify(args.size_mib * 2**20, repeat=args.repeat)
    report: dict[str, object] = {"size_mib": args.size_mib, "load_average": os.getloadavg()[0]}
    report["seconds"] = {k: round(v, 2) for k, v in figures.items()}
    for base in ("sha256sum", "openssl_sha256"):
        report[f"x_{base}"] = {k: round(v / figures[base], 2) for k, v in figures.items() if k != "mvc_add"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""`scripts/bench.py --quick` runs as a smoke test: it must finish and report rows (no timing assertion)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.mark.slow
@pytest.mark.servers
def test_bench_quick_smoke_run():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    rows = json.loads(proc.stdout)
    names = " | ".join(r["benchmark"] for r in rows)
    for expected in ("mvc --help", "tensor index", "add ", "push ", "pull ", "pull --no-verify"):
        assert expected in names, names
    for row in rows:
        if row["target"] == "informative" and row["mvc"] is None:  # a difference below the run's noise
            assert "noise" in row["note"], row
            continue
        assert row["mvc"] is not None and row["mvc"] > 0, row

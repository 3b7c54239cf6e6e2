"""`mvc eval` as a user runs it: real repos, real DVC, real evaluation scripts and numpy models."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

import mvc
from tests.conftest import assert_one_line_error as _assert_one_line_error
from tests.conftest import git

PY = sys.executable
MODEL = "models/clf.safetensors"


@pytest.fixture(autouse=True)
def restore_import_state(monkeypatch: pytest.MonkeyPatch):
    """--fn puts the repo root on sys.path and imports from it: undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [n for n in sys.modules if n.startswith("evalpkg_")]:
        del sys.modules[name]


# The error names its subject in the error line itself, not only in the hint.
assert_one_line_error = functools.partial(_assert_one_line_error, first_line=True)


def add_version(repo: Path, tensors: dict[str, np.ndarray], message: str, *, name: str = "clf", path: str = MODEL) -> str:
    """Write ``tensors`` as safetensors, record and commit them; return the content hash."""
    full = repo / path
    full.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(full))
    result = mvc.add(full, name=name)
    mvc.commit(repo=repo, message=message)
    return result.version.hash


def write(repo: Path, rel: str, text: str) -> Path:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ---- real logistic-regression models ----------------------------------------------------------

LOGREG_EVAL = """\
    import argparse, json
    import numpy as np
    from safetensors.numpy import load_file

    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--out")
    p.add_argument("--fold", type=int)
    p.add_argument("--folds", type=int, default=1)
    a = p.parse_args()
    with open("calls.log", "a") as log:
        log.write(a.weights + "\\n")
    data = np.load("data/heldout.npz")
    X, y = data["X"], data["y"]
    if a.fold is not None:
        X, y = X[a.fold::a.folds], y[a.fold::a.folds]
    t = load_file(a.weights)
    pred = (X @ t["w"] + t["b"][0]) > 0
    correct = (pred == y).astype(int)
    result = {"accuracy": float(correct.mean()), "n": int(len(y)), "correct": correct.tolist()}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f)
    else:
        print("evaluated", a.weights)
        print(json.dumps(result))
"""


def make_data(seed: int = 7, d: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d)
    X = rng.standard_normal((1600, d))
    y = (X @ w_true + 0.3 * rng.standard_normal(1600)) > 0
    return X[:600], y[:600], X[600:], y[600:]


def train_logreg(X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Plain numpy gradient descent on the logistic loss."""
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal(X.shape[1]), 0.0
    for _ in range(epochs):
        p = 1 / (1 + np.exp(-(X @ w + b)))
        w -= lr * X.T @ (p - y) / len(y)
        b -= lr * float((p - y).mean())
    return {"w": w, "b": np.array([b])}


@pytest.fixture
def logreg_repo(repo: Path) -> dict[str, object]:
    """v1 = badly trained, v2 = well trained, v3 = a near-copy of v2 (tiny weight noise); held-out data and eval.py."""
    Xtr, ytr, Xte, yte = make_data()
    (repo / "data").mkdir()
    np.savez(repo / "data/heldout.npz", X=Xte, y=yte)
    write(repo, "eval.py", LOGREG_EVAL)
    bad = train_logreg(Xtr, ytr, epochs=40, lr=0.2, seed=3)  # undertrained: ~0.76 accuracy
    good = train_logreg(Xtr, ytr, epochs=300, lr=0.5)  # ~0.95
    noise = np.random.default_rng(11)
    near = {k: v + 0.02 * noise.standard_normal(v.shape) for k, v in good.items()}  # 4 predictions differ
    hashes = {
        "bad": add_version(repo, bad, "bad"),
        "good": add_version(repo, good, "good"),
        "near": add_version(repo, near, "near copy of good"),
    }
    return {"hashes": hashes, "Xte": Xte, "yte": yte, "good": good, "bad": bad}


def accuracy(tensors: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    w = tensors["w"].astype(np.float32)
    b = np.float32(tensors["b"][0])
    return float((((X @ w + b) > 0) == y).mean())


def test_leaderboard_ranks_the_better_model_and_bootstrap_separates_real_from_null_gaps(repo, logreg_repo, cli):
    weights = repo / MODEL
    before = (weights.read_bytes(), weights.stat().st_mtime_ns)
    result = cli(
        "eval", "clf@v1", "clf@v2", "clf@v3",
        "--cmd", f"{PY} eval.py --weights {{weights}} --out {{out}}",
        "--per-example", "correct", "--jobs", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert [r["status"] for r in rows] == ["ok"] * 3 and data["failures"] == []
    # the truly better models first (the good one and its near-identical copy), the bad one last
    assert {rows[0]["ref"], rows[1]["ref"]} == {"clf@v2", "clf@v3"} and rows[2]["ref"] == "clf@v1"
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert data["sort"] == "accuracy" and data["descending"] is True
    good_acc = accuracy(logreg_repo["good"], logreg_repo["Xte"], logreg_repo["yte"])
    bad_acc = accuracy(logreg_repo["bad"], logreg_repo["Xte"], logreg_repo["yte"])
    by_ref = {r["ref"]: r for r in rows}
    assert by_ref["clf@v2"]["metrics"]["accuracy"] == pytest.approx(good_acc)
    assert by_ref["clf@v1"]["metrics"]["accuracy"] == pytest.approx(bad_acc)
    assert good_acc - bad_acc > 0.1
    assert "correct" not in by_ref["clf@v2"]["metrics"]  # the per-example list is not a metric
    comps = {c["other"]: c for c in data["comparisons"]}
    real, null = comps["clf@v1"], comps[rows[1]["ref"]]
    assert real["significant"] and real["p_value"] < 0.001 and real["ci_low"] > 0
    assert real["difference"] == pytest.approx(rows[0]["metrics"]["accuracy"] - bad_acc)
    assert not null["significant"] and null["p_value"] > 0.2 and null["ci_low"] <= 0 <= null["ci_high"]
    assert real["n"] == null["n"] == 1000
    # the work tree was never touched
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == before
    # results saved per content hash under the evaluation's hash, and staged
    saved = repo / data["saved"]
    assert data["saved"] == f".mvc/evals/{data['eval_hash']}"
    for h in logreg_repo["hashes"].values():
        stored = json.loads((saved / f"{h}.json").read_text())
        assert stored["hash"] == h and stored["schema"] == 2 and stored["complete"] is True
        assert len(stored["folds"]) == 1 and len(stored["folds"][0]["per_example"]) == 1000
    staged = git(repo, "diff", "--cached", "--name-only").splitlines()
    assert {f"{data['saved']}/{h}.json" for h in logreg_repo["hashes"].values()} <= set(staged)
    assert f"{data['saved']}/eval.json" in staged

    # people get a table that marks which gaps are real; the run is served from the saved results
    text = cli(
        "eval", "clf@v1", "clf@v2", "clf@v3",
        "--cmd", f"{PY} eval.py --weights {{weights}} --out {{out}}",
        "--per-example", "correct", "--report", "eval.html",
    )  # fmt: skip
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split("\t")[:5] == ["#", "version", "v", "hash", "status"]
    assert lines[0].split("\t")[-1] == "vs best (correct)"
    row_of = {line.split("\t")[1]: line.split("\t") for line in lines[1:]}
    assert row_of["clf@v1"][-1].endswith(" *") and row_of[rows[1]["ref"]][-1].endswith("n.s.")
    assert row_of[rows[0]["ref"]][-1] == "best" and all(r[4] == "cached" for r in row_of.values())
    assert len((repo / "calls.log").read_text().splitlines()) == 3  # nothing ran again
    page = (repo / "eval.html").read_text()
    assert page.count("<svg") == 2 and "accuracy" in page and "significant" in page and "clf@v1" in page


def test_rerun_skips_saved_versions_unless_forced_and_a_new_version_runs_alone(repo, logreg_repo, cli):
    args = ["eval", "clf@v1", "clf@v2", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json"]
    first = json.loads(cli(*args).stdout)
    assert [r["status"] for r in first["rows"]] == ["ok", "ok"]
    calls = repo / "calls.log"
    assert len(calls.read_text().splitlines()) == 2
    second = json.loads(cli(*args, "clf@v3").stdout)
    assert sorted(r["status"] for r in second["rows"]) == ["cached", "cached", "ok"]
    assert len(calls.read_text().splitlines()) == 3  # only v3 ran
    assert second["eval_hash"] == first["eval_hash"]
    forced = json.loads(cli(*args, "--force").stdout)
    assert [r["status"] for r in forced["rows"]] == ["ok", "ok"]
    assert len(calls.read_text().splitlines()) == 5
    # a different evaluation (here: another per-example key) has its own hash and results
    other = json.loads(cli(*args, "--per-example", "correct").stdout)
    assert other["eval_hash"] != first["eval_hash"] and {r["status"] for r in other["rows"]} == {"ok"}


def test_folds_report_mean_and_std(repo, logreg_repo, cli):
    result = cli(
        "eval", "clf@v2", "--folds", "4",
        "--cmd", f"{PY} eval.py --weights {{weights}} --fold {{fold}} --folds 4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)["rows"][0]
    X, y = logreg_repo["Xte"], logreg_repo["yte"]
    per_fold = [accuracy(logreg_repo["good"], X[k::4], y[k::4]) for k in range(4)]
    assert [f["accuracy"] for f in row["folds"]] == pytest.approx(per_fold)
    assert row["metrics"]["accuracy"] == pytest.approx(np.mean(per_fold))
    assert row["std"]["accuracy"] == pytest.approx(np.std(per_fold, ddof=1))
    text = cli("eval", "clf@v2", "--folds", "4", "--cmd", f"{PY} eval.py --weights {{weights}} --fold {{fold}} --folds 4", "--report", "r/f.html")
    assert " ± " in text.stdout.splitlines()[1]
    page = (repo / "r/f.html").read_text()
    assert page.count("<svg") == 2 and "&plusmn;" in page  # accuracy (with its std) and n


def test_folds_without_fold_placeholder_is_a_usage_error(repo, cli):  # fails before any version is resolved
    result = cli("eval", "clf@v1", "--folds", "3", "--cmd", f"{PY} eval.py --weights {{weights}}")
    assert_one_line_error(result, 2, "--folds 3 needs a {fold} placeholder")


def test_version_range_and_all_experiments(repo, logreg_repo, cli):
    h = logreg_repo["hashes"]
    ranged = cli("eval", "--model", "clf", "--versions", "v2..v3", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert ranged.exit_code == 0, ranged.stderr
    assert {r["ref"] for r in json.loads(ranged.stdout)["rows"]} == {"clf@v2", "clf@v3"}
    open_ended = cli("eval", "clf", "--versions", "v2..", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert [r["status"] for r in json.loads(open_ended.stdout)["rows"]] == ["cached", "cached"]  # v2, v3 (= clf)
    # two experiment branches, each with its own newer version; main's weights stay put
    for branch, epochs in (("exp/short", 5), ("exp/long", 600)):
        git(repo, "checkout", "-q", "-b", branch, "main")
        Xtr, ytr, _, _ = make_data()
        add_version(repo, train_logreg(Xtr, ytr, epochs=epochs, lr=0.5), f"{branch} run")
    git(repo, "checkout", "-q", "main")
    mvc.checkout(repo=repo)
    exp = cli("eval", "clf@v2", "--all-experiments", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert exp.exit_code == 0, exp.stderr
    rows = json.loads(exp.stdout)["rows"]
    assert {r["ref"] for r in rows} == {"clf@v2", "clf@exp/short", "clf@exp/long"}
    assert {r["hash"] for r in rows if r["ref"].startswith("clf@exp/")}.isdisjoint(h.values())
    assert all(r["version"] == 4 for r in rows if r["ref"].startswith("clf@exp/"))
    # one ref written two ways is evaluated once
    same = cli("eval", "clf@v3", "clf@main", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert [r["ref"] for r in json.loads(same.stdout)["rows"]] == ["clf@v3, clf@main"]


def test_bad_range_and_no_experiment_branches(repo, cli):  # fails before any version is resolved
    cmd = ["--cmd", f"{PY} eval.py --weights {{weights}}"]
    assert_one_line_error(cli("eval", "--model", "clf", "--versions", "3-5", *cmd), 2, "is not a range")
    assert_one_line_error(cli("eval", "--model", "clf", "--versions", "v5..v3", *cmd), 2, "runs backwards")
    assert_one_line_error(cli("eval", "--model", "clf", "--all-experiments", *cmd), 3, "no experiment branches")
    assert_one_line_error(cli("eval", *cmd), 2, "no versions to evaluate")


def test_record_writes_metrics_only_into_the_work_tree_version(repo, logreg_repo, cli):
    result = cli("eval", "clf", "clf@v1", "--cmd", f"{PY} eval.py --weights {{weights}}", "--record")
    assert result.exit_code == 0, result.stderr
    assert "recorded the metrics into models/clf.safetensors.dvc" in result.stderr
    assert "clf@v1: metrics not recorded: only the work-tree version of clf can be" in result.stderr
    manifest = yaml.safe_load((repo / "models/clf.safetensors.dvc").read_text())["meta"]["mvc"]
    assert manifest["version"] == 3 and 0.5 < manifest["metrics"]["accuracy"] <= 1
    assert manifest["hash"] == logreg_repo["hashes"]["near"]
    assert "models/clf.safetensors.dvc" in git(repo, "diff", "--cached", "--name-only").splitlines()
    shown = json.loads(cli("show", "clf", "--json").stdout)
    assert shown["manifest"]["metrics"]["accuracy"] == manifest["metrics"]["accuracy"]


def test_sort_direction_and_bad_sort(repo, logreg_repo, cli):
    write(repo, "lossy.py", """\
        import json, sys
        import numpy as np
        from safetensors.numpy import load_file
        d = np.load("data/heldout.npz")
        t = load_file(sys.argv[1])
        p = 1 / (1 + np.exp(-(d["X"] @ t["w"] + t["b"][0])))
        p = np.clip(p, 1e-7, 1 - 1e-7)
        y = d["y"]
        print(json.dumps({"val_loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
                          "accuracy": float(((p > 0.5) == y).mean())}))
    """)
    cmd = ["--cmd", f"{PY} lossy.py {{weights}}"]
    by_loss = json.loads(cli("eval", "clf@v1", "clf@v2", *cmd, "--sort", "val_loss", "--json").stdout)
    assert by_loss["descending"] is False and by_loss["rows"][0]["ref"] == "clf@v2"  # loss: lower is better
    worst_first = json.loads(cli("eval", "clf@v1", "clf@v2", *cmd, "--sort", "accuracy:asc", "--json").stdout)
    assert [r["ref"] for r in worst_first["rows"]] == ["clf@v1", "clf@v2"]
    assert_one_line_error(cli("eval", "clf@v1", *cmd, "--sort", "accuracy:up"), 2, "--sort 'accuracy:up'")
    missing = cli("eval", "clf@v1", "clf@v2", *cmd, "--sort", "f1")
    assert missing.exit_code == 0 and "no version reports 'f1'" in missing.stderr


# ---- Python callables --------------------------------------------------------------------------


def test_fn_callable_with_folds_and_progress(repo, logreg_repo, cli):
    write(repo, "evalpkg_fold/__init__.py", "")
    write(repo, "evalpkg_fold/metrics.py", """\
        import numpy as np
        from safetensors.numpy import load_file

        def evaluate(weights, fold=0):
            d = np.load("data/heldout.npz")
            X, y = d["X"][fold::2], d["y"][fold::2]
            t = load_file(weights)
            correct = ((X @ t["w"] + t["b"][0]) > 0) == y
            return {"accuracy": np.float32(correct.mean()), "fold": fold, "correct": correct.astype(np.int8), "note": "x"}
    """)
    result = cli("eval", "clf@v1", "clf@v2", "--fn", "evalpkg_fold.metrics:evaluate", "--folds", "2", "--per-example", "correct", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["spec"]["kind"] == "fn" and data["rows"][0]["ref"] == "clf@v2"
    assert [f["fold"] for f in data["rows"][0]["folds"]] == [0.0, 1.0]  # numbers only: "note" is no metric
    assert set(data["rows"][0]["metrics"]) == {"accuracy", "fold"}
    assert data["comparisons"][0]["n"] == 1000 and data["comparisons"][0]["significant"]
    # the API takes a callable too, and reports progress per version
    calls: list[tuple[str, int, int | None]] = []

    def score(weights: str) -> dict:
        return {"size": Path(weights).stat().st_size, "named": Path(weights).name == "clf.safetensors"}

    res = mvc.evaluate(["clf@v1", "clf@v3"], repo=repo, fn=score, progress=lambda *a: calls.append(a))
    assert [r.status for r in res.rows] == ["ok", "ok"] and res.rows[0].metrics["size"] > 0
    assert res.spec.spec.endswith(":test_fn_callable_with_folds_and_progress.<locals>.score")
    assert {c[0] for c in calls} == {"clf@v1", "clf@v3"}
    for label in ("clf@v1", "clf@v3"):
        mine = [c for c in calls if c[0] == label]
        assert mine[0][2] == 1 and sum(c[1] for c in mine) == 1  # registered, then its one run ended


def test_fn_timeout_and_exception_are_reported_per_version(repo, logreg_repo):
    import hashlib
    import threading

    release = threading.Event()
    slow_hash, broken_hash = logreg_repo["hashes"]["good"], logreg_repo["hashes"]["near"]

    def judge(weights: str) -> dict:
        digest = hashlib.md5(Path(weights).read_bytes()).hexdigest()
        if digest == slow_hash:
            release.wait(30)  # released by the test once evaluate() has given up on it
        if digest == broken_hash:
            raise RuntimeError("cannot score these weights")
        return {"score": 1.0}

    try:
        res = mvc.evaluate(["clf@v1", "clf@v2", "clf@v3"], repo=repo, fn=judge, timeout=1, jobs=3)
    finally:
        release.set()
    assert {r.ref: r.status for r in res.rows} == {"clf@v1": "ok", "clf@v2": "failed", "clf@v3": "failed"}
    errors = {r.ref: r for r in res.failures}
    assert errors["clf@v2"].error == "timed out after 1 s"
    assert errors["clf@v3"].error == "the function raised RuntimeError: cannot score these weights"
    assert "RuntimeError: cannot score these weights" in errors["clf@v3"].stderr_tail


def test_fn_that_cannot_be_imported(repo, cli):  # fails before any version is resolved
    write(repo, "evalpkg_bad/__init__.py", "")
    write(repo, "evalpkg_bad/metrics.py", "def evaluate(path):\n    return {}\nTHRESHOLD = 3\n")
    assert_one_line_error(cli("eval", "clf@v1", "--fn", "nosuchpkg.metrics:evaluate"), 3, "cannot import", "no module named 'nosuchpkg'")
    assert_one_line_error(cli("eval", "clf@v1", "--fn", "evalpkg_bad.metrics:score"), 3, "cannot import", "has no 'score'")
    assert_one_line_error(cli("eval", "clf@v1", "--fn", "evalpkg_bad.metrics"), 2, "is not module:function")
    assert_one_line_error(cli("eval", "clf@v1", "--fn", "evalpkg_bad.metrics:THRESHOLD"), 2, "is not callable")
    assert_one_line_error(cli("eval", "clf@v1", "--fn", "evalpkg_bad.metrics:evaluate", "--folds", "2"), 2, "fold parameter")
    assert not (repo / ".mvc/evals").exists()


# ---- bad input and failing versions -------------------------------------------------------------

JUDGE = """\
    import hashlib, json, pathlib, sys, time
    weights, mode = sys.argv[1], sys.argv[2]
    digest = hashlib.md5(pathlib.Path(weights).read_bytes()).hexdigest()  # DVC content hash
    special = pathlib.Path("special.txt").read_text().split()
    if digest in special:
        if mode == "nojson" or (mode == "mixed" and digest == special[0]):
            print("all fine but no metrics")
            sys.exit(0)
        if mode == "crash" or mode == "mixed":
            print("loading weights...", file=sys.stderr)
            print("ValueError: weights look wrong", file=sys.stderr)
            sys.exit(3)
        if mode == "sleep":
            time.sleep(60)
    print(json.dumps({"score": int(digest[:4], 16) / 65535}))
"""


@pytest.fixture
def judged(repo: Path, logreg_repo) -> dict[str, str]:
    """judge.py fails in a chosen way only for weights listed in special.txt (by content hash)."""
    write(repo, "judge.py", JUDGE)
    return logreg_repo["hashes"]


def test_template_without_weights_placeholder(repo, cli):  # fails before any version is resolved
    result = cli("eval", "clf@v1", "--cmd", f"{PY} eval.py --out {{out}}")
    assert_one_line_error(result, 2, "no {weights} placeholder")


def test_failing_evaluations_are_reported_and_do_not_stop_the_others(repo, judged, cli):
    (repo / "special.txt").write_text(f"{judged['bad']}\n{judged['good']}\n")
    result = cli("eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", f"{PY} judge.py {{weights}} mixed")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[-1] == "error"
    ok, *failed = [line.split("\t") for line in lines[1:]]
    assert ok[1] == "clf@v3" and ok[4] == "ok" and ok[0] == "1"
    by_ref = {f[1]: f for f in failed}
    assert by_ref["clf@v1"][4] == "failed" and by_ref["clf@v1"][0] == "-"
    assert "printed no JSON metrics" in by_ref["clf@v1"][-1] and "all fine but no metrics" in by_ref["clf@v1"][-1]
    assert by_ref["clf@v2"][-1] == "the command exited with code 3 (ValueError: weights look wrong)"
    assert "clf@v2 failed: the command exited with code 3\n  | loading weights...\n  | ValueError: weights look wrong" in result.stderr
    last = result.stderr.strip().splitlines()
    assert last[-2] == "error: 2 of 3 evaluations failed: clf@v1, clf@v2" and last[-1].startswith("hint: ")
    # failures are not saved: a re-run tries them again and reuses the good one
    again = json.loads(cli("eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", f"{PY} judge.py {{weights}} mixed", "--json").stdout)
    assert {r["ref"]: r["status"] for r in again["rows"]} == {"clf@v3": "cached", "clf@v1": "failed", "clf@v2": "failed"}
    assert len(again["failures"]) == 2 and again["failures"][0]["stderr_tail"] is None


def test_a_timeout_in_one_version_leaves_the_others(repo, judged, cli):
    (repo / "special.txt").write_text(judged["good"] + "\n")
    result = cli("eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", f"{PY} judge.py {{weights}} sleep", "--timeout", "2", "--jobs", "2", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert {r["ref"]: r["status"] for r in data["rows"]} == {"clf@v1": "ok", "clf@v3": "ok", "clf@v2": "failed"}
    assert data["failures"][0]["error"] == "timed out after 2 s"
    assert "error: 1 of 3 evaluations failed: clf@v2" in result.stderr


def test_weights_in_no_cache_and_no_remote(repo, logreg_repo, cli):
    h = logreg_repo["hashes"]["bad"]
    (repo / ".dvc/cache/files/md5" / h[:2] / h[2:]).unlink()  # never pushed, now gone from the cache
    result = cli("eval", "clf@v1", "clf@v2", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert result.exit_code == 6  # the only failure: weights that cannot be had intact (integrity)
    data = json.loads(result.stdout)
    assert data["rows"][0]["ref"] == "clf@v2" and data["rows"][0]["status"] == "ok"
    assert data["rows"][0]["exit_code"] is None
    assert data["failures"][0]["ref"] == "clf@v1" and data["failures"][0]["exit_code"] == 6
    assert "neither the local cache nor" in data["failures"][0]["error"]
    assert result.stderr.strip().splitlines()[-1] == (
        "hint: push their weights from a clone that has them (`mvc push --all-versions`), then run again"
    )


def test_weights_only_in_the_remote_are_fetched_without_touching_the_work_tree(repo, logreg_repo, cli):
    mvc.push(repo=repo)  # the current version, v3
    h = logreg_repo["hashes"]["near"]
    (repo / ".dvc/cache/files/md5" / h[:2] / h[2:]).unlink()
    weights = repo / MODEL
    before = (weights.read_bytes(), weights.stat().st_mtime_ns)
    result = cli("eval", "clf@v3", "--cmd", f"{PY} eval.py --weights {{weights}}", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"][0]["metrics"]["accuracy"] > 0.9
    assert (repo / ".dvc/cache/files/md5" / h[:2] / h[2:]).is_file()
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == before


def test_png_report_is_refused_before_anything_runs(repo, cli):  # fails before any version is resolved
    result = cli("eval", "clf@v1", "--cmd", f"{PY} eval.py --weights {{weights}}", "--report", "chart.png")
    assert_one_line_error(result, 2, "cannot write chart.png")
    assert "--report chart.html" in result.stderr
    assert not (repo / ".mvc/evals").exists() and not (repo / "calls.log").exists()


def test_help_has_examples(cli):
    result = cli("eval", "--help")
    assert result.exit_code == 0 and "mvc eval net@v1 net@v2" in result.stdout.split("Examples:")[1]
    assert "eval " in cli("--help").stdout


def test_eval_with_both_or_neither_evaluation_or_an_unknown_version(repo, weights, cli):
    assert_one_line_error(cli("eval", "net@v1"), 2, "either as a command or as a Python function")
    both = cli("eval", "net@v1", "--cmd", "x {weights}", "--fn", "a:b")
    assert_one_line_error(both, 2, "either as a command or as a Python function")
    mvc.add(weights)
    mvc.commit(repo=repo, message="v1")
    assert_one_line_error(cli("eval", "net@v9", "--cmd", "x {weights}"), 3, "net@v9")


# ---- per-fold results: a re-run runs only the folds still missing (issue 16) -----------------------

FOLDED = """\
    import hashlib, json, os, pathlib, sys, time
    import numpy as np
    from safetensors.numpy import load_file

    weights, fold = sys.argv[1], int(sys.argv[2])
    digest = hashlib.md5(pathlib.Path(weights).read_bytes()).hexdigest()  # DVC content hash
    with open("runs.log", "a") as log:  # one line per run of the command: the test counts them
        log.write(f"{digest} {fold}\\n")
    here = [digest, str(fold)]
    if pathlib.Path("fail.txt").is_file() and pathlib.Path("fail.txt").read_text().split() == here:
        sys.exit("this fold fails on purpose")
    if pathlib.Path("block.txt").is_file() and pathlib.Path("block.txt").read_text().split() == here:
        pathlib.Path("blocked").write_text(str(os.getpid()))
        time.sleep(300)  # until the test interrupts mvc
    data = np.load("data/heldout.npz")
    X, y = data["X"][fold::3], data["y"][fold::3]
    t = load_file(weights)
    correct = (((X @ t["w"] + t["b"][0]) > 0) == y).astype(int)
    print(json.dumps({"accuracy": float(correct.mean()), "correct": correct.tolist()}))
"""
FOLDED_ARGS = ("--cmd", f"{PY} folded.py {{weights}} {{fold}}", "--folds", "3", "--per-example", "correct", "--json")
SAME_AS_CLEAN = ("rank", "ref", "hash", "metrics", "std", "folds")


def runs(repo: Path) -> list[tuple[str, int]]:
    """The (content hash, fold) of every run of folded.py so far."""
    log = repo / "runs.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    return [(h, int(k)) for h, k in (line.split() for line in lines)]


def assert_same_as_a_clean_run(cli, refs: list[str], resumed: dict, *extra: str) -> None:
    """A forced run of every fold gives the resumed run's leaderboard and comparisons."""
    clean = cli("eval", *refs, *FOLDED_ARGS, "--force", *extra)
    assert clean.exit_code == 0, clean.stderr
    clean_data = json.loads(clean.stdout)
    assert [r["status"] for r in clean_data["rows"]] == ["ok"] * len(refs) and clean_data["rows"][0]["cached_folds"] == 0
    assert [{k: r[k] for k in SAME_AS_CLEAN} for r in resumed["rows"]] == [
        {k: r[k] for k in SAME_AS_CLEAN} for r in clean_data["rows"]
    ]
    assert resumed["comparisons"] == clean_data["comparisons"] and resumed["comparisons"]


@pytest.fixture
def folded(repo: Path, logreg_repo) -> dict[str, str]:
    write(repo, "folded.py", FOLDED)
    return logreg_repo["hashes"]


def test_a_failed_fold_is_the_only_one_a_rerun_runs(repo, folded, cli):
    good = folded["good"]
    (repo / "fail.txt").write_text(f"{good} 1\n")
    first = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS)
    assert first.exit_code == 1
    data = json.loads(first.stdout)
    assert {r["ref"]: r["status"] for r in data["rows"]} == {"clf@v1": "ok", "clf@v2": "failed"}
    failure = data["failures"][0]
    assert failure["error"] == "the command exited with code 1 (fold 1)" and failure["stderr_tail"] == "this fold fails on purpose"
    assert sorted(runs(repo)) == sorted((h, k) for h in (folded["bad"], good) for k in range(3))  # fold 2 still ran
    # the failed version's finished folds are saved (and staged) next to the complete version
    saved = json.loads((repo / data["saved"] / f"{good}.json").read_text())
    assert saved["complete"] is False and [f is None for f in saved["folds"]] == [False, True, False]
    assert failure["saved"] == f"{data['saved']}/{good}.json"
    assert failure["saved"] in git(repo, "diff", "--cached", "--name-only").splitlines()

    (repo / "fail.txt").unlink()
    again = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS)
    assert again.exit_code == 0, again.stderr
    assert runs(repo)[6:] == [(good, 1)]  # only the missing fold ran
    resumed = json.loads(again.stdout)
    assert {r["ref"]: (r["status"], r["cached_folds"]) for r in resumed["rows"]} == {"clf@v2": ("ok", 2), "clf@v1": ("cached", 3)}
    assert json.loads((repo / data["saved"] / f"{good}.json").read_text())["complete"] is True
    text = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS[:-1])  # served from the saved results, nothing runs
    assert text.exit_code == 0 and "2 versions read from" in text.stderr and len(runs(repo)) == 7
    assert_same_as_a_clean_run(cli, ["clf@v1", "clf@v2"], resumed)
    assert len(runs(repo)) == 7 + 6


def test_an_interrupted_run_keeps_its_finished_folds(repo, folded, cli):
    import os
    import signal
    import subprocess
    import time

    good = folded["good"]
    (repo / "block.txt").write_text(f"{good} 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [PY, "-m", "mvc", "eval", "clf@v1", "clf@v2", *FOLDED_ARGS],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (repo / "blocked").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert (repo / "blocked").is_file(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    folder = next((repo / ".mvc/evals").iterdir())
    partial_ = json.loads((folder / f"{good}.json").read_text())
    assert partial_["complete"] is False and [f is None for f in partial_["folds"]] == [False, False, True]
    assert json.loads((folder / f"{folded['bad']}.json").read_text())["complete"] is True
    staged = git(repo, "diff", "--cached", "--name-only").splitlines()
    assert {f".mvc/evals/{folder.name}/{h}.json" for h in (good, folded["bad"])} <= set(staged)
    assert len(runs(repo)) == 6

    (repo / "block.txt").unlink()
    again = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS[:-1])  # people are told what was reused
    assert again.exit_code == 0, again.stderr
    assert runs(repo)[6:] == [(good, 2)]
    table = {line.split("\t")[1]: line.split("\t")[4] for line in again.stdout.splitlines()[1:]}
    assert table == {"clf@v1": "cached", "clf@v2": "ok"}
    assert f"clf@v2: 2 of 3 folds read from .mvc/evals/{folder.name}/, the rest run" in again.stderr.splitlines()
    assert f"1 version read from .mvc/evals/{folder.name}/ (evaluated the same way before; --force re-runs)" in again.stderr
    resumed = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS)
    assert [r["status"] for r in json.loads(resumed.stdout)["rows"]] == ["cached", "cached"] and len(runs(repo)) == 7
    assert_same_as_a_clean_run(cli, ["clf@v1", "clf@v2"], json.loads(resumed.stdout))


def test_results_saved_by_an_older_mvc_are_still_read(repo, folded, cli):
    """Schema 1: one file per finished version, the folds' metrics and the joined per-example scores."""
    fresh = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS)
    assert fresh.exit_code == 0, fresh.stderr
    data = json.loads(fresh.stdout)
    for row in data["rows"]:
        path = repo / row["saved"]
        new = json.loads(path.read_text())
        old = {k: new[k] for k in ("eval", "model", "version", "hash", "refs", "commit", "metrics", "std")}
        joined = [x for f in new["folds"] for x in f["per_example"]]
        path.write_text(json.dumps({**old, "schema": 1, "folds": [f["metrics"] for f in new["folds"]], "per_example": joined}))
    old_run = cli("eval", "clf@v1", "clf@v2", *FOLDED_ARGS)
    assert old_run.exit_code == 0, old_run.stderr
    assert len(runs(repo)) == 6  # nothing ran again
    read = json.loads(old_run.stdout)
    assert [r["status"] for r in read["rows"]] == ["cached", "cached"]
    assert [{k: r[k] for k in SAME_AS_CLEAN} for r in read["rows"]] == [{k: r[k] for k in SAME_AS_CLEAN} for r in data["rows"]]
    assert read["comparisons"] == data["comparisons"]


def test_the_progress_bar_counts_runs_not_bytes(repo, folded):
    """On a terminal: one bar over the (version, fold) runs (issue 16), not a byte counter."""
    import os
    import pty
    import subprocess

    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TERM": "xterm"}
    env.pop("MVC_NO_PROGRESS")  # the test session turns bars off; a user's terminal has them
    proc = subprocess.Popen(
        [PY, "-m", "mvc", "eval", "clf@v1", "clf@v2", *FOLDED_ARGS[:-1]],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=secondary, text=True,
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the command closed its end
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    text = screen.decode(errors="replace")
    assert "evaluating" in text and "6/6 runs" in text, text
    assert "bytes" not in text


def test_a_command_dies_with_the_process_that_ran_it(repo, folded):
    """A killed driver (or Ray worker) takes its evaluation commands with it: no orphan runs on."""
    import os
    import signal
    import subprocess
    import time

    (repo / "block.txt").write_text(f"{folded['bad']} 0\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([PY, "-m", "mvc", "eval", "clf@v1", *FOLDED_ARGS], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (repo / "blocked").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    command = int((repo / "blocked").read_text())  # folded.py, a grandchild: the shell started it
    proc.send_signal(signal.SIGKILL)  # no clean-up runs in mvc
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while _alive(command) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(command)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

"""`mvc eval --executor ray` on a real local Ray cluster, workers fetching weights from the local S3 server.

One Ray head per session (tests/remote_servers.py, 2 CPUs on 127.0.0.1). The driver's DVC
cache is emptied before each cluster run, so a passing run proves the workers fetched the
weights from the remote by hash themselves.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

import mvc
from mvc import dvcpush
from tests.conftest import assert_one_line_error, git
from tests.test_cloud_remotes import Bucket, add_remote
from tests.test_eval import (  # noqa: F401 - logreg_repo and restore_import_state (autouse) are fixtures
    FOLDED,
    FOLDED_ARGS,
    MODEL,
    PY,
    add_version,
    assert_same_as_a_clean_run,
    logreg_repo,
    restore_import_state,
    runs,
    write,
)

pytestmark = [pytest.mark.servers]

EVAL_CMD = f"{PY} eval.py --weights {{weights}} --fold {{fold}} --folds 2"


@pytest.fixture
def s3_repo(repo: Path, logreg_repo, s3_server, ray_cluster, cli):  # noqa: F811 - logreg_repo is the fixture
    """The three logistic-regression versions pushed to a fresh S3 prefix, then gone from the local cache."""
    bucket = Bucket("s3", s3_server, f"{s3_server.bucket}/{repo.parent.name}-{uuid.uuid4().hex[:8]}")
    add_remote(cli, repo, bucket)
    pushed = dvcpush.push_objects(repo, logreg_repo["hashes"].values(), remote="store")  # every version, not just v3
    assert pushed.transferred == 3
    return {**logreg_repo, "bucket": bucket}


def empty_local_cache(repo: Path) -> None:
    shutil.rmtree(repo / ".dvc/cache")


def rows(result) -> dict[str, dict]:
    assert result.stdout, result.stderr
    return {r["ref"]: r for r in json.loads(result.stdout)["rows"]}


def test_ray_leaderboard_equals_the_local_one_and_a_rerun_runs_only_what_is_missing(repo, s3_repo, ray_cluster, cli):
    local = cli("eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", EVAL_CMD, "--folds", "2", "--json")
    assert local.exit_code == 0, local.stderr
    empty_local_cache(repo)
    on_ray = cli(
        "eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", EVAL_CMD, "--folds", "2", "--json", "--force",
        "--executor", "ray", "--address", ray_cluster.address,
    )  # fmt: skip
    assert on_ray.exit_code == 0, on_ray.stderr
    expected, got = json.loads(local.stdout), json.loads(on_ray.stdout)
    keys = ("rank", "ref", "hash", "status", "metrics", "std", "folds", "saved")
    assert [{k: r[k] for k in keys} for r in got["rows"]] == [{k: r[k] for k in keys} for r in expected["rows"]]
    assert got["rows"][0]["ref"] == "clf@v2" and got["rows"][-1]["ref"] == "clf@v1"
    assert not (repo / ".dvc/cache/files").exists()  # nothing was fetched through the driver
    # the same results files as a local run
    saved = repo / got["saved"] / f"{s3_repo['hashes']['good']}.json"
    assert [f["metrics"] for f in json.loads(saved.read_text())["folds"]] == got["rows"][0]["folds"]
    # a re-run evaluates only the version whose result is missing (through Ray Client this time)
    saved.unlink()
    again = cli(
        "eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", EVAL_CMD, "--folds", "2", "--json",
        "--executor", "ray", "--address", ray_cluster.client_address,
    )  # fmt: skip
    assert again.exit_code == 0, again.stderr
    assert {k: r["status"] for k, r in rows(again).items()} == {"clf@v1": "cached", "clf@v2": "ok", "clf@v3": "cached"}
    assert rows(again)["clf@v2"]["metrics"] == rows(on_ray)["clf@v2"]["metrics"] and saved.is_file()
    # progress: one bar over the tasks, named by the cluster's address and size
    calls: list[tuple[str, int, int | None]] = []
    result = mvc.evaluate(["clf@v1"], repo=repo, cmd=EVAL_CMD, folds=2, force=True, executor="ray",
                          progress=lambda task, n, total: calls.append((task, n, total)))  # fmt: skip
    assert result.rows[0].metrics == rows(on_ray)["clf@v1"]["metrics"]
    where = f"ray {ray_cluster.address}: 1 node, 2 CPU worker slots"
    assert calls == [(where, 0, 2), (where, 1, None), (where, 1, None)]


def test_on_ray_a_failed_fold_is_the_only_task_a_rerun_submits(repo, s3_repo, ray_cluster, cli):
    write(repo, "folded.py", FOLDED)
    hashes = s3_repo["hashes"]
    (repo / "fail.txt").write_text(f"{hashes['good']} 1\n")
    empty_local_cache(repo)
    args = ["eval", "clf@v1", "clf@v2", "clf@v3", *FOLDED_ARGS, "--executor", "ray", "--address", ray_cluster.address]
    first = cli(*args)
    assert first.exit_code == 1
    assert {k: r["status"] for k, r in rows(first).items()} == {"clf@v1": "ok", "clf@v2": "failed", "clf@v3": "ok"}
    assert rows(first)["clf@v2"]["error"] == "the command exited with code 1 (fold 1)"
    assert len(runs(repo)) == 9  # every task ran: the failure stopped none of the others
    (repo / "fail.txt").unlink()
    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    assert runs(repo)[9:] == [(hashes["good"], 1)]  # one task: the fold that failed
    assert {k: (r["status"], r["cached_folds"]) for k, r in rows(again).items()} == {
        "clf@v1": ("cached", 3), "clf@v2": ("ok", 2), "clf@v3": ("cached", 3),
    }  # fmt: skip
    assert not (repo / ".dvc/cache/files").exists()  # still nothing fetched through the driver
    assert_same_as_a_clean_run(cli, ["clf@v1", "clf@v2", "clf@v3"], json.loads(again.stdout))  # locally, from scratch


def test_on_ray_ctrl_c_keeps_the_finished_folds_and_a_rerun_submits_the_rest(repo, s3_repo, ray_cluster, cli):
    import os
    import signal
    import subprocess
    import time

    write(repo, "folded.py", FOLDED)
    hashes = s3_repo["hashes"]
    good = hashes["good"]
    (repo / "block.txt").write_text(f"{good} 2\n")  # (v2, fold 2) hangs until mvc is interrupted
    empty_local_cache(repo)
    args = ["eval", "clf@v1", "clf@v2", "clf@v3", *FOLDED_ARGS, "--executor", "ray", "--address", ray_cluster.address]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([PY, "-m", "mvc", *args], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def saved_folds() -> dict[str, int]:
        found = {}
        for path in repo.glob(".mvc/evals/*/*.json"):
            data = json.loads(path.read_text())
            if path.name != "eval.json":
                found[data["hash"]] = sum(f is not None for f in data["folds"])
        return found

    deadline = time.monotonic() + 180
    want = {hashes["bad"]: 3, good: 2, hashes["near"]: 3}
    while (saved_folds() != want or not (repo / "blocked").is_file()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert saved_folds() == want, proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    staged = git(repo, "diff", "--cached", "--name-only").splitlines()
    assert sum(name.startswith(".mvc/evals/") for name in staged) == 4  # the three versions' files and eval.json
    assert len(runs(repo)) == 9

    (repo / "block.txt").unlink()
    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    assert runs(repo)[9:] == [(good, 2)]  # one task: the fold that was interrupted
    assert {k: (r["status"], r["cached_folds"]) for k, r in rows(again).items()} == {
        "clf@v1": ("cached", 3), "clf@v2": ("ok", 2), "clf@v3": ("cached", 3),
    }  # fmt: skip
    assert_same_as_a_clean_run(cli, ["clf@v1", "clf@v2", "clf@v3"], json.loads(again.stdout))


KILLER = """\
    import hashlib, os, signal
    from pathlib import Path

    import numpy as np
    from safetensors.numpy import load_file

    HERE = Path(__file__).resolve().parents[1]


    def evaluate(weights, fold=0):
        md5 = hashlib.md5(Path(weights).read_bytes()).hexdigest()
        with open(HERE / f"runs-{md5}", "a") as f:
            f.write("x")
        mode = (HERE / "mode").read_text().strip()
        if mode == md5 or mode == "once" and (HERE / f"runs-{md5}").stat().st_size == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker process itself dies mid-task
        t = load_file(weights)
        data = np.load(HERE / "data/heldout.npz")
        X, y = data["X"], data["y"]
        return {"accuracy": float((((X @ t["w"] + t["b"][0]) > 0) == y).mean())}
"""


def test_a_worker_killed_mid_task_is_retried_and_one_that_always_dies_is_reported(repo, s3_repo, ray_cluster, cli):
    write(repo, "evalpkg_killer/__init__.py", "")
    write(repo, "evalpkg_killer/judge.py", KILLER)
    hashes = s3_repo["hashes"]
    (repo / "mode").write_text("once\n")  # the first run of each version kills its worker: Ray runs it again
    empty_local_cache(repo)
    args = ["eval", "clf@v2", "clf@v3", "--fn", "evalpkg_killer.judge:evaluate", "--json", "--executor", "ray"]
    retried = cli(*args)
    assert retried.exit_code == 0, retried.stderr
    assert {k: r["status"] for k, r in rows(retried).items()} == {"clf@v2": "ok", "clf@v3": "ok"}
    for version in ("good", "near"):  # killed once, then done
        assert (repo / f"runs-{hashes[version]}").read_text() == "xx"
    (repo / "mode").write_text(hashes["good"] + "\n")  # v2 now kills every worker that runs it
    lost = cli(*args, "--force")
    assert lost.exit_code == 1
    assert {k: r["status"] for k, r in rows(lost).items()} == {"clf@v3": "ok", "clf@v2": "failed"}
    assert rows(lost)["clf@v2"]["error"] == "the Ray worker running it was lost (tried 3 times)"
    assert (repo / f"runs-{hashes['good']}").read_text() == "xx" + "xxx"
    assert lost.stderr.strip().splitlines()[-2] == "error: 1 of 2 evaluations failed: clf@v2"


def test_a_version_missing_from_the_remote_fails_alone_with_exit_6(repo, s3_repo, ray_cluster, cli):
    gone = s3_repo["hashes"]["bad"]
    s3_repo["bucket"].fs().rm(f"{s3_repo['bucket'].prefix}/files/md5/{gone[:2]}/{gone[2:]}")
    empty_local_cache(repo)
    shutil.rmtree(Path(ray_cluster.workdir) / "worker-cache", ignore_errors=True)  # earlier tests' verified copies
    result = cli("eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray")
    assert result.exit_code == 6, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[1], r[4]) for r in lines[1:]] == [("clf@v2", "ok"), ("clf@v3", "ok"), ("clf@v1", "failed")]
    prefix = s3_repo["bucket"].url
    assert f"clf@v1 failed: remote 'store' ({prefix}) lacks object {gone[:8]}\n" in result.stderr
    assert s3_repo["bucket"].server.secret_key not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()
    assert last[-2] == "error: 1 of 3 evaluations failed: clf@v1"
    assert last[-1] == "hint: push their weights from a clone that has them (`mvc push --all-versions`), then run again"


def test_ray_needs_a_remote_and_ray_options_need_ray(repo, logreg_repo, ray_cluster, cli):  # noqa: F811
    assert cli("remote", "remove", "local").exit_code == 0
    none = cli("eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray")
    assert_one_line_error(none, 3, "--executor ray needs a remote: its workers fetch the weights from there")
    local = cli("eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--address", ray_cluster.address)
    assert_one_line_error(local, 2, "--address and --gpus-per-task apply to --executor ray only")
    unknown = cli("eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "dask")
    assert_one_line_error(unknown, 2, "unknown executor 'dask'")
    assert not (repo / ".mvc/evals").exists()


def test_ctrl_c_cancels_the_tasks_and_their_commands(repo, s3_repo, ray_cluster):
    import os
    import signal
    import subprocess
    import time

    write(repo, "slow.py", """\
        import os, sys, time
        open(f"started-{os.getpid()}", "w").close()
        time.sleep(300)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [PY, "-m", "mvc", "eval", "clf@v1", "clf@v2", "clf@v3", "--cmd", f"{PY} slow.py {{weights}}", "--executor", "ray"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while len(list(repo.glob("started-*"))) < 2 and time.monotonic() < deadline:  # 2 CPU slots
        time.sleep(0.2)
    pids = [int(p.name.split("-")[1]) for p in repo.glob("started-*")]
    assert len(pids) == 2, proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids)  # the evaluation commands were stopped
    assert not (repo / ".mvc/evals").exists()


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_an_unreachable_address_fails_at_once_with_exit_5(repo, logreg_repo):  # noqa: F811 - logreg_repo is the fixture
    import os
    import socket
    import subprocess
    from types import SimpleNamespace

    pytest.importorskip("ray")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [PY, "-m", "mvc", "eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray",
         "--address", f"127.0.0.1:{port}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = SimpleNamespace(exit_code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    assert_one_line_error(result, 5, f"cannot connect to the Ray cluster at 127.0.0.1:{port} (connection refused")
    assert proc.stderr.splitlines()[1].startswith("hint: start one with `ray start --head`, or pass --address HOST:6379")
    assert proc.stdout == "" and not (repo / ".mvc/evals").exists()
    # the same through RAY_ADDRESS (--address auto, the default)
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    proc = subprocess.run(
        [PY, "-m", "mvc", "eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = SimpleNamespace(exit_code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    assert_one_line_error(result, 5, f"cannot connect to the Ray cluster at 127.0.0.1:{port} (RAY_ADDRESS) (connection refused")


def test_a_task_no_node_can_hold_is_refused_not_queued_for_ever(repo, logreg_repo, ray_cluster, cli):  # noqa: F811
    gpus = cli("eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray", "--gpus-per-task", "1")
    where = f"no node of the Ray cluster at {ray_cluster.address}"
    assert_one_line_error(gpus, 2, f"{where} has 1 CPU and 1 GPU for a task (the largest has 2 CPUs, 0 GPUs)")
    cpus = cli("eval", "clf@v1", "--cmd", EVAL_CMD, "--folds", "2", "--executor", "ray", "--cpus-per-task", "3")
    assert_one_line_error(cpus, 2, f"{where} has 3 CPUs for a task (the largest has 2 CPUs, 0 GPUs)")
    assert "hint: lower --cpus-per-task / --gpus-per-task, or add a node that has them" in cpus.stderr
    assert not (repo / ".mvc/evals").exists()

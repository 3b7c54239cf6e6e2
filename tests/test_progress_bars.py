"""Transfer progress on a terminal (issue 14, "Consistency"): one honest byte bar per command.

push / pull / checkout / get show one bar, named for the model, whose byte total is known
before the first byte moves, that never shows more than it and ends at it; DVC's own
bars never appear; ``-q``, ``MVC_NO_PROGRESS=1`` and ``--json`` show none. The CLI runs
in a child process whose stderr is a pseudo-terminal, as a user's shell would run it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mvc
from tests.conftest import git, ok, write_safetensors
from tests.test_cloud_remotes import Bucket, add_remote, clone

MiB = 2**20
SHAPE = {"w": (6 * MiB,)}  # 24 MiB of float32: several 8 MiB copy chunks
# What DVC's tqdm bars and rich spinners print (its push/fetch/checkout descriptions).
DVC_BAR_WORDS = ("Pushing", "Fetching", "Collecting", "Checking", "Transferring", "Querying", "Computing", "Building", "file/s", "it/s")
# One frame of mvc's bar: "push clf v1 ━━━━━━━━━━━━━━━━━━━━━━   12.6/25.2 MB 10.1 MB/s 0:00:01"
FRAME = re.compile(r"(push|pull|checkout|get) (.+?) +[━╸╺]* *([\d.,]+)/([\d.,?]+) (bytes|kB|MB|GB)")


@dataclass(frozen=True)
class Terminal:
    """What a command run on a terminal showed: exit code, stdout (a pipe) and the terminal (stderr)."""

    exit_code: int
    stdout: str
    screen: str

    def frames(self) -> list[tuple[str, str, float, str]]:
        """Every frame of mvc's bar drawn: (verb, label, completed, total) in the bar's unit."""
        return [(m[1], m[2], float(m[3].replace(",", "")), m[4]) for m in FRAME.finditer(self.screen)]


def on_terminal(args: list[str], cwd: Path, **env: str) -> Terminal:
    """Run ``mvc ARGS`` in a child process with stderr on a pseudo-terminal (bars enabled)."""
    child_env = {k: v for k, v in os.environ.items() if k != "MVC_NO_PROGRESS"}
    child_env.update(TERM="xterm-256color", PYTHONPATH=str(Path(mvc.__file__).resolve().parents[1]), **env)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mvc", *args],
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    reader.join()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return Terminal(proc.returncode, b"".join(out).decode(), screen.decode(errors="replace"))


def shown(total_bytes: int) -> str:
    """``total_bytes`` as rich's DownloadColumn prints it (decimal units, one decimal)."""
    return f"{total_bytes / 1e6:.1f}"


def assert_one_honest_bar(term: Terminal, verb: str, label: str, total_bytes: int) -> None:
    """Every frame is ``VERB LABEL``, its total is ``total_bytes`` from the first frame on,
    it never goes back or past the total, and the last frame shows the whole total."""
    assert term.exit_code == 0, (term.stdout, term.screen)
    frames = term.frames()
    assert frames, term.screen
    assert {(v, lab) for v, lab, _, _ in frames} == {(verb, label)}, frames
    assert {t for _, _, _, t in frames} == {shown(total_bytes)}, frames  # known up front: never "?"
    done = [c for _, _, c, _ in frames]
    assert done == sorted(done) and done[-1] == float(shown(total_bytes)), frames
    assert "/?" not in term.screen
    assert not [w for w in DVC_BAR_WORDS if w in term.screen], term.screen
    # The bar is one line redrawn in place until rich shows the cursor again: the only
    # newline is the one it ends with before erasing it (DVC's tqdm bars leaked blank
    # lines into it). mvc's own notes may follow.
    assert term.screen.split("\x1b[?25h")[0].count("\n") == 1, term.screen


def assert_no_bar(term: Terminal) -> None:
    assert term.exit_code == 0, (term.stdout, term.screen)
    assert not term.frames() and "━" not in term.screen and "MB" not in term.screen, term.screen
    assert not [w for w in DVC_BAR_WORDS if w in term.screen], term.screen


def cache_bytes(root: Path, md5: str) -> int:
    """The bytes of the cache objects of ``md5`` (a file, or a listing and its files)."""
    files = root / ".dvc" / "cache" / "files" / "md5"
    obj = files / md5[:2] / md5[2:]
    if not md5.endswith(".dir"):
        return obj.stat().st_size
    listing = json.loads(obj.read_text())
    return obj.stat().st_size + sum((files / e["md5"][:2] / e["md5"][2:]).stat().st_size for e in listing)


def model(repo: Path, cli: Callable[..., Any], name: str = "clf", seed: int = 0) -> str:
    """A committed 24 MiB safetensors model ``name`` at models/NAME.safetensors; returns its hash."""
    write_safetensors(repo / "models" / f"{name}.safetensors", seed=seed, shapes=SHAPE)
    version = mvc.add(repo / "models" / f"{name}.safetensors", name=name).version
    ok(cli("commit", "-m", f"{name} v{version.version}", cwd=repo))
    return version.hash


# ---------------------------------------------------------------------------- directory remote


def test_push_to_a_directory_remote_shows_one_bar_named_for_the_model_up_to_its_byte_total(repo: Path, cli: Callable[..., Any]) -> None:
    md5 = model(repo, cli)

    term = on_terminal(["push"], repo)

    assert_one_honest_bar(term, "push", "clf v1", cache_bytes(repo, md5))
    assert term.stdout == "pushed 1 object of 1 model to local\n"
    again = on_terminal(["push"], repo)  # nothing left to move: no bar at all
    assert_no_bar(again)


def test_push_of_several_models_names_how_many(repo: Path, cli: Callable[..., Any]) -> None:
    md5s = [model(repo, cli, "clf", 0), model(repo, cli, "enc", 1)]

    term = on_terminal(["push"], repo)

    assert_one_honest_bar(term, "push", "2 models", sum(cache_bytes(repo, m) for m in md5s))


def test_push_of_older_versions_names_them(repo: Path, cli: Callable[..., Any]) -> None:
    v1 = model(repo, cli)
    v2 = model(repo, cli, seed=1)
    v3 = model(repo, cli, seed=2)

    one = on_terminal(["push", "clf@v1"], repo)
    two = on_terminal(["push", "clf@v2", "clf@v3"], repo)

    assert_one_honest_bar(one, "push", "clf v1", cache_bytes(repo, v1))
    assert_one_honest_bar(two, "push", "2 versions of clf", cache_bytes(repo, v2) + cache_bytes(repo, v3))
    assert two.stdout == "pushed 2 objects of 1 model to local\n"


def test_pull_checkout_and_get_show_the_same_bar(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    v1 = model(repo, cli)
    v2 = model(repo, cli, seed=1)
    ok(cli("push", "--all-versions", cwd=repo))
    mate = clone(repo, tmp_path / "mate")

    pulled = on_terminal(["pull"], mate)
    rolled = on_terminal(["checkout", "clf@v1"], mate)
    got = on_terminal(["get", str(repo), "clf@v1", "-o", str(tmp_path / "got")], tmp_path)

    assert_one_honest_bar(pulled, "pull", "clf v2", cache_bytes(repo, v2))
    assert_one_honest_bar(rolled, "checkout", "clf v1", cache_bytes(repo, v1))
    assert_one_honest_bar(got, "get", "clf v1", cache_bytes(repo, v1))
    assert (tmp_path / "got" / "clf.safetensors").read_bytes() == (repo / ".dvc/cache/files/md5" / v1[:2] / v1[2:]).read_bytes()


def test_a_directory_model_bar_counts_its_files_and_listing(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    for i in range(3):
        write_safetensors(repo / "ckpt" / f"shard-{i}.safetensors", seed=i, shapes={"w": (2 * MiB,)})
    md5 = mvc.add(repo / "ckpt", name="ckpt").version.hash
    ok(cli("commit", "-m", "ckpt v1"))

    pushed = on_terminal(["push"], repo)
    pulled = on_terminal(["pull"], clone(repo, tmp_path / "mate"))

    assert_one_honest_bar(pushed, "push", "ckpt v1", cache_bytes(repo, md5))
    assert_one_honest_bar(pulled, "pull", "ckpt v1", cache_bytes(repo, md5))


@pytest.mark.parametrize(
    ("args", "env"),
    [(["push", "-q"], {}), (["push"], {"MVC_NO_PROGRESS": "1"}), (["push", "--json"], {})],
    ids=["quiet", "MVC_NO_PROGRESS", "json"],
)
def test_quiet_no_progress_and_json_show_no_bar(repo: Path, cli: Callable[..., Any], args: list[str], env: dict[str, str]) -> None:
    model(repo, cli)

    term = on_terminal(args, repo, **env)

    assert_no_bar(term)
    assert term.screen.strip() == ""  # nothing at all on the terminal: DVC prints nothing either
    if "--json" in args:
        assert json.loads(term.stdout)["transferred"] == 1  # stdout is the JSON document alone
    else:
        assert term.stdout == "pushed 1 object of 1 model to local\n"


def test_the_library_reports_bytes_as_they_are_copied_under_one_task(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    md5 = model(repo, cli)
    pushes: list[tuple[str, int, int | None]] = []
    pulls: list[tuple[str, int, int | None]] = []

    mvc.push(repo=repo, progress=lambda *report: pushes.append(report))
    mvc.pull(repo=clone(repo, tmp_path / "mate"), progress=lambda *report: pulls.append(report))

    total = cache_bytes(repo, md5)
    for reports in (pushes, pulls):
        assert reports[0] == ("clf v1", 0, total)  # the total comes before any byte
        assert {(task, size) for task, _, size in reports} == {("clf v1", total)}
        advances = [n for _, n, _ in reports[1:]]
        assert sum(advances) == total and len(advances) >= 3 and max(advances) <= 8 * MiB, advances


# ---------------------------------------------------------------------------- S3 remote


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return Bucket(request.param, server, f"{server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


@pytest.mark.servers
# gcsfs (DVC's GCS push) hands aiohttp large raw bytes bodies; its warning is not ours.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
def test_push_and_pull_with_a_cloud_remote_show_the_same_bar(repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path) -> None:
    add_remote(cli, repo, bucket)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "remote")
    md5 = model(repo, cli)
    reports: list[tuple[str, int, int | None]] = []

    pushed = on_terminal(["push"], repo)
    pulled = on_terminal(["pull"], clone(repo, tmp_path / "mate", with_local_config=True))
    mvc.pull(repo=clone(repo, tmp_path / "lib", with_local_config=True), progress=lambda *report: reports.append(report))

    assert_one_honest_bar(pushed, "push", "clf v1", cache_bytes(repo, md5))
    assert_one_honest_bar(pulled, "pull", "clf v1", cache_bytes(repo, md5))
    assert pushed.stdout == "pushed 1 object of 1 model to store\n"
    assert reports[0] == ("clf v1", 0, cache_bytes(repo, md5))
    assert sum(n for _, n, _ in reports) == cache_bytes(repo, md5) and len(reports) >= 3, reports  # ranges as they arrive

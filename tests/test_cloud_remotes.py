"""Shared cloud remotes (issue 3) against real local S3 (SeaweedFS) and GCS (fake-gcs-server).

Remotes, secrets and bad input; push / pull / status round trips; a multipart upload; an
interrupted push; a corrupt object in the bucket; the two-user team workflow; ``mvc get``
from a bucket. The store is only ever inspected (or damaged on purpose) with s3fs / gcsfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mvc
from tests.conftest import git, write_safetensors
from tests.remote_servers import servers
from tests.test_cli_core import assert_one_line_error

pytestmark = pytest.mark.servers

SHARDS = 100  # files of the checkpoint used to interrupt a push (one PUT each, --jobs 1)
MULTIPART_SIZE = 100 * 2**20 + 4096  # s3fs switches to multipart at 2 x its 50 MiB chunk


@dataclass(frozen=True)
class Bucket:
    """A remote location in a test server and a client to look inside it."""

    kind: str  # "s3" | "gs"
    server: Any
    prefix: str  # bucket/prefix

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.prefix}"

    def fs(self) -> Any:
        """A fresh s3fs / gcsfs client (no instance cache, so listings are never stale)."""
        if self.kind == "s3":
            import s3fs

            return s3fs.S3FileSystem(
                key=self.server.access_key,
                secret=self.server.secret_key,
                client_kwargs={"endpoint_url": self.server.endpoint_url, "region_name": "us-east-1"},
                skip_instance_cache=True,
            )
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.server.endpoint_url, token="anon", skip_instance_cache=True)

    def objects(self, fs: Any = None) -> dict[str, str]:
        """``{oid: path}`` of every object stored under the prefix (``fs``: a client to reuse)."""
        fs = fs or self.fs()
        fs.invalidate_cache()
        try:
            paths = fs.find(self.prefix)
        except FileNotFoundError:
            return {}
        return {_oid(p): p for p in paths if "/files/md5/" in p}


def _oid(path: str) -> str:
    """DVC's object id from its remote path ``.../files/md5/ab/cdef...``."""
    head, tail = path.rsplit("/", 2)[-2:]
    return head + tail


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    """A fresh prefix in the S3 or in the GCS test server."""
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return Bucket(request.param, server, f"{server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def s3(s3_server: servers.S3Server, tmp_path: Path) -> Bucket:
    """A fresh prefix in the S3 test server."""
    return Bucket("s3", s3_server, f"{s3_server.bucket}/{tmp_path.name}-{uuid.uuid4().hex[:8]}")


def add_remote(
    cli: Callable[..., Any], root: Path, bucket: Bucket, *, name: str = "store", secret: str | None = None
) -> None:
    """``mvc remote add NAME URL --default`` with S3 keys (to config.local) or GCS anonymous login."""
    server = bucket.server
    args = ["remote", "add", name, bucket.url, "--endpoint-url", server.endpoint_url, "--default"]
    if bucket.kind == "s3":
        args += ["--access-key-id", server.access_key, "--secret-access-key", secret or server.secret_key]
    result = cli(*args, cwd=root)
    assert result.exit_code == 0, result.stderr
    if bucket.kind == "gs":
        result = cli("remote", "modify", name, "allow_anonymous_login", "true", cwd=root)
        assert result.exit_code == 0, result.stderr


def use_env_credentials(monkeypatch: pytest.MonkeyPatch, bucket: Bucket) -> None:
    """Give a machine without ``.dvc/config.local`` the credentials through the environment."""
    for key, value in servers.client_env(bucket.server).items():
        monkeypatch.setenv(key, value)


def write_shards(directory: Path, count: int, size: int) -> dict[str, bytes]:
    """A sharded checkpoint of random (incompressible, distinct) files."""
    directory.mkdir(parents=True)
    shards = {f"shard-{i:03d}.bin": os.urandom(size) for i in range(count)}
    for name, data in shards.items():
        (directory / name).write_bytes(data)
    return shards


def snapshot(root: Path) -> dict[str, str]:
    """md5 of every file of the work tree and the DVC cache (git internals and .dvc/tmp left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/tmp/")):
            found[rel] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def clone(repo: Path, dest: Path, *, with_local_config: bool = False) -> Path:
    """``git clone`` (``.dvc/config.local`` is never cloned; ``with_local_config`` copies it)."""
    git(dest.parent, "clone", "-q", str(repo), str(dest))
    local = repo / ".dvc" / "config.local"
    if with_local_config and local.exists():
        (dest / ".dvc" / "config.local").write_text(local.read_text())
    return dest


def mvc_process(args: list[str], cwd: Path, bucket: Bucket, **extra_env: str) -> subprocess.Popen[str]:
    """Run ``mvc ARGS`` as a separate process (so it can be killed) with the server's credentials."""
    env = {**os.environ, **servers.client_env(bucket.server), **extra_env}
    return subprocess.Popen(
        [sys.executable, "-m", "mvc", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_first_object(proc: subprocess.Popen[str], bucket: Bucket, timeout: float = 60.0) -> None:
    """Poll the bucket until the push under way has stored an object (failing if it ended first).

    One listing takes a few ms; the push needs about a second for its SHARDS objects.
    """
    fs = bucket.fs()
    deadline = time.monotonic() + timeout
    while not bucket.objects(fs):
        if proc.poll() is not None:
            pytest.fail(
                f"push ended before it could be interrupted: {proc.returncode} {proc.stderr.read() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, "no object reached the bucket"


def kill_server(server: servers.S3Server) -> None:
    """Take a server down at once (SIGKILL to its process group), then reap it and remove its sockets."""
    os.killpg(server.pid, signal.SIGKILL)
    servers.stop(server)
    servers._remove_sockets(server)  # stop() skips this for a server that is already gone


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


# ---------------------------------------------------------------------------- remotes, secrets


def test_remote_add_keeps_secrets_out_of_tracked_files_and_output(repo: Path, cli: Callable[..., Any]) -> None:
    s3 = cli("remote", "add", "s3", "s3://team/models", "--endpoint-url", "http://127.0.0.1:1", "--region", "eu-west-1",
             "--profile", "team", "--access-key-id", "AKIDSECRETID", "--secret-access-key", "VERYSECRETKEY", "--default")  # fmt: skip
    gcs = cli("remote", "add", "gcs", "gs://team/models", "--project", "proj-1", "--credentialpath", "/keys/sa.json")
    modified = cli("remote", "modify", "gcs", "endpointurl", "http://127.0.0.1:2", "--local")
    listing = cli("remote", "list")
    as_json = json.loads(cli("remote", "list", "--json").stdout)

    assert (s3.exit_code, gcs.exit_code, modified.exit_code) == (0, 0, 0), s3.stderr + gcs.stderr + modified.stderr
    tracked = (repo / ".dvc" / "config").read_text()
    local = (repo / ".dvc" / "config.local").read_text()
    for secret in ("AKIDSECRETID", "VERYSECRETKEY", "/keys/sa.json"):
        assert secret not in tracked and secret in local
        assert secret not in listing.stdout + listing.stderr + json.dumps(as_json)
    assert "region = eu-west-1" in tracked and "projectname = proj-1" in tracked and "http://127.0.0.1:2" in local
    assert git(repo, "check-ignore", ".dvc/config.local") == ".dvc/config.local"
    by_name = {r["name"]: r for r in as_json}
    assert by_name["s3"]["default"] and by_name["s3"]["options"] == {
        "endpointurl": "http://127.0.0.1:1", "profile": "team", "region": "eu-west-1"}  # fmt: skip
    assert by_name["s3"]["secrets"] == ["access_key_id", "secret_access_key"]
    assert (
        by_name["gcs"]["secrets"] == ["credentialpath"]
        and by_name["gcs"]["options"]["endpointurl"] == "http://127.0.0.1:2"
    )


def test_remote_modify_puts_a_secret_in_config_local_even_without_local(repo: Path, cli: Callable[..., Any]) -> None:
    cli("remote", "add", "s3", "s3://team/models")

    result = cli("remote", "modify", "s3", "secret_access_key", "VERYSECRETKEY")
    unset = cli("remote", "modify", "s3", "secret_access_key", "--unset")

    assert result.exit_code == 0 and result.stdout.strip() == "set secret_access_key of remote s3 in .dvc/config.local"
    assert unset.exit_code == 0 and "VERYSECRETKEY" not in (repo / ".dvc" / "config.local").read_text()
    assert "VERYSECRETKEY" not in (repo / ".dvc" / "config").read_text()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["remote", "add", "odd", "ftp2://x/y"], ["remote 'odd'", "unsupported URL scheme 'ftp2://'"]),
        (
            ["remote", "add", "s3", "s3://b/p", "--project", "p"],
            ["remote 's3'", "'projectname' does not apply to s3://"],
        ),
        (
            ["remote", "add", "gcs", "gs://b/p", "--access-key-id", "K"],
            ["remote 'gcs'", "'access_key_id' does not apply to gs://"],
        ),
        (["remote", "modify", "local", "region", "x"], ["remote 'local'", "'region' does not apply"]),
    ],
)
def test_bad_remote_url_or_option_is_a_usage_error(
    repo: Path, cli: Callable[..., Any], args: list[str], needles: list[str]
) -> None:
    before = snapshot(repo)

    result = cli(*args)

    assert_one_line_error(result, 2, *needles)
    assert snapshot(repo) == before


@pytest.mark.parametrize("command", ["push", "pull", "status"])
def test_unknown_remote_name(repo: Path, weights: Path, cli: Callable[..., Any], command: str) -> None:
    cli("add", str(weights))
    before = snapshot(repo)

    result = cli(command, "--remote", "nosuch")

    assert_one_line_error(result, 3, "no remote named 'nosuch'", "local")
    assert snapshot(repo) == before


# ---------------------------------------------------------------------------- round trips


def test_push_status_pull_round_trip(repo: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path) -> None:
    shards = write_shards(repo / "models" / "ckpt", 6, 32 * 1024)
    cli("add", "models/ckpt", "--name", "ckpt")
    add_remote(cli, repo, bucket)
    cli("commit", "-m", "ckpt v1")

    before = json.loads(cli("status", "--remote", "store", "--json").stdout)
    pushed = cli("push", "--remote", "store", "--jobs", "4", "--json")
    after = json.loads(cli("status", "--remote", "store", "--json").stdout)
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    pulled = cli("pull", "--remote", "store", "--jobs", "3", "--json", cwd=teammate)

    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["transferred"] == 7  # 6 files + the .dir listing
    assert (before[0]["remote"], after[0]["remote"], after[0]["remote_name"]) == ("missing", "ok", "store")
    assert len(bucket.objects()) == 7
    assert pulled.exit_code == 0, pulled.stderr
    assert json.loads(pulled.stdout)["fetched"] == 7
    assert {p.name: p.read_bytes() for p in (teammate / "models" / "ckpt").iterdir()} == shards
    assert json.loads(cli("status", "--json", cwd=teammate).stdout)[0]["cache"] == "ok"


def test_multipart_upload_round_trips_byte_identical(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path
) -> None:
    data = os.urandom(MULTIPART_SIZE)
    (repo / "models").mkdir()
    (repo / "models" / "big.bin").write_bytes(data)
    cli("add", "models/big.bin")
    add_remote(cli, repo, s3)
    cli("commit", "-m", "big")

    pushed = cli("push")
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    pulled = cli("pull", cwd=teammate)

    assert pushed.exit_code == 0 and pulled.exit_code == 0, pushed.stderr + pulled.stderr
    (path,) = s3.objects().values()
    etag = s3.fs().info(path)["ETag"].strip('"')
    assert etag.endswith("-13"), etag  # an AWS-style multipart ETag: mvc's 12 x 8 MiB parts + 4 KiB (issue 19)
    assert hashlib.sha256((teammate / "models" / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------- interruptions, corruption


def test_interrupted_push_resumes_and_leaves_no_partial_object(
    repo: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a push after its first object lands; the next push finishes the job.

    dvc-s3 uploads each object straight to its final key with one PutObject (a
    multipart upload above 100 MiB): S3 stores an object only when its request
    completes, so a killed push leaves whole objects or none, never a torn one. The
    ``.dir`` listing goes up after every file, so until then a pull finds the version
    missing rather than incomplete.
    """
    shards = write_shards(repo / "models" / "ckpt", SHARDS, 16 * 1024)
    cli("add", "models/ckpt", "--name", "ckpt")
    add_remote(cli, repo, s3)
    cli("commit", "-m", "ckpt v1")

    proc = mvc_process(["push", "--jobs", "1", "-q"], repo, s3)
    wait_for_first_object(proc, s3)
    proc.kill()
    proc.communicate()
    stored = s3.objects()
    use_env_credentials(monkeypatch, s3)
    early = cli("pull", cwd=clone(repo, tmp_path / "early"))
    resumed = cli("push", "--json")
    late = clone(repo, tmp_path / "late")
    pulled = cli("pull", cwd=late)

    assert proc.returncode == -9
    assert 0 < len(stored) < SHARDS + 1 and not any(oid.endswith(".dir") for oid in stored)
    fs = s3.fs()
    for oid, path in stored.items():
        assert hashlib.md5(fs.cat(path)).hexdigest() == oid  # every stored object is whole
    assert_one_line_error(early, 3, "ckpt v1", "neither the local cache nor remote 'store'")
    assert not (tmp_path / "early" / "models" / "ckpt").exists()
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["transferred"] == SHARDS + 1 - len(stored)
    assert pulled.exit_code == 0, pulled.stderr
    assert {p.name: p.read_bytes() for p in (late / "models" / "ckpt").iterdir()} == shards


def corrupt(bucket: Bucket, oid: str) -> None:
    """Overwrite a stored object with other bytes under the same key."""
    bucket.fs().pipe_file(bucket.objects()[oid], b"these are not the weights you pushed")


def pushed_then_corrupted(
    repo: Path, weights: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Path]:
    """Push v1, overwrite its object in the bucket, and clone a teammate; return (version, clone)."""
    version = mvc.add(weights).version
    add_remote(cli, repo, bucket)
    cli("commit", "-m", "net v1")
    cli("push")
    corrupt(bucket, version.hash)
    teammate = clone(repo, tmp_path / "teammate")
    use_env_credentials(monkeypatch, bucket)
    return version, teammate


def test_pull_rejects_an_object_corrupted_in_the_bucket(
    repo: Path, weights: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version, teammate = pushed_then_corrupted(repo, weights, cli, bucket, tmp_path, monkeypatch)

    result = cli("pull", cwd=teammate)
    rolled_back = cli("checkout", "net@v1", cwd=teammate)  # fetches through another path (by commit)
    fetched = cli("get", str(repo), "net", "-o", str(tmp_path / "deploy"))

    assert_one_line_error(result, 6, "downloaded from remote 'store'", "do not match their hash", version.hash[:8])
    assert_one_line_error(rolled_back, 6, "do not match their hash")
    assert not (teammate / "models" / "net.safetensors").exists()
    assert not any((teammate / ".dvc" / "cache").rglob(version.hash[2:]))
    assert_one_line_error(fetched, 6, "do not match their hash")
    assert not (tmp_path / "deploy").exists() or not any((tmp_path / "deploy").iterdir())


def test_pull_no_verify_skips_the_hash_pass_and_says_so_in_help(
    repo: Path, weights: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-verify is the documented opt-out: it trusts the remote, so a corrupt object gets through."""
    _, teammate = pushed_then_corrupted(repo, weights, cli, bucket, tmp_path, monkeypatch)

    result = cli("pull", "--no-verify", cwd=teammate)

    assert result.exit_code == 0, result.stderr
    assert (teammate / "models" / "net.safetensors").read_bytes() == b"these are not the weights you pushed"
    assert "--no-verify" in cli("pull", "--help").stdout


# ---------------------------------------------------------------------------- team workflow


def retrain(path: Path, *, step: float) -> None:
    """One "training step" with numpy: nudge every tensor and save the weights in place."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    rng = np.random.default_rng(7)
    save_file({k: (v - step * rng.standard_normal(v.shape)).astype(np.float32) for k, v in tensors.items()}, str(path))


def test_team_workflow(
    cli: Callable[..., Any], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    alice = tmp_path / "alice"
    assert cli("init", str(alice), "--git").exit_code == 0
    add_remote(cli, alice, bucket)
    weights = alice / "models" / "net.safetensors"
    written = {}
    for seed, message in ((1, "net v1"), (2, "net v2")):
        written[seed] = write_safetensors(weights, seed=seed)
        assert cli("add", str(weights), "--metric", f"acc=0.{seed}", cwd=alice).exit_code == 0
        assert cli("commit", "-m", message, cwd=alice).exit_code == 0
        assert cli("push", cwd=alice).exit_code == 0
    alice_v2 = weights.read_bytes()
    git(alice, "remote", "add", "origin", str(origin))
    git(alice, "push", "-q", "origin", "main")

    bob = clone(origin, tmp_path / "bob")
    if bucket.kind == "s3":
        for option, value in (
            ("access_key_id", bucket.server.access_key),
            ("secret_access_key", bucket.server.secret_key),
        ):
            assert cli("remote", "modify", "store", option, value, cwd=bob).exit_code == 0
    bob_pull = cli("pull", cwd=bob)
    bob_weights = bob / "models" / "net.safetensors"
    pulled_by_bob = bob_weights.read_bytes()
    retrain(bob_weights, step=0.01)
    assert cli("add", str(bob_weights), "--metric", "acc=0.3", "-m", "bob's step", cwd=bob).exit_code == 0
    assert cli("commit", "-m", "net v3", cwd=bob).exit_code == 0
    bob_push = cli("push", "--json", cwd=bob)
    git(bob, "push", "-q", "origin", "main")

    git(alice, "pull", "-q", "origin", "main")
    alice_pull = cli("pull", cwd=alice)
    use_env_credentials(monkeypatch, bucket)  # a deployment machine has no config.local
    deployed = cli("get", str(origin), "net@v1", "-o", str(tmp_path / "deploy"), "--json")

    assert bob_pull.exit_code == 0, bob_pull.stderr
    assert pulled_by_bob == alice_v2
    assert bob_push.exit_code == 0 and json.loads(bob_push.stdout)["transferred"] == 1, bob_push.stderr
    assert alice_pull.exit_code == 0, alice_pull.stderr
    assert weights.read_bytes() == bob_weights.read_bytes() != alice_v2
    assert [v.version for v in mvc.log("net", repo=alice)] == [3, 2, 1]
    assert deployed.exit_code == 0, deployed.stderr
    got = json.loads(deployed.stdout)
    assert (got["version"], got["remote"]) == (1, "store")
    from safetensors.numpy import load_file

    assert {k: v.tolist() for k, v in load_file(got["path"]).items()} == {k: v.tolist() for k, v in written[1].items()}
    assert "secret" not in (bob / ".dvc" / "config").read_text()


# ---------------------------------------------------------------------------- bad input


def test_wrong_credentials(repo: Path, weights: Path, cli: Callable[..., Any], s3: Bucket, tmp_path: Path) -> None:
    cli("add", str(weights))
    add_remote(cli, repo, s3, secret="not-the-secret")
    cli("commit", "-m", "net v1")
    before = snapshot(repo)

    pushed = cli("push")
    status = cli("status", "--json")
    asked = cli("status", "--remote", "store")

    for result in (pushed, asked):
        assert_one_line_error(result, 5, f"remote 'store' ({s3.url}) rejected the credentials", "AWS_SECRET_ACCESS_KEY")
    assert status.exit_code == 0, status.stderr  # the default remote was not asked for (issue 17)
    assert [(r["cache"], r["remote"]) for r in json.loads(status.stdout)] == [("ok", "denied")]
    assert snapshot(repo) == before
    assert s3.objects() == {}


def test_missing_bucket(repo: Path, weights: Path, cli: Callable[..., Any], bucket: Bucket, tmp_path: Path) -> None:
    cli("add", str(weights))
    add_remote(cli, repo, Bucket(bucket.kind, bucket.server, "no-such-bucket-mvc/models"))
    cli("commit", "-m", "net v1")
    teammate = clone(repo, tmp_path / "teammate", with_local_config=True)
    before = snapshot(repo), snapshot(teammate)

    pushed = cli("push")
    pulled = cli("pull", cwd=teammate)

    for result in (pushed, pulled):
        assert_one_line_error(
            result, 5, "bucket 'no-such-bucket-mvc' of remote 'store'", "does not exist", "create the bucket"
        )
    assert (snapshot(repo), snapshot(teammate)) == before


def test_server_down_mid_push(repo: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    server = servers.start_s3(tmp_path / "throwaway-s3")
    try:
        doomed = Bucket("s3", server, f"{server.bucket}/models")
        write_shards(repo / "models" / "ckpt", SHARDS, 16 * 1024)
        cli("add", "models/ckpt", "--name", "ckpt")
        add_remote(cli, repo, doomed)
        before = snapshot(repo)
        # botocore retries each failed request up to 5 times (seconds of back-off per
        # object, and DVC tries every object): AWS_MAX_ATTEMPTS=1 is the user's knob to
        # give up at once, and keeps this test short.
        proc = mvc_process(["push", "--jobs", "1"], repo, doomed, AWS_MAX_ATTEMPTS="1")
        wait_for_first_object(proc, doomed)
        kill_server(server)
    finally:
        servers.stop(server)
    _, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 5, stderr
    lines = stderr.strip().splitlines()
    assert lines[0] == f"error: cannot reach remote 'store' ({doomed.url})", stderr
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert snapshot(repo) == before

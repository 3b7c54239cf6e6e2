"""The local S3 and GCS test servers work with real DVC: push, pull, and refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CLOUD_VARS
from tests.remote_servers import servers

pytestmark = pytest.mark.servers

DVC = str(Path(sys.executable).parent / "dvc")
DATA_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True)
class DvcRepo:
    """A git + DVC repository with one tracked file."""

    root: Path
    env: dict[str, str]
    data: Path
    sha256: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(
    args: list[str], repo: DvcRepo | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a repository and return it without checking the exit code.

    Args:
        args: Command line; a leading "dvc" means the venv's dvc.
        repo: Repository, or a plain directory (then ``env`` is required).
        env: Environment; defaults to the repository's.

    Returns:
        The completed process with text stdout/stderr.
    """
    if isinstance(repo, DvcRepo):
        cwd, env = repo.root, env if env is not None else repo.env
    else:
        cwd = repo
    argv = [DVC, *args[1:]] if args[0] == "dvc" else args
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def ok(args: list[str], repo: DvcRepo | Path, env: dict[str, str] | None = None) -> str:
    """Run a command that must succeed.

    Returns:
        Its combined stdout and stderr.
    """
    proc = run(args, repo, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{output}"
    return output


def fails(args: list[str], repo: DvcRepo) -> str:
    """Run a command that must fail.

    Returns:
        Its combined stdout and stderr.
    """
    proc = run(args, repo)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{args} unexpectedly succeeded:\n{output}"
    return output


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Build an environment with HOME, DVC site cache and DVC configs under ``tmp_path``.

    Args:
        tmp_path: Per-test temporary directory.

    Returns:
        Environment for git and dvc subprocesses.
    """
    home = tmp_path / "home"
    global_config = tmp_path / "dvc-global"
    global_config.mkdir(parents=True)
    home.mkdir()
    (global_config / "config").write_text(
        "[core]\n    analytics = false\n    check_update = false\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CLOUD_VARS}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
            "DVC_GLOBAL_CONFIG_DIR": str(global_config),
            "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
            "DVC_NO_ANALYTICS": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
    )
    return env


def make_repo(tmp_path: Path, name: str = "model.bin", size: int = DATA_SIZE) -> DvcRepo:
    """Create a git repo with DVC and one ``dvc add``-ed random file.

    Args:
        tmp_path: Per-test temporary directory.
        name: File name.
        size: File size in bytes.

    Returns:
        The repository.
    """
    root = tmp_path / "repo"
    root.mkdir()
    env = subprocess_env(tmp_path)
    ok(["git", "init", "-q"], root, env)
    ok(["git", "config", "user.name", "Test"], root, env)
    ok(["git", "config", "user.email", "test@example.com"], root, env)
    ok(["dvc", "init", "-q"], root, env)
    data = root / name
    data.write_bytes(os.urandom(size))
    repo = DvcRepo(root=root, env=env, data=data, sha256=_sha256(data))
    ok(["dvc", "add", "-q", name], repo)
    return repo


def add_file(repo: DvcRepo, name: str, size: int = 4096) -> None:
    """Write and ``dvc add`` a further random file.

    Args:
        repo: Repository.
        name: File name.
        size: Size in bytes.
    """
    (repo.root / name).write_bytes(os.urandom(size))
    ok(["dvc", "add", "-q", name], repo)


def add_s3_remote(
    repo: DvcRepo, server: servers.S3Server, key: str, secret: str, bucket: str | None = None
) -> None:
    """Configure the default remote ``s3://BUCKET/prefix`` with keys in ``config.local``.

    Args:
        repo: Repository.
        server: The S3 server.
        key: Access key id.
        secret: Secret access key.
        bucket: Bucket (default: the server's).
    """
    prefix = repo.root.parent.name
    ok(["dvc", "remote", "add", "-d", "store", f"s3://{bucket or server.bucket}/{prefix}"], repo)
    ok(["dvc", "remote", "modify", "store", "endpointurl", server.endpoint_url], repo)
    set_s3_keys(repo, key, secret)


def set_s3_keys(repo: DvcRepo, key: str, secret: str) -> None:
    """Store S3 keys for remote ``store`` in ``.dvc/config.local``.

    Args:
        repo: Repository.
        key: Access key id.
        secret: Secret access key.
    """
    ok(["dvc", "remote", "modify", "--local", "store", "access_key_id", key], repo)
    ok(["dvc", "remote", "modify", "--local", "store", "secret_access_key", secret], repo)


def add_gcs_remote(repo: DvcRepo, server: servers.GcsServer, bucket: str | None = None) -> None:
    """Configure the default remote ``gs://BUCKET/prefix`` with anonymous login.

    Args:
        repo: Repository.
        server: The GCS server.
        bucket: Bucket (default: the server's).
    """
    prefix = repo.root.parent.name
    ok(["dvc", "remote", "add", "-d", "store", f"gs://{bucket or server.bucket}/{prefix}"], repo)
    ok(["dvc", "remote", "modify", "store", "endpointurl", server.endpoint_url], repo)
    ok(["dvc", "remote", "modify", "store", "allow_anonymous_login", "true"], repo)


def forget_local(repo: DvcRepo) -> None:
    """Delete the DVC cache and the workspace copy of the data."""
    shutil.rmtree(repo.root / ".dvc" / "cache")
    repo.data.unlink()


def assert_pull_restores(repo: DvcRepo) -> None:
    """Pull into an empty cache and check the file's sha256."""
    forget_local(repo)
    ok(["dvc", "pull", "-q"], repo)
    assert _sha256(repo.data) == repo.sha256


def test_s3_push_pull_round_trip(s3_server: servers.S3Server, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    add_s3_remote(repo, s3_server, s3_server.access_key, s3_server.secret_key)
    assert "secret_access_key" not in (repo.root / ".dvc" / "config").read_text()

    ok(["dvc", "push", "-q"], repo)

    assert_pull_restores(repo)


def test_s3_read_only_identity_pulls_but_cannot_push(
    s3_server: servers.S3Server, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, size=64 * 1024)
    add_s3_remote(repo, s3_server, s3_server.access_key, s3_server.secret_key)
    ok(["dvc", "push", "-q"], repo)
    set_s3_keys(repo, s3_server.ro_access_key, s3_server.ro_secret_key)

    assert_pull_restores(repo)
    add_file(repo, "new.bin")
    output = fails(["dvc", "push"], repo)

    assert "AccessDenied" in output and "failed to push" in output, output


def test_s3_wrong_keys_and_missing_bucket_fail(
    s3_server: servers.S3Server, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path, size=4096)
    add_s3_remote(repo, s3_server, s3_server.access_key, "not-the-secret")
    wrong_keys = fails(["dvc", "push"], repo)
    set_s3_keys(repo, s3_server.access_key, s3_server.secret_key)
    ok(["dvc", "remote", "modify", "store", "url", "s3://no-such-bucket/x"], repo)
    missing_bucket = fails(["dvc", "push"], repo)

    assert "403" in wrong_keys, wrong_keys
    assert "failed to push" in missing_bucket, missing_bucket
    # The read-write identity lacks Admin, so SeaweedFS did not auto-create the bucket.
    assert servers.s3_bucket_status(s3_server, "no-such-bucket") == 404


def test_gcs_push_pull_round_trip(gcs_server: servers.GcsServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    add_gcs_remote(repo, gcs_server)

    ok(["dvc", "push", "-q"], repo)

    assert_pull_restores(repo)


def test_gcs_missing_bucket_fails(gcs_server: servers.GcsServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, size=4096)
    add_gcs_remote(repo, gcs_server, bucket="no-such-bucket")

    output = fails(["dvc", "push"], repo)

    assert "failed to push" in output and "no-such-bucket" in output, output


def listening_addresses(pid: int) -> set[str]:
    """List the local addresses of a process's listening TCP sockets.

    Args:
        pid: Process id.

    Returns:
        Hex local addresses from /proc/net/tcp{,6}, e.g. ``"0100007F:2B67"``.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.add(fields[1])
    return found


def test_servers_listen_on_loopback_only(
    s3_server: servers.S3Server, gcs_server: servers.GcsServer
) -> None:
    for server in (s3_server, gcs_server):
        addresses = listening_addresses(server.pid)

        assert servers.is_running(server)
        assert server.endpoint_url == f"http://127.0.0.1:{server.port}"
        assert f"0100007F:{server.port:04X}" in addresses
        assert {a.split(":")[0] for a in addresses} == {"0100007F"}, addresses


def test_script_cli_start_status_stop(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_file = state_dir / servers.STATE_FILE
    script = [sys.executable, str(servers.__file__)]
    env = subprocess_env(tmp_path)

    started = run([*script, "start", "--dir", str(state_dir)], tmp_path, env)
    recorded = servers.read_state(state_dir)
    try:
        mode = state_file.stat().st_mode & 0o777
        status = run([*script, "status", "--dir", str(state_dir)], tmp_path, env)
        stopped = run([*script, "stop", "--dir", str(state_dir)], tmp_path, env)
    finally:
        for server in recorded:
            servers.stop(server)
    after = run([*script, "status", "--dir", str(state_dir)], tmp_path, env)

    assert started.returncode == 0, started.stderr
    assert [s.kind for s in recorded] == ["s3", "gcs"]
    assert mode == 0o600
    secret_keys = {recorded[0].secret_key, recorded[0].ro_secret_key}
    assert not any(k in started.stdout + status.stdout for k in secret_keys)
    assert status.returncode == 0, status.stderr
    assert stopped.returncode == 0, stopped.stderr
    assert not any(servers.is_running(s) for s in recorded)
    assert not state_file.exists()
    assert after.returncode == 3

"""Remote-side protections against the local S3 server (SeaweedFS).

A teammate with read-only keys can pull but not push; no command prints a key or writes
one into a file git tracks; an object tampered with in the bucket is found and never
reaches a work tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mvc
from tests.conftest import git, write_safetensors
from tests.test_verify import only_error_line

pytestmark = pytest.mark.servers


class Transcript:
    """Runs CLI commands and keeps everything they printed."""

    def __init__(self, cli) -> None:
        self.cli = cli
        self.text: list[str] = []

    def __call__(self, *args: str, cwd: Path | None = None, code: int | None = 0):
        result = self.cli(*args, cwd=cwd)
        self.text += [result.stdout, result.stderr]  # not the arguments: some hold keys
        if code is not None:
            assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result


def _add_s3(run: Transcript, s3_server, name: str, prefix: str, key: str, secret: str, *extra: str, cwd: Path | None = None):
    url = f"s3://{s3_server.bucket}/{prefix}"
    return run(
        "remote", "add", name, url, "--endpoint-url", s3_server.endpoint_url,
        "--access-key-id", key, "--secret-access-key", secret, *extra, cwd=cwd,
    )


def test_read_only_keys_can_pull_but_push_fails_naming_the_remote(cli, repo, weights, s3_server, tmp_path):
    run = Transcript(cli)
    _add_s3(run, s3_server, "s3", f"ro-{tmp_path.name}", s3_server.access_key, s3_server.secret_key, "--default")
    mvc.add(weights)
    mvc.commit(repo=repo, message="net v1")
    run("push")
    mate = tmp_path / "mate"
    git(repo.parent, "clone", "-q", str(repo), str(mate))
    run("remote", "modify", "s3", "access_key_id", s3_server.ro_access_key, "--local", cwd=mate)
    run("remote", "modify", "s3", "secret_access_key", s3_server.ro_secret_key, "--local", cwd=mate)
    run("pull", cwd=mate)
    assert (mate / "models" / "net.safetensors").read_bytes() == weights.read_bytes()
    write_safetensors(mate / "models" / "net.safetensors", seed=7)
    run("add", "models/net.safetensors", cwd=mate)
    refused = run("push", cwd=mate, code=5)
    line = only_error_line(refused.stderr)
    assert "remote 's3'" in line and "lack write access" in line, line


def test_no_command_prints_a_key_or_writes_one_into_a_tracked_file(cli, repo, weights, s3_server, tmp_path, capfd):
    wrong_secret = "wrongsecret" + "0" * 29
    secrets = {
        s3_server.access_key,
        s3_server.secret_key,
        s3_server.ro_access_key,
        s3_server.ro_secret_key,
        wrong_secret,
    }
    run = Transcript(cli)
    prefix = f"secrets-{tmp_path.name}"
    _add_s3(run, s3_server, "s3", prefix, s3_server.access_key, s3_server.secret_key, "--default", "--json")
    _add_s3(run, s3_server, "bad", prefix, s3_server.access_key, wrong_secret)
    run("remote", "modify", "s3", "secret_access_key", s3_server.secret_key)
    run("remote", "list")
    run("remote", "list", "--json")
    mvc.add(weights)
    mvc.commit(repo=repo, message="net v1")
    run("status")
    run("status", "--json")
    run("push", "--json")
    run("verify", "--remote", "s3", "--json")
    md5 = mvc.models(repo=repo)[0].hash
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    os.chmod(cached, 0o644)
    cached.unlink()
    weights.unlink()
    run("pull")
    assert weights.exists()
    os.chmod(cached, 0o644)
    cached.unlink()  # so `pull -r bad` must ask the remote (with everything cached it works offline)
    weights.unlink()
    for args in (("push", "-r", "bad"), ("pull", "-r", "bad"), ("status", "-r", "bad"), ("verify", "-r", "bad")):
        failed = run(*args, code=None)
        assert failed.exit_code != 0, args
        assert only_error_line(failed.stderr)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "everything git would take")
    config_local = (repo / ".dvc" / "config.local").read_text()
    assert s3_server.secret_key in config_local and wrong_secret in config_local  # the scan would see them

    tracked = git(repo, "ls-files").splitlines()
    assert ".dvc/config" in tracked and ".dvc/config.local" not in tracked
    printed = capfd.readouterr()  # anything that bypassed the CLI's streams (library logs)
    corpus = "\n".join([*run.text, printed.out, printed.err])
    corpus += "\n".join((repo / path).read_bytes().decode("utf-8", "replace") for path in tracked)
    corpus += git(repo, "log", "-p", "--all")
    leaked = sorted(s for s in secrets if s in corpus)
    assert not leaked, f"{len(leaked)} key(s) leaked"


def test_an_object_tampered_with_in_the_bucket_is_found_refused_and_repaired(cli, repo, weights, s3_server, tmp_path):
    import s3fs

    run = Transcript(cli)
    prefix = f"tamper-{tmp_path.name}"
    _add_s3(run, s3_server, "s3", prefix, s3_server.access_key, s3_server.secret_key, "--default")
    md5 = mvc.add(weights).version.hash
    mvc.commit(repo=repo, message="net v1")
    run("push")
    attacker = s3fs.S3FileSystem(
        key=s3_server.access_key, secret=s3_server.secret_key, endpoint_url=s3_server.endpoint_url, skip_instance_cache=True
    )
    path = f"{s3_server.bucket}/{prefix}/files/md5/{md5[:2]}/{md5[2:]}"
    good = attacker.cat_file(path)
    attacker.pipe_file(path, b"EVIL" + good[4:])  # same size, other bytes
    found = run("verify", "--remote", "s3", code=6)
    assert only_error_line(found.stderr) == (
        f"error: net v1 ({md5[:8]}): remote 's3' holds a corrupt copy of object {md5[:8]} (bytes do not match the hash)"
    )
    mate = tmp_path / "mate"
    git(repo.parent, "clone", "-q", str(repo), str(mate))
    run("remote", "modify", "s3", "access_key_id", s3_server.ro_access_key, "--local", cwd=mate)
    run("remote", "modify", "s3", "secret_access_key", s3_server.ro_secret_key, "--local", cwd=mate)
    refused = run("pull", cwd=mate, code=6)
    assert f"(first: {md5[:8]})" in only_error_line(refused.stderr)
    assert not (mate / "models" / "net.safetensors").exists()
    run("verify", "--remote", "s3", "--repair")
    assert attacker.cat_file(path) == good
    run("pull", cwd=mate)
    assert (mate / "models" / "net.safetensors").read_bytes() == weights.read_bytes()

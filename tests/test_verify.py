"""`mvc verify`: re-hashing work tree, cache and remote; `--repair`; push never uploads corrupt objects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mvc
from tests.conftest import git, ok, write_safetensors


def cache_object(repo: Path, md5: str) -> Path:
    """Where DVC keeps object ``md5`` in the repository's local cache."""
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def remote_dir(repo: Path) -> Path:
    """The directory of the repository's default (local) remote."""
    return Path(next(r.url for r in mvc.remote_list(repo=repo) if r.default))


def remote_object(repo: Path, md5: str) -> Path:
    """Where the default local remote keeps object ``md5``."""
    return remote_dir(repo) / "files" / "md5" / md5[:2] / md5[2:]


def overwrite_in_place(path: Path, data: bytes = b"EVIL") -> None:
    """Overwrite the first bytes of ``path`` in place (same inode, same size), as a buggy script would."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.write(data)


def add_version(repo: Path, path: Path, seed: int, message: str) -> str:
    """Write weights, record and commit them as a version; return the content hash."""
    write_safetensors(path, seed=seed)
    result = mvc.add(path)
    mvc.commit(repo=repo, message=message)
    return result.version.hash


def only_error_line(stderr: str) -> str:
    """The single ``error:`` line of a failed command."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_verify_reports_every_model_ok_and_exits_0(cli, repo, weights):
    add_version(repo, weights, 1, "net v1")
    result = cli("verify", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    (check,) = data["checks"]
    assert (check["name"], check["status"], check["workspace"], check["cache"], check["remote"]) == (
        "net",
        "ok",
        "ok",
        "ok",
        "not checked",
    )


def test_a_work_tree_file_overwritten_in_place_is_modified_exit_6(cli, repo, weights):
    add_version(repo, weights, 1, "net v1")
    overwrite_in_place(weights)
    result = cli("verify", "net")
    assert result.exit_code == 6
    assert "\tmodified\t" in result.stdout
    assert only_error_line(result.stderr) == (
        f"error: net v1 ({mvc.models(repo=repo)[0].hash[:8]}): the work-tree weights models/net.safetensors differ from the pointer"
    )


def test_a_tampered_cache_object_is_corrupt_exit_6(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    overwrite_in_place(cache_object(repo, md5))
    result = cli("verify", "--json")
    assert result.exit_code == 6
    check = json.loads(result.stdout)["checks"][0]
    assert (check["status"], check["cache"], check["workspace"]) == ("corrupt", "corrupt", "ok")
    assert only_error_line(result.stderr) == (
        f"error: net v1 ({md5[:8]}): cache object {md5[:8]} is corrupt (its bytes no longer match its hash)"
    )


def test_a_hand_edited_tensor_index_is_corrupt_exit_6(cli, repo, weights):
    """A lying sidecar: the weights are intact, but the index diff and merge read says other things."""
    add_version(repo, weights, 1, "net v1")
    md5 = add_version(repo, weights, 2, "net v2")
    index = mvc.show("net", repo=repo).manifest.index
    assert json.loads(ok(cli("verify", "--json")).stdout)["checks"][0]["index"] == "ok"
    sidecar = repo / index
    doc = json.loads(sidecar.read_text())
    doc["tensors"][0][1] = "F16"
    sidecar.write_text(json.dumps(doc))

    result = cli("verify", "net", "--json")
    assert result.exit_code == 6
    check = json.loads(result.stdout)["checks"][0]
    assert (check["status"], check["index"], check["cache"], check["workspace"]) == ("corrupt", "mismatch", "ok", "ok")
    assert only_error_line(result.stderr) == (
        f"error: net v2 ({md5[:8]}): the tensor index {index} does not match the hash its manifest records"
        f" (restore it with `git checkout -- {index}`)"
    )
    committed = cli("verify", "net@v2", "--json")  # the version as committed reads the committed sidecar
    assert committed.exit_code == 0, committed.stderr
    sidecar.unlink()
    assert json.loads(cli("verify", "net", "--json").stdout)["checks"][0]["index"] == "missing"


def test_repair_deletes_the_corrupt_cache_object_and_fetches_a_good_copy(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    assert cli("push").exit_code == 0
    good = cache_object(repo, md5).read_bytes()
    overwrite_in_place(cache_object(repo, md5))
    result = cli("verify", "net", "--repair", "--remote", "local", "--json")
    assert result.exit_code == 0, result.stderr
    check = json.loads(result.stdout)["checks"][0]
    assert (check["status"], check["cache"], check["remote"]) == ("ok", "ok", "ok")
    assert check["repaired"] == [f"fetched a fresh copy of {md5[:8]} from remote 'local'"]
    assert cache_object(repo, md5).read_bytes() == good


def test_a_tampered_remote_object_is_corrupt_and_repair_uploads_a_good_copy(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    assert cli("push").exit_code == 0
    overwrite_in_place(remote_object(repo, md5))
    result = cli("verify", "--remote", "local")
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == (
        f"error: net v1 ({md5[:8]}): remote 'local' holds a corrupt copy of object {md5[:8]} (bytes do not match the hash)"
    )
    repaired = cli("verify", "--remote", "local", "--repair")
    assert repaired.exit_code == 0, repaired.stderr
    assert remote_object(repo, md5).read_bytes() == cache_object(repo, md5).read_bytes()


def test_a_truncated_remote_object_is_reported_by_size(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    assert cli("push").exit_code == 0
    obj = remote_object(repo, md5)
    os.chmod(obj, 0o644)
    obj.write_bytes(obj.read_bytes()[:-10])
    result = cli("verify", "--remote", "local")
    assert result.exit_code == 6
    size = cache_object(repo, md5).stat().st_size
    assert f"corrupt copy of object {md5[:8]} (size {size - 10}, expected {size})" in only_error_line(result.stderr)


def test_an_object_the_remote_lacks_is_missing_exit_3(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    result = cli("verify", "--remote", "local")
    assert result.exit_code == 3
    assert only_error_line(result.stderr) == f"error: net v1 ({md5[:8]}): remote 'local' lacks object {md5[:8]}"


def test_weights_in_neither_cache_nor_work_tree_are_missing_exit_3(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    os.chmod(cache_object(repo, md5), 0o644)
    cache_object(repo, md5).unlink()
    weights.unlink()
    result = cli("verify")
    assert result.exit_code == 3
    assert "the weights are in neither the local cache nor the work tree" in only_error_line(result.stderr)


def test_all_versions_checks_older_versions_in_the_cache(cli, repo, weights):
    v1 = add_version(repo, weights, 1, "net v1")
    v2 = add_version(repo, weights, 2, "net v2")
    overwrite_in_place(cache_object(repo, v1))
    assert cli("verify", "net").exit_code == 0  # the work-tree version is fine
    result = cli("verify", "net", "--all-versions", "--json")
    assert result.exit_code == 6
    by_hash = {c["hash"]: c for c in json.loads(result.stdout)["checks"]}
    assert by_hash[v1]["status"] == "corrupt" and by_hash[v1]["version"] == 1
    assert by_hash[v2]["status"] == "ok"
    assert cli("verify", "net@v1").exit_code == 6


def test_a_corrupt_shard_of_a_directory_model_is_found(cli, repo):
    ckpt = repo / "ckpt"
    write_safetensors(ckpt / "model-00001.safetensors", seed=1)
    write_safetensors(ckpt / "model-00002.safetensors", seed=2)
    mvc.add(ckpt)
    mvc.commit(repo=repo, message="ckpt")
    listing = json.loads(cache_object(repo, mvc.models(repo=repo)[0].hash).read_text())
    shard = next(e["md5"] for e in listing if e["relpath"] == "model-00002.safetensors")
    assert cli("verify").exit_code == 0
    overwrite_in_place(cache_object(repo, shard))
    result = cli("verify")
    assert result.exit_code == 6
    assert f"cache object {shard[:8]} is corrupt" in only_error_line(result.stderr)


def test_push_refuses_a_cache_object_overwritten_in_place(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    overwrite_in_place(cache_object(repo, md5))
    result = cli("push")
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == (
        f"error: cache object {md5[:8]} of net v1 no longer matches its hash: refusing to push it"
    )
    assert not remote_object(repo, md5).exists()


def test_push_still_uploads_intact_objects(cli, repo, weights):
    md5 = add_version(repo, weights, 1, "net v1")
    result = cli("push")
    assert result.exit_code == 0, result.stderr
    assert remote_object(repo, md5).read_bytes() == weights.read_bytes()
    assert git(repo, "status", "--porcelain") == ""


def test_a_rolled_back_work_tree_is_recognised_not_modified(cli, repo, weights):
    add_version(repo, weights, 1, "net v1")
    add_version(repo, weights, 2, "net v2")
    assert cli("checkout", "net@v1").exit_code == 0
    result = cli("verify", "--json")
    assert result.exit_code == 0, result.stderr
    check = json.loads(result.stdout)["checks"][0]
    assert (check["version"], check["workspace"]) == (2, "rolled back to v1")

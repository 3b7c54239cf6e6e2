"""Signed versions: `mvc sign`, `mvc add --sign`, `mvc verify --signatures`, `--require-signed`."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import mvc
from mvc import settings
from tests.conftest import git, write_safetensors
from tests.test_verify import add_version, cache_object, only_error_line, overwrite_in_place, remote_object


@dataclass(frozen=True)
class Keys:
    """Key files made for one test."""

    signer: Path  # ECDSA P-256 private key, trusted
    other: Path  # ECDSA P-256 private key, not trusted
    protected: Path  # ECDSA P-256 private key encrypted with PASSPHRASE, trusted
    trusted: Path  # directory of trusted public keys


PASSPHRASE = "correct horse"


def _write_key(dest: Path, *, password: bytes | None = None) -> object:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    dest.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return key


def _write_public(key: object, dest: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    dest.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    )


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    trusted = folder / "trusted"
    trusted.mkdir(parents=True)
    signer = _write_key(folder / "alice.pem")
    _write_public(signer, trusted / "alice.pub")
    _write_key(folder / "eve.pem")
    protected = _write_key(folder / "bob.pem", password=PASSPHRASE.encode())
    _write_public(protected, trusted / "bob.pub")
    return Keys(folder / "alice.pem", folder / "eve.pem", folder / "bob.pem", trusted)


def signed_version(cli, repo: Path, weights: Path, keys: Keys, seed: int = 1) -> str:
    """Add, sign and commit a version; return its hash."""
    md5 = add_version(repo, weights, seed, f"net seed {seed}")
    result = cli("sign", "net", "--key", str(keys.signer))
    assert result.exit_code == 0, result.stderr
    mvc.commit(repo=repo, message="sign")
    return md5


def clone(repo: Path, dest: Path) -> Path:
    """A teammate's clone of ``repo`` (same default local remote), with no weights yet."""
    git(repo.parent, "clone", "-q", str(repo), str(dest))
    return dest


def test_sign_writes_a_small_content_addressed_bundle_and_verify_accepts_it(cli, repo, weights, keys):
    md5 = add_version(repo, weights, 1, "net v1")
    result = cli("sign", "net", "--key", str(keys.signer), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["signature_file"] == f".mvc/signatures/{md5[:2]}/{md5}.json"
    assert data["signer"] == "Test User <test@example.com>"
    sig_file = repo / data["signature_file"]
    assert sig_file.stat().st_size < 4096
    assert data["signature_file"] in git(repo, "diff", "--cached", "--name-only")
    entry = json.loads(sig_file.read_text())["signatures"][0]
    assert (entry["name"], entry["version"], entry["hash"]) == ("net", 1, md5)
    checked = cli("verify", "--signatures", "--trusted-keys", str(keys.trusted), "--json")
    assert checked.exit_code == 0, checked.stderr
    check = json.loads(checked.stdout)["checks"][0]
    assert (check["status"], check["signature"], check["signed_by"]) == ("ok", "ok", "alice")


def test_add_sign_signs_the_new_version_and_show_says_who(cli, repo, weights, keys):
    write_safetensors(weights, seed=3)
    result = cli("add", str(weights), "--sign", str(keys.signer))
    assert result.exit_code == 0, result.stderr
    md5 = mvc.models(repo=repo)[0].hash
    assert f".mvc/signatures/{md5[:2]}/{md5}.json" in result.stderr  # the "staged ..." note
    shown = json.loads(cli("show", "net", "--json").stdout)
    assert len(shown["signed_by"]) == 1 and shown["signed_by"][0].startswith("Test User <test@example.com> (key ")
    assert cli("verify", "--signatures", "--trusted-keys", str(keys.trusted)).exit_code == 0
    human = cli("show", "net").stdout
    assert "signed by:  Test User <test@example.com> (key " in human


def test_a_passphrase_protected_key_needs_its_passphrase(cli, repo, weights, keys, monkeypatch):
    add_version(repo, weights, 1, "net v1")
    result = cli("sign", "net", "--key", str(keys.protected))
    assert result.exit_code == 2
    assert only_error_line(result.stderr) == f"error: signing key {keys.protected} is protected by a passphrase"
    monkeypatch.setenv("KEY_PASS", "wrong")
    wrong = cli("sign", "net", "--key", str(keys.protected), "--password-env", "KEY_PASS")
    assert wrong.exit_code == 2
    assert only_error_line(wrong.stderr) == f"error: wrong passphrase for signing key {keys.protected}"
    monkeypatch.setenv("KEY_PASS", PASSPHRASE)
    right = cli("sign", "net", "--key", str(keys.protected), "--password-env", "KEY_PASS")
    assert right.exit_code == 0, right.stderr
    assert PASSPHRASE not in right.stdout + right.stderr
    assert cli("verify", "--signatures", "--trusted-keys", str(keys.trusted)).exit_code == 0


def test_unreadable_keys_are_refused_before_anything_is_written(cli, repo, weights, keys, tmp_path):
    md5 = add_version(repo, weights, 1, "net v1")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    public = keys.trusted / "alice.pub"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    edkey = tmp_path / "ed.pem"
    edkey.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cases = [
        (garbage, 2, f"error: signing key {garbage} is not a PEM private key"),
        (public, 2, f"error: signing key {public} is not a PEM private key"),
        (edkey, 2, f"error: signing key {edkey} is not an ECDSA P-256/P-384/P-521 key (model signing supports only these)"),
        (tmp_path / "none.pem", 3, f"error: signing key {tmp_path / 'none.pem'} does not exist"),
        (tmp_path, 2, f"error: cannot read signing key {tmp_path}: Is a directory"),
    ]
    for key, code, line in cases:
        result = cli("sign", "net", "--key", str(key))
        assert result.exit_code == code, (key, result.stderr)
        assert only_error_line(result.stderr) == line
    assert not (repo / ".mvc" / "signatures" / md5[:2]).exists()


def test_a_signature_by_an_untrusted_key_is_refused(cli, repo, weights, keys):
    md5 = add_version(repo, weights, 1, "net v1")
    assert cli("sign", "net", "--key", str(keys.other)).exit_code == 0
    result = cli("verify", "--signatures", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 6
    assert "\tuntrusted\t" in result.stdout
    assert only_error_line(result.stderr).startswith(f"error: net v1 ({md5[:8]}): signed only by untrusted key: Test User")
    refused = cli("checkout", "net", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert refused.exit_code == 6
    assert only_error_line(refused.stderr).startswith(f"error: refusing net v1 ({md5[:8]}): signed only by untrusted key")


def test_a_valid_signature_copied_onto_another_version_is_invalid(cli, repo, weights, keys):
    v1 = signed_version(cli, repo, weights, keys, seed=1)
    v2 = add_version(repo, weights, 2, "net v2")
    src = repo / f".mvc/signatures/{v1[:2]}/{v1}.json"
    dest = repo / f".mvc/signatures/{v2[:2]}/{v2}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The attacker also rewrites the unsigned fields to name the new version.
    dest.write_text(src.read_text().replace(v1, v2).replace('"version": 1', '"version": 2'))
    result = cli("verify", "net", "--signatures", "--trusted-keys", str(keys.trusted), "--json")
    assert result.exit_code == 6
    check = json.loads(result.stdout)["checks"][0]
    assert (check["version"], check["signature"]) == (2, "invalid")
    assert "was made for other weights" in only_error_line(result.stderr)


def test_a_pointer_edited_to_name_other_weights_after_signing_is_refused(cli, repo, weights, keys, tmp_path):
    signed_version(cli, repo, weights, keys, seed=1)
    other = add_version(repo, weights, 2, "unsigned v2")  # in the cache, never signed
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # back to the signed pointer
    ptr = repo / "models" / "net.safetensors.dvc"
    data = yaml.safe_load(ptr.read_text())
    data["outs"][0]["md5"] = other  # the edit: same manifest, other weights
    data["meta"]["mvc"]["hash"] = other
    ptr.write_text(yaml.safe_dump(data, sort_keys=False))
    before = weights.read_bytes()
    result = cli("checkout", "net", "--force", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == f"error: refusing net v1 ({other[:8]}): it is unsigned; nothing was checked out"
    assert weights.read_bytes() == before


def test_weights_tampered_after_signing_are_refused_before_checkout(cli, repo, weights, keys):
    md5 = signed_version(cli, repo, weights, keys)
    weights.unlink()
    overwrite_in_place(cache_object(repo, md5))
    result = cli("checkout", "net", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == (
        f"error: refusing net v1 ({md5[:8]}): the weights do not match the bytes Test User <test@example.com> "
        f"(key {_fingerprint(keys.trusted / 'alice.pub')[:16]}) signed; nothing was checked out"
    )
    assert not weights.exists()


def _fingerprint(pub: Path) -> str:
    import hashlib

    return hashlib.sha256(pub.read_bytes()).hexdigest()


def test_pull_require_signed_refuses_a_tampered_remote_object_before_the_work_tree(cli, repo, weights, keys, tmp_path):
    md5 = signed_version(cli, repo, weights, keys)
    assert cli("push").exit_code == 0
    overwrite_in_place(remote_object(repo, md5))
    mate = clone(repo, tmp_path / "mate")
    result = cli("pull", "--require-signed", "--trusted-keys", str(keys.trusted), cwd=mate)
    # The corrupt copy is reported as corrupt (issue 14), and kept in the remote for inspection.
    assert result.exit_code == 6, result.stderr
    assert md5[:8] in only_error_line(result.stderr)
    assert remote_object(repo, md5).exists()
    assert not (mate / "models" / "net.safetensors").exists()
    assert not cache_object(mate, md5).exists()


def test_pull_require_signed_from_the_repo_setting_refuses_unsigned_versions(cli, repo, weights, keys, tmp_path):
    md5 = add_version(repo, weights, 1, "net v1 unsigned")
    shutil.copytree(keys.trusted, repo / "keys")
    settings.save(repo, settings.Settings(require_signed=True, extra={"trusted_keys": "keys"}))
    git(repo, "add", "keys", ".mvc/config.json")
    git(repo, "commit", "-q", "-m", "require signatures")
    assert cli("push").exit_code == 0
    mate = clone(repo, tmp_path / "mate")
    result = cli("pull", cwd=mate)
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == f"error: refusing net v1 ({md5[:8]}): it is unsigned; nothing was checked out"
    assert not (mate / "models" / "net.safetensors").exists()
    # Once signed (and the signature committed), the same pull goes through.
    assert cli("sign", "net", "--key", str(keys.signer)).exit_code == 0
    mvc.commit(repo=repo, message="sign v1")
    git(mate, "pull", "-q")
    pulled = cli("pull", cwd=mate)
    assert pulled.exit_code == 0, pulled.stderr
    assert (mate / "models" / "net.safetensors").read_bytes() == weights.read_bytes()


def test_checkout_of_an_older_signed_version_is_allowed(cli, repo, weights, keys):
    signed_version(cli, repo, weights, keys, seed=1)
    v1_bytes = weights.read_bytes()
    add_version(repo, weights, 2, "net v2 unsigned")
    result = cli("checkout", "net@v1", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 0, result.stderr
    assert weights.read_bytes() == v1_bytes
    refused = cli("checkout", "net", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert refused.exit_code == 6
    assert weights.read_bytes() == v1_bytes


def test_signature_checks_need_trusted_keys(cli, repo, weights, keys, tmp_path):
    add_version(repo, weights, 1, "net v1")
    none = cli("verify", "--signatures")
    assert none.exit_code == 2
    assert only_error_line(none.stderr) == "error: no trusted keys to check signatures against"
    missing = cli("verify", "--signatures", "--trusted-keys", str(tmp_path / "nope"))
    assert missing.exit_code == 3
    assert only_error_line(missing.stderr) == f"error: trusted keys directory {tmp_path / 'nope'} does not exist"
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(keys.signer, bad / "alice.pem")  # a private key where public ones belong
    wrong = cli("verify", "--signatures", "--trusted-keys", str(bad))
    assert wrong.exit_code == 2
    assert only_error_line(wrong.stderr) == f"error: trusted key {bad / 'alice.pem'} is not a PEM public key"


def test_an_unsigned_version_fails_verify_signatures(cli, repo, weights, keys):
    md5 = add_version(repo, weights, 1, "net v1")
    result = cli("verify", "--signatures", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == f"error: net v1 ({md5[:8]}): no signature"


def test_a_signed_directory_model_detects_a_swapped_shard(cli, repo, keys):
    ckpt = repo / "ckpt"
    write_safetensors(ckpt / "model-00001.safetensors", seed=1)
    write_safetensors(ckpt / "model-00002.safetensors", seed=2)
    (ckpt / "config.json").write_text("{}")
    assert cli("add", str(ckpt), "--sign", str(keys.signer)).exit_code == 0
    assert cli("verify", "--signatures", "--trusted-keys", str(keys.trusted)).exit_code == 0
    md5 = mvc.models(repo=repo)[0].hash
    listing = json.loads(cache_object(repo, md5).read_text())
    shard = next(e["md5"] for e in listing if e["relpath"] == "model-00002.safetensors")
    overwrite_in_place(cache_object(repo, shard))
    result = cli("checkout", "ckpt", "--force", "--require-signed", "--trusted-keys", str(keys.trusted))
    assert result.exit_code == 6
    assert "the weights do not match the bytes" in only_error_line(result.stderr)


def test_sign_refuses_cache_bytes_that_no_longer_match_their_hash(cli, repo, weights, keys):
    md5 = add_version(repo, weights, 1, "net v1")
    overwrite_in_place(cache_object(repo, md5))
    result = cli("sign", "net", "--key", str(keys.signer))
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == (
        f"error: cache object {md5[:8]} of net is corrupt (its bytes no longer match its hash); not signed"
    )
    assert not (repo / f".mvc/signatures/{md5[:2]}/{md5}.json").exists()


def test_get_require_signed_checks_the_download_before_writing_anything(cli, repo, weights, keys, tmp_path):
    signed = signed_version(cli, repo, weights, keys, seed=1)
    assert cli("push").exit_code == 0
    deploy = tmp_path / "deploy"
    ok = cli("get", str(repo), "net", "-o", str(deploy), "--require-signed", "--trusted-keys", str(keys.trusted))
    assert ok.exit_code == 0, ok.stderr
    assert hashlib.md5((deploy / "net.safetensors").read_bytes()).hexdigest() == signed

    add_version(repo, weights, 2, "net v2, unsigned")  # committed and pushed, but nobody signed it
    assert cli("push").exit_code == 0
    refused = cli("get", str(repo), "net", "-o", str(tmp_path / "prod"), "--require-signed", "--trusted-keys", str(keys.trusted))
    assert refused.exit_code == 6, refused.stderr
    assert refused.stderr.startswith("error: refusing net v2") and "unsigned" in refused.stderr
    assert not (tmp_path / "prod").exists() or not any((tmp_path / "prod").iterdir())
    no_keys = cli("get", str(repo), "net", "-o", str(tmp_path / "x"), "--require-signed")
    assert no_keys.exit_code == 2 and "--trusted-keys" in no_keys.stderr


def test_a_local_signing_policy_holds_when_a_commit_turns_signing_off(cli, repo, weights, keys, tmp_path):
    md5 = add_version(repo, weights, 1, "net v1 unsigned")
    assert cli("push").exit_code == 0
    settings.save(repo, settings.Settings(require_signed=True))
    git(repo, "add", ".mvc/config.json")
    git(repo, "commit", "-q", "-m", "signing on")
    mate = clone(repo, tmp_path / "mate")
    settings.save_local(mate, require_signed=True, trusted_keys=str(keys.trusted))
    assert settings.local_config_path(mate) == mate / ".git" / "mvc" / "config.json"
    settings.save(repo, settings.Settings(require_signed=False))  # the repository says: no signatures
    git(repo, "add", ".mvc/config.json")
    git(repo, "commit", "-q", "-m", "signing off")
    git(mate, "pull", "-q")
    result = cli("pull", cwd=mate)
    assert result.exit_code == 6
    assert only_error_line(result.stderr) == f"error: refusing net v1 ({md5[:8]}): it is unsigned; nothing was checked out"
    assert not (mate / "models" / "net.safetensors").exists()
    git(mate, "add", "-A")
    assert git(mate, "diff", "--cached", "--name-only") == ""  # the local policy is never committed


def test_the_environment_enforces_signing_and_ignores_keys_the_repo_ships(cli, repo, weights, keys, monkeypatch):
    md5 = add_version(repo, weights, 1, "net v1 unsigned")
    shutil.copytree(keys.trusted, repo / "keys")  # a commit could fill this directory with its own keys
    settings.save(repo, settings.Settings(extra={"trusted_keys": "keys"}))
    monkeypatch.setenv("MVC_REQUIRE_SIGNED", "1")
    no_keys = cli("checkout", "net")
    assert no_keys.exit_code == 2
    assert only_error_line(no_keys.stderr) == (
        "error: signatures are required (MVC_REQUIRE_SIGNED=1) but no trusted keys are set outside the repository"
    )
    monkeypatch.setenv("MVC_TRUSTED_KEYS", str(keys.trusted))
    refused = cli("checkout", "net")
    assert refused.exit_code == 6
    assert only_error_line(refused.stderr) == f"error: refusing net v1 ({md5[:8]}): it is unsigned; nothing was checked out"

"""Signed versions: OpenSSF model signing bundles (``model-signing``), ECDSA keys, offline.

The only module that imports ``model_signing``, lazily (the import costs ~0.5 s).

What is signed: model-signing signs a directory by path, so mvc signs a *view* of one
version built in ``.dvc/tmp`` from hard links to its DVC cache objects (never the work
tree, so the signed bytes are exactly the ones the pointer's md5 names)::

    <name>/mvc.json         {"hash": "<md5>", "name": "<model>", "schema": 1}
    <name>/weights          the weights of a single-file model
    <name>/weights/<rel>    each file of a directory model

``mvc.json`` is signed with the weights: it binds the bundle's per-file sha256 to the
DVC content hash and the model name, so a valid signature copied onto another version,
or a pointer edited to name other weights, no longer verifies. Anyone can check a
bundle with the model-signing CLI on the same layout.

Bundles live in git, content-addressed by version, in
``.mvc/signatures/<md5[:2]>/<md5>.json``: ``{"schema", "hash", "signatures": [...]}``,
one entry per (model, key): name, version, hash, signer (the git identity at signing:
informational only), key (sha256 of the signer's PEM public key, the same value as the
bundle's key hint), created, bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvc import documents, dvcintegrity, gitstore
from mvc.errors import IntegrityError, MissingObjectError, PathNotFoundError, SchemaError, UsageError
from mvc.files import utc_now, write_atomic

SIGNATURES_DIR = ".mvc/signatures"
SCHEMA = 1
_VIEW_WEIGHTS = "weights"
_VIEW_META = "mvc.json"


@dataclass(frozen=True)
class Signature:
    """One signature of a version, as stored in its signature file."""

    name: str
    version: int
    hash: str
    signer: str  # git identity of whoever signed (claimed, not verified)
    key: str  # sha256 of the signer's PEM public key
    created: str
    bundle: dict[str, Any]

    @property
    def label(self) -> str:
        """``Signer <email> (key 1a2b3c4d5e6f7081)`` for people."""
        return f"{self.signer} (key {self.key[:16]})"


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signatures are accepted."""

    label: str  # the key file's name without suffix, e.g. "alice" for alice.pub
    fingerprint: str
    path: Path


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on a version's signatures.

    ``status``: ``ok`` (a trusted key signed these bytes), ``unsigned``, ``untrusted``
    (signed, but by no trusted key) or ``invalid`` (a trusted key's signature does not
    match the bytes, or was made for another version).
    """

    status: str
    signer: str | None  # the trusted key's label (ok), or who signed (untrusted / invalid)
    detail: str


def signature_file(md5: str) -> str:
    """Path (relative to the repo root) of the signature file of version ``md5``."""
    return f"{SIGNATURES_DIR}/{md5[:2]}/{md5}.json"


def signatures(root: Path, md5: str) -> list[Signature]:
    """The signatures recorded for version ``md5`` in the work tree (none: empty list).

    Raises:
        SchemaError: the signature file is not valid.
    """
    try:
        text = (root / signature_file(md5)).read_bytes()
    except FileNotFoundError:
        return []
    return parse_signatures(text, md5)


def parse_signatures(text: bytes | str, md5: str) -> list[Signature]:
    """The signatures in a signature file's text (from the work tree or a git blob).

    Raises:
        SchemaError: the text is not a valid signature file.
    """
    try:
        data = documents.load_json(text)
        return [Signature(**{k: e[k] for k in Signature.__dataclass_fields__}) for e in data["signatures"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(
            f"{signature_file(md5)} is not a valid signature file",
            hint=f"restore it with `git checkout -- {signature_file(md5)}` or sign the version again",
        ) from exc


def signed_by(root: Path, md5: str) -> tuple[str, ...]:
    """Who signed version ``md5`` (claimed identities and key fingerprints, not verified)."""
    try:
        return tuple(s.label for s in signatures(root, md5))
    except SchemaError:
        return ("(unreadable signature file)",)


def fingerprint(public_key: Any) -> str:
    """sha256 of the PEM (SubjectPublicKeyInfo) encoding: model-signing's key hint."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _check_curve(key: Any, label: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) or key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise UsageError(
            f"{label} is not an ECDSA P-256/P-384/P-521 key (model signing supports only these)",
            hint="make one with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`",
        )


def load_private_key(path: str | Path, password: bytes | None = None) -> Any:
    """Load and check a PEM private key before any hashing starts.

    Raises:
        PathNotFoundError: no such file.
        UsageError: unreadable, not a PEM private key, passphrase missing or wrong, not ECDSA.
    """
    from cryptography.hazmat.primitives import serialization

    label = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PathNotFoundError(f"signing key {label} does not exist", hint="pass the PEM private key with --key", path=label) from None
    except OSError as exc:
        raise UsageError(f"cannot read signing key {label}: {exc.strerror}", hint="check the file's permissions") from exc
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as exc:
        if password is None:
            raise UsageError(
                f"signing key {label} is protected by a passphrase",
                hint="put the passphrase in an environment variable and name it with --password-env VAR",
            ) from exc
        raise UsageError(f"signing key {label} is not encrypted, but a passphrase was given", hint="drop --password-env") from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in data:
            raise UsageError(f"wrong passphrase for signing key {label}", hint="check the variable named by --password-env") from exc
        raise UsageError(
            f"signing key {label} is not a PEM private key",
            hint="pass the PEM private key (-----BEGIN PRIVATE KEY-----), not the public key or a certificate",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - cryptography raises UnsupportedAlgorithm and others
        raise UsageError(f"signing key {label} cannot be loaded: {exc}", hint="pass an ECDSA PEM private key") from exc
    _check_curve(key, f"signing key {label}")
    return key


def trusted_keys(directory: str | Path) -> dict[str, TrustedKey]:
    """The public keys (``*.pub``, ``*.pem``) in ``directory`` by fingerprint.

    Raises:
        PathNotFoundError: no such directory.
        UsageError: a key file is not an ECDSA PEM public key, or the directory holds none.
    """
    from cryptography.hazmat.primitives import serialization

    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise PathNotFoundError(
            f"trusted keys directory {directory} does not exist", hint="pass --trusted-keys DIR with the signers' public keys", path=str(directory)
        )
    keys: dict[str, TrustedKey] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".pub", ".pem") or not path.is_file():
            continue
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise UsageError(
                f"trusted key {path} is not a PEM public key",
                hint="keep only public keys (-----BEGIN PUBLIC KEY-----) in the trusted keys directory",
            ) from exc
        _check_curve(key, f"trusted key {path}")
        fp = fingerprint(key)
        keys[fp] = TrustedKey(label=path.stem, fingerprint=fp, path=path)
    if not keys:
        raise UsageError(f"{directory} holds no public keys (*.pub, *.pem)", hint="add the signers' public keys to it")
    return keys


@contextlib.contextmanager
def _view(root: Path, name: str, md5: str, files: list[dvcintegrity.CachedFile] | None = None) -> Iterator[Path]:
    """A directory laid out as the module docstring says, hard-linked to the cache objects
    (or to ``files``).

    Raises:
        MissingObjectError: the version is not (wholly) in the local cache.
    """
    files = dvcintegrity.cache_files(root, md5) if files is None else files
    absent = [f for f in files if not f.present]
    if absent:
        raise MissingObjectError(
            f"the weights of {name} ({md5[:8]}) are not in the local cache",
            hint="fetch them with `mvc pull` (or --remote R)",
        )
    tmp_root = root / ".dvc" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix="mvc-sign-", dir=tmp_root))
    try:
        model = top / name
        model.mkdir()
        meta = {"hash": md5, "name": name, "schema": SCHEMA}
        (model / _VIEW_META).write_text(json.dumps(meta, sort_keys=True))
        for f in files:
            dest = model / _VIEW_WEIGHTS if f.relpath is None else model / _VIEW_WEIGHTS / f.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f.path, dest)
            except OSError:  # another file system (cache elsewhere): copy
                shutil.copyfile(f.path, dest)
        yield model
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _hashing_config() -> Any:
    """sha256 per file, no ignored paths: the same configuration to sign and verify."""
    from model_signing import hashing

    config = hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
    return config.set_ignored_paths(paths=[], ignore_git_paths=False)


def sign(
    root: Path, *, name: str, version: int, md5: str, key_path: str | Path, password: bytes | None = None
) -> tuple[Signature, str]:
    """Sign version ``md5`` of model ``name`` and record the bundle in its signature file (staged).

    Every cache object is re-hashed (md5) while it is signed, so corrupt bytes are never
    signed and a valid signature later proves the bytes match the pointer's hash. A
    signature by the same key for the same model is replaced.

    Returns:
        The new signature and the signature file's path (relative to ``root``).

    Raises:
        PathNotFoundError / UsageError: key problems (see :func:`load_private_key`).
        MissingObjectError: the weights are not in the local cache.
        IntegrityError: a cache object no longer matches its hash.
    """
    from concurrent.futures import ThreadPoolExecutor

    from model_signing import signing as ms_signing

    key = load_private_key(key_path, password)
    with _view(root, name, md5) as model, ThreadPoolExecutor(max_workers=1) as pool:
        # Every byte is md5-checked (no trust in DVC's state) beside model-signing's sha256
        # pass: a valid signature then proves the bytes match the pointer, and corrupt bytes
        # are never signed. (model-signing prints only when verifying: no stdout swap here,
        # which would race with the one DVC's calls make in the thread.)
        checking = pool.submit(dvcintegrity.check_cache, root, md5)
        bundle_path = model.parent / "bundle.json"
        config = ms_signing.Config().set_hashing_config(_hashing_config())
        config.use_elliptic_key_signer(private_key=Path(key_path), password=password)  # type: ignore[arg-type]
        config.sign(model, bundle_path)
        _require_intact(name, md5, checking.result())
        bundle = documents.load_json(bundle_path.read_text())
    sig = Signature(
        name=name,
        version=version,
        hash=md5,
        signer=gitstore.identity(root),
        key=fingerprint(key.public_key()),
        created=utc_now(),
        bundle=bundle,
    )
    kept = [s for s in signatures(root, md5) if (s.key, s.name) != (sig.key, sig.name)]
    rel = signature_file(md5)
    data = {"schema": SCHEMA, "hash": md5, "signatures": [s.__dict__ for s in [*kept, sig]]}
    write_atomic(root / rel, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    gitstore.stage(root, [rel])
    return sig, rel


def _require_intact(name: str, md5: str, checks: list[dvcintegrity.ObjectCheck]) -> None:
    if any(c.state == "missing" for c in checks):
        raise MissingObjectError(
            f"the weights of {name} ({md5[:8]}) are not in the local cache",
            hint="fetch them with `mvc pull` (or --remote R)",
        )
    bad = [c for c in checks if c.state == "corrupt"]
    if bad:
        raise IntegrityError(
            f"cache object {bad[0].oid[:8]} of {name} is corrupt (its bytes no longer match its hash); not signed",
            hint="run `mvc verify --repair --remote R` to fetch a good copy",
        )


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """model-signing prints warnings on stdout; the library must not print."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def verify(
    root: Path,
    *,
    name: str,
    md5: str,
    trusted: dict[str, TrustedKey],
    found: list[Signature] | None = None,
    files: list[dvcintegrity.CachedFile] | None = None,
) -> SignatureCheck:
    """Check that a trusted key signed exactly the cached bytes of version ``md5`` of ``name``.

    Args:
        found: the signatures to check (default: the work tree's signature file).
        files: the version's bytes (default: its objects in the local cache), e.g. a
            download not yet moved into place by ``mvc get``.

    Raises:
        MissingObjectError: signed by a trusted key, but the weights are not in the local cache.
        SchemaError: the signature file is malformed.
    """
    found = signatures(root, md5) if found is None else found
    if not found:
        return SignatureCheck("unsigned", None, "no signature")
    candidates = [s for s in found if s.key in trusted]
    if not candidates:
        who = ", ".join(s.label for s in found)
        return SignatureCheck("untrusted", found[0].label, f"signed only by untrusted {'key' if len(found) == 1 else 'keys'}: {who}")
    from model_signing import verifying

    reasons = []
    with _view(root, name, md5, files) as model:
        for sig in candidates:
            bundle_path = model.parent / f"bundle-{sig.key[:16]}.json"
            bundle_path.write_text(json.dumps(sig.bundle))
            config = verifying.Config().set_hashing_config(_hashing_config())
            config.use_elliptic_key_verifier(public_key=trusted[sig.key].path)
            try:
                with _silenced():
                    config.verify(model, bundle_path)
            except Exception as exc:  # noqa: BLE001 - model-signing raises ValueError and others
                reasons.append(_reason(sig, md5, exc))
                continue
            return SignatureCheck("ok", trusted[sig.key].label, f"signed by {trusted[sig.key].label} ({sig.signer})")
    return SignatureCheck("invalid", candidates[0].label, reasons[0])


def _reason(sig: Signature, md5: str, exc: Exception) -> str:
    text = str(exc)
    if sig.hash != md5 or _VIEW_META in text:
        return f"the signature by {sig.label} was made for other weights ({sig.hash[:8]}), not {md5[:8]}"
    if "mismatch" in text.lower():
        return f"the weights do not match the bytes {sig.label} signed"
    return f"the signature by {sig.label} is not valid: {text.splitlines()[0] if text else type(exc).__name__}"


__all__ = [
    "SIGNATURES_DIR",
    "Signature",
    "SignatureCheck",
    "TrustedKey",
    "fingerprint",
    "load_private_key",
    "sign",
    "signature_file",
    "signatures",
    "signed_by",
    "trusted_keys",
    "verify",
]

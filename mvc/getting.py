"""``mvc get``: one model version's weights from a git repository, without a work tree of it.

Like ``dvc get``, made for deployment machines: the repository is cloned without a
checkout into a temporary directory, the ref is resolved from git objects by
:mod:`mvc.refs`, and the weights come from the repository's remote into a private
temporary cache (re-hashed on arrival) before they are moved into the output directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mvc import dvcfetch, dvcintegrity, gitstore, pointer, refs, tensorread, tensorsync
from mvc.errors import ConflictError, IntegrityError, ModelNotFoundError, SchemaError, UsageError
from mvc.progress import Progress
from mvc.workspace import Workspace


@dataclass(frozen=True)
class GetResult:
    """The version ``get`` wrote, and where."""

    name: str
    version: int
    hash: str
    commit: str
    path: str  # the weights written (a file, or a directory for a sharded checkpoint)
    source: str  # the repository path or URL
    remote: str  # the remote the weights came from


def get(
    source: str,
    ref: str,
    *,
    out: Path,
    remote: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    require_signed: bool = False,
    trusted_keys: Path | None = None,
) -> GetResult:
    """Write the weights of ``ref`` (``NAME`` or ``NAME@REF``) from the repository ``source`` into ``out``.

    ``NAME`` alone means the version on the repository's default branch. The remote
    is taken from the default branch's ``.dvc/config`` (a remote added after an old
    version was pushed still serves it); credentials come from the environment.

    Args:
        source: a git repository: local path (bare or not) or URL.
        ref: the model reference.
        out: directory that receives the weights under their own file name.
        remote: remote name in the repository's config (default: its default remote).
        jobs: parallel downloads.
        force: replace weights of the same name already in ``out``.
        progress: byte progress callback.
        require_signed: refuse a version that no key in ``trusted_keys`` signed; checked
            on the downloaded bytes before anything is written to ``out``.
        trusted_keys: directory of trusted public keys (needed with ``require_signed``).

    Returns:
        What was written.

    Raises:
        NotARepoError: ``source`` is not a git repository (or has no DVC set-up).
        ModelNotFoundError / RefNotFoundError / AmbiguousRefError: the ref does not name one version.
        ConflictError: ``out`` already holds weights of that name (pass ``force``).
        RemoteNotFoundError / RemoteError / MissingObjectError / IntegrityError: the download failed.
    """
    name, spec = refs.split(ref)
    if require_signed and trusted_keys is None:
        raise UsageError("--require-signed needs the signers' public keys", hint="pass --trusted-keys DIR")
    out = Path(out).expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="mvc-get-") as tmp:
        root = gitstore.clone_for_reading(_clone_source(source), Path(tmp) / "repo")
        ws = Workspace(root=root)
        try:
            resolved = refs.resolve(ws, f"{name}@{spec or 'HEAD'}")
        except ModelNotFoundError as exc:
            known = tuple(_model_names(root))
            raise ModelNotFoundError.among(name, known, hint="check the name with `mvc log` there", where=f" in {source}", ref=ref) from exc
        assert resolved.commit is not None
        target = out / PurePosixPath(resolved.pointer.out).name
        if (target.exists() or target.is_symlink()) and not force:
            raise ConflictError(f"{target} exists already", hint="pass --force to replace it, or choose another -o DIR")
        out.mkdir(parents=True, exist_ok=True)
        # Download next to the target, then rename: a failed or interrupted get leaves
        # no half-written weights under the real name.
        _drop_dead_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=f".mvc-get-{os.getpid()}-", dir=out))
        try:
            # A tensors remote rebuilds the version from its chunks (issue 15); else DVC fetches it.
            label = f"{resolved.name} v{resolved.version}"
            used = tensorread.get_version(
                root,
                tensorsync.Item(resolved.hash, label),
                staging / target.name,
                cache_dir=Path(tmp) / "cache",
                remote=remote,
                jobs=jobs,
                progress=progress,
            ) or dvcfetch.fetch_version(
                root,
                "HEAD",
                resolved.hash,
                staging / target.name,
                cache_dir=Path(tmp) / "cache",
                remote=remote,
                jobs=jobs,
                progress=progress,
                label=label,
                size=resolved.pointer.size,
            )
            if require_signed:
                assert trusted_keys is not None
                _require_signature(root, resolved, staging / target.name, Path(trusted_keys))
            _replace(staging / target.name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return GetResult(
        name=resolved.name,
        version=resolved.version,
        hash=resolved.hash,
        commit=resolved.commit,
        path=str(target),
        source=source,
        remote=used,
    )


def _require_signature(root: Path, resolved: refs.Resolved, weights: Path, trusted_dir: Path) -> None:
    """Check a trusted key signed the downloaded ``weights``; signatures come from git objects.

    Raises:
        IntegrityError: unsigned, signed by no trusted key, or not these bytes.
    """
    from mvc import signing

    trusted = signing.trusted_keys(trusted_dir)
    found: list[signing.Signature] = []
    for rev in ("HEAD", resolved.commit or "HEAD"):  # signed later than committed: the branch tip has it
        blob = gitstore.read_blob(root, rev, signing.signature_file(resolved.hash))
        if blob is not None:
            found = signing.parse_signatures(blob, resolved.hash)
            break
    if weights.is_file():
        files = [dvcintegrity.CachedFile(None, resolved.hash, weights, True)]
    else:
        files = [
            dvcintegrity.CachedFile(p.relative_to(weights).as_posix(), "", p, True) for p in sorted(weights.rglob("*")) if p.is_file()
        ]
    verdict = signing.verify(root, name=resolved.name, md5=resolved.hash, trusted=trusted, found=found, files=files)
    if verdict.status != "ok":
        reason = "it is unsigned" if verdict.status == "unsigned" else verdict.detail
        raise IntegrityError(
            f"refusing {resolved.name} v{resolved.version} ({resolved.hash[:8]}): {reason}; nothing was written",
            hint="get a version a trusted key signed (`mvc sign` it there), or add the signer's key to --trusted-keys",
        )


def _clone_source(source: str) -> str:
    """A local path made absolute (git would read it relative to its own cwd); URLs unchanged."""
    if "://" in source or (":" in source and not Path(source).exists()):
        return source
    return str(Path(source).expanduser().resolve())


def _model_names(root: Path) -> list[str]:
    """Names of the models the default branch of the clone at ``root`` tracks."""
    names = []
    with gitstore.blob_reader(root) as read:
        for path in gitstore.list_files(root, "HEAD", suffix=pointer.SUFFIX):
            data = read("HEAD", path)
            try:
                ptr = pointer.parse(data, path) if data is not None else None
            except SchemaError:
                continue
            if ptr is not None and ptr.manifest is not None:
                names.append(ptr.manifest.name)
    return sorted(names)


def _replace(src: Path, target: Path) -> None:
    """Move ``src`` to ``target``, replacing a file or directory there."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(src, target)


__all__ = ["GetResult", "get"]


def _drop_dead_staging(out: Path) -> None:
    """Remove the ``.mvc-get-<pid>-*`` staging directories a killed ``mvc get`` left in ``out``
    (each may hold a model-sized partial file; a deploy directory has no ``mvc gc``)."""
    from mvc import journal

    for entry in out.glob(".mvc-get-*-*"):
        pid = entry.name.split("-")[2]
        if entry.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not journal.alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)

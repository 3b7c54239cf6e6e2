"""Verifying versions: work tree and cache re-hashed, remote objects and signatures checked.

Also the two guards other commands use: :func:`check_before_push` (never upload a cache
object whose bytes no longer match its hash) and :func:`require_signed` (never let an
unsigned or untrusted version reach the work tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvc import dvcintegrity, dvcstore, history, refs, rollback, settings, signing, sync, tensorindex, tensorread, workspace
from mvc.errors import IntegrityError, MissingObjectError, MvcError, RemoteNotFoundError, counted
from mvc.pointer import Pointer
from mvc.progress import Progress
from mvc.workspace import Workspace

TRUSTED_KEYS_SETTING = settings.TRUSTED_KEYS_SETTING  # in .mvc/config.json under "extra"
# Problems by severity: the first one a version has is its status.
_INTEGRITY = ("corrupt", "invalid", "untrusted", "unsigned", "modified")


@dataclass(frozen=True)
class Target:
    """One version to verify."""

    name: str
    version: int
    pointer: Pointer
    commit: str | None  # None: the version the work tree's pointer records


@dataclass(frozen=True)
class VersionCheck:
    """The verdict on one version.

    ``status`` is ``ok`` or its worst problem: ``corrupt``, ``invalid``, ``untrusted``,
    ``unsigned``, ``modified`` or ``missing``. The other fields say where:
    ``workspace`` ok | modified | missing | rolled back to vN | not checked;
    ``cache`` ok | corrupt | missing; ``remote`` ok | corrupt | missing | not checked;
    ``signature`` ok | unsigned | untrusted | invalid | not checked;
    ``index`` (the tensor index sidecar against the hash the manifest records)
    ok | mismatch | missing | none (no index: opaque weights).
    """

    name: str
    version: int
    hash: str
    commit: str | None
    status: str
    workspace: str
    cache: str
    remote: str
    signature: str
    signed_by: str | None
    problems: tuple[str, ...]
    repaired: tuple[str, ...]
    index: str = "none"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``: one check per version, and the remote asked (if any)."""

    checks: tuple[VersionCheck, ...]
    remote: str | None

    @property
    def ok(self) -> bool:
        """True when every version is intact."""
        return all(c.status == "ok" for c in self.checks)

    def error(self) -> MvcError | None:
        """The error that sums up the problems (exit 6 integrity, 3 missing), or None."""
        bad = [c for c in self.checks if c.status in _INTEGRITY]
        if bad:
            first = bad[0]
            more = f" (and {counted(len(bad) - 1, 'more version')})" if len(bad) > 1 else ""
            return IntegrityError(f"{_label(first)}: {first.problems[0]}{more}", hint=_hint(first, self.remote))
        missing = [c for c in self.checks if c.status == "missing"]
        if missing:
            first = missing[0]
            more = f" (and {counted(len(missing) - 1, 'more version')})" if len(missing) > 1 else ""
            return MissingObjectError(
                f"{_label(first)}: {first.problems[0]}{more}",
                hint="push the weights from a machine that has them (`mvc push`), or pull them with `mvc pull`",
            )
        return None


def _label(c: VersionCheck) -> str:
    return f"{c.name} v{c.version} ({c.hash[:8]})"


def _hint(c: VersionCheck, remote: str | None) -> str:
    where = f" --remote {remote}" if remote else " --remote R"
    if c.status == "corrupt":
        return f"fetch or upload a good copy with `mvc verify {c.name}{where} --repair`"
    if c.status == "modified":
        return f"record the change with `mvc add`, or discard it with `mvc checkout --force {c.name}`"
    if c.status == "invalid":
        return "do not use these weights; ask the signer to check the version, and fetch a good copy"
    return f"sign it with `mvc sign {c.name}@v{c.version} --key KEY.pem`, or add the signer's public key to the trusted keys"


def targets(ws: Workspace, names: list[str] | None, *, all_versions: bool = False) -> list[Target]:
    """The versions to verify: each ref's version; every model's work-tree version by default;
    with ``all_versions`` also every committed version on any branch (each content hash once).

    Raises:
        ModelNotFoundError / RefNotFoundError: a ref does not resolve.
    """
    found: list[Target] = []
    if not names:
        names = [p.manifest.name for p in workspace.models(ws) if p.manifest]
    for ref in names:
        name, spec = refs.split(ref)
        if spec is None or all_versions:
            ptr = workspace.find_model(ws, name)
            assert ptr.manifest is not None
            found.append(Target(ptr.manifest.name, ptr.version, ptr, None))
        if spec is not None:
            res = refs.resolve(ws, ref)
            found.append(Target(res.name, res.version, res.pointer, res.commit))
        if all_versions:
            found += [_record_target(ws, r) for r in history.versions(ws, name, all_branches=True)]
    seen: set[str] = set()
    unique = []
    for t in found:
        if t.pointer.md5 and t.pointer.md5 not in seen:
            seen.add(t.pointer.md5)
            unique.append(t)
    return unique


def _record_target(ws: Workspace, rec: history.VersionRecord) -> Target:
    return refs_target(refs.resolve(ws, f"{rec.name}@{rec.commit}"))


def refs_target(res: refs.Resolved) -> Target:
    """The :class:`Target` of a resolved ref."""
    return Target(res.name, res.version, res.pointer, res.commit)


def verify(
    ws: Workspace,
    items: list[Target],
    *,
    remote: str | None = None,
    check_remote: bool = False,
    trusted_keys: str | Path | None = None,
    check_signatures: bool = False,
    repair: bool = False,
    progress: Progress | None = None,
) -> VerifyResult:
    """Re-hash every version in ``items`` (work tree, cache), and check remote and signatures.

    Args:
        remote: the remote to check (``check_remote``) and to repair from (default: the default remote).
        trusted_keys: directory of trusted public keys (default: the repo setting).
        repair: delete corrupt cache objects and fetch them again; overwrite corrupt remote
            objects with a good cache copy.

    Raises:
        RemoteNotFoundError: ``check_remote`` or ``repair`` without a usable remote.
        PathNotFoundError / UsageError: bad trusted keys directory.
    """
    rname = sync.remote_name(ws, remote) if (check_remote or repair) else None
    trusted = signing.trusted_keys(trusted_dir(ws, trusted_keys)) if check_signatures else None
    checks = [
        _check(ws, t, remote=rname, check_remote=check_remote, trusted=trusted, repair=repair, progress=progress)
        for t in items
    ]
    return VerifyResult(checks=tuple(checks), remote=rname)


def _check(
    ws: Workspace,
    t: Target,
    *,
    remote: str | None,
    check_remote: bool,
    trusted: dict[str, signing.TrustedKey] | None,
    repair: bool,
    progress: Progress | None,
) -> VersionCheck:
    md5 = t.pointer.md5
    problems: list[str] = []
    repaired: list[str] = []
    verdict = _signature(ws, t, trusted)
    if verdict is not None and verdict.status == "ok":
        # `mvc sign` md5-checked these very bytes: a valid signature over them proves them intact.
        cache_checks: list[dvcintegrity.ObjectCheck] = []
    else:
        cache_checks = dvcintegrity.check_cache(ws.root, md5, progress=progress)
        if repair and remote and any(c.state == "corrupt" for c in cache_checks):
            repaired += _repair_cache(ws, t, cache_checks, remote, progress)
            cache_checks = dvcintegrity.check_cache(ws.root, md5, progress=progress)
            verdict = _signature(ws, t, trusted)
    cache = _worst(c.state for c in cache_checks)
    problems += [f"cache object {c.oid[:8]} is corrupt (its bytes no longer match its hash)" for c in cache_checks if c.state == "corrupt"]
    work = _workspace_state(ws, t) if t.commit is None else "not checked"
    if work == "modified":
        problems.append(f"the work-tree weights {t.pointer.out} differ from the pointer")
    remote_state = "not checked"
    if check_remote and remote:
        remote_checks = tensorread.remote_checks(ws.root, md5, remote=remote)
        if repair and cache == "ok" and any(c.state == "corrupt" for c in remote_checks):
            for c in remote_checks:
                if c.state == "corrupt":
                    dvcintegrity.replace_remote_object(ws.root, c.oid, remote=remote)
                    repaired.append(f"uploaded a good copy of {c.oid[:8]} to remote {remote!r}")
            remote_checks = tensorread.remote_checks(ws.root, md5, remote=remote)
        remote_state = _worst(c.state for c in remote_checks)
        problems += [f"remote {remote!r} holds a corrupt copy of object {c.oid[:8]} ({c.detail})" for c in remote_checks if c.state == "corrupt"]
        problems += [f"remote {remote!r} lacks object {c.oid[:8]}" for c in remote_checks if c.state == "missing"]
    signature, signer = "not checked", None
    if verdict is not None:
        signature, signer = verdict.status, verdict.signer
        if verdict.status != "ok":
            problems.append(verdict.detail)
    elif trusted is not None:
        problems.append("signature not checked: the weights are not in the local cache")
    manifest = t.pointer.manifest if not t.pointer.outside_mvc else None
    index = tensorindex.state(ws.root, manifest, t.commit)
    if index != "ok" and index != "none" and manifest is not None:
        problems.append(
            f"the tensor index {manifest.index} {'is missing' if index == 'missing' else 'does not match the hash its manifest records'}"
            f" (restore it with `git checkout -- {manifest.index}`)"
        )
    in_work = work == "ok" or work.startswith("rolled back")
    lost = cache == "missing" and not in_work and remote_state != "ok"
    if lost and remote_state == "not checked":
        problems.append("the weights are in neither the local cache nor the work tree (check a remote with --remote R)")
    status = _status(cache, remote_state, signature, work, lost, trusted is not None)
    if status == "ok" and index in ("mismatch", "missing"):
        status = "corrupt"
    return VersionCheck(
        name=t.name,
        version=t.version,
        hash=md5,
        commit=t.commit,
        status=status,
        workspace=work,
        cache=cache,
        remote=remote_state,
        signature=signature,
        signed_by=signer,
        problems=tuple(problems),
        repaired=tuple(repaired),
        index=index,
    )


def _signature(ws: Workspace, t: Target, trusted: dict[str, signing.TrustedKey] | None) -> signing.SignatureCheck | None:
    """The signature verdict, or None when not asked or the weights are not (wholly) cached."""
    if trusted is None:
        return None
    try:
        return signing.verify(ws.root, name=t.name, md5=t.pointer.md5, trusted=trusted)
    except MissingObjectError:
        return None


def _status(cache: str, remote: str, signature: str, work: str, lost: bool, signatures_checked: bool) -> str:
    if "corrupt" in (cache, remote):
        return "corrupt"
    if signature in ("invalid", "untrusted", "unsigned"):
        return signature
    if work == "modified":
        return "modified"
    if remote == "missing" or lost or (signatures_checked and signature == "not checked"):
        return "missing"
    return "ok"


def _worst(states: object) -> str:
    found = set(states)  # type: ignore[call-overload]
    for state in ("corrupt", "missing"):
        if state in found:
            return state
    return "ok"


def _repair_cache(
    ws: Workspace, t: Target, checks: list[dvcintegrity.ObjectCheck], remote: str, progress: Progress | None
) -> list[str]:
    """Delete the corrupt cache objects of ``t`` and fetch them again from ``remote``."""
    bad = [c.oid for c in checks if c.state == "corrupt"]
    for oid in bad:
        dvcintegrity.delete_cache_object(ws.root, oid)
    try:
        sync.ensure_cached(ws, t.pointer, t.commit, remote=remote, progress=progress)
    except MissingObjectError:
        return [f"deleted corrupt cache object {oid[:8]}; remote {remote!r} has no copy" for oid in bad]
    return [f"fetched a fresh copy of {oid[:8]} from remote {remote!r}" for oid in bad]


def _workspace_state(ws: Workspace, t: Target) -> str:
    """Re-hash the work-tree weights of ``t`` (no trust in mtimes or DVC's state)."""
    full = ws.root / t.pointer.out
    if not full.exists():
        return "missing"
    rb = rollback.current(ws, t.pointer.path, t.pointer.out)
    expected = rb.hash if rb is not None else t.pointer.md5
    matches = _tree_matches(ws.root, full, expected)
    if matches is None:
        return "not checked"
    if matches:
        return f"rolled back to v{rb.version}" if rb is not None else "ok"
    return "modified"


def _tree_matches(root: Path, full: Path, md5: str) -> bool | None:
    """True / False when the work-tree weights match ``md5``; None when that cannot be told."""
    if not md5.endswith(".dir"):
        return full.is_file() and dvcstore.file_md5(full) == md5
    try:
        files = dvcintegrity.cache_files(root, md5)
    except MissingObjectError:
        return None  # the listing is not cached: the files are unknown
    expected = {str(f.relpath): str(f.oid) for f in files}
    actual = {p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file()}
    if actual != set(expected):
        return False
    return all(dvcstore.file_md5(full / rel) == oid for rel, oid in expected.items())


# ---- the guards other commands use ------------------------------------------------------


def check_before_push(ws: Workspace, ptrs: list[Pointer]) -> None:
    """Refuse to push when a cache object of ``ptrs`` no longer matches its hash.

    Objects whose inode, mtime and size are what DVC recorded when they entered the cache
    are trusted; any other object is re-hashed before the upload starts.

    Raises:
        IntegrityError: a corrupt cache object (nothing is uploaded).
    """
    for ptr in ptrs:
        if not ptr.md5:
            continue
        for c in dvcintegrity.check_cache(ws.root, ptr.md5, use_state=True):
            if c.state == "corrupt":
                label = f"{ptr.manifest.name} v{ptr.manifest.version}" if ptr.manifest else ptr.out
                raise IntegrityError(
                    f"cache object {c.oid[:8]} of {label} no longer matches its hash: refusing to push it",
                    hint=f"fetch a good copy with `mvc verify {label.split()[0]} --repair`, or re-add the weights with `mvc add {ptr.out}`",
                )


def signing_required(ws: Workspace, flag: bool | None) -> bool:
    """``flag`` when given, else the repository setting; always True when the environment or this
    clone's local settings require signatures (a commit cannot turn them off: mvc.settings)."""
    policy = settings.signing_policy(ws.root)
    return policy.enforced_by is not None or (flag if flag is not None else policy.required)


def trusted_dir(ws: Workspace, given: str | Path | None) -> Path:
    """The trusted keys directory: ``given``, else the setting ``extra.trusted_keys``
    (relative to the repository root).

    Raises:
        UsageError: neither is set.
    """
    return settings.trusted_keys_dir(settings.signing_policy(ws.root), given)


def require_signed(
    ws: Workspace,
    items: list[Target],
    *,
    trusted_keys: str | Path | None = None,
    remote: str | None = None,
    progress: Progress | None = None,
) -> None:
    """Fetch each version into the cache and check a trusted key signed exactly those bytes.

    Nothing touches the work tree: call this before checking anything out.

    Raises:
        IntegrityError: a version is unsigned, signed only by untrusted keys, or its
            signature does not match its bytes.
        MissingObjectError: weights in neither the cache nor the remote.
        UsageError / PathNotFoundError: no usable trusted keys.
    """
    trusted = signing.trusted_keys(trusted_dir(ws, trusted_keys))
    for t in items:
        sync.ensure_cached(ws, t.pointer, t.commit, remote=remote, progress=progress)
        verdict = signing.verify(ws.root, name=t.name, md5=t.pointer.md5, trusted=trusted)
        if verdict.status != "ok":
            reason = "it is unsigned" if verdict.status == "unsigned" else verdict.detail
            raise IntegrityError(
                f"refusing {t.name} v{t.version} ({t.pointer.md5[:8]}): {reason}; nothing was checked out",
                hint=_hint(
                    VersionCheck(t.name, t.version, t.pointer.md5, t.commit, verdict.status, "", "", "", "", None, (), ()),
                    remote,
                ),
            )


def require_signed_refs(
    ws: Workspace,
    wanted: list[str] | None,
    *,
    trusted_keys: str | Path | None = None,
    remote: str | None = None,
    progress: Progress | None = None,
) -> None:
    """:func:`require_signed` for checkout's arguments (``NAME``, ``NAME@REF``; none: every model)."""
    items: list[Target] = []
    for ref in wanted or [p.manifest.name for p in workspace.models(ws) if p.manifest]:
        name, spec = refs.split(ref)
        if spec is None:
            ptr = workspace.find_model(ws, name)
            assert ptr.manifest is not None
            items.append(Target(ptr.manifest.name, ptr.manifest.version, ptr, None))
        else:
            items.append(refs_target(refs.resolve(ws, ref)))
    try:
        rname: str | None = sync.remote_name(ws, remote)
    except RemoteNotFoundError:
        rname = None
    require_signed(ws, items, trusted_keys=trusted_keys, remote=rname, progress=progress)


def pointer_targets(ptrs: list[Pointer]) -> list[Target]:
    """Work-tree targets for ``ptrs``."""
    return [Target(p.manifest.name, p.manifest.version, p, None) for p in ptrs if p.manifest]


__all__ = [
    "Target",
    "VerifyResult",
    "VersionCheck",
    "check_before_push",
    "pointer_targets",
    "require_signed",
    "require_signed_refs",
    "signing_required",
    "targets",
    "trusted_dir",
    "verify",
]

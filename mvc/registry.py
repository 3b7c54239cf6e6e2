"""The model registry: releases and stages as annotated git tags in GTO's conventions.

Tags (checked against gto 1.10.1's ``gto/constants.py`` and ``gto/tag.py``):

* ``NAME@vX.Y.Z`` registers a release, ``NAME@vX.Y.Z!`` deregisters it;
* ``NAME#STAGE#N`` assigns a stage, ``NAME#STAGE!#N`` unassigns it, ``N`` being one
  more than the highest counter among all the artifact's tags.

GTO names an artifact declared in ``path/to/dvc.yaml`` ``path/to:NAME`` and writes the
``:`` as ``=`` in tags. mvc declares no ``dvc.yaml`` artifacts, so by GTO's rules every
mvc model is a root artifact named after the model (tags read back with ``=`` are still
mapped to ``:``). Lightweight tags are ignored, as GTO ignores them.

State follows ``gto show`` (timestamp order): a release is active while its newest
event is a registration; a stage belongs to the active version whose newest assignment
is the latest one still in effect, so an unassign tag takes a stage off its version.
Ties within one second are broken by the tag counter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mvc import gitstore, history, pointer
from mvc.errors import ConflictError, ModelNotFoundError, RefNotFoundError, SchemaError, UsageError
from mvc.files import utc_iso
from mvc.workspace import Workspace

if TYPE_CHECKING:  # refs imports this module to resolve NAME@STAGE: the resolved version comes in
    from mvc.refs import Resolved

# The patterns of gto/constants.py.
_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?"
_SEMVER = (
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
NAME_RE = re.compile(f"^{_NAME}$")
SEMVER_RE = re.compile(f"^v{_SEMVER}$")
_TAG_RE = re.compile(
    rf"^(?P<artifact>([a-zA-Z0-9-_./]+=)?{_NAME})"
    rf"(((#(?P<stage>{_NAME})|@(?P<version>v{_SEMVER}))(?P<cancel>!?))|@((?P<deprecated>deprecated)|(?P<created>created)))"
    r"(#(?P<counter>[0-9]+))?$"
)


@dataclass(frozen=True)
class RegistryTag:
    """One registry event, parsed from an annotated tag."""

    tag: str
    action: str  # register | deregister | assign | unassign | deprecate | create
    artifact: str
    release: str | None
    stage: str | None
    counter: int | None
    commit: str
    created: str  # ISO 8601, UTC
    author: str
    message: str
    timestamp: int


@dataclass(frozen=True)
class Release:
    """A registered release (``NAME@vX.Y.Z``) and the model version at its commit."""

    name: str
    release: str
    commit: str
    tag: str
    created: str
    author: str
    active: bool  # False once deregistered
    version: int | None  # the mvc version number at that commit (None: no model there)
    hash: str | None


@dataclass(frozen=True)
class StageEntry:
    """The version a stage currently points to."""

    name: str
    stage: str
    commit: str
    release: str | None  # the release at that commit, if registered
    tag: str
    created: str
    author: str
    version: int | None
    hash: str | None


@dataclass(frozen=True)
class ModelRegistry:
    """Releases and current stages of one artifact."""

    name: str
    latest: str | None  # the highest active release
    releases: tuple[Release, ...]  # newest release first, deregistered ones included
    stages: tuple[StageEntry, ...]  # sorted by stage name


# ---- names and tags ----------------------------------------------------------------


def tag_name(name: str) -> str:
    """The artifact as written in a tag (GTO writes ``:`` as ``=``)."""
    return name.replace(":", "=")


def check_name(name: str) -> None:
    """Refuse model names GTO cannot register.

    Raises:
        UsageError: the name has characters outside GTO's artifact names.
    """
    if not NAME_RE.match(name):
        raise UsageError(
            f"model name {name!r} cannot be a registry name (GTO allows letters, digits, '-', '_' and '/', "
            "starting and ending with a letter or digit)",
            hint=f"rename it first: `mvc rename {name} NEW`, then commit",
        )


def check_release(release: str) -> None:
    """Raises UsageError unless ``release`` is ``vMAJOR.MINOR.PATCH`` semver."""
    if not SEMVER_RE.match(release):
        raise UsageError(f"{release!r} is not a release version", hint="write it as vMAJOR.MINOR.PATCH, e.g. v1.2.0")


def check_stage(stage: str) -> None:
    """Raises UsageError unless ``stage`` is a valid GTO stage name."""
    if not NAME_RE.match(stage):
        raise UsageError(f"{stage!r} is not a valid stage name", hint="use letters, digits, '-' and '_', e.g. prod or staging")


def parse_tag(name: str) -> dict[str, object] | None:
    """Parse a tag name in GTO's conventions, or None when it is not one."""
    m = _TAG_RE.match(name)
    if m is None:
        return None
    if m["deprecated"] or m["created"]:
        action = "deprecate" if m["deprecated"] else "create"
    elif m["version"]:
        action = "deregister" if m["cancel"] else "register"
    else:
        action = "unassign" if m["cancel"] else "assign"
    return {
        "artifact": m["artifact"].replace("=", ":"),
        "action": action,
        "release": m["version"],
        "stage": m["stage"],
        "counter": int(m["counter"]) if m["counter"] else None,
    }


def events(ws: Workspace, name: str | None = None) -> list[RegistryTag]:
    """Registry events (annotated tags only), oldest first; ``name`` filters one artifact."""
    found = []
    for t in gitstore.tags(ws.root):
        parsed = parse_tag(t.name)
        if parsed is None or not t.annotated or (name is not None and parsed["artifact"] != name):
            continue
        found.append(
            RegistryTag(
                tag=t.name,
                action=str(parsed["action"]),
                artifact=str(parsed["artifact"]),
                release=parsed["release"],  # type: ignore[arg-type]
                stage=parsed["stage"],  # type: ignore[arg-type]
                counter=parsed["counter"],  # type: ignore[arg-type]
                commit=t.commit,
                created=utc_iso(t.timestamp),
                author=t.tagger,
                message=t.message,
                timestamp=t.timestamp,
            )
        )
    return sorted(found, key=lambda e: (e.timestamp, e.counter or 0, e.tag))


def next_counter(ws: Workspace, name: str) -> int:
    """One more than the highest counter among all tags of artifact ``name`` (as GTO counts)."""
    counters = [0]
    for t in gitstore.tags(ws.root):
        parsed = parse_tag(t.name)
        if parsed is not None and parsed["artifact"] == name and parsed["counter"] is not None:
            counters.append(int(parsed["counter"]))  # type: ignore[call-overload]
    return max(counters) + 1


# ---- state ---------------------------------------------------------------------------


def _semver_key(release: str) -> tuple:
    m = SEMVER_RE.match(release)
    assert m is not None
    pre = m.group(4)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre is None, pre or "")


@dataclass(frozen=True)
class _Stage:
    event: RegistryTag  # the newest assignment still in effect
    key: str  # the release or commit it belongs to


def _state(evs: list[RegistryTag]) -> tuple[dict[str, list[RegistryTag]], dict[str, _Stage], dict[str, str]]:
    """(events by release, current stage assignments, active release by commit) of one artifact.

    Like GTO, registrations are indexed before assignments, so an assignment belongs to
    the release at its commit even when tagged in the same second.
    """
    by_release: dict[str, list[RegistryTag]] = {}
    release_at: dict[str, str] = {}  # commit -> the release registered there last
    for e in evs:  # oldest first
        if e.action in ("register", "deregister") and e.release:
            by_release.setdefault(e.release, []).append(e)
            if e.action == "register":
                release_at[e.commit] = e.release
    inactive = {r for r, es in by_release.items() if es[-1].action == "deregister"}
    vstages: dict[tuple[str, str], list[RegistryTag]] = {}
    for e in evs:
        if e.action in ("assign", "unassign") and e.stage:
            vstages.setdefault((release_at.get(e.commit, e.commit), e.stage), []).append(e)
    stages: dict[str, _Stage] = {}
    for (key, stage), es in vstages.items():
        if es[-1].action != "assign" or key in inactive:
            continue
        current = stages.get(stage)
        if current is None or _order(es[-1]) > _order(current.event):
            stages[stage] = _Stage(event=es[-1], key=key)
    active_at = {c: r for c, r in release_at.items() if r not in inactive}
    return by_release, stages, active_at


def _order(e: RegistryTag) -> tuple[int, int, str]:
    return (e.timestamp, e.counter or 0, e.tag)


def show(ws: Workspace, name: str | None = None) -> list[ModelRegistry]:
    """Releases and current stages of every artifact in the registry (or of ``name``).

    The mvc version at each tagged commit is read from git objects (one ``cat-file`` process).
    """
    evs = events(ws, name)
    out = []
    with gitstore.blob_reader(ws.root) as blob:
        for artifact in sorted({e.artifact for e in evs}):
            mine = [e for e in evs if e.artifact == artifact]
            if mine[-1].action == "deprecate":  # GTO hides deprecated artifacts
                continue
            path = _pointer_path(ws, artifact)
            out.append(_model_registry(artifact, mine, functools.partial(_at_path, blob, path)))
    return out


def _model_registry(artifact: str, evs: list[RegistryTag], version_at: Callable[[str], tuple[int | None, str | None]]) -> ModelRegistry:
    by_release, stages, _ = _state(evs)
    releases = []
    for release, es in by_release.items():
        reg = next((e for e in reversed(es) if e.action == "register"), es[-1])
        version, md5 = version_at(reg.commit)
        releases.append(
            Release(
                name=artifact,
                release=release,
                commit=reg.commit,
                tag=reg.tag,
                created=reg.created,
                author=reg.author,
                active=es[-1].action == "register",
                version=version,
                hash=md5,
            )
        )
    releases.sort(key=lambda r: _semver_key(r.release), reverse=True)
    entries = []
    for stage, st in sorted(stages.items()):
        version, md5 = version_at(st.event.commit)
        entries.append(
            StageEntry(
                name=artifact,
                stage=stage,
                commit=st.event.commit,
                release=st.key if st.key in by_release else None,
                tag=st.event.tag,
                created=st.event.created,
                author=st.event.author,
                version=version,
                hash=md5,
            )
        )
    latest = next((r.release for r in releases if r.active), None)
    return ModelRegistry(name=artifact, latest=latest, releases=tuple(releases), stages=tuple(entries))


def _at_path(blob: Callable[[str, str], bytes | None], path: str | None, commit: str) -> tuple[int | None, str | None]:
    return _version_at(blob, commit, path)


def _version_at(blob: Callable[[str, str], bytes | None], commit: str, path: str | None) -> tuple[int | None, str | None]:
    """(mvc version number, content hash) of the model pointer ``path`` at ``commit``; Nones when unknown."""
    data = blob(commit, path) if path else None
    if data is None or path is None:
        return None, None
    try:
        ptr = pointer.parse(data, path)
    except SchemaError:
        return None, None
    if ptr.manifest is None:
        return None, ptr.md5 or None
    return ptr.version, ptr.md5


def _pointer_path(ws: Workspace, name: str) -> str | None:
    """The pointer of the model an artifact names, or None (e.g. an artifact tagged by gto alone)."""
    try:
        return history.pointer_for(ws, name)
    except ModelNotFoundError:
        return None


def stage_commit(ws: Workspace, name: str, stage: str) -> str | None:
    """The commit stage ``stage`` of model ``name`` points to; None when ``stage`` was never used.

    Called by :func:`mvc.refs.resolve` for ``NAME@STAGE`` refs.

    Raises:
        RefNotFoundError: the stage was used, but no version holds it now (unassigned).
    """
    if not NAME_RE.match(stage):
        return None
    evs = events(ws, name)
    if not any(e.stage == stage for e in evs):
        return None
    _, stages, _ = _state(evs)
    if stage not in stages:
        raise RefNotFoundError(
            f"{name}@{stage}: no version of {name} is in stage {stage!r} now (it was unassigned)",
            hint=f"see `mvc registry {name}`, or promote one with `mvc promote {name}@vN --stage {stage}`",
        )
    return stages[stage].event.commit


# ---- writing tags --------------------------------------------------------------------


def version_commit(ws: Workspace, res: Resolved) -> str:
    """The commit that recorded the version ``res`` names (what registry tags point at).

    Raises:
        ConflictError: ``res`` is a work-tree version that is not committed.
    """
    if res.commit is None:
        committed = gitstore.read_blob(ws.root, "HEAD", res.pointer.path) if gitstore.head_commit(ws.root) else None
        if committed != (ws.root / res.pointer.path).read_bytes():
            raise ConflictError(
                f"{res.name} v{res.version} is not committed yet",
                hint="commit it first (`mvc commit -m MSG`), then register it",
            )
        rev = "HEAD"
    else:
        rev = res.commit
    commit = gitstore.last_change(ws.root, rev, res.pointer.path)
    assert commit is not None
    return commit


def register(ws: Workspace, res: Resolved, release: str, *, message: str = "") -> tuple[Resolved, str, str]:
    """Create the release tag ``NAME@vX.Y.Z`` on the commit of the version ``res`` (as :func:`mvc.refs.resolve` found it).

    Returns:
        (the version, the tag, its commit).

    Raises:
        UsageError: bad release or model name. ConflictError: the tag exists, the version
        is released already, or it is not committed.
    """
    check_release(release)
    check_name(res.name)
    commit = version_commit(ws, res)
    tag = f"{tag_name(res.name)}@{release}"
    existing = gitstore.resolve_rev(ws.root, f"refs/tags/{tag}")
    if existing is not None:
        raise ConflictError(
            f"release {tag} exists already (on commit {existing[:8]})",
            hint=f"pick a new version number; see `mvc registry {res.name}`",
        )
    _, _, active_at = _state(events(ws, res.name))
    if commit in active_at:
        raise ConflictError(
            f"{res.name} v{res.version} is released already as {res.name}@{active_at[commit]}",
            hint=f"one release per version; see `mvc registry {res.name}`",
        )
    text = message or f"Registering artifact {res.name} version {release} (mvc v{res.version}, {res.hash})"
    gitstore.create_tag(ws.root, tag, commit, text)
    return res, tag, commit


def bump(ws: Workspace, name: str) -> str:
    """The next patch release after the highest active one (``v0.0.1`` for the first), as GTO bumps."""
    by_release, _, _ = _state(events(ws, name))
    active = [r for r, es in by_release.items() if es[-1].action == "register"]
    if not active:
        return "v0.0.1"
    major, minor, patch, *_ = _semver_key(max(active, key=_semver_key))
    return f"v{major}.{minor}.{patch + 1}"


def assign(
    ws: Workspace, res: Resolved, commit: str, stage: str, *, release: str | None = None, message: str = ""
) -> tuple[str, str | None, str]:
    """Assign ``stage`` to the version ``res`` at ``commit``; register a release first when it has none.

    Like ``gto assign``, a version without a release gets one (``release``, or the next
    patch number), so ``gto show`` lists it by name.

    Returns:
        (the stage tag, the release tag created or None, the release name).

    Raises:
        UsageError: bad stage or release. ConflictError: the version holds that stage already.
    """
    check_stage(stage)
    check_name(res.name)
    evs = events(ws, res.name)
    _, stages, active_at = _state(evs)
    current = stages.get(stage)
    if current is not None and current.event.commit == commit:
        raise ConflictError(f"{res.name} v{res.version} is in stage {stage!r} already", hint=f"see `mvc registry {res.name}`")
    created_release = None
    name = active_at.get(commit)
    if name is None:
        name = release or bump(ws, res.name)
        _, created_release, _ = register(ws, res, name)
    elif release is not None and release != name:
        raise ConflictError(
            f"{res.name} v{res.version} is released already as {res.name}@{name}", hint="promote it without --release"
        )
    tag = f"{tag_name(res.name)}#{stage}#{next_counter(ws, res.name)}"
    text = message or f"Assigning stage {stage} to artifact {res.name} version {name} (mvc v{res.version}, {res.hash})"
    gitstore.create_tag(ws.root, tag, commit, text)
    return tag, created_release, name


def rename(ws: Workspace, old: str, new: str) -> tuple[str, pointer.Pointer]:
    """Rename model ``old`` to ``new`` in its work-tree pointer's manifest and stage the pointer.

    Returns:
        (the old name, the pointer as now written).

    Raises:
        ModelNotFoundError: no model ``old``. UsageError: ``new`` is not allowed, or taken.
    """
    from mvc import versioning, workspace

    ptr = workspace.find_model(ws, old)
    assert ptr.manifest is not None
    if new == ptr.manifest.name:
        raise UsageError(f"model {old!r} is called {new!r} already", hint="pick another name")
    versioning._check_name(ws, new, ptr.path)  # the rules `mvc add --name` applies
    pointer.write_manifest(ws.root, ptr.path, ptr.manifest.evolve(name=new))
    gitstore.stage(ws.root, [ptr.path])
    written = pointer.read(ws.root, ptr.path)
    assert written is not None
    return ptr.manifest.name, written


def unassign(ws: Workspace, name: str, stage: str, *, message: str = "") -> tuple[str, str]:
    """Take ``stage`` off the version holding it (tag ``NAME#STAGE!#N``); returns (tag, commit).

    Raises:
        RefNotFoundError: no version holds the stage.
    """
    check_stage(stage)
    _, stages, _ = _state(events(ws, name))
    current = stages.get(stage)
    if current is None:
        raise RefNotFoundError(f"no version of {name} is in stage {stage!r}", hint=f"see `mvc registry {name}`")
    tag = f"{tag_name(name)}#{stage}!#{next_counter(ws, name)}"
    gitstore.create_tag(ws.root, tag, current.event.commit, message or f"Unassigning stage {stage} from artifact {name}")
    return tag, current.event.commit

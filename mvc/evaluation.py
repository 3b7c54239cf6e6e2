"""Cross-version evaluation: plan the versions, run the user's evaluation on each, rank them.

Each version is materialised from the cache (or the remote) into its own temporary
directory, so the user's work tree is never touched. The evaluation is either a shell
command template (``{weights}``, ``{out}``, ``{fold}``) or a Python callable. Results are
kept under ``.mvc/evals/<eval hash>/<content hash>.json`` (tracked by git), keyed by the
evaluation's own hash; each fold's result is written there as soon as it finishes, so a
(version, fold) already evaluated the same way is not run again, even after an
interrupted or partly failed run (issue 16).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mvc import documents, dvcfetch, gitstore, history, pointer, refs, settings, stats, sync
from mvc.errors import (
    EXIT_INTEGRITY,
    EXIT_OTHER,
    IntegrityError,
    MissingObjectError,
    ModelNotFoundError,
    MvcError,
    NotFoundError,
    RefNotFoundError,
    RemoteNotFoundError,
    UsageError,
)
from mvc.executors import Executor, LocalExecutor, TaskFailedError
from mvc.files import utc_now, write_atomic
from mvc.progress import Progress
from mvc.refs import Resolved
from mvc.workspace import Workspace, find_model, models

EVALS_DIR = ".mvc/evals"
RESULT_SCHEMA = 2
"""Results files: 2 holds each finished fold (and may be partial); 1 (a finished version, its
folds' metrics and the joined per-example scores) is still read, and replaced only by --force."""
STDERR_TAIL_LINES = 12
# Metric names whose tokens say "lower is better" (the default sort direction flips).
LOWER_IS_BETTER = frozenset({"loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "wer", "cer", "latency"})
_RANGE_RE = re.compile(r"^v?(\d*)\.\.v?(\d*)$")
# DVC's repo object and its logging hooks are not thread-safe: one materialisation at a time.
_materialize_lock = threading.Lock()


class EvalFunctionNotFoundError(NotFoundError):
    """The evaluation callable (``module:function``) cannot be imported."""


class EvalFailedError(MvcError):
    """Some versions' evaluations failed (the others' results are kept and shown)."""

    exit_code = EXIT_OTHER


@dataclass(frozen=True)
class EvalSpec:
    """How versions are evaluated; its ``hash`` keys the saved results."""

    kind: str  # "cmd" | "fn"
    spec: str  # the command template, or "module:function"
    folds: int
    per_example: str | None
    hash: str


@dataclass(frozen=True)
class Target:
    """One distinct set of weights to evaluate, with every ref the user named it by."""

    labels: tuple[str, ...]
    resolved: Resolved

    @property
    def label(self) -> str:
        """The refs, comma-separated."""
        return ", ".join(self.labels)


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of the per-example scores: the best version minus another one."""

    best: str
    other: str
    key: str  # the per-example key compared
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    alpha: float
    significant: bool


@dataclass(frozen=True)
class EvalRow:
    """One version in the leaderboard (ranked when it succeeded)."""

    rank: int | None
    ref: str
    name: str
    version: int
    hash: str
    commit: str | None  # None: the work-tree version
    status: str  # "ok" | "cached" | "failed"
    metrics: dict[str, float]  # mean over folds
    std: dict[str, float]  # sample standard deviation over folds (0 for one fold)
    folds: tuple[dict[str, float], ...] = ()
    error: str | None = None
    stderr_tail: str | None = None
    duration: float | None = None  # seconds, for this run (None when cached)
    saved: str | None = None  # results file, relative to the repo root
    exit_code: int | None = None  # failed: the exit code its cause maps to (6: weights missing or corrupt)
    cached_folds: int = 0  # folds read from the saved results instead of run


@dataclass
class _Fold:
    """One finished fold: its metrics, per-example scores and run time."""

    metrics: dict[str, float]
    scores: list[float] | None
    duration: float = 0.0


@dataclass
class _Outcome:
    """A target's evaluation before ranking (per-example scores kept out of the rows)."""

    target: Target
    status: str
    folds: list[dict[str, float]] = field(default_factory=list)
    per_example: list[float] | None = None
    error: str | None = None
    stderr_tail: str | None = None
    duration: float | None = None
    saved: str | None = None
    exit_code: int | None = None
    cached_folds: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass(frozen=True)
class Leaderboard:
    """Ranked rows, the paired comparisons, and the sort actually used."""

    rows: tuple[EvalRow, ...]
    comparisons: tuple[Comparison, ...]
    sort: str | None
    descending: bool
    notes: tuple[str, ...]


class _RunFailed(Exception):
    """One evaluation run failed; carries the reason and the tail of its stderr."""

    def __init__(self, reason: str, stderr_tail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr_tail = stderr_tail


# ---- the evaluation spec ---------------------------------------------------------------


def make_spec(
    root: Path,
    *,
    cmd: str | None,
    fn: str | Callable[..., Any] | None,
    folds: int = 1,
    per_example: str | None = None,
) -> tuple[EvalSpec, _Evaluator]:
    """Check the evaluation the user gave and build its runner.

    Args:
        root: the repository root (commands run there; ``fn`` modules import from there).
        cmd: a shell command template holding ``{weights}`` (and ``{out}``, ``{fold}``).
        fn: ``"module:function"`` or a callable taking the weights path (and ``fold=``).
        folds: runs per version, ``{fold}`` / ``fold=`` = 0 .. folds-1.
        per_example: key of a per-example score list in the evaluation's output.

    Raises:
        UsageError: neither or both of ``cmd``/``fn``, no ``{weights}``, ``folds`` < 1,
            more than one fold but no ``{fold}`` / ``fold`` parameter.
        EvalFunctionNotFoundError: ``fn`` cannot be imported.
    """
    if (cmd is None) == (fn is None):
        raise UsageError(
            "give the evaluation either as a command or as a Python function",
            hint='use --cmd "python eval.py --weights {weights} --out {out}" or --fn pkg.module:evaluate',
        )
    if folds < 1:
        raise UsageError(f"--folds must be at least 1 (got {folds})", hint="use --folds 5 for 5-fold evaluation")
    evaluator: _Evaluator
    if cmd is not None:
        if "{weights}" not in cmd:
            raise UsageError(
                f"the evaluation command has no {{weights}} placeholder: {cmd!r}",
                hint='write where the weights go, e.g. --cmd "python eval.py --weights {weights} --out {out}"',
            )
        if folds > 1 and "{fold}" not in cmd:
            raise UsageError(
                f"--folds {folds} needs a {{fold}} placeholder in the command (every fold would run the same)",
                hint='e.g. --cmd "python eval.py --weights {weights} --fold {fold}"',
            )
        kind, text = "cmd", cmd
        evaluator = _CommandEvaluator(root, cmd)
    else:
        assert fn is not None
        func, text = (load_function(root, fn), fn) if isinstance(fn, str) else (fn, _callable_name(fn))
        takes_fold = _accepts_fold(func)
        if folds > 1 and not takes_fold:
            raise UsageError(
                f"--folds {folds} needs {text} to take a fold parameter",
                hint="define it as def evaluate(weights, fold=0) -> dict",
            )
        kind = "fn"
        evaluator = _FunctionEvaluator(func, takes_fold, root=root, spec=fn if isinstance(fn, str) else None)
    canonical = json.dumps({"kind": kind, "spec": text, "folds": folds, "per_example": per_example}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return EvalSpec(kind=kind, spec=text, folds=folds, per_example=per_example, hash=digest), evaluator


def load_function(root: Path, spec: str) -> Callable[..., Any]:
    """Import ``module:function`` with the repository root first on ``sys.path``.

    Raises:
        UsageError: ``spec`` is not ``module:function``, the module fails while
            importing, or the attribute is not callable.
        EvalFunctionNotFoundError: no such module or attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--fn {spec!r} is not module:function", hint="write it as pkg.module:evaluate")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # kept: the function may import lazily from the repo
    _forget_foreign(root, module_name)
    importlib.invalidate_caches()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise EvalFunctionNotFoundError(
                f"cannot import the evaluation function {spec!r}: no module named {exc.name!r}",
                hint=f"the module path is relative to the repository root {root}",
            ) from exc
        raise UsageError(f"importing {module_name!r} for --fn failed: {exc}", hint="install what it needs") from exc
    except Exception as exc:
        raise UsageError(
            f"importing {module_name!r} for --fn failed: {type(exc).__name__}: {exc}", hint="fix the module and run again"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvalFunctionNotFoundError(
                f"cannot import the evaluation function {spec!r}: {module_name!r} has no {attr!r}",
                hint="check the function name after the colon",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"--fn {spec!r} is not callable", hint="point it at a function: pkg.module:evaluate")
    return obj


def _forget_foreign(root: Path, module_name: str) -> None:
    """Drop a cached module of that name loaded from outside ``root`` when ``root`` has one."""
    loaded = sys.modules.get(module_name)
    rel = Path(*module_name.split("."))
    local = (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()
    origin = getattr(loaded, "__file__", None)
    if loaded is None or not local or origin is None or Path(origin).resolve().is_relative_to(root):
        return
    top = module_name.split(".")[0]
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _callable_name(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"


def _accepts_fold(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "fold" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# ---- runners -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PortableEvaluator:
    """What a cluster worker needs to rebuild the evaluation: small and picklable.

    ``root`` is the driver's repository root: a command runs there (and ``module:function``
    imports from there) when the worker has that directory, as on a shared filesystem;
    otherwise in the task's temp dir, from what is installed on the worker.
    """

    kind: str  # "cmd" | "fn"
    root: str
    text: str | None  # the command template, or "module:function"
    func: Callable[..., Any] | None = None  # a callable given to the Python API (pickled)
    takes_fold: bool = False

    def build(self) -> _Evaluator:
        root = Path(self.root)
        here = root.is_dir()
        if self.kind == "cmd":
            assert self.text is not None
            return _CommandEvaluator(root if here else None, self.text)
        func = self.func
        if func is None:
            assert self.text is not None
            func = load_function(root, self.text) if here else load_function(Path.cwd(), self.text)
        return _FunctionEvaluator(func, self.takes_fold, root=root, spec=self.text)


class _Evaluator:
    """Runs the evaluation once on weights at a path and returns its raw output dict."""

    cancelled = False

    def portable(self) -> PortableEvaluator:
        """The evaluation as a worker on another machine rebuilds it."""
        raise NotImplementedError

    def run(self, weights: Path, fold: int, workdir: Path, timeout: float | None) -> Mapping[str, Any]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop whatever still runs and start nothing new (on Ctrl-C)."""
        self.cancelled = True

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise _RunFailed("cancelled")


class _CommandEvaluator(_Evaluator):
    def __init__(self, root: Path | None, template: str) -> None:
        self.root = root
        self.template = template
        self._live: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def command(self, weights: Path, out: Path, fold: int) -> str:
        """The template with its placeholders filled in (paths shell-quoted)."""
        return (
            self.template.replace("{weights}", shlex.quote(str(weights)))
            .replace("{out}", shlex.quote(str(out)))
            .replace("{fold}", str(fold))
        )

    def run(self, weights: Path, fold: int, workdir: Path, timeout: float | None) -> Mapping[str, Any]:
        self.check_cancelled()
        out = workdir / f"metrics-fold{fold}.json"
        # A session of its own, so a timeout kills the whole process group (shell and children).
        proc = subprocess.Popen(
            _supervised(self.command(weights, out, fold)),
            shell=True,  # noqa: S602 - the user's own command, run as they typed it
            cwd=self.root or workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call, async-signal-safe
        )
        with self._lock:
            self._live.add(proc)
            if self.cancelled:  # cancelled while it was starting
                _kill_group(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            raise _RunFailed(f"timed out after {timeout:g} s", _tail(stderr)) from None
        except BaseException:  # Ctrl-C, or a Ray task cancelled (KeyboardInterrupt in the worker)
            _kill_group(proc)
            _reap(proc)
            raise
        finally:
            with self._lock:
                self._live.discard(proc)
        if proc.returncode != 0:
            raise _RunFailed(f"the command exited with code {proc.returncode}", _tail(stderr))
        if "{out}" in self.template and out.is_file() and out.stat().st_size:
            try:
                data = documents.load_json(out.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise _RunFailed(f"the command wrote invalid JSON to {{out}}: {exc}", _tail(stderr)) from None
            if not isinstance(data, dict):
                raise _RunFailed("the command wrote JSON to {out} that is not an object of metrics", _tail(stderr))
            return data
        where = "stdout was empty and nothing was written to {out}" if "{out}" in self.template else "stdout was empty"
        return _last_json_line(stdout, stderr, where)

    def portable(self) -> PortableEvaluator:
        return PortableEvaluator("cmd", str(self.root), self.template)

    def cancel(self) -> None:
        super().cancel()
        with self._lock:
            for proc in list(self._live):
                _kill_group(proc)


def _reap(proc: subprocess.Popen[str]) -> None:
    """Wait for a killed command, so no zombie outlives it in a long-lived Ray worker."""
    try:
        proc.wait(timeout=10)
    except BaseException:  # noqa: BLE001, S110 - a second Ctrl-C: leave it to the kernel
        pass


def _die_with_parent() -> None:
    """In the child (the shell): get SIGTERM when the process that started it dies (Linux only).

    A Ray worker killed outright (its driver gone, out of memory) cannot kill its
    command's process group; the kernel signals the shell, whose trap does it (:func:`_supervised`).
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _supervised(command: str) -> str:
    """The user's command under a shell that kills its whole process group on SIGTERM.

    The parent-death signal reaches only the shell, not what the shell started (a Python
    eval script would be orphaned and run on). A shell waiting for a foreground command
    runs its trap only once that command ends, so the command runs in the background and
    the shell waits for it (``wait`` is interrupted by the trap); ``wait`` returns the
    command's exit status. Braces keep a command list (``a && b; c``) one job.
    """
    if _PRCTL is None:  # no parent-death signal to trap (and maybe no POSIX shell): as typed
        return command
    return f"trap 'kill -KILL 0' TERM\n{{ {command}\n}} &\nwait $!"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return getattr(libc, "prctl", None)


_PR_SET_PDEATHSIG = 1
_PRCTL = _load_prctl()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _last_json_line(stdout: str, stderr: str, empty: str) -> Mapping[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise _RunFailed(f"the evaluation printed no JSON metrics ({empty})", _tail(stderr))
    try:
        data = documents.load_json(lines[-1])
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _RunFailed(
            f"the evaluation printed no JSON metrics: its last stdout line is not a JSON object ({lines[-1][:80]!r})",
            _tail(stderr),
        )
    return data


class _FunctionEvaluator(_Evaluator):
    def __init__(self, func: Callable[..., Any], takes_fold: bool, *, root: Path, spec: str | None = None) -> None:
        self.func = func
        self.takes_fold = takes_fold
        self.root = root
        self.spec = spec  # "module:function" when given as text: workers import it themselves

    def portable(self) -> PortableEvaluator:
        func = None if self.spec is not None else self.func
        return PortableEvaluator("fn", str(self.root), self.spec, func=func, takes_fold=self.takes_fold)

    def run(self, weights: Path, fold: int, workdir: Path, timeout: float | None) -> Mapping[str, Any]:
        self.check_cancelled()
        kwargs = {"fold": fold} if self.takes_fold else {}
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = self.func(str(weights), **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported as this version's failure
                box["error"] = exc
                box["trace"] = traceback.format_exc()

        if timeout is None:
            call()
        else:
            # A Python call cannot be interrupted: on timeout the version is reported as
            # failed and the (daemon) thread is left to finish on its own.
            worker = threading.Thread(target=call, daemon=True, name="mvc-eval-fn")
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                raise _RunFailed(f"timed out after {timeout:g} s")
        if "error" in box:
            exc = box["error"]
            raise _RunFailed(f"the function raised {type(exc).__name__}: {exc}", _tail(box["trace"]))
        value = box.get("value")
        if not isinstance(value, Mapping):
            raise _RunFailed(f"the function returned {type(value).__name__}, not a dict of metrics")
        return value


def _tail(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    return "\n".join(text.rstrip().splitlines()[-STDERR_TAIL_LINES:])


# ---- which versions ----------------------------------------------------------------------


def plan(
    ws: Workspace,
    refs_: list[str],
    *,
    model: str | None = None,
    all_experiments: bool = False,
    versions: str | None = None,
) -> tuple[list[Target], list[str]]:
    """The distinct versions to evaluate, and notes about ones skipped.

    Args:
        refs_: ``NAME@REF`` refs; with ``model``, a bare ``REF`` or ``@REF`` means ``model@REF``.
        model: the model for ``all_experiments`` / ``versions`` (default: the first ref's
            name, or the only model in the work tree).
        all_experiments: add the latest version on every ``exp/*`` branch.
        versions: add ``vA..vB`` (inclusive; either end may be left open).

    Returns:
        Targets in the order given (refs, then the range, then experiments), one per
        content hash (several refs to the same weights are evaluated once).

    Raises:
        UsageError: nothing to evaluate, a malformed range, no model to apply it to.
        RefNotFoundError / ModelNotFoundError / AmbiguousRefError: from the resolver.
    """
    notes: list[str] = []
    qualified = [_qualify(r, model) for r in refs_]
    resolved = refs.resolve_all(ws, qualified)
    if versions is not None or all_experiments:
        name = model or (refs.split(qualified[0])[0] if qualified else _only_model(ws))
        if versions is not None:
            resolved += _version_range(ws, name, versions, notes)
        if all_experiments:
            resolved += _experiments(ws, name, notes)
    if not resolved:
        raise UsageError(
            "no versions to evaluate",
            hint="name them: mvc eval NAME@v1 NAME@v2, --versions v1..v5 or --all-experiments",
        )
    by_hash: dict[str, Target] = {}
    for res in resolved:
        known = by_hash.get(res.hash)
        if known is None:
            by_hash[res.hash] = Target(labels=(res.ref,), resolved=res)
        elif res.ref not in known.labels:
            by_hash[res.hash] = Target(labels=(*known.labels, res.ref), resolved=known.resolved)
    return list(by_hash.values()), notes


def _qualify(ref: str, model: str | None) -> str:
    if model is None:
        return ref
    if ref.startswith("@"):
        return model + ref
    if "@" not in ref and ref != model:
        return f"{model}@{ref}"
    return ref


def _only_model(ws: Workspace) -> str:
    names = [p.manifest.name for p in models(ws) if p.manifest]
    if len(names) != 1:
        raise UsageError(
            "--versions and --all-experiments need to know the model",
            hint="pass --model NAME" + (f" (models: {', '.join(names)})" if names else ""),
        )
    return names[0]


def _version_range(ws: Workspace, name: str, text: str, notes: list[str]) -> list[Resolved]:
    match = _RANGE_RE.match(text.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise UsageError(f"--versions {text!r} is not a range", hint="write it as v3..v7 (or v3.. / ..v7)")
    start = int(match.group(1) or 1)
    if match.group(2):
        end = int(match.group(2))
    else:
        here = [r.version for r in history.versions(ws, name)]
        if not here:
            raise RefNotFoundError(f"{name!r} has no committed version on this branch", hint="commit one with `mvc commit`")
        end = max(here)
    if start > end:
        raise UsageError(f"--versions {text!r} runs backwards", hint=f"write v{end}..v{start}")
    known = {r.version for r in history.versions(ws, name, all_branches=True)}
    wanted = [n for n in range(start, end + 1) if n in known]
    notes += [f"{name} has no v{n}: skipped" for n in range(start, end + 1) if n not in known]
    if not wanted:
        raise RefNotFoundError(f"{name!r} has no version in {text}", hint=f"list its versions with `mvc log {name} --all-branches`")
    return refs.resolve_all(ws, [f"{name}@v{n}" for n in wanted])


def _experiments(ws: Workspace, name: str, notes: list[str]) -> list[Resolved]:
    branches = [b for b, _ in gitstore.branches(ws.root, pattern="exp/") if b.startswith("exp/")]
    if not branches:
        raise RefNotFoundError("there are no experiment branches (exp/*)", hint="start one with `mvc exp new NAME`")
    found: list[Resolved] = []
    for branch in branches:
        try:
            found.append(refs.resolve(ws, f"{name}@{branch}"))
        except (RefNotFoundError, ModelNotFoundError):
            notes.append(f"{branch} has no version of {name}: skipped")
    if not found:
        raise RefNotFoundError(f"no experiment branch holds a version of {name!r}", hint="see `mvc log --all-branches`")
    return found


# ---- running and caching -----------------------------------------------------------------


def run(
    ws: Workspace,
    targets: list[Target],
    spec: EvalSpec,
    evaluator: _Evaluator,
    *,
    jobs: int = 1,
    timeout: float | None = None,
    force: bool = False,
    remote: str | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> tuple[list[_Outcome], list[str]]:
    """Evaluate every (target, fold) not saved yet (all of them with ``force``); save and stage.

    Each fold's result is saved as soon as it finishes, so after an interrupted or partly
    failed run a re-run runs only the folds still missing. A fold that fails (weights
    nowhere, non-zero exit, no JSON, timeout, worker lost) fails its version; the other
    folds and versions still run. With a cluster ``executor`` (Ray) each (version, fold) is
    one task that fetches the weights from the remote itself; otherwise versions run
    ``jobs`` at a time on this machine.

    Returns:
        One outcome per target, in order, and the paths written (relative to the root).

    Raises:
        RemoteNotFoundError: a cluster executor but no remote to fetch weights from.
    """
    store = _Store(ws, spec)
    outcomes: list[_Outcome | None] = []
    for target in targets:
        folds: list[_Fold | None] = [None] * spec.folds if force else store.load(target)
        store.track(target, folds)
        done = all(f is not None for f in folds)
        outcome = _outcome(target, spec, folds, {}, status="cached", saved=store.saved(target), cached=spec.folds)
        outcomes.append(outcome if done else None)
    todo = [i for i, o in enumerate(outcomes) if o is None]
    try:
        if todo and executor is not None and executor.kind != "local":
            ran = _run_on_cluster(ws, [targets[i] for i in todo], spec, evaluator, executor, store,
                                  timeout=timeout, remote=remote, progress=progress)  # fmt: skip
            for i, outcome in ran.items():
                outcomes[todo[i]] = outcome
        elif todo:
            _run_here(ws, [targets[i] for i in todo], spec, evaluator, store, outcomes, todo,
                      jobs=jobs, timeout=timeout, remote=remote, progress=progress, executor=executor)  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):  # keep what finished: a re-run reuses it
            store.stage()
        raise
    return [o for o in outcomes if o is not None], store.stage()


def _run_here(
    ws: Workspace,
    targets: list[Target],
    spec: EvalSpec,
    evaluator: _Evaluator,
    store: _Store,
    outcomes: list[_Outcome | None],
    slots: list[int],
    *,
    jobs: int,
    timeout: float | None,
    remote: str | None,
    progress: Progress | None,
    executor: Executor | None,
) -> None:
    """Evaluate ``targets`` on this machine, ``jobs`` versions at a time, into ``outcomes[slots]``."""
    for target in targets:
        if progress is not None:
            progress(target.label, 0, len(store.missing(target)))
    own = not isinstance(executor, LocalExecutor)
    local = LocalExecutor(min(jobs, len(targets))) if own or executor is None else executor
    try:
        run_one = partial(_evaluate_one, ws, spec=spec, evaluator=evaluator, store=store, timeout=timeout,
                          remote=remote, progress=progress)  # fmt: skip
        futures = {local.submit(partial(run_one, target)): slot for target, slot in zip(targets, slots, strict=True)}
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
    except BaseException:
        evaluator.cancel()
        local.cancel()
        raise
    finally:
        if own:
            local.close()


def _weights_failure_code(exc: MvcError) -> int:
    """Weights that cannot be had intact (missing or corrupt) fail a version's evaluation as integrity (6)."""
    return EXIT_INTEGRITY if isinstance(exc, MissingObjectError | IntegrityError) else exc.exit_code


def _evaluate_one(
    ws: Workspace,
    target: Target,
    *,
    spec: EvalSpec,
    evaluator: _Evaluator,
    store: _Store,
    timeout: float | None,
    remote: str | None,
    progress: Progress | None,
) -> _Outcome:
    """Run the folds of ``target`` not saved yet, saving each as it finishes."""
    res = target.resolved
    began = time.monotonic()
    missing = store.missing(target)
    steps_left = len(missing)  # one per fold run

    def step(n: int = 1) -> None:
        nonlocal steps_left
        steps_left -= n
        if progress is not None and n:
            progress(target.label, n, None)

    failures: dict[int, dict[str, Any]] = {}

    def finish() -> _Outcome:
        step(steps_left)
        return _outcome(target, spec, store.folds(target), failures, status="ok", saved=store.saved(target),
                        cached=spec.folds - len(missing), duration=time.monotonic() - began)  # fmt: skip

    if evaluator.cancelled:
        failures[missing[0]] = {"reason": "cancelled"}
        return finish()
    with tempfile.TemporaryDirectory(prefix="mvc-eval-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        try:
            with _materialize_lock:
                weights = sync.materialize(
                    ws, res.pointer, res.commit, workdir / "weights" / Path(res.pointer.out).name, remote=remote
                )
        except MvcError as exc:
            failures.update({k: {"reason": exc.message, "exit_code": _weights_failure_code(exc), "weights": True}
                             for k in missing})  # fmt: skip
            return finish()
        for fold in missing:
            if evaluator.cancelled:
                failures[fold] = {"reason": "cancelled"}
                break
            began_fold = time.monotonic()
            try:
                raw = evaluator.run(weights, fold, workdir, timeout)
                metrics, scores = _split_output(raw, spec.per_example)
            except _RunFailed as exc:
                failures[fold] = {"reason": exc.reason, "tail": exc.stderr_tail}
            else:  # saved at once: an interrupted run keeps it
                store.put(target, fold, _Fold(metrics, scores, time.monotonic() - began_fold))
            step()
    return finish()


def _outcome(
    target: Target,
    spec: EvalSpec,
    folds: list[_Fold | None],
    failures: Mapping[int, Mapping[str, Any]],
    *,
    status: str,
    saved: str | None,
    cached: int,
    duration: float | None = None,
) -> _Outcome:
    """A target's outcome from its folds (saved and new) and the folds that failed.

    The first failed (or never run) fold names the failure; ``status`` is that of a success
    ("ok" for a run, "cached" when every fold was read from the saved results); ``cached``
    counts the folds read from there.
    """
    missing = [k for k, f in enumerate(folds) if f is None]
    if missing:
        failed = [k for k in missing if k in failures]
        first = failures.get(failed[0]) if failed else None
        reason = "not run" if first is None else str(first["reason"])
        if spec.folds > 1 and not (first or {}).get("weights"):
            reason += f" (fold {failed[0]})" if len(failed) == 1 else f" (folds {', '.join(map(str, failed or missing))})"
        return _Outcome(
            target, "failed", error=reason, stderr_tail=None if first is None else first.get("tail"), duration=duration,
            saved=saved, exit_code=None if first is None else first.get("exit_code"), cached_folds=cached,
        )  # fmt: skip
    done = [f for f in folds if f is not None]
    examples: list[float] | None = [] if spec.per_example else None
    for f in done:
        if examples is not None:
            examples = None if f.scores is None else examples + list(f.scores)
    return _Outcome(target, status, folds=[dict(f.metrics) for f in done], per_example=examples,
                    duration=duration, saved=saved, cached_folds=cached)  # fmt: skip


# ---- on a cluster: one task per (version, fold) (issue 16) --------------------------------


@dataclass(frozen=True)
class FoldTask:
    """One (version, fold) evaluation as shipped to a cluster worker.

    It holds the content hash, never the weights: the worker fetches them from the
    remote itself. ``access`` carries the remote's settings; its repr hides them.
    """

    md5: str
    filename: str  # the weights' file (or folder) name, as the evaluation sees it
    fold: int
    evaluator: PortableEvaluator
    per_example: str | None
    timeout: float | None
    access: dvcfetch.RemoteAccess


def worker_cache_dir() -> Path:
    """Where a worker machine keeps verified objects between tasks (``MVC_WORKER_CACHE``)."""
    configured = os.environ.get("MVC_WORKER_CACHE")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"mvc-worker-cache-{os.getuid()}"


def run_fold(task: FoldTask) -> dict[str, Any]:
    """Run one fold of one version on a worker: fetch and verify the weights, evaluate.

    Runs in a Ray worker (or any process). Failures are returned, not raised, so the
    cluster does not retry an evaluation that failed on its own; only a lost worker is
    retried.

    Returns:
        ``{"ok": True, "metrics", "scores", "duration"}`` or
        ``{"ok": False, "reason", "tail", "exit_code", "weights", "duration"}``.
    """
    began = time.monotonic()

    def failed(reason: str, tail: str | None = None, code: int | None = None, weights: bool = False) -> dict[str, Any]:
        return {"ok": False, "reason": reason, "tail": tail, "exit_code": code, "weights": weights,
                "duration": time.monotonic() - began}  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="mvc-task-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        try:
            weights = dvcfetch.fetch_object(
                task.access, task.md5, workdir / "weights" / task.filename, cache_dir=worker_cache_dir()
            )
        except MvcError as exc:  # the same for every fold: reported once, without a fold number
            return failed(exc.message, code=_weights_failure_code(exc), weights=True)
        try:
            evaluator = task.evaluator.build()
        except MvcError as exc:
            return failed(exc.message, code=exc.exit_code)
        try:
            raw = evaluator.run(weights, task.fold, workdir, task.timeout)
            metrics, scores = _split_output(raw, task.per_example)
        except _RunFailed as exc:
            return failed(exc.reason, exc.stderr_tail)
    return {"ok": True, "metrics": metrics, "scores": scores, "duration": time.monotonic() - began}


def _run_on_cluster(
    ws: Workspace,
    targets: list[Target],
    spec: EvalSpec,
    evaluator: _Evaluator,
    executor: Executor,
    store: _Store,
    *,
    timeout: float | None,
    remote: str | None,
    progress: Progress | None,
) -> dict[int, _Outcome]:
    """Submit one task per (target, fold) not saved yet; save each fold as it returns.

    Returns:
        One outcome per target index.
    """
    try:
        rname = sync.remote_name(ws, remote)
    except RemoteNotFoundError as exc:
        if remote is not None:
            raise
        raise RemoteNotFoundError(
            f"--executor {executor.kind} needs a remote: its workers fetch the weights from there",
            hint="add one and push the versions: `mvc remote add NAME URL --default`, then `mvc push`",
        ) from exc
    access = dvcfetch.remote_access(ws.root, rname)
    portable = evaluator.portable()
    missing = {i: store.missing(target) for i, target in enumerate(targets)}
    where = executor.describe()
    if progress is not None:
        progress(where, 0, sum(len(m) for m in missing.values()))
    began = time.monotonic()
    futures: dict[Future[Any], tuple[int, int]] = {}
    failures: dict[int, dict[int, dict[str, Any]]] = {i: {} for i in missing}
    left = {i: len(m) for i, m in missing.items()}
    ended: dict[int, float] = {}
    try:
        for i, target in enumerate(targets):
            res = target.resolved
            for fold in missing[i]:
                task = FoldTask(res.hash, Path(res.pointer.out).name, fold, portable, spec.per_example, timeout, access)
                futures[executor.submit(run_fold, task)] = (i, fold)
        for future in as_completed(futures):
            i, fold = futures[future]
            try:
                r = future.result()
            except TaskFailedError as exc:
                r = {"ok": False, "reason": exc.message}
            if r["ok"]:  # saved at once: an interrupted run keeps it
                store.put(targets[i], fold, _Fold(dict(r["metrics"]), r["scores"], float(r.get("duration") or 0.0)))
            else:
                failures[i][fold] = r
            left[i] -= 1
            if not left[i]:
                ended[i] = time.monotonic()
            if progress is not None:
                progress(where, 1, None)
    except BaseException:
        executor.cancel()
        raise
    return {
        i: _outcome(target, spec, store.folds(target), failures[i], status="ok", saved=store.saved(target),
                    cached=spec.folds - len(missing[i]), duration=ended.get(i, time.monotonic()) - began)
        for i, target in enumerate(targets)
    }  # fmt: skip


def _split_output(raw: Mapping[str, Any], per_example: str | None) -> tuple[dict[str, float], list[float] | None]:
    """Numeric metrics, and the per-example scores under ``per_example`` (None when absent)."""
    metrics = {str(k): v for k, v in ((k, _number(v)) for k, v in raw.items() if k != per_example) if v is not None}
    scores: list[float] | None = None
    if per_example is not None and per_example in raw:
        value = raw[per_example]
        if hasattr(value, "tolist"):  # numpy arrays from a --fn callable
            value = value.tolist()
        try:
            scores = [float(x) for x in value]
        except (TypeError, ValueError):
            raise _RunFailed(f"{per_example!r} in the evaluation's output is not a list of numbers") from None
    if not metrics and scores is None:
        raise _RunFailed("the evaluation returned no numeric metrics")
    return metrics, scores


def _number(value: Any) -> float | None:
    """A finite metric value as float (numpy scalars included), else None (not a metric)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _Store:
    """The saved results of one evaluation: ``<eval hash>/<content hash>.json`` per version.

    A version's file holds each of its finished folds and is rewritten (atomically) as each
    fold finishes, so an interrupted or partly failed run leaves every finished fold saved.
    Thread-safe: local runs save from several threads.
    """

    def __init__(self, ws: Workspace, spec: EvalSpec) -> None:
        self.ws = ws
        self.spec = spec
        self.folder = ws.root / EVALS_DIR / spec.hash
        self._folds: dict[str, list[_Fold | None]] = {}
        self._labels: dict[str, tuple[str, ...]] = {}
        self._written: dict[str, None] = {}  # paths relative to the root, in order, once each
        self._lock = threading.Lock()

    def path(self, target: Target) -> Path:
        return self.folder / f"{target.resolved.hash}.json"

    def load(self, target: Target) -> list[_Fold | None]:
        """The folds saved for ``target`` under this evaluation (None: not saved or unreadable)."""
        empty: list[_Fold | None] = [None] * self.spec.folds
        try:
            data = documents.load_json(self.path(target).read_text())
            if data["eval"]["hash"] != self.spec.hash or data["hash"] != target.resolved.hash:
                return empty
            if data.get("schema") == 1:
                return _schema1_folds(data, self.spec)
            if data.get("schema") != RESULT_SCHEMA or len(data["folds"]) != self.spec.folds:
                return empty
            return [None if f is None else _read_fold(f) for f in data["folds"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return empty

    def track(self, target: Target, folds: list[_Fold | None]) -> None:
        """Start from ``folds`` for ``target`` (what was loaded, or nothing with --force)."""
        with self._lock:
            self._folds[target.resolved.hash] = list(folds)
            self._labels[target.resolved.hash] = target.labels

    def folds(self, target: Target) -> list[_Fold | None]:
        with self._lock:
            return list(self._folds[target.resolved.hash])

    def missing(self, target: Target) -> list[int]:
        """The folds of ``target`` still to run."""
        return [k for k, f in enumerate(self.folds(target)) if f is None]

    def saved(self, target: Target) -> str | None:
        """The results file of ``target`` relative to the root, when it exists."""
        path = self.path(target)
        return path.relative_to(self.ws.root).as_posix() if path.is_file() else None

    def put(self, target: Target, fold: int, result: _Fold) -> None:
        """Record one finished fold and rewrite the version's file."""
        res = target.resolved
        with self._lock:
            folds = self._folds[res.hash]
            folds[fold] = result
            spec_file = self.folder / "eval.json"
            if not spec_file.is_file():
                self._write(spec_file, _spec_dict(self.spec))
            done = [f for f in folds if f is not None]
            means, stds = summarize([f.metrics for f in done])
            self._write(self.path(target), {
                "schema": RESULT_SCHEMA,
                "eval": _spec_dict(self.spec),
                "model": res.name,
                "version": res.version,
                "hash": res.hash,
                "refs": list(self._labels[res.hash]),
                "commit": res.commit,
                "updated": utc_now(),
                "complete": len(done) == len(folds),
                "metrics": means,  # over the folds finished so far
                "std": stds,
                "folds": [None if f is None else {"metrics": f.metrics, "per_example": f.scores,
                                                  "duration_s": round(f.duration, 3)} for f in folds],
            })  # fmt: skip

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
        self._written[path.relative_to(self.ws.root).as_posix()] = None

    def stage(self) -> list[str]:
        """Stage every file written so far; return them."""
        with self._lock:
            written = list(self._written)
        if written:
            gitstore.stage(self.ws.root, written)
        return written


def _read_fold(data: Mapping[str, Any]) -> _Fold:
    scores = data.get("per_example")
    return _Fold(
        {str(k): float(v) for k, v in data["metrics"].items()},
        None if scores is None else [float(x) for x in scores],
        float(data.get("duration_s") or 0.0),
    )


def _schema1_folds(data: Mapping[str, Any], spec: EvalSpec) -> list[_Fold | None]:
    """A schema-1 file (one finished version): its folds, the joined per-example scores on the first."""
    metrics = [{str(k): float(v) for k, v in f.items()} for f in data["folds"]]
    if len(metrics) != spec.folds:
        return [None] * spec.folds
    joined = data.get("per_example")
    scores = None if joined is None else [float(x) for x in joined]
    return [_Fold(m, scores if k == 0 else (None if scores is None else [])) for k, m in enumerate(metrics)]


def _spec_dict(spec: EvalSpec) -> dict[str, Any]:
    return {"kind": spec.kind, "spec": spec.spec, "folds": spec.folds, "per_example": spec.per_example, "hash": spec.hash}


def summarize(folds: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample std of each metric over the folds that report it."""
    names = list(dict.fromkeys(k for f in folds for k in f))
    means: dict[str, float] = {}
    stds: dict[str, float] = {}
    for name in names:
        means[name], stds[name] = stats.mean_std([f[name] for f in folds if name in f])
    return means, stds


# ---- ranking -----------------------------------------------------------------------------


def parse_sort(sort: str | None) -> tuple[str | None, bool | None]:
    """``"acc"`` -> (acc, None: direction by name), ``"loss:asc"`` -> (loss, False).

    Raises:
        UsageError: empty metric or a direction other than asc/desc.
    """
    if sort is None:
        return None, None
    metric, sep, direction = sort.rpartition(":") if ":" in sort else (sort, "", "")
    if not metric or (sep and direction not in ("asc", "desc")):
        raise UsageError(f"--sort {sort!r} is not METRIC[:asc|desc]", hint="e.g. --sort accuracy or --sort loss:asc")
    return metric, (None if not sep else direction == "desc")


def lower_is_better(metric: str) -> bool:
    """True for metric names such as ``val_loss`` or ``error_rate``."""
    return any(token in LOWER_IS_BETTER for token in re.split(r"[^a-z]+", metric.lower()))


def rank(
    ws: Workspace,
    outcomes: list[_Outcome],
    *,
    sort: str | None,
    per_example: str | None,
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = 0,
) -> Leaderboard:
    """Sort the successful versions, compare the best with each other one, append failures."""
    notes: list[str] = []
    ok = [o for o in outcomes if o.ok]
    summaries = {id(o): summarize(o.folds) for o in ok}
    metric, descending = _choose_sort(ws, sort, [summaries[id(o)][0] for o in ok], notes)

    def key(o: _Outcome) -> tuple[bool, float]:
        value = summaries[id(o)][0].get(metric) if metric else None
        if value is None:
            return True, 0.0
        return False, -value if descending else value

    ranked = sorted(ok, key=key)
    comparisons = _compare(ranked, per_example, alpha, seed, notes)
    rows = [_row(o, i + 1, *summaries[id(o)]) for i, o in enumerate(ranked)]
    rows += [_row(o, None, {}, {}) for o in outcomes if not o.ok]
    return Leaderboard(rows=tuple(rows), comparisons=tuple(comparisons), sort=metric, descending=descending, notes=tuple(notes))


def _choose_sort(ws: Workspace, sort: str | None, means: list[dict[str, float]], notes: list[str]) -> tuple[str | None, bool]:
    metric, direction = parse_sort(sort)
    available = list(dict.fromkeys(k for m in means for k in m))
    if metric is not None and metric not in available and available:
        notes.append(f"no version reports {metric!r} (metrics: {', '.join(available)}): sorted by {available[0]!r}")
        metric, direction = None, None
    if metric is None:
        preferred = [k for k in settings.load(ws.root).key_metrics if k in available]
        metric = next(iter(preferred or available), None)
    if metric is None:
        return None, True
    return metric, (not lower_is_better(metric)) if direction is None else direction


def _compare(ranked: list[_Outcome], per_example: str | None, alpha: float, seed: int, notes: list[str]) -> list[Comparison]:
    if per_example is None or len(ranked) < 2:
        return []
    best = ranked[0]
    if best.per_example is None:
        notes.append(f"the best version ({best.target.label}) gave no {per_example!r} list: no paired comparisons")
        return []
    out = []
    for other in ranked[1:]:
        if other.per_example is None:
            notes.append(f"{other.target.label} gave no {per_example!r} list: not compared")
            continue
        try:
            test = stats.paired_bootstrap(best.per_example, other.per_example, alpha=alpha, seed=seed)
        except ValueError as exc:
            notes.append(f"{best.target.label} vs {other.target.label}: not compared ({exc})")
            continue
        out.append(
            Comparison(
                best=best.target.label,
                other=other.target.label,
                key=per_example,
                difference=test.difference,
                ci_low=test.ci_low,
                ci_high=test.ci_high,
                p_value=test.p_value,
                n=test.n,
                alpha=test.alpha,
                significant=test.significant,
            )
        )
    return out


def _row(o: _Outcome, rank_: int | None, means: dict[str, float], stds: dict[str, float]) -> EvalRow:
    res = o.target.resolved
    return EvalRow(
        rank=rank_,
        ref=o.target.label,
        name=res.name,
        version=res.version,
        hash=res.hash,
        commit=res.commit,
        status=o.status,
        metrics=means,
        std=stds,
        folds=tuple(o.folds),
        error=o.error,
        stderr_tail=o.stderr_tail,
        duration=None if o.duration is None else round(o.duration, 3),
        saved=o.saved,
        exit_code=o.exit_code,
        cached_folds=o.cached_folds,
    )


# ---- recording into the manifest ---------------------------------------------------------


def record_metrics(ws: Workspace, rows: tuple[EvalRow, ...]) -> tuple[list[str], list[str]]:
    """Write each successful row's mean metrics into its manifest when it is the work-tree version.

    A past version's manifest lives in its commit and is not rewritten: it gets a note.

    Returns:
        (pointers written and staged, notes about rows not recorded)
    """
    written: list[str] = []
    notes: list[str] = []
    for row in rows:
        if row.status == "failed":
            continue
        try:
            current = find_model(ws, row.name)
        except ModelNotFoundError:
            notes.append(f"{row.ref}: metrics not recorded ({row.name!r} is not in the work tree)")
            continue
        if current.md5 != row.hash or current.outside_mvc or current.manifest is None:
            notes.append(
                f"{row.ref}: metrics not recorded: only the work-tree version of {row.name} can be "
                "(a past version's manifest lives in its commit)"
            )
            continue
        manifest = current.manifest.evolve(metrics={**current.manifest.metrics, **row.metrics})
        pointer.write_manifest(ws.root, current.path, manifest)
        written.append(current.path)
    gitstore.stage(ws.root, written)
    return written, notes

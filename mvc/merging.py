"""Merging model versions into new weights, streaming one tensor at a time.

The pipeline: resolve the refs, fetch the weights into the local cache, open each
version straight from its cache file(s) (no copy: a directory model becomes a temp
directory of symlinks), check that the models match (:func:`plan`), then stream: read
one tensor from each input as float32, combine it with the method, write it to the
output safetensors file, forget it. Peak memory is a few tensors, not models: linear
holds two (the running sum and the tensor being read), task arithmetic three, TIES
one per input plus three.

Rules that decide which value a tensor gets:

- Tensors the inputs hold identically (same hash in their tensor indexes) are copied
  as stored, bit for bit, whenever the method maps equal inputs to themselves (linear
  with weights summing to 1, slerp, task arithmetic and TIES when the base holds the
  same bytes): frozen layers stay exactly what they were.
- Inputs with weight 0 for a tensor (e.g. an override ``weights: [1, 0]``) are not read
  for it; a single remaining input with weight 1 is copied as stored.
- Non-floating tensors (integers, bool) cannot be averaged: they are copied from the
  first input and must be equal in every input that holds them.
- ``allow_missing``: a tensor missing from some inputs is merged over the inputs that
  have it. Linear rescales their weights to the full sum; for task arithmetic and TIES
  a missing tensor counts as unchanged from the base (a zero task vector); a tensor
  only one input holds (or, for slerp, one of the two) is copied from it; a tensor
  the base lacks is copied from the first input holding it, one only the base holds is
  copied from the base.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc import dvcintegrity, files, gitstore, pointer, refs, sync, versioning, workspace
from mvc.comparison import load_indexes
from mvc.errors import ConflictError, UsageError, counted
from mvc.manifest import Parent
from mvc.mergeconfig import NEEDS_BASE, SUM_TOLERANCE, MergeConfig
from mvc.progress import Progress
from mvc.refs import Resolved, VersionRef
from mvc.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np

    from mvc.formats import TensorIndex, TensorReader

# |cos| above this: the two tensors are (anti)parallel, slerp falls back to lerp
# (the threshold mergekit uses).
SLERP_COLINEAR = 0.9995
_DOT_CHUNK = 1 << 22  # elements per float64 step of a dot product
_LISTED = 5  # mismatches named in one error message
OPAQUE_HINT = "merge reads safetensors, npz, torch and gguf weights: convert the model to safetensors first"


MergeInput = VersionRef  # one version that went into a merge


@dataclass(frozen=True)
class Outcome:
    """What a merge wrote and how."""

    path: str
    method: str
    inputs: tuple[MergeInput, ...]
    base: MergeInput | None
    weights: tuple[float, ...]
    params: dict[str, float]
    dtype: str | None  # the output dtype asked for; None: each tensor keeps its dtype
    tensors: int
    merged: int  # tensors computed by the method
    copied: int  # tensors copied as stored (identical, single holder, non-floating)
    bytes: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """How one output tensor is made.

    ``action``: ``merge`` (the method over ``sources``), ``copy`` (``sources[0]`` as
    stored) or ``same`` (non-floating: ``sources[0]``, checked equal in all sources).
    Indexes point into the sources list: the inputs, then the base.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    action: str
    sources: tuple[int, ...]
    weights: tuple[float, ...] = ()
    params: dict[str, float] | None = None
    base: int | None = None


@dataclass
class Source:
    """An opened input: its ref, tensor reader and (when indexed) tensor hashes."""

    label: str
    reader: TensorReader
    hashes: dict[str, str] | None


# ---- the methods: pure functions on float32 numpy arrays --------------------------------


def linear(arrays: Iterable[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``sum_i w_i * x_i``, accumulated one array at a time.

    ``arrays`` may be a generator: only the running sum and the current array are
    alive. The arrays are consumed (scaled in place; the first becomes the result).
    """
    acc = None
    # No zip(): it keeps the previous item alive while the next one is read (a third tensor).
    items = iter(arrays)
    for w in weights:
        x = next(items)
        if w != 1.0:
            x *= w
        if acc is None:
            acc = x
        else:
            acc += x
        del x
    if acc is None:
        raise ValueError("linear needs at least one array")
    return acc


def task_arithmetic(base: np.ndarray, arrays: Iterable[np.ndarray], weights: Sequence[float], *, scale: float = 1.0) -> np.ndarray:
    """``base + scale * sum_i w_i * (x_i - base)``; inputs equal to ``base`` give ``base`` exactly.

    Consumes ``arrays`` (changed in place); ``base`` is left as it is.
    """
    import numpy as np

    delta = np.zeros_like(base)
    items = iter(arrays)
    for w in weights:
        x = next(items)
        x -= base
        x *= w * scale
        delta += x
        del x
    delta += base
    return delta


def slerp(a: np.ndarray, b: np.ndarray, t: float, *, colinear: float = SLERP_COLINEAR) -> np.ndarray:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), the tensors taken as flat vectors.

    The angle comes from the normalized vectors; the result applies the slerp
    coefficients to the originals (as mergekit does). Near-colinear vectors
    (|cos| > ``colinear``) or a zero vector fall back to ``a + t * (b - a)``.
    Consumes ``a`` and ``b``.
    """
    na, nb = math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b))
    cos = _dot(a, b) / (na * nb) if na and nb else 1.0
    cos = min(1.0, max(-1.0, cos))
    if abs(cos) > colinear:
        b -= a
        b *= t
        b += a
        return b
    theta = math.acos(cos)
    sin = math.sin(theta)
    a *= math.sin((1.0 - t) * theta) / sin
    b *= math.sin(t * theta) / sin
    a += b
    return a


def ties(
    base: np.ndarray, arrays: Iterable[np.ndarray], weights: Sequence[float], *, density: float, scale: float = 1.0
) -> np.ndarray:
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean, add to the base.

    Each task vector ``x_i - base`` keeps its largest ``density`` fraction of entries by
    magnitude (ties at the threshold are all kept); the elected sign of an entry is the
    sign of the weighted sum of the trimmed vectors; the merged entry is the weighted
    mean of the trimmed entries that agree with it (0 when none do); the result is
    ``base + scale * merged``. Consumes ``arrays``.
    """
    import numpy as np

    deltas = []
    for x in arrays:
        x -= base
        trim(x, density)
        deltas.append(x)
        del x
    weights = [float(w) for w in weights]
    if len(weights) != len(deltas):
        raise ValueError(f"{len(weights)} weights for {len(deltas)} arrays")
    sign = np.zeros_like(base)
    for w, d in zip(weights, deltas):
        sign += d * np.float32(w)
    np.sign(sign, out=sign)
    total = np.zeros_like(base)
    share = np.zeros_like(base)
    while deltas:
        w, d = weights.pop(0), deltas.pop(0)
        agree = np.sign(d) == sign
        agree &= d != 0
        d *= np.float32(w)
        d[~agree] = 0
        total += d
        share += agree * np.float32(w)
        del d, agree
    share[share == 0] = 1
    total /= share
    total *= scale
    total += base
    return total


def trim(x: np.ndarray, density: float) -> None:
    """Zero all but the ``int(density * size)`` largest-magnitude entries of ``x``, in place."""
    import numpy as np

    flat = x.reshape(-1)
    n = flat.size
    keep = int(density * n)
    if keep >= n:
        return
    if keep == 0:
        flat[:] = 0
        return
    magnitude = np.abs(flat)
    magnitude.partition(n - keep)
    threshold = magnitude[n - keep]
    np.abs(flat, out=magnitude)
    flat[magnitude < threshold] = 0


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """The dot product of two arrays taken as flat vectors, summed in float64 in chunks."""
    import numpy as np

    fa, fb = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for i in range(0, fa.size, _DOT_CHUNK):
        total += float(np.dot(fa[i : i + _DOT_CHUNK].astype(np.float64), fb[i : i + _DOT_CHUNK].astype(np.float64)))
    return total


# ---- the plan ----------------------------------------------------------------------------


def _floating(dtype: str) -> bool:
    from mvc.formats import dtypes

    return dtype in dtypes.FLOATING and (dtype in dtypes.NUMPY_NATIVE or dtype in dtypes.MINIFLOATS)


def _readable(dtype: str) -> bool:
    from mvc.formats import dtypes

    return dtype in dtypes.NUMPY_NATIVE or dtype in dtypes.MINIFLOATS


def _listing(items: list[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f", and {more} more" if more > 0 else "")


def plan(cfg: MergeConfig, inputs: list[Source], base: Source | None) -> tuple[list[Step], list[str]]:
    """One :class:`Step` per output tensor (sorted by name), and notes for the user.

    ``cfg`` must be completed (:func:`mvc.mergeconfig.complete`).

    Raises:
        UsageError: a tensor of a dtype that cannot be read as numbers (quantized gguf).
        ConflictError: tensors missing from some models (without ``allow_missing``), or
            differing in shape, or in dtype (without an output ``dtype``); all listed.
    """
    n = len(inputs)
    holders: dict[str, list[int]] = {}
    for i, src in enumerate(inputs):
        for name in src.reader.specs:
            holders.setdefault(name, []).append(i)
    base_names = set(base.reader.specs) if base is not None else set()
    names = _ordered_names(inputs, base)
    _check(cfg, names, holders, inputs, base)
    notes: list[str] = []
    steps = []
    partial = 0
    for name in names:
        have = holders.get(name, [])
        in_base = name in base_names
        partial += len(have) < n or (base is not None and not in_base)
        first = inputs[have[0]].reader.specs[name] if have else base.reader.specs[name]  # type: ignore[union-attr]
        if not _floating(first.dtype):
            sources = tuple(have) + ((n,) if in_base else ())
            steps.append(Step(name, first.dtype, first.shape, "same", sources))
            continue
        dtype = cfg.dtype or first.dtype
        steps.append(_float_step(cfg, name, dtype, first.shape, have, in_base, inputs + ([base] if base else [])))
    if partial:
        notes.append(f"{counted(partial, 'tensor')} {'is' if partial == 1 else 'are'} not in every model: merged from the models that hold them (--allow-missing)")
    for o in cfg.overrides:
        if not any(o is cfg.override_for(name) for name in names):
            notes.append(f"override {o.match!r} applies to no tensor (no name matches it, or an earlier override matches first)")
    return steps, notes


def _ordered_names(inputs: list[Source], base: Source | None) -> list[str]:
    """Every tensor name, in the first input's stored order, then the others' new names.

    Keeping the input's order (and its header metadata) makes a merge that changes
    nothing byte-identical to its input, so no new version appears (issue 14).
    """
    seen: dict[str, None] = {}
    for src in [*inputs, *([base] if base is not None else [])]:
        for name in src.reader.stored_order():
            seen.setdefault(name, None)
    return list(seen)


def _check(cfg: MergeConfig, names: list[str], holders: dict[str, list[int]], inputs: list[Source], base: Source | None) -> None:
    """Raise on tensors that cannot be merged as asked, listing every mismatch."""
    missing: list[str] = []
    shapes: list[str] = []
    kinds: list[str] = []
    exact: list[str] = []  # integer / bool tensors: --dtype cannot help, they are copied as stored
    unreadable: list[str] = []
    for name in names:
        specs = [(inputs[i].label, inputs[i].reader.specs[name]) for i in holders.get(name, [])]
        if base is not None and name in base.reader.specs:
            specs.append((f"{base.label} (base)", base.reader.specs[name]))
        absent = [s.label for i, s in enumerate(inputs) if i not in holders.get(name, [])]
        if base is not None and name not in base.reader.specs:
            absent.append(f"{base.label} (base)")
        if absent:
            missing.append(f"{name} (missing from {', '.join(absent)})")
        if len({s.shape for _, s in specs}) > 1:
            shapes.append(f"{name} (" + ", ".join(f"{list(s.shape)} in {label}" for label, s in specs) + ")")
        dtypes = {s.dtype for _, s in specs}
        if not all(_readable(d) for d in dtypes):
            unreadable.append(f"{name} ({'/'.join(sorted(dtypes))})")
        elif len(dtypes) > 1 and not (cfg.dtype and all(_floating(d) for d in dtypes)):
            mismatch = f"{name} (" + ", ".join(f"{s.dtype} in {label}" for label, s in specs) + ")"
            (kinds if all(_floating(d) for d in dtypes) else exact).append(mismatch)
    if unreadable:
        raise UsageError(
            f"cannot merge quantized or packed tensors: {_listing(unreadable)}",
            hint="merge the unquantized weights, then quantize the result",
        )
    problems = []
    hints = []
    if missing and not cfg.allow_missing:
        problems.append(f"{counted(len(missing), 'tensor')} not in every model: {_listing(missing)}")
        hints.append("pass --allow-missing to keep tensors only some models hold")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        hints.append("models of different architectures cannot be merged")
    if kinds:
        problems.append(f"{len(kinds)} dtype mismatch(es): {_listing(kinds)}")
        hints.append("pass --dtype float32 (or float16, bfloat16) to merge floating tensors into one dtype")
    if exact:
        problems.append(f"{len(exact)} integer/bool dtype mismatch(es): {_listing(exact)}")
        # --dtype converts floating tensors only (issue 17): name the fix that works.
        hints.append(
            f"integer and bool tensors are copied, not averaged: re-save the models so {exact[0].split(' (')[0]} "
            "has one dtype in all of them, then `mvc add` them"
        )
    if problems:
        raise ConflictError("the models do not match: " + "; ".join(problems), hint="; ".join(hints))


def _identical(sources: list[Source], positions: Iterable[int], name: str) -> bool:
    """True when the tensor indexes show the same bytes (and dtype) at every position (or there is one)."""
    positions = list(positions)
    if len(positions) == 1:
        return True
    seen = set()
    for i in positions:
        src = sources[i]
        digest = src.hashes.get(name) if src.hashes is not None else None
        if digest is None:
            return False
        seen.add((digest, src.reader.specs[name].dtype))
    return len(seen) == 1


def _float_step(
    cfg: MergeConfig, name: str, dtype: str, shape: tuple[int, ...], have: list[int], in_base: bool, sources: list[Source]
) -> Step:
    method = cfg.method
    params = cfg.params_for(name)
    n_inputs = len(sources) - (1 if method in NEEDS_BASE else 0)
    base = n_inputs if method in NEEDS_BASE else None

    def copy(i: int) -> Step:
        return Step(name, dtype, shape, "copy", (i,))

    if method == "slerp":
        if len(have) == 1 or _identical(sources, have, name):
            return copy(have[0])
        return Step(name, dtype, shape, "merge", tuple(have), params=params)
    all_weights = cfg.weights_for(name)
    weighted = [(i, all_weights[i]) for i in have if all_weights[i] != 0]
    if base is not None:
        if not in_base:
            return copy(have[0])
        if not weighted or _identical(sources, [i for i, _ in weighted] + [base], name):
            return copy(base)
        return Step(name, dtype, shape, "merge", tuple(i for i, _ in weighted), tuple(w for _, w in weighted), params, base)
    if len(have) < n_inputs:  # linear over the holders, rescaled to the full sum
        held = math.fsum(all_weights[i] for i in have)
        if held:
            factor = math.fsum(all_weights) / held
            weighted = [(i, w * factor) for i, w in weighted]
    if not weighted:  # every weight 0: the weighted sum is zeros
        weighted = [(i, 0.0) for i in have]
    total = math.fsum(w for _, w in weighted)
    if abs(total - 1.0) <= SUM_TOLERANCE and _identical(sources, [i for i, _ in weighted], name):
        return copy(weighted[0][0])
    return Step(name, dtype, shape, "merge", tuple(i for i, _ in weighted), tuple(w for _, w in weighted), params)


# ---- execution ---------------------------------------------------------------------------


def _nbytes(step: Step) -> int:
    from mvc.formats import dtypes

    return math.prod(step.shape) * dtypes.BITS[step.dtype] // 8


def _compute(step: Step, sources: list[Source], method: str) -> np.ndarray:
    """The output array of one step (float32 for merged tensors, as stored for copies)."""
    import numpy as np

    from mvc.formats import dtypes

    name = step.name
    if step.action == "copy":
        src = sources[step.sources[0]]
        return src.reader.read(name, as_float32=src.reader.specs[name].dtype in dtypes.MINIFLOATS)
    if step.action == "same":
        first = sources[step.sources[0]].reader.read(name)
        for i in step.sources[1:]:
            if not np.array_equal(first, sources[i].reader.read(name)):
                raise ConflictError(
                    f"tensor {name!r} ({step.dtype}) differs between {sources[step.sources[0]].label} and "
                    f"{sources[i].label}: integer and bool tensors cannot be merged",
                    hint="such tensors (ids, masks, counters) must be equal in every model",
                )
        return first

    def load(i: int) -> np.ndarray:
        return sources[i].reader.read(name, as_float32=True)

    arrays = (load(i) for i in step.sources)
    p = step.params or {}
    if method == "linear":
        return linear(arrays, step.weights)
    if method == "slerp":
        return slerp(load(step.sources[0]), load(step.sources[1]), p["t"])
    assert step.base is not None
    base = load(step.base)
    if method == "task-arithmetic":
        return task_arithmetic(base, arrays, step.weights, scale=p["scale"])
    return ties(base, arrays, step.weights, density=p["density"], scale=p["scale"])


def execute(
    steps: list[Step],
    sources: list[Source],
    method: str,
    out: Path,
    *,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the output safetensors file (atomically), one tensor at a time; return its data bytes.

    Nothing is left at ``out`` (or in its directory) when a step fails.
    """
    from mvc.formats import SafetensorsWriter

    total = sum(_nbytes(s) for s in steps)
    task = f"merging {out.name}"
    whole = _verbatim(steps, sources)
    if whole is not None:
        for step in steps:  # integer / bool tensors must still agree in every input
            if step.action == "same" and len(step.sources) > 1:
                _compute(step, sources, method)
        _copy_file(whole, out)
        if progress is not None:
            progress(task, total, total)
        return total
    with SafetensorsWriter(out, [(s.name, s.dtype, s.shape) for s in steps], metadata=metadata) as writer:
        for step in steps:
            array = _compute(step, sources, method)
            writer.write(step.name, array)
            del array
            if progress is not None:
                progress(task, _nbytes(step), total)
    return total


def _verbatim(steps: list[Step], sources: list[Source]) -> Path | None:
    """The safetensors file the output equals byte for byte, if every tensor is copied from it.

    Merging a model with itself (or inputs the method maps to one of them) then writes
    that file as it is: same header, same order, same hash, so no new version appears.
    """
    from mvc.formats.safetensors_format import SafetensorsReader

    picked = {s.sources[0] for s in steps}
    if len(picked) != 1 or any(s.action == "merge" for s in steps):
        return None
    reader = sources[picked.pop()].reader
    if not isinstance(reader, SafetensorsReader) or len(reader.specs) != len(steps):
        return None
    if any(s.name not in reader.specs or reader.specs[s.name].dtype != s.dtype for s in steps):
        return None
    return reader.path


def _copy_file(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` atomically: a temp file next to ``out``, removed on any failure."""
    import shutil

    def copy(tmp: str) -> None:
        with open(tmp, "wb") as f, open(src, "rb") as r:
            shutil.copyfileobj(r, f, 8 << 20)
            f.flush()
            os.fsync(f.fileno())

    files.replace_atomic(out, copy)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into an exception while a merge writes, so its temp files are removed.

    Python's default SIGTERM ends the process without running ``finally`` blocks, which
    left half-written ``.tmp`` files beside the output (issue 14). Only in the main
    thread and only when nobody installed a handler; exits with 143 as the default would.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def refuse_overwrite(ws: Workspace, out: Path, *, add: bool) -> None:
    """Refuse to write over work-tree weights that no version records (as ``checkout`` does).

    The path of a tracked model is checked always; with ``add`` any existing file in the
    repository is, since it would become a version and its old bytes be lost.

    Raises:
        ConflictError: the weights at ``out`` hold changes that no version records.
    """
    from mvc import rollback

    if not out.exists():
        return
    try:
        rel = out.resolve().relative_to(ws.root).as_posix()
    except ValueError:
        return
    ptr_rel = pointer.pointer_path(rel)
    if ptr_rel in gitstore.unmerged_paths(ws.root):
        return  # resolving a `git merge` conflict: the pointer is not YAML, the weights are a side's
    ptr = pointer.read(ws.root, ptr_rel)
    if ptr is not None:
        rollback.refuse_unsaved(ws, [ptr])
    elif add:
        raise ConflictError(
            f"{rel} exists and no version records it: the merge would overwrite it",
            hint=f"record it first with `mvc add {rel}`, write the merge elsewhere with -o, or pass --force to discard it",
        )


# ---- inputs ------------------------------------------------------------------------------


def _describe(res: Resolved) -> MergeInput:
    return res.describe()


def _refuse_opaque(res: Resolved, fmt: str | None = None) -> None:
    fmt = fmt or (res.pointer.manifest.format if res.pointer.manifest and not res.pointer.outside_mvc else None)
    if fmt == "opaque":
        raise UsageError(f"cannot merge opaque blobs: {res.ref} is versioned as bytes, mvc cannot read its tensors", hint=OPAQUE_HINT)


def _open(ws: Workspace, res: Resolved, index: TensorIndex | None, scratch: Path, stack: contextlib.ExitStack) -> Source:
    """Open a cached version for tensor reads without copying it."""
    from mvc.formats import detect, open_tensors
    from mvc.formats.reader import open_file

    files = dvcintegrity.cache_files(ws.root, res.hash)
    if not res.pointer.isdir:
        path = files[0].path
        fmt = detect.sniff(path)
        _refuse_opaque(res, fmt)
        reader = open_file(path, fmt, res.ref)
    else:
        root = scratch / res.hash.removesuffix(".dir") / Path(res.pointer.out).name
        if not root.exists():
            try:
                for f in files:
                    link = root / (f.relpath or "")
                    link.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(f.path, link)
            except OSError:  # no symlinks here (some filesystems): copy instead
                root = sync.materialize(ws, res.pointer, res.commit, root.with_name(root.name + "-copy"))
        reader = open_tensors(root)
    stack.enter_context(reader)
    if not len(reader):
        raise UsageError(f"cannot merge opaque blobs: {res.ref} holds no readable weight file", hint=OPAQUE_HINT)
    hashes = {t.name: t.hash for t in index.tensors} if index is not None else None
    return Source(label=res.ref, reader=reader, hashes=hashes)


def output_path(cfg: MergeConfig) -> Path:
    """The output file, absolute (relative paths are relative to the current directory).

    Raises:
        UsageError: no output given, or not a ``.safetensors`` name.
    """
    if not cfg.output:
        raise UsageError("no output file given", hint="pass -o PATH.safetensors (or output: in the --config file)")
    path = Path(cfg.output).expanduser().absolute()
    if path.suffix != ".safetensors":
        raise UsageError(f"the merge is written as safetensors, so -o must end in .safetensors, not {path.name!r}", hint=f"pass -o {path.stem}.safetensors")
    if path.is_dir():
        raise UsageError(f"{cfg.output} is a directory", hint="pass a file name, e.g. -o merged.safetensors")
    return path


def run(
    ws: Workspace,
    cfg: MergeConfig,
    out: Path,
    *,
    notes: Sequence[str] = (),
    remote: str | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Merge the versions ``cfg`` names into the safetensors file ``out``.

    Args:
        cfg: a completed recipe (:func:`mvc.mergeconfig.complete`).
        notes: notes from completing the recipe, passed through to the outcome.
        remote: where to fetch weights the local cache lacks.

    Raises:
        ModelNotFoundError, RefNotFoundError, AmbiguousRefError: a ref does not resolve.
        MissingObjectError: weights in neither the cache nor the remote.
        UsageError: an opaque model, or unreadable (quantized) tensors.
        ConflictError: the models do not match (see :func:`plan`).
    """
    assert cfg.method is not None
    resolved = [refs.resolve(ws, r) for r in cfg.inputs]
    base = refs.resolve(ws, cfg.base) if cfg.base else None
    everything = resolved + ([base] if base is not None else [])
    for res in everything:
        _refuse_opaque(res)
    for res in everything:
        sync.ensure_cached(ws, res.pointer, res.commit, remote=remote, progress=progress)
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mvc-merge-")))
        indexes = load_indexes(ws, everything)
        sources = [_open(ws, res, index, scratch, stack) for res, index in zip(everything, indexes, strict=True)]
        steps, plan_notes = plan(cfg, sources[: len(resolved)], sources[-1] if base is not None else None)
        first = sources[0].reader
        metadata = getattr(first, "metadata", None) if first.format == "safetensors" else None
        out.parent.mkdir(parents=True, exist_ok=True)
        with terminate_cleanly():
            size = execute(steps, sources, cfg.method, out, metadata=metadata, progress=progress)
    merged = sum(s.action == "merge" for s in steps)
    return Outcome(
        path=str(out),
        method=cfg.method,
        inputs=tuple(_describe(r) for r in resolved),
        base=_describe(base) if base is not None else None,
        weights=tuple(cfg.weights or ()),
        params=dict(cfg.params),
        dtype=cfg.dtype,
        tensors=len(steps),
        merged=merged,
        copied=len(steps) - merged,
        bytes=size,
        notes=tuple(notes) + tuple(plan_notes),
    )


# ---- recording the merge as a version ------------------------------------------------------


def target_name(ws: Workspace, cfg: MergeConfig, out: Path, name: str | None) -> str:
    """The model the merge becomes a version of, checked before any work is done.

    Default: the model of the first input. Its new version must live where the model
    does: ``out`` must be that model's weights path (or a new path, for a new name).

    Raises:
        UsageError: ``out`` is outside the repository, or belongs to another model, or
            the model lives at another path.
    """
    rel = ws.rel(out)
    ptr_rel = pointer.pointer_path(rel)
    name = name or refs.resolve(ws, cfg.inputs[0]).name
    for ptr in workspace.models(ws):
        assert ptr.manifest is not None
        if ptr.manifest.name == name and ptr.path != ptr_rel:
            raise UsageError(
                f"model {name!r} lives at {ptr.out}: its new version must be written there, not to {rel}",
                hint=f"pass -o {ptr.out}, or --name NEW to start a new model at {rel}",
            )
        if ptr.path == ptr_rel and ptr.manifest.name != name:
            raise UsageError(
                f"{rel} holds model {ptr.manifest.name!r}, not {name!r}",
                hint=f"pass --name {ptr.manifest.name}, or write the merge elsewhere with -o",
            )
    return name


def lineage(outcome: Outcome, cfg: MergeConfig) -> dict[str, Any]:
    """The ``merge`` entry a merged version's manifest keeps under ``extra``."""

    def entry(i: MergeInput) -> dict[str, Any]:
        return {"ref": i.ref, "name": i.name, "version": i.version, "hash": i.hash}

    record: dict[str, Any] = {"method": outcome.method, "inputs": [entry(i) for i in outcome.inputs]}
    if outcome.base:
        record["base"] = entry(outcome.base)
    if outcome.weights:
        record["weights"] = list(outcome.weights)
    if outcome.params:
        record["params"] = dict(outcome.params)
    if outcome.dtype:
        record["dtype"] = outcome.dtype
    if cfg.overrides:
        record["overrides"] = [
            {"match": o.match, **({"weights": list(o.weights)} if o.weights else {}), **({"params": dict(o.params)} if o.params else {})}
            for o in cfg.overrides
        ]
    return record


@contextlib.contextmanager
def _settled_conflict(ws: Workspace, ptr_rel: str) -> Iterator[bool]:
    """Let DVC read a pointer git left conflicted: put our side (HEAD's) in its place.

    Yields whether there was a conflict; on failure the conflicted file comes back.
    """
    if ptr_rel not in gitstore.unmerged_paths(ws.root):
        yield False
        return
    full = ws.root / ptr_rel
    saved = full.read_bytes() if full.exists() else None
    ours = gitstore.read_stage(ws.root, ptr_rel, 2)
    if ours is None:
        full.unlink(missing_ok=True)
    else:
        files.write_atomic(full, ours)
    try:
        yield True
    except BaseException:
        if saved is not None:
            files.write_atomic(full, saved)
        raise


def record(
    ws: Workspace, out: Path, outcome: Outcome, cfg: MergeConfig, *, name: str, message: str = "", progress: Progress | None = None
) -> tuple[versioning.Recorded, bool]:
    """Record the merged file as a new version of ``name``, its parents the inputs.

    A pointer git left conflicted at that path (``git merge``) is resolved by this
    version. Returns the recorded version and whether a conflict was resolved.
    """
    parents: dict[str, Parent] = {}
    for i in outcome.inputs:
        parents.setdefault(i.hash, Parent(hash=i.hash, version=i.version, name=None if i.name == name else i.name))
    request = versioning.VersionRequest(
        name=name,
        params={"method": outcome.method, **outcome.params} | ({"weights": list(outcome.weights)} if outcome.weights else {}),
        message=message or f"merge ({outcome.method}) of {', '.join(i.ref for i in outcome.inputs)}",
        parents=tuple(parents.values()),
        extra={"merge": lineage(outcome, cfg)},
    )
    ptr_rel = pointer.pointer_path(ws.rel(out))
    with _settled_conflict(ws, ptr_rel) as conflicted:
        rec = versioning.record(ws, out, request, progress=progress)
    if conflicted:  # also when the merge equals ours and no new version was made
        gitstore.stage(ws.root, [ptr_rel])
    return rec, conflicted

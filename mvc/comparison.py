"""Comparing two model versions: params and metrics side by side, tensors from their indexes.

The summary reads only the two manifests and tensor-index sidecars (git blobs): no
weight bytes. ``stats`` additionally streams the changed tensors, one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mvc import gitstore, tensorindex
from mvc.errors import counted
from mvc.refs import Resolved, VersionRef
from mvc.workspace import Workspace

if TYPE_CHECKING:
    from mvc.formats import TensorIndex


Side = VersionRef  # one side of a diff


@dataclass(frozen=True)
class ValueChange:
    """One param or metric in both versions."""

    key: str
    a: Any
    b: Any
    delta: float | None  # b - a for numbers
    changed: bool


@dataclass(frozen=True)
class TensorChange:
    """One tensor that differs (or, with ``unchanged`` listing, does not)."""

    name: str
    status: str  # added | removed | shape | dtype | content | unchanged
    a_dtype: str | None
    a_shape: tuple[int, ...] | None
    b_dtype: str | None
    b_shape: tuple[int, ...] | None
    parameters: int


@dataclass(frozen=True)
class TensorStats:
    """Numeric difference of one tensor present in both versions with the same shape."""

    name: str
    l2_diff: float  # ||b - a||
    relative_change: float | None  # ||b - a|| / ||a||; None when a is all zeros
    cosine: float | None  # None when either tensor is all zeros


@dataclass(frozen=True)
class DiffSummary:
    """Counts over all tensors."""

    total: int
    added: int
    removed: int
    shape_or_dtype: int
    content: int
    unchanged: int
    changed_parameters: int
    total_parameters: int

    @property
    def changed(self) -> int:
        """Tensors that differ in any way."""
        return self.added + self.removed + self.shape_or_dtype + self.content

    @property
    def changed_fraction(self) -> float:
        """Share of parameters (of the newer side) in changed tensors."""
        return self.changed_parameters / self.total_parameters if self.total_parameters else 0.0


@dataclass(frozen=True)
class Diff:
    """Everything ``mvc diff`` reports."""

    a: Side
    b: Side
    same_weights: bool
    params: tuple[ValueChange, ...]
    metrics: tuple[ValueChange, ...]
    tensors: tuple[TensorChange, ...]
    summary: DiffSummary | None  # None when a tensor index is missing (opaque format)
    notes: tuple[str, ...] = ()
    stats: tuple[TensorStats, ...] = ()


def side(res: Resolved) -> Side:
    """The :class:`Side` of a resolved ref."""
    return res.describe()


def _index_path(res: Resolved) -> str | None:
    """The sidecar path of a version's tensor index; None for opaque weights or a stale manifest."""
    manifest = res.pointer.manifest
    return manifest.index if manifest is not None and manifest.index and not res.pointer.outside_mvc else None


def load_indexes(ws: Workspace, resolved: list[Resolved]) -> list[TensorIndex | None]:
    """The tensor index of each resolved version, from git (one batch) or the work tree.

    None for a version without one: opaque format, or weights re-added by plain ``dvc add``
    (whose manifest, and so its index, describes older weights).

    Raises:
        SchemaError: a sidecar is malformed or from a newer mvc.
    """
    paths = [_index_path(res) for res in resolved]
    in_git = [i for i, res in enumerate(resolved) if paths[i] and res.commit is not None]
    wanted = [(str(resolved[i].commit), str(paths[i])) for i in in_git]
    blobs = dict(zip(in_git, gitstore.read_blobs(ws.root, wanted), strict=True))
    out: list[TensorIndex | None] = []
    for i, res in enumerate(resolved):
        data = blobs.get(i)
        if paths[i] is None:
            out.append(None)
        else:
            out.append(tensorindex.load_checked(
                ws.root, res.pointer.effective, data, res.hash, filename=PurePosixPath(res.pointer.out).name))
    return out


def _values(a: dict[str, Any], b: dict[str, Any]) -> tuple[ValueChange, ...]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        delta = None
        if _number(va) and _number(vb):
            delta = float(vb) - float(va)  # type: ignore[arg-type]  # _number checked both
        out.append(ValueChange(key=key, a=va, b=vb, delta=delta, changed=va != vb))
    return tuple(out)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def compare(ws: Workspace, a: Resolved, b: Resolved, *, include_unchanged: bool = False) -> Diff:
    """Diff two versions from their manifests and tensor indexes only: no weight bytes are read.

    Args:
        ws: the repository.
        a, b: the two versions (any models).
        include_unchanged: list unchanged tensors in ``tensors`` too.

    Returns:
        Params and metrics side by side with deltas, tensor changes and their totals
        (``summary`` is None when a side has no tensor index; ``notes`` says why).

    Raises:
        SchemaError: a tensor index is malformed or from a newer mvc.
    """
    ma, mb = a.pointer.effective, b.pointer.effective
    assert ma is not None and mb is not None
    notes: list[str] = []
    ia, ib = load_indexes(ws, [a, b])
    tensors: list[TensorChange] = []
    summary = None
    if ia is None or ib is None:
        for res, idx in ((a, ia), (b, ib)):
            if idx is None:
                notes.append(f"{res.ref}: no tensor index ({res.pointer.manifest.format if res.pointer.manifest else 'unknown'} format"
                             f"{', added outside mvc' if res.pointer.outside_mvc else ''}); tensors not compared")
    else:
        tensors, summary = _tensor_changes(ia, ib, include_unchanged)
    return Diff(
        a=side(a),
        b=side(b),
        same_weights=a.hash == b.hash,
        params=_values(ma.params, mb.params),
        metrics=_values(ma.metrics, mb.metrics),
        tensors=tuple(tensors),
        summary=summary,
        notes=tuple(notes),
    )


def _tensor_changes(ia: TensorIndex, ib: TensorIndex, include_unchanged: bool) -> tuple[list[TensorChange], DiffSummary]:
    ta, tb = ia.by_name, ib.by_name
    changes: list[TensorChange] = []
    counts = {"added": 0, "removed": 0, "shape": 0, "dtype": 0, "content": 0, "unchanged": 0}
    changed_params = 0
    for name in sorted(set(ta) | set(tb)):
        x, y = ta.get(name), tb.get(name)
        if x is None:
            status = "added"
        elif y is None:
            status = "removed"
        elif x.shape != y.shape:
            status = "shape"
        elif x.dtype != y.dtype:
            status = "dtype"
        elif x.hash != y.hash:
            status = "content"
        else:
            status = "unchanged"
        counts[status] += 1
        params = (y or x).numel  # type: ignore[union-attr]
        if status not in ("unchanged", "removed"):
            changed_params += params
        if status != "unchanged" or include_unchanged:
            changes.append(
                TensorChange(
                    name=name,
                    status=status,
                    a_dtype=x.dtype if x else None,
                    a_shape=x.shape if x else None,
                    b_dtype=y.dtype if y else None,
                    b_shape=y.shape if y else None,
                    parameters=params,
                )
            )
    summary = DiffSummary(
        total=len(set(ta) | set(tb)),
        added=counts["added"],
        removed=counts["removed"],
        shape_or_dtype=counts["shape"] + counts["dtype"],
        content=counts["content"],
        unchanged=counts["unchanged"],
        changed_parameters=changed_params,
        total_parameters=ib.parameter_count,
    )
    return changes, summary


def stats_candidates(d: Diff) -> list[str]:
    """Tensors whose numeric change ``--stats`` can measure: same shape, different content or dtype."""
    return [t.name for t in d.tensors if t.status in ("content", "dtype")]


_CHUNK = 1 << 22  # elements upcast to float64 at a time: the sums never hold a whole float64 copy


def tensor_stats(path_a: Path, path_b: Path, names: list[str]) -> tuple[tuple[TensorStats, ...], tuple[str, ...]]:
    """L2 norm of the difference, relative change and cosine similarity of each tensor in ``names``.

    Streams one tensor pair at a time, read as float32 and summed in float64 chunks, so
    memory stays about two tensors. Tensors that cannot be read as numbers (quantized
    gguf blocks, packed 4/6-bit floats) are skipped, not fatal: the rest still get
    figures (issue 14: one quantized tensor once made ``diff --stats`` exit 2).

    Args:
        path_a, path_b: the two versions' weights (files or directories).
        names: tensors present in both with the same shape.

    Returns:
        One :class:`TensorStats` per readable name (``relative_change`` is None when the
        old tensor is all zeros, ``cosine`` is None when either is), and notes naming
        the skipped tensors and why.

    Raises:
        CorruptFileError: a weight file cannot be read.
    """
    import numpy as np

    from mvc.errors import UsageError
    from mvc.formats import dtypes, open_tensors

    out = []
    skipped: dict[str, list[str]] = {}
    with open_tensors(path_a) as ra, open_tensors(path_b) as rb:
        for name in names:
            unreadable = [
                r.info(name).dtype
                for r in (ra, rb)
                if name in r and r.info(name).dtype not in dtypes.NUMPY_NATIVE and r.info(name).dtype not in dtypes.MINIFLOATS
            ]
            if unreadable:
                skipped.setdefault(_undecodable(unreadable), []).append(name)
                continue
            try:
                x = np.asarray(ra.read(name, as_float32=True)).reshape(-1)
                y = np.asarray(rb.read(name, as_float32=True)).reshape(-1)
            except UsageError as exc:
                skipped.setdefault(exc.message, []).append(name)
                continue
            dd = xx = yy = xy = 0.0
            for start in range(0, x.size, _CHUNK):
                xs = x[start : start + _CHUNK].astype(np.float64)
                ys = y[start : start + _CHUNK].astype(np.float64)
                delta = ys - xs
                dd += float(delta @ delta)
                xx += float(xs @ xs)
                yy += float(ys @ ys)
                xy += float(xs @ ys)
            del x, y
            l2, nx, ny = math.sqrt(dd), math.sqrt(xx), math.sqrt(yy)
            out.append(
                TensorStats(
                    name=name,
                    l2_diff=l2,
                    relative_change=l2 / nx if nx else None,
                    cosine=xy / (nx * ny) if nx and ny else None,
                )
            )
    notes = tuple(
        f"--stats skipped {counted(len(skip), 'tensor')}, {why}: {_listing(skip)}" for why, skip in skipped.items()
    )
    return tuple(out), notes


_LISTED = 5


def _listing(names: list[str]) -> str:
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f", and {more} more" if more > 0 else "")


def _undecodable(kinds: list[str]) -> str:
    """Why tensors of these dtypes get no figures."""
    what = "/".join(sorted(set(kinds)))
    if any(k.startswith(("q", "iq", "tq", "mx", "nv")) for k in kinds):
        return f"quantized {what} (mvc does not dequantize gguf)"
    return f"{what} cannot be read as numbers"

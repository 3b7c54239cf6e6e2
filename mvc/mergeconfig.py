"""What a merge is asked to do: inputs, method, weights, base, parameters, per-tensor overrides.

The same recipe comes from the command line, the Python API or a YAML file
(``mvc merge --config merge.yaml``) for repeatable merges; values given explicitly win
over the file's. Example file::

    method: linear
    inputs: [net@v3, net@v4, net@exp/wide]
    weights: [0.5, 0.3, 0.2]
    dtype: bfloat16
    output: models/soup.safetensors
    overrides:                      # the first glob matching a tensor name applies
      - match: "lm_head.*"
        weights: [1, 0, 0]
      - match: "*.bias"
        weights: [0.34, 0.33, 0.33]

Methods and their parameters (``--param k=v``, ``params:`` in the file):

- ``linear``: weighted average; weights default to uniform (a model soup).
- ``task-arithmetic``: ``base + scale * sum(w_i * (m_i - base))``; weights default to 1;
  ``scale`` (alias ``lambda``) defaults to 1.
- ``slerp``: spherical interpolation of exactly two models; ``t`` in [0, 1], default 0.5.
- ``ties``: TIES-merging against a base; ``density`` in (0, 1] (default 0.2) of each task
  vector kept, ``scale``/``lambda`` (default 1); weights default to 1.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mvc.errors import UsageError, counted

METHODS = ("linear", "task-arithmetic", "slerp", "ties")
# Parameters each method takes, with their defaults.
PARAMS: dict[str, dict[str, float]] = {
    "linear": {},
    "task-arithmetic": {"scale": 1.0},
    "slerp": {"t": 0.5},
    "ties": {"density": 0.2, "scale": 1.0},
}
ALIASES = {"lambda": "scale"}
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")
NEEDS_BASE = frozenset({"task-arithmetic", "ties"})
MIN_INPUTS = {"linear": 2, "task-arithmetic": 1, "slerp": 2, "ties": 1}
# A weight sum this close to 1 counts as 1.
SUM_TOLERANCE = 1e-6

_FILE_KEYS = ("inputs", "method", "weights", "base", "params", "dtype", "normalize", "allow_missing", "output", "overrides")
_OVERRIDE_KEYS = ("match", "weights", "params")


@dataclass(frozen=True)
class Override:
    """Weights and/or parameters for the tensors whose name matches the glob ``match``."""

    match: str
    weights: tuple[float, ...] | None = None
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeConfig:
    """A merge recipe. Fields left None are unset (before :func:`complete`).

    After :func:`complete`, ``weights`` are the effective weights (defaults filled,
    normalized when asked) and ``params`` hold every parameter of the method.
    """

    inputs: tuple[str, ...] = ()
    method: str | None = None
    weights: tuple[float, ...] | None = None
    base: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    dtype: str | None = None
    normalize: bool = False
    allow_missing: bool = False
    output: str | None = None
    overrides: tuple[Override, ...] = ()

    def override_for(self, name: str) -> Override | None:
        """The first override whose glob matches tensor ``name`` (case-sensitive), or None."""
        return next((o for o in self.overrides if fnmatch.fnmatchcase(name, o.match)), None)

    def weights_for(self, name: str) -> tuple[float, ...]:
        """The weights that apply to tensor ``name`` (empty for slerp)."""
        o = self.override_for(name)
        return o.weights if o is not None and o.weights is not None else (self.weights or ())

    def params_for(self, name: str) -> dict[str, float]:
        """The method parameters that apply to tensor ``name``."""
        o = self.override_for(name)
        return {**self.params, **o.params} if o is not None else dict(self.params)


def parse_weights(text: str, *, option: str = "--weights") -> tuple[float, ...]:
    """``"0.5,0.3,0.2"`` -> ``(0.5, 0.3, 0.2)``.

    Raises:
        UsageError: an item is not a finite number.
    """
    return _numbers([part.strip() for part in text.split(",")], option)


def _numbers(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise UsageError(f"{where} must be a list of numbers", hint="write e.g. 0.5,0.5 (one weight per model)")
    out = []
    for v in values:
        out.append(_number(v, where))
    return tuple(out)


def _number(value: Any, where: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {value!r} is not a number", hint="write numbers such as 0.5") from None
    if not math.isfinite(number):
        raise UsageError(f"{where}: {value!r} is not a finite number", hint="write numbers such as 0.5")
    return number


def load(path: str | Path) -> MergeConfig:
    """Read a merge recipe from a YAML (or JSON) file.

    Raises:
        PathNotFoundError: no such file.
        UsageError: not a mapping, unknown keys, or values of the wrong type.
    """
    from mvc import lineage

    where = f"--config {path}"
    data = lineage.read_mapping_file(path, option="--config")
    _known_keys(data, _FILE_KEYS, where)
    inputs = data.get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(i, str) and i for i in inputs):
        raise UsageError(f"{where}: inputs must be a list of model references", hint="write inputs: [net@v1, net@v2]")
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list):
        raise UsageError(f"{where}: overrides must be a list", hint='write overrides: [{match: "lm_head.*", weights: [1, 0]}]')
    return MergeConfig(
        inputs=tuple(inputs),
        method=_optional_str(data, "method", where),
        weights=_numbers(data["weights"], f"{where}: weights") if data.get("weights") is not None else None,
        base=_optional_str(data, "base", where),
        params=_params(data.get("params"), f"{where}: params"),
        dtype=_optional_str(data, "dtype", where),
        normalize=_flag(data, "normalize", where),
        allow_missing=_flag(data, "allow_missing", where),
        output=_optional_str(data, "output", where),
        overrides=tuple(_override(o, f"{where}: overrides[{i}]") for i, o in enumerate(overrides)),
    )


def _known_keys(data: dict[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(known)}")


def _optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a string, not {value!r}", hint=None)
    return value


def _flag(data: dict[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false, not {value!r}", hint=None)
    return value


def _params(raw: Any, where: str) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping of names to numbers", hint="write params: {t: 0.3}")
    return {str(k): _number(v, f"{where}.{k}") for k, v in raw.items()}


def _override(raw: Any, where: str) -> Override:
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping", hint='write {match: "GLOB", weights: [...]} or {match: ..., params: {...}}')
    _known_keys(raw, _OVERRIDE_KEYS, where)
    match = raw.get("match")
    if not isinstance(match, str) or not match:
        raise UsageError(f"{where} needs a match glob", hint='write match: "layers.*.attn.*"')
    weights = _numbers(raw["weights"], f"{where}.weights") if raw.get("weights") is not None else None
    params = _params(raw.get("params"), f"{where}.params")
    if weights is None and not params:
        raise UsageError(f"{where} ({match}) sets neither weights nor params", hint="give it weights: [...] or params: {...}")
    return Override(match=match, weights=weights, params=params)


def combine(config: MergeConfig | None, **given: Any) -> MergeConfig:
    """``config`` (from a file, or empty) with the explicitly ``given`` values on top.

    A given value of None (or an empty sequence / mapping, or False for flags) means
    "not given": the file's value stays. Given params are merged over the file's.
    """
    cfg = config or MergeConfig()
    changes: dict[str, Any] = {}
    for key, value in given.items():
        if value is None or value is False or (isinstance(value, list | tuple | dict) and not value):
            continue
        if key == "params":
            value = {**cfg.params, **{str(k): v for k, v in value.items()}}
        elif key in ("inputs", "weights"):
            value = tuple(value)
        changes[key] = value
    return replace(cfg, **changes)


def complete(cfg: MergeConfig) -> tuple[MergeConfig, tuple[str, ...]]:
    """Validate a recipe and fill its defaults; return it with notes for the user.

    Raises:
        UsageError: unknown method, parameter or dtype; wrong number of models or
            weights; a base missing (task-arithmetic, ties) or not allowed (linear,
            slerp); --normalize for a method it does not apply to.
    """
    method = (cfg.method or "linear").replace("_", "-")
    if method not in METHODS:
        raise UsageError(f"unknown merge method {cfg.method!r}", hint=f"use one of: {', '.join(METHODS)}")
    n = len(cfg.inputs)
    if method == "slerp" and n != 2:
        raise UsageError(f"slerp merges exactly two models, got {n}", hint="merge more models with --method linear or ties")
    if n < MIN_INPUTS[method]:
        raise UsageError(
            f"{method} needs at least {counted(MIN_INPUTS[method], 'model')}, got {n}",
            hint="name the versions to merge: mvc merge NAME@v1 NAME@v2 ...",
        )
    if method in NEEDS_BASE and not cfg.base:
        raise UsageError(f"{method} needs a base model", hint="pass --base NAME@REF (the model the inputs were fine-tuned from)")
    if method not in NEEDS_BASE and cfg.base:
        raise UsageError(f"{method} takes no base model", hint="drop --base, or use --method task-arithmetic or ties")
    if cfg.normalize and method not in ("linear", "task-arithmetic"):
        raise UsageError(f"--normalize applies to linear and task-arithmetic, not {method}", hint="drop --normalize")
    if cfg.dtype is not None and cfg.dtype not in OUTPUT_DTYPES:
        raise UsageError(f"unknown output dtype {cfg.dtype!r}", hint=f"use one of: {', '.join(OUTPUT_DTYPES)}")
    notes: list[str] = []
    weights = _weights(method, cfg.weights, n, cfg.normalize, "weights", notes)
    params = {**PARAMS[method], **_check_params(method, cfg.params, "params")}
    overrides = []
    for o in cfg.overrides:
        where = f"override {o.match!r}"
        w = _weights(method, o.weights, n, cfg.normalize, f"{where} weights", notes) if o.weights is not None else None
        overrides.append(Override(match=o.match, weights=w, params=_check_params(method, o.params, f"{where} params")))
    done = replace(cfg, method=method, weights=weights, params=params, overrides=tuple(overrides))
    return done, tuple(notes)


def _weights(method: str, given: tuple[float, ...] | None, n: int, normalize: bool, what: str, notes: list[str]) -> tuple[float, ...] | None:
    if method == "slerp":
        if given is not None:
            raise UsageError(f"slerp takes no {what}", hint="set the interpolation with --param t=0.3")
        return None
    if given is None:
        return tuple([1.0 / n] * n) if method == "linear" else tuple([1.0] * n)
    if len(given) != n:
        raise UsageError(f"{len(given)} {what} for {n} models", hint="give one weight per model, in the order of the models")
    if any(w < 0 for w in given) and method == "ties":
        raise UsageError(f"ties {what} must not be negative", hint="use weights >= 0")
    total = math.fsum(given)
    if normalize:
        if total == 0:
            raise UsageError(f"the {what} sum to 0: they cannot be normalized", hint="give weights with a non-zero sum")
        return tuple(w / total for w in given)
    if method == "linear" and abs(total - 1.0) > SUM_TOLERANCE:
        notes.append(
            f"the {what} sum to {total:g}, not 1: merged tensors are scaled by {total:g} (pass --normalize to rescale the weights)"
        )
    return tuple(given)


def _check_params(method: str, params: dict[str, Any], what: str) -> dict[str, float]:
    allowed = PARAMS[method]
    out: dict[str, float] = {}
    for raw_key, raw_value in params.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "none"
            raise UsageError(f"{method} has no parameter {raw_key!r} ({what})", hint=f"{method} parameters: {takes}")
        if key in out:
            raise UsageError(f"{what}: both {raw_key!r} and its alias are set", hint="set it once")
        out[key] = _number(raw_value, f"{what}.{raw_key}")
    if "t" in out and not 0.0 <= out["t"] <= 1.0:
        raise UsageError(f"slerp t must be between 0 and 1, got {out['t']:g}", hint="t=0 gives the first model, t=1 the second")
    if "density" in out and not 0.0 < out["density"] <= 1.0:
        raise UsageError(f"ties density must be in (0, 1], got {out['density']:g}", hint="e.g. density=0.2 keeps the largest 20%")
    return out

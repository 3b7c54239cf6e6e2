"""Training callbacks that version weights as they are saved: one module per framework.

- ``mvc.integrations.keras.MvcCheckpoint`` (Keras 3)
- ``mvc.integrations.transformers.MvcCallback`` (Hugging Face ``Trainer``)
- ``mvc.integrations.lightning.MvcCheckpoint`` (PyTorch Lightning)
- ``mvc.integrations.torch.save_version`` (a plain PyTorch loop)

Each module imports its framework when it is imported, never before: ``import mvc`` and
this package load none. They call only the public API (``mvc.api``). What they share, the
save policy and the float tidying, lives here and needs no framework.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mvc.errors import UsageError

_MAX_MODES = ("acc", "auc", "f1", "precision", "recall", "score", "iou", "map", "bleu", "rouge")


def compact_float(value: float) -> float:
    """The shortest decimal that is the same float32: ``0.009999999776482582`` -> ``0.01``.

    Frameworks report float32 metrics and hyperparameters as float64; written in full
    they look noisy in manifests. Values that are not float32 are left alone.
    """
    if not math.isfinite(value):
        return value
    try:
        as32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return value
    if as32 != value:
        return value
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == as32:
            return short
    return value


def _scalar(value: Any) -> Any:
    """A numpy / torch / framework scalar (or 0-d tensor) as a Python number; else ``value``."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, bool | int | float | str):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def numbers(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The numeric entries of ``values`` (framework scalars and 0-d tensors included), tidied."""
    out: dict[str, Any] = {}
    for key, raw in (values or {}).items():
        value = _scalar(raw)
        if isinstance(value, float):
            out[str(key)] = compact_float(value)
        elif isinstance(value, int):  # bool included
            out[str(key)] = value
    return out


def tidy(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ``None`` entries dropped and float scalars tidied (log_model makes the rest YAML-safe)."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        value = _scalar(raw)
        if value is None:
            continue
        out[str(key)] = compact_float(value) if isinstance(value, float) else value
    return out


class SavePolicy:
    """When an epoch-based callback saves: every N epochs, or only when a metric improves.

    Args:
        every_n_epochs: save at epochs N, 2N, ... (1-based).
        monitor: the metric ``save_best_only`` compares (e.g. ``"val_loss"``).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names, else min).
        save_best_only: save only when ``monitor`` improves on the best saved so far.
        owner: the callback's name, for messages.

    Raises:
        UsageError: a bad value (``save_best_only`` without ``monitor``, unknown mode...).
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        monitor: str | None = None,
        mode: str = "auto",
        save_best_only: bool = False,
        owner: str = "MvcCheckpoint",
    ) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise UsageError(f"{owner}: every_n_epochs must be a whole number >= 1, not {every_n_epochs!r}")
        if mode not in ("auto", "min", "max"):
            raise UsageError(f"{owner}: mode must be 'auto', 'min' or 'max', not {mode!r}")
        if save_best_only and not monitor:
            raise UsageError(
                f"{owner}: save_best_only needs the metric to compare",
                hint="pass monitor=, e.g. monitor='val_loss'",
            )
        if mode == "auto" and monitor:
            mode = "max" if any(m in monitor.lower() for m in _MAX_MODES) else "min"
        self.every_n_epochs = every_n_epochs
        self.monitor = monitor
        self.mode = mode
        self.save_best_only = save_best_only
        self.owner = owner
        self.best: float | None = None
        self._warned = False

    def should_save(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """True when the weights after ``epoch`` (1-based) are to be versioned.

        A monitored metric that the framework did not report gives one warning, and the
        policy falls back to saving every ``every_n_epochs`` epochs.
        """
        if epoch % self.every_n_epochs:
            return False
        if self.monitor is None:
            return True
        value = metrics.get(self.monitor)
        if not isinstance(value, int | float) or isinstance(value, bool):
            if not self._warned:
                self._warned = True
                available = ", ".join(sorted(metrics)) or "none"
                every = "every epoch" if self.every_n_epochs == 1 else f"every {self.every_n_epochs} epochs"
                warnings.warn(
                    f"{self.owner}: the monitored metric {self.monitor!r} was not reported "
                    f"(available: {available}); versioning {every} instead",
                    UserWarning,
                    stacklevel=3,
                )
            return True
        if not self.save_best_only:
            return True
        if math.isnan(value):
            return False
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = float(value)
            return True
        return False


class Target:
    """The weights a callback versions, checked when the callback is made.

    Args:
        path: where the callback writes the weights (inside the repository).
        name: the model name (default: the file name).
        push: upload each version in the background (``mvc.wait()`` reports failures).
        params: extra hyperparameters recorded with every version (they win over the framework's).
        datasets: DVC-tracked data sets the model is trained on.
        commit: commit each version on the current branch.
        repo: the repository (default: the one holding ``path``, else the current one).

    Raises:
        UsageError: ``path`` is outside the repository.
        NotARepoError: no mvc repository there.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        push: bool = False,
        params: Mapping[str, Any] | None = None,
        datasets: list[str | Path] | None = None,
        commit: bool = True,
        repo: str | Path | None = None,
    ) -> None:
        from mvc import api

        self.path = Path(path).expanduser().resolve()
        api.check_weights_path(self.path, repo=repo)
        self.name = name
        self.push = push
        self.params = dict(params or {})
        self.datasets = list(datasets or [])
        self.commit = commit
        self.repo = repo
        self.versions: list[Any] = []  # every LoggedVersion, in order

    def log(self, *, params: Mapping[str, Any], metrics: Mapping[str, Any], step: int) -> Any:
        """Version the weights now at ``path`` (``mvc.log_model``); returns the LoggedVersion."""
        from mvc import api

        version = api.log_model(
            self.path,
            name=self.name,
            params={**tidy(params), **self.params},
            metrics=metrics,
            datasets=self.datasets or None,
            step=step,
            commit=self.commit,
            push=self.push,
            repo=self.repo,
        )
        self.versions.append(version)
        return version


__all__ = ["SavePolicy", "Target", "compact_float", "numbers", "tidy"]


class EpochCheckpoint:
    """What the Keras and Lightning callbacks share: a save policy, a target, its versions.

    A mixin placed before the framework's ``Callback`` base, whose ``__init__`` it calls.
    See :class:`mvc.integrations.keras.MvcCheckpoint` for the arguments.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        every_n_epochs: int = 1,
        monitor: str | None = None,
        mode: str = "auto",
        save_best_only: bool = False,
        push: bool = False,
        params: Mapping[str, Any] | None = None,
        datasets: list[str | Path] | None = None,
        commit: bool = True,
        repo: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.policy = SavePolicy(
            every_n_epochs=every_n_epochs, monitor=monitor, mode=mode, save_best_only=save_best_only, owner="MvcCheckpoint"
        )
        self.target = Target(path, name=name, push=push, params=params, datasets=datasets, commit=commit, repo=repo)

    @property
    def versions(self) -> list[Any]:
        """The LoggedVersion of every save, in order."""
        return self.target.versions

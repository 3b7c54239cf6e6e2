"""Keras 3: ``MvcCheckpoint`` versions the model's weights as safetensors while ``fit`` runs.

Keras itself saves weights only as HDF5 (``.weights.h5``), which mvc can version only as
an opaque blob; this callback writes safetensors from ``model.weights`` (one tensor per
variable, named by its path, e.g. ``dense/kernel``), so ``mvc diff`` and ``mvc merge``
work tensor by tensor. :func:`load_weights` reads such a file back into a model.

Example::

    from mvc.integrations.keras import MvcCheckpoint
    model.fit(x, y, epochs=10, callbacks=[MvcCheckpoint("models/net.safetensors",
                                                        monitor="val_loss", save_best_only=True)])
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mvc.integrations.keras needs Keras 3: pip install 'mvc[integrations]'") from exc

from mvc import documents
from mvc.errors import UsageError
from mvc.files import replace_atomic
from mvc.integrations import EpochCheckpoint, numbers


class MvcCheckpoint(EpochCheckpoint, keras.callbacks.Callback):
    """Version the weights every N epochs, or only when a monitored metric improves.

    Each version records the epoch's logs as metrics, the optimizer's config and the
    ``fit`` arguments Keras exposes (``epochs``, ``steps`` per epoch) as params, and
    ``step`` = the epoch (1-based). Keras does not tell callbacks the batch size: pass
    it in ``params`` to record it.

    Args:
        path: the safetensors file to write, inside the repository.
        name: the model name (default: the file name).
        every_n_epochs: version at epochs N, 2N, ...
        monitor: a metric from the logs (e.g. ``"val_loss"``); when the model never
            reports it, one warning, then every N epochs.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        save_best_only: version only when ``monitor`` improves.
        push: upload each version in the background (``mvc.wait()`` reports failures).
        params: extra hyperparameters recorded with every version.
        datasets: DVC-tracked data sets the model is trained on.
        commit: commit each version on the current branch.
        repo: the repository (default: the one holding ``path``).

    Raises:
        UsageError: ``path`` outside the repository, or a bad policy value.
        NotARepoError: no mvc repository there.
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        metrics = numbers(logs)
        if not self.policy.should_save(epoch + 1, metrics):
            return
        tensors = weight_tensors(self.model)
        replace_atomic(self.target.path, lambda tmp: _save(tensors, tmp))
        self.target.log(params=self._params(), metrics=metrics, step=epoch + 1)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {k: v for k, v in (self.params or {}).items() if k != "verbose"}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            with warnings.catch_warnings():
                # Keras' own np.array(torch tensor) in get_config, deprecated by numpy 2 (Keras 3.15)
                warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
                config = dict(optimizer.get_config())
            params["optimizer"] = config.pop("name", type(optimizer).__name__)
            params.update({f"optimizer.{k}": v for k, v in config.items() if v is not None})
        return params


def weight_tensors(model: Any) -> dict[str, Any]:
    """``{variable path: tensor}`` of every weight of ``model`` (trainable or not).

    Torch tensors on the torch backend (bfloat16 included), numpy arrays otherwise. A
    path used twice gets ``_1``, ``_2``... appended, so no weight is lost.
    """
    torch_backend = keras.backend.backend() == "torch"
    tensors: dict[str, Any] = {}
    for name, variable in _named(model):
        value = variable.value
        # keras.ops.convert_to_numpy goes through np.array(tensor), which numpy 2 deprecates for torch tensors
        tensors[name] = value.detach().cpu().contiguous() if torch_backend else keras.ops.convert_to_numpy(value)
    return tensors


def load_weights(model: Any, path: str | Path) -> None:
    """Assign the weights in the safetensors file ``path`` (as :class:`MvcCheckpoint` wrote it) to ``model``.

    Weights match by name; when the names differ but the file holds the same number of
    tensors with the same shapes in the same order (layer names Keras numbered
    differently, e.g. ``dense_2`` for ``dense``), they match by order, as Keras's own
    weight files do.

    Raises:
        UsageError: the file's tensors do not match the model's weights.
    """
    tensors, order = _load(path)
    named = _named(model)
    if {n for n, _ in named} != set(tensors):
        stored = [tensors[n] for n in order if n in tensors]
        if len(stored) != len(named) or any(tuple(t.shape) != tuple(v.shape) for t, (_, v) in zip(stored, named)):
            missing = [n for n, _ in named if n not in tensors]
            raise UsageError(
                f"{path} does not match the model ({len(tensors)} tensors for {len(named)} weights; "
                f"not in the file: {', '.join(missing[:5]) or 'none'})",
                hint="load the file into the model architecture that wrote it",
            )
        tensors = {n: t for (n, _), t in zip(named, stored)}
    for name, variable in named:
        variable.assign(tensors[name])


def _named(model: Any) -> list[tuple[str, Any]]:
    named: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for variable in model.weights:
        base = getattr(variable, "path", None) or variable.name
        count = seen.get(base, 0)
        seen[base] = count + 1
        named.append((base if count == 0 else f"{base}_{count}", variable))
    return named


# safetensors sorts tensors by name; the model's own order is kept in the metadata
_ORDER_KEY = "keras.weight_order"


def _save(tensors: dict[str, Any], path: str) -> None:
    if keras.backend.backend() == "torch":
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file  # type: ignore[assignment]
    save_file(tensors, path, metadata={"format": "keras", _ORDER_KEY: json.dumps(list(tensors))})


def _load(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    from safetensors import safe_open

    framework = "pt" if keras.backend.backend() == "torch" else "np"
    with safe_open(str(path), framework=framework) as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        order = documents.load_json((f.metadata() or {}).get(_ORDER_KEY, "[]"))
    return tensors, order


__all__ = ["MvcCheckpoint", "load_weights", "weight_tensors"]

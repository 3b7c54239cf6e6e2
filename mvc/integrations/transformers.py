"""Hugging Face Transformers: ``MvcCallback`` versions each checkpoint the ``Trainer`` saves.

The ``Trainer`` writes ``OUTPUT_DIR/checkpoint-<step>/model.safetensors`` (or shards plus
``model.safetensors.index.json``) on each save. The callback copies the weights to one
stable path (so every checkpoint is a version of one model, whatever the Trainer later
rotates away) and versions it with the ``TrainingArguments`` as params and the latest
evaluation metrics.

Example::

    from mvc.integrations.transformers import MvcCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      callbacks=[MvcCallback("models/bert.safetensors")])
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mvc.integrations.transformers needs transformers: pip install 'mvc[integrations]'") from exc

from mvc.errors import PathNotFoundError, UsageError
from mvc.files import replace_atomic
from mvc.integrations import Target, numbers

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"

# Recorded even when they keep their default value: what people compare runs by.
CORE_ARGS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "optim",
    "seed",
)


class MvcCallback(TrainerCallback):
    """Version the weights of every checkpoint the ``Trainer`` saves.

    Args:
        path: where the weights are versioned, inside the repository: a ``.safetensors``
            file, or a directory for sharded checkpoints. Default:
            ``OUTPUT_DIR/model.safetensors``, checked when training begins.
        name: the model name (default: the file name).
        push: upload each version in the background (``mvc.wait()`` reports failures).
        params: extra hyperparameters recorded with every version.
        datasets: DVC-tracked data sets the model is trained on.
        commit: commit each version on the current branch.
        repo: the repository (default: the one holding ``path``).

    Each version records ``step`` = the global step, the ``TrainingArguments`` that
    differ from their defaults plus the main ones (:data:`CORE_ARGS`) as params, and
    the ``eval_*`` metrics and training ``loss`` logged at that step (none if nothing
    was logged then: an earlier evaluation never passes as this checkpoint's).

    Raises:
        UsageError: ``path`` outside the repository.
        NotARepoError: no mvc repository there.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        name: str | None = None,
        push: bool = False,
        params: Mapping[str, Any] | None = None,
        datasets: list[str | Path] | None = None,
        commit: bool = True,
        repo: str | Path | None = None,
    ) -> None:
        self._options: dict[str, Any] = dict(name=name, push=push, params=params, datasets=datasets, commit=commit, repo=repo)
        self.target = Target(path, **self._options) if path is not None else None

    @property
    def versions(self) -> list[Any]:
        """The LoggedVersion of every checkpoint, in order."""
        return self.target.versions if self.target is not None else []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.target is None and state.is_world_process_zero:
            self.target = Target(Path(args.output_dir) / WEIGHTS, **self._options)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.target is None:
            self.target = Target(Path(args.output_dir) / WEIGHTS, **self._options)
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        _copy_weights(checkpoint, self.target.path)
        metrics = latest_metrics(state.log_history, step=state.global_step)
        self.target.log(params=training_params(args), metrics=metrics, step=state.global_step)


def _copy_to(src: Path, tmp: str) -> None:
    shutil.copyfile(src, tmp)


def _copy_weights(checkpoint: Path, target: Path) -> None:
    """Copy a checkpoint's weights to ``target`` (a file; a directory for shards), atomically per file."""
    single = checkpoint / WEIGHTS
    if single.is_file() and not target.is_dir():
        replace_atomic(target, lambda tmp: shutil.copyfile(single, tmp))
        return
    index = checkpoint / SHARD_INDEX
    if not index.is_file():
        raise PathNotFoundError(
            f"{checkpoint} holds no {WEIGHTS} (nor a sharded {SHARD_INDEX})",
            hint="save checkpoints as safetensors (the Trainer's default, save_safetensors=True)",
        )
    if target.is_file() or target.suffix == ".safetensors":
        raise UsageError(
            f"the checkpoints in {checkpoint.parent} are sharded: MvcCallback's path must be a directory, not {target.name}",
            hint="pass a directory, e.g. MvcCallback('models/llm')",
        )
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in checkpoint.glob("model*.safetensors*")}
    for old in target.glob("model*.safetensors*"):
        if old.name not in wanted:
            old.unlink()
    for name in sorted(wanted):
        src = checkpoint / name
        replace_atomic(target / name, functools.partial(_copy_to, src))


def training_params(args: Any) -> dict[str, Any]:
    """The ``TrainingArguments`` that differ from their defaults, plus :data:`CORE_ARGS`.

    Tokens are never recorded; values come from ``args.to_dict()`` (enums as text).
    """
    values = args.to_dict()
    defaults: dict[str, Any] = {}
    if dataclasses.is_dataclass(args):
        for field in dataclasses.fields(args):
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                defaults[field.name] = field.default_factory()
    params: dict[str, Any] = {}
    for key, value in values.items():
        if "token" in key or value is None or value in ([], {}):
            continue
        default = defaults.get(key, dataclasses.MISSING)
        same = default is not dataclasses.MISSING and str(getattr(default, "value", default)) == str(value)
        if key in CORE_ARGS or not same:
            params[key] = value
    return params


def latest_metrics(log_history: list[dict[str, Any]], step: int | None = None) -> dict[str, Any]:
    """The latest ``eval_*`` metrics and the latest training ``loss`` from ``state.log_history``.

    Args:
        step: only entries logged at this global step count (a checkpoint's own
            metrics); a checkpoint saved without an evaluation at its step gets no
            ``eval_*`` metrics rather than an earlier step's (issue 14). None: any step.
    """
    metrics: dict[str, Any] = {}
    for entry in reversed(log_history):
        if step is not None and entry.get("step") != step:
            continue
        if "loss" in entry and "loss" not in metrics:
            metrics["loss"] = entry["loss"]
        if not any(k.startswith("eval_") for k in metrics) and any(k.startswith("eval_") for k in entry):
            metrics.update({k: v for k, v in entry.items() if k.startswith("eval_") and not k.endswith(_TIMINGS)})
            if "epoch" in entry:
                metrics["epoch"] = entry["epoch"]
        if "loss" in metrics and any(k.startswith("eval_") for k in metrics):
            break
    return numbers(metrics)


_TIMINGS = ("_runtime", "_samples_per_second", "_steps_per_second")


__all__ = ["CORE_ARGS", "MvcCallback", "latest_metrics", "training_params"]

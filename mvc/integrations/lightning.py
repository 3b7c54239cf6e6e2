"""PyTorch Lightning: ``MvcCheckpoint`` versions ``pl_module.state_dict()`` as safetensors.

Lightning's own checkpoints are ``.ckpt`` pickles (weights plus optimizer and loop
state), which mvc can version only as opaque blobs and never loads; this callback
writes the module's weights as safetensors instead, with the same save policy as the
Keras callback.

Example::

    from mvc.integrations.lightning import MvcCheckpoint
    trainer = L.Trainer(max_epochs=10, callbacks=[MvcCheckpoint("models/net.safetensors",
                                                                monitor="val_loss", save_best_only=True)])
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning import Callback  # type: ignore[assignment]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("mvc.integrations.lightning needs Lightning: pip install 'mvc[integrations]'") from exc

from mvc.integrations import EpochCheckpoint, numbers
from mvc.integrations.torch import write_state_dict

_TRAINER_PARAMS = ("max_epochs", "max_steps", "accumulate_grad_batches", "gradient_clip_val", "precision")


class MvcCheckpoint(EpochCheckpoint, Callback):
    """Version the module's weights every N epochs, or only when a monitored metric improves.

    Runs at the end of each training epoch (after that epoch's validation). Each
    version records ``trainer.callback_metrics`` as metrics, the module's hyperparameters
    (``save_hyperparameters``), the optimizer's settings and the trainer's main arguments
    as params, and ``step`` = the epoch (1-based). Only the global-zero process writes.

    Args: as :class:`mvc.integrations.keras.MvcCheckpoint`.

    Raises:
        UsageError: ``path`` outside the repository, or a bad policy value.
        NotARepoError: no mvc repository there.
    """

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        metrics = numbers(trainer.callback_metrics)
        if not self.policy.should_save(epoch, metrics):
            return
        write_state_dict(pl_module.state_dict(), self.target.path)
        self.target.log(params=_params(trainer, pl_module), metrics=metrics, step=epoch)


def _params(trainer: Any, pl_module: Any) -> dict[str, Any]:
    params: dict[str, Any] = dict(getattr(pl_module, "hparams", {}) or {})
    for key in _TRAINER_PARAMS:
        value = getattr(trainer, key, None)
        if value is not None and value != -1:
            params[f"trainer.{key}"] = value
    optimizers = getattr(trainer, "optimizers", None) or []
    if optimizers:
        optimizer = optimizers[0]
        params["optimizer"] = type(optimizer).__name__
        group = optimizer.param_groups[0] if optimizer.param_groups else {}
        for key, value in optimizer.defaults.items():
            value = group.get(key, value)
            if value is not False and isinstance(value, bool | int | float | str | tuple):
                params[f"optimizer.{key}"] = list(value) if isinstance(value, tuple) else value
    return params


__all__ = ["MvcCheckpoint"]

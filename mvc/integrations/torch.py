"""Plain PyTorch: write a model (or state dict) as safetensors and version it in one call.

Example::

    from mvc.integrations.torch import save_version
    for epoch in range(10):
        train_one_epoch(model)
        save_version(model, "models/net.safetensors", step=epoch + 1,
                     params={"lr": lr}, metrics={"loss": loss}, push=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mvc.integrations.torch needs PyTorch: pip install 'mvc[integrations]'") from exc

from mvc.errors import UsageError
from mvc.files import replace_atomic


def save_version(model_or_state_dict: torch.nn.Module | Mapping[str, Any], path: str | Path, **log_model_kwargs: Any) -> Any:
    """Write ``model.state_dict()`` (or the state dict given) to ``path`` as safetensors, then ``mvc.log_model`` it.

    Args:
        model_or_state_dict: an ``nn.Module`` or a mapping of names to tensors.
        path: the safetensors file, inside the repository.
        **log_model_kwargs: passed to :func:`mvc.api.log_model` (name, params, metrics,
            datasets, step, message, commit, push, repo).

    Returns:
        The LoggedVersion (unchanged weights: ``created`` False, no new version).

    Raises:
        UsageError: an entry is not a tensor; or what ``log_model`` raises.
    """
    from mvc import api

    write_state_dict(model_or_state_dict, path)
    return api.log_model(path, **log_model_kwargs)


def write_state_dict(model_or_state_dict: torch.nn.Module | Mapping[str, Any], path: str | Path) -> Path:
    """Write a state dict as a safetensors file (atomically), exactly, tensor by tensor.

    Tensors are moved to the CPU and made contiguous; tied weights (two names sharing
    one storage, e.g. an embedding and an output layer), which safetensors refuses,
    are written as separate copies.

    Raises:
        UsageError: an entry is not a tensor (safetensors holds tensors only).
    """
    from safetensors.torch import save_file

    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) else model_or_state_dict
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UsageError(
                f"state dict entry {name!r} is a {type(value).__name__}, not a tensor",
                hint="safetensors holds tensors only: keep other state in a separate file",
            )
        tensor = value.detach().to("cpu")
        ptr = tensor.untyped_storage().data_ptr()
        if ptr and ptr in storages:
            tensor = tensor.clone()
        elif ptr:
            storages.add(ptr)
        tensors[str(name)] = tensor.contiguous()
    return replace_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


__all__ = ["save_version", "write_state_dict"]

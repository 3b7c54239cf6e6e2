"""mvc: model version control — git for model weights, built on DVC.

``import mvc`` is cheap: the API (and with it GitPython and DVC) loads on first use.

    import mvc
    mvc.add("model.safetensors", metrics={"acc": 0.9})
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "exp_new",
    "exp_list",
    "exp_switch",
    "exp_compare",
    "exp_promote",
    "exp_remove",
    "install_hooks",
    "resolve",
    "tag",
    "promote",
    "rename",
    "unassign",
    "registry_show",
    "push_registry",
    "verify",
    "sign",
    "init",
    "add",
    "commit",
    "status",
    "push",
    "pull",
    "checkout",
    "models",
    "remote_add",
    "remote_list",
    "remote_default",
    "remote_remove",
    "remote_modify",
    "get",
    "log",
    "show",
    "diff",
    "restore",
    "evaluate",
    "log_model",
    "wait",
    "merge",
    "gc",
    "run",
    "check_weights_path",
    "check_addable",
    "push_full",
    "storage",
    "pull_tensors",
}

# The exception hierarchy (``except mvc.RefNotFoundError as exc: exc.ref``); mvc.errors is cheap.
_ERRORS = {
    "MvcError",
    "UsageError",
    "NotFoundError",
    "NotARepoError",
    "PathNotFoundError",
    "ModelNotFoundError",
    "RefNotFoundError",
    "RemoteNotFoundError",
    "MissingObjectError",
    "ConflictError",
    "LockedError",
    "AmbiguousRefError",
    "RemoteError",
    "IntegrityError",
    "CorruptFileError",
    "SchemaError",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        from mvc import api

        return getattr(api, name)
    if name in _ERRORS:
        from mvc import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'mvc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_ERRORS])

"""The model manifest: the metadata mvc keeps under ``meta: {mvc: ...}`` in a DVC pointer.

Plain frozen dataclasses with a versioned dict form. Readers reject manifests from a
newer schema with a clear message instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mvc.errors import SchemaError

SCHEMA = 1


@dataclass(frozen=True)
class Parent:
    """A version this one was derived from."""

    hash: str
    version: int
    name: str | None = None  # set when the parent is another model (merges across models)


@dataclass(frozen=True)
class DatasetRef:
    """A data set the model was trained on, by its DVC hash (data lineage)."""

    path: str
    hash: str | None


@dataclass(frozen=True)
class CodeRef:
    """The git commit of the training code when the version was made."""

    commit: str | None = None
    dirty: bool = False
    branch: str | None = None


@dataclass(frozen=True)
class TensorSummary:
    """Totals of the tensor index, kept in the manifest; the full index is a sidecar file."""

    count: int
    parameters: int
    total_bytes: int
    bytes_by_dtype: dict[str, int]


@dataclass(frozen=True)
class Manifest:
    """Everything mvc knows about one model version."""

    name: str
    version: int
    hash: str  # the DVC content hash this manifest describes
    created: str
    author: str = ""
    message: str = ""
    parents: tuple[Parent, ...] = ()
    format: str = "opaque"
    framework: str | None = None
    framework_version: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[DatasetRef, ...] = ()
    code: CodeRef = CodeRef(commit=None, dirty=False)
    labels: tuple[str, ...] = ()
    index: str | None = None  # path of the tensor-index sidecar, relative to the repo root
    index_hash: str | None = None  # sha256 of the sidecar's bytes: binds the index to these weights
    tensors: TensorSummary | None = None
    notes: tuple[str, ...] = ()
    step: int | None = None
    experiment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. merge method and parameters
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form written into the pointer (empty fields left out)."""
        raw = asdict(self)
        out: dict[str, Any] = {"schema": raw.pop("schema")}
        for key, value in raw.items():
            if value in (None, (), [], {}, "") and key not in ("author", "message"):
                continue
            out[key] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "pointer") -> Manifest:
        """Parse the dict form.

        Raises:
            SchemaError: not a mapping, a newer schema, or a required field missing.
        """
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: the mvc manifest is not a mapping", hint=_FIX_HINT.format(source))
        schema = data.get("schema", SCHEMA)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise SchemaError(
                f"{source} was written by a newer mvc (manifest schema {schema}, this mvc reads {SCHEMA})",
                hint="upgrade mvc: pip install -U mvc",
            )
        try:
            known = {f.name for f in fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known}
            kwargs["parents"] = tuple(Parent(**p) for p in data.get("parents") or ())
            kwargs["datasets"] = tuple(DatasetRef(**d) for d in data.get("datasets") or ())
            kwargs["code"] = CodeRef(**(data.get("code") or {"commit": None, "dirty": False}))
            kwargs["labels"] = tuple(data.get("labels") or ())
            kwargs["notes"] = tuple(data.get("notes") or ())
            tensors = data.get("tensors")
            kwargs["tensors"] = TensorSummary(**tensors) if tensors else None
            kwargs["params"] = dict(data.get("params") or {})
            kwargs["metrics"] = dict(data.get("metrics") or {})
            kwargs["extra"] = dict(data.get("extra") or {})
            kwargs["version"] = int(data["version"])
            kwargs["name"] = str(data["name"])
            kwargs["hash"] = str(data["hash"])
            kwargs["created"] = str(data.get("created", ""))
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{source}: malformed mvc manifest ({exc})", hint=_FIX_HINT.format(source)) from exc

    def evolve(self, **changes: Any) -> Manifest:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


_FIX_HINT = "restore it with `git checkout -- {0}`, or re-add the model with `mvc add`"


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so YAML and JSON dumpers emit plain sequences."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value

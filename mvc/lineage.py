"""What a version was made from: hyperparameters, metrics, data sets and code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvc import documents, gitstore, pointer
from mvc.errors import PathNotFoundError, UsageError
from mvc.manifest import CodeRef, DatasetRef

# Paths mvc itself writes; they do not make the training code "dirty".
MVC_OWNED = (".dvc", ".gitignore", ".mvc/", ".dvcignore")


def parse_value(text: str) -> Any:
    """``"0.1"`` -> 0.1, ``"3"`` -> 3, ``"true"`` -> True, JSON lists/objects, else the string."""
    lowered = text.strip()
    if lowered in ("true", "false", "null"):
        return json.loads(lowered)
    try:
        return json.loads(lowered)
    except ValueError:
        return text


def parse_pairs(pairs: list[str] | None, *, option: str) -> dict[str, Any]:
    """Parse ``k=v`` strings.

    Raises:
        UsageError: an item has no ``=`` or an empty key.
    """
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r} is not KEY=VALUE", hint=f"write it as {option} lr=0.001")
        out[key.strip()] = parse_value(value)
    return out


def read_mapping_file(path: str | Path, *, option: str) -> dict[str, Any]:
    """Read a YAML or JSON file holding a mapping (params.yaml, metrics.json).

    Nested mappings are kept as they are.

    Raises:
        PathNotFoundError: the file does not exist.
        UsageError: unreadable, not YAML/JSON, or not a mapping.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PathNotFoundError(f"{option} {path}: no such file", hint="check the path", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot read the file ({exc.__class__.__name__})", hint="check its permissions and encoding") from exc
    try:
        data = documents.load_json(text) if p.suffix == ".json" else documents.load_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if p.suffix == ".json" else "YAML"
        what = "holds a YAML alias, which mvc does not expand" if getattr(exc, "problem", None) == "alias" else f"is not valid {kind}"
        raise UsageError(f"{option} {path} {what}", hint="fix the file or pass values with KEY=VALUE") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{option} {path} does not hold a mapping of names to values", hint="write it as `name: value` lines")
    return data


def collect(pairs: list[str] | None, files: list[str | Path] | None, *, option: str) -> dict[str, Any]:
    """Merge values from files (in order) and then ``k=v`` pairs (which win)."""
    out: dict[str, Any] = {}
    for f in files or []:
        out.update(read_mapping_file(f, option=f"{option}s-file"))  # --params-file, --metrics-file
    out.update(parse_pairs(pairs, option=option))
    return out


def dataset_refs(root: Path, paths: list[str] | None) -> tuple[DatasetRef, ...]:
    """The DVC hash of each data set, read from its pointer (``PATH.dvc`` or ``PATH`` itself).

    Raises:
        PathNotFoundError: the data set is not tracked by DVC.
    """
    refs = []
    for raw in paths or []:
        full = Path(raw).expanduser().resolve()
        try:
            rel = full.relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"--dataset {raw} is outside the repository", hint="track data sets inside the repository with `dvc add`") from None
        rel = rel.removesuffix(pointer.SUFFIX)
        ptr = pointer.read(root, pointer.pointer_path(rel))
        if ptr is None:
            raise PathNotFoundError(
                f"--dataset {raw} is not tracked by DVC (no {rel}{pointer.SUFFIX})",
                hint=f"track it first: `dvc add {rel}`",
                path=rel,
            )
        refs.append(DatasetRef(path=rel, hash=ptr.md5 or None))
    return tuple(refs)


def code_ref(root: Path) -> CodeRef:
    """HEAD commit, branch and whether tracked files other than mvc's own differ from it."""
    return CodeRef(
        commit=gitstore.head_commit(root),
        dirty=gitstore.is_dirty(root, ignore=MVC_OWNED),
        branch=gitstore.current_branch(root),
    )

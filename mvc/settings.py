"""mvc's own repository settings, kept in ``.mvc/config.json`` (tracked by git)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvc.errors import SchemaError
from mvc.pointer import write_atomic

MVC_DIR = ".mvc"
CONFIG_FILE = f"{MVC_DIR}/config.json"
SCHEMA = 1


@dataclass(frozen=True)
class Settings:
    """Repository-wide mvc settings."""

    schema: int = SCHEMA
    key_metrics: tuple[str, ...] = ()  # metrics shown first by `mvc log` / `mvc exp list`
    require_signed: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def config_path(root: Path) -> Path:
    """Path of the settings file in the repository at ``root``."""
    return root / CONFIG_FILE


def is_mvc_repo(root: Path) -> bool:
    """True when ``mvc init`` ran in ``root``."""
    return config_path(root).is_file()


def load(root: Path) -> Settings:
    """Read the settings (defaults when the file does not exist).

    Raises:
        SchemaError: the file is not valid JSON or from a newer mvc.
    """
    path = config_path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{CONFIG_FILE} is not valid JSON", hint=f"fix it or run `git checkout -- {CONFIG_FILE}`") from exc
    if not isinstance(data, dict) or int(data.get("schema", SCHEMA)) > SCHEMA:
        raise SchemaError(f"{CONFIG_FILE} was written by a newer mvc", hint="upgrade mvc: pip install -U mvc")
    return Settings(
        schema=SCHEMA,
        key_metrics=tuple(data.get("key_metrics", ())),
        require_signed=bool(data.get("require_signed", False)),
        extra=dict(data.get("extra", {})),
    )


def save(root: Path, settings: Settings) -> None:
    """Write the settings atomically."""
    data = asdict(settings)
    data["key_metrics"] = list(settings.key_metrics)
    write_atomic(config_path(root), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

"""mvc's own settings: the repository's in ``.mvc/config.json`` (tracked by git), and a
machine-local signing policy no commit can change (issue 14).

The signing policy is the strictest of three sources: the environment
(``MVC_REQUIRE_SIGNED=1``, ``MVC_TRUSTED_KEYS=DIR``), this clone's
``.git/mvc/config.json`` (inside ``.git/``: never tracked, and no checkout can write
it) and the repository's ``.mvc/config.json``. The repository can only tighten: when the
environment or the local file requires signatures, the trusted keys must come from
there (or ``--trusted-keys``), never from a directory a commit could fill.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvc import documents
from mvc.errors import SchemaError, UsageError
from mvc.files import write_atomic

MVC_DIR = ".mvc"
CONFIG_FILE = f"{MVC_DIR}/config.json"
LOCAL_CONFIG = "mvc/config.json"  # inside the clone's git directory
ENV_REQUIRE_SIGNED = "MVC_REQUIRE_SIGNED"
ENV_TRUSTED_KEYS = "MVC_TRUSTED_KEYS"
TRUSTED_KEYS_SETTING = "trusted_keys"  # in .mvc/config.json under "extra"
SCHEMA = 1
_TRUE = {"1", "true", "yes", "on"}


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
        data = documents.load_json(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{CONFIG_FILE} is not valid JSON", hint=f"fix it or run `git checkout -- {CONFIG_FILE}`") from exc
    fix = f"fix it by hand, or run `git checkout -- {CONFIG_FILE}`"
    if not isinstance(data, dict):
        raise SchemaError(f"{CONFIG_FILE} is not a JSON object of settings", hint=fix)
    schema = data.get("schema", SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise SchemaError(f"{CONFIG_FILE}: 'schema' is {schema!r}, not a number", hint=fix)
    if schema > SCHEMA:
        raise SchemaError(f"{CONFIG_FILE} was written by a newer mvc", hint="upgrade mvc: pip install -U mvc")
    key_metrics = data.get("key_metrics", [])
    if not isinstance(key_metrics, list) or not all(isinstance(k, str) for k in key_metrics):
        raise SchemaError(f"{CONFIG_FILE}: 'key_metrics' must be a list of metric names, not {key_metrics!r}", hint=fix)
    require_signed = data.get("require_signed", False)
    if not isinstance(require_signed, bool):
        raise SchemaError(f"{CONFIG_FILE}: 'require_signed' must be true or false, not {require_signed!r}", hint=fix)
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise SchemaError(f"{CONFIG_FILE}: 'extra' must be an object, not {extra!r}", hint=fix)
    return Settings(schema=SCHEMA, key_metrics=tuple(key_metrics), require_signed=require_signed, extra=dict(extra))


def save(root: Path, settings: Settings) -> None:
    """Write the settings atomically."""
    data = asdict(settings)
    data["key_metrics"] = list(settings.key_metrics)
    write_atomic(config_path(root), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class SigningPolicy:
    """Whether versions must be signed before they reach a work tree, and by which keys."""

    required: bool  # by any source
    enforced_by: str | None  # "MVC_REQUIRE_SIGNED" or the local file when it is not the repo's choice
    trusted_keys: Path | None  # the directory to trust (None: none configured where allowed)
    trusted_keys_from: str | None


def git_dir(root: Path) -> Path:
    """The clone's git directory (the common one for a linked worktree), without running git."""
    dot = root / ".git"
    if dot.is_file():  # a worktree or submodule: "gitdir: PATH"
        text = dot.read_text().strip()
        target = Path(text.partition("gitdir:")[2].strip())
        dot = target if target.is_absolute() else (root / target).resolve()
        common = dot / "commondir"
        if common.is_file():
            c = Path(common.read_text().strip())
            dot = c if c.is_absolute() else (dot / c).resolve()
    return dot


def local_config_path(root: Path) -> Path:
    """This clone's own mvc settings file: ``.git/mvc/config.json``."""
    return git_dir(root) / LOCAL_CONFIG


def load_local(root: Path) -> dict[str, object]:
    """This clone's own settings (``{}`` when there are none).

    Raises:
        SchemaError: the file is not a JSON object.
    """
    path = local_config_path(root)
    try:
        data = documents.load_json(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path} is not valid JSON", hint="fix it or delete it (it holds this clone's signing policy)") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"{path} does not hold a JSON object", hint='write it as {"require_signed": true, "trusted_keys": "DIR"}')
    return data


def save_local(root: Path, *, require_signed: bool | None = None, trusted_keys: str | None = None) -> Path:
    """Set this clone's signing policy in ``.git/mvc/config.json``; returns the file."""
    data = load_local(root)
    if require_signed is not None:
        data["require_signed"] = require_signed
    if trusted_keys is not None:
        data["trusted_keys"] = trusted_keys
    path = local_config_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def _keys_path(value: object, base: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def signing_policy(root: Path | None, env: Mapping[str, str] | None = None) -> SigningPolicy:
    """The signing policy in force for the repository at ``root`` (None: no repository, e.g. ``mvc get``).

    Raises:
        SchemaError: a settings file is unreadable.
    """
    env = os.environ if env is None else env
    local = load_local(root) if root is not None else {}
    repo = load(root) if root is not None else Settings()
    enforced_by = None
    if env.get(ENV_REQUIRE_SIGNED, "").strip().lower() in _TRUE:
        enforced_by = f"{ENV_REQUIRE_SIGNED}=1"
    elif local.get("require_signed") is True:
        assert root is not None
        enforced_by = str(local_config_path(root))
    keys: Path | None = None
    keys_from: str | None = None
    if env.get(ENV_TRUSTED_KEYS):
        keys, keys_from = Path(env[ENV_TRUSTED_KEYS]).expanduser(), ENV_TRUSTED_KEYS
    elif local.get("trusted_keys") and root is not None:
        keys, keys_from = _keys_path(local["trusted_keys"], root), str(local_config_path(root))
    elif enforced_by is None and repo.extra.get(TRUSTED_KEYS_SETTING) and root is not None:
        # The repository's own key directory counts only when the repository alone asks for signatures.
        keys, keys_from = _keys_path(repo.extra[TRUSTED_KEYS_SETTING], root), CONFIG_FILE
    return SigningPolicy(
        required=enforced_by is not None or repo.require_signed,
        enforced_by=enforced_by,
        trusted_keys=keys,
        trusted_keys_from=keys_from,
    )


def trusted_keys_dir(policy: SigningPolicy, given: str | Path | None) -> Path:
    """The trusted keys directory: ``given`` (``--trusted-keys``), else the policy's.

    Raises:
        UsageError: none is configured where the policy allows it.
    """
    if given is not None:
        return Path(given).expanduser()
    if policy.trusted_keys is not None:
        return policy.trusted_keys
    if policy.enforced_by is not None:
        raise UsageError(
            f"signatures are required ({policy.enforced_by}) but no trusted keys are set outside the repository",
            hint=f"set {ENV_TRUSTED_KEYS}=DIR, \"trusted_keys\" in .git/{LOCAL_CONFIG}, or pass --trusted-keys DIR",
        )
    raise UsageError(
        "no trusted keys to check signatures against",
        hint=f'pass --trusted-keys DIR, or set "extra": {{"{TRUSTED_KEYS_SETTING}": "DIR"}} in {CONFIG_FILE}',
    )

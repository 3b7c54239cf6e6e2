"""A repository's DVC remotes: list, add, modify, remove, and the default.

Part of the DVC adapter (see :mod:`mvc.dvcstore`). Options that hold secrets go to
``.dvc/config.local`` (readable by its owner only) and are never shown; a remote is
checked against DVC's schema before either file is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.dvcstore import _repo
from mvc.errors import ConflictError, RemoteNotFoundError, UsageError

if TYPE_CHECKING:
    from dvc.repo import Repo


@dataclass(frozen=True)
class RemoteConfig:
    """A DVC remote as mvc shows it (secrets never included)."""

    name: str
    url: str
    default: bool
    options: dict[str, str]
    secrets: tuple[str, ...] = ()  # names (never values) of the secret options that are set


# Options that hold secrets or paths to secrets: written only to .dvc/config.local,
# never printed.
SECRET_OPTIONS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "credentialpath",
        "password",
        "ask_password",
        "key_secret",
        "sas_token",
        "connection_string",
        "account_key",
        "gdrive_client_secret",
    }
)


def remotes(root: Path) -> list[RemoteConfig]:
    """The remotes of the repository, secrets left out.

    ``options`` are the ones set in the config files (not DVC's schema defaults),
    sorted by name; ``secrets`` names the secret options set, never their values.
    """
    with _repo(root) as repo:
        conf = repo.config
        default = conf["core"].get("remote")
        raw = repo.config.load_config_to_level().get("remote", {})
        result = []
        for name, opts in sorted(conf["remote"].items()):
            given = raw.get(name, opts)
            result.append(
                RemoteConfig(
                    name=name,
                    url=str(opts.get("url", "")),
                    default=name == default,
                    options={k: str(given[k]) for k in sorted(given) if k != "url" and k not in SECRET_OPTIONS},
                    secrets=tuple(sorted(k for k in given if k in SECRET_OPTIONS)),
                )
            )
        return result


def add_remote(
    root: Path,
    name: str,
    url: str,
    *,
    options: dict[str, Any] | None = None,
    default: bool = False,
    force: bool = False,
) -> None:
    """Add (or with ``force`` replace) a remote; secret options go to ``.dvc/config.local``."""
    options = dict(options or {})
    public = {k: v for k, v in options.items() if k not in SECRET_OPTIONS}
    secret = {k: v for k, v in options.items() if k in SECRET_OPTIONS}
    with _repo(root) as repo:
        if name in repo.config["remote"] and not force:
            raise ConflictError(
                f"a remote named {name!r} exists already",
                hint=f"pick another name, or replace it with `mvc remote add {name} URL --force`",
            )
        # Validate the whole remote before writing either file, so a bad option never
        # leaves the public half written.
        _require_plugin(name, url)
        _validate_remote(repo, name, {"url": url, **options})
        try:
            with repo.config.edit("repo") as conf:
                conf["remote"][name] = {"url": url, **public}
                if default:
                    conf["core"]["remote"] = name
            if secret:
                _private_local_config(repo)
            with repo.config.edit("local") as conf:
                if secret:
                    conf["remote"][name] = secret
                else:
                    conf["remote"].pop(name, None)
        except Exception as exc:
            from dvc.config import ConfigError

            if isinstance(exc, ConfigError):
                raise _config_usage_error(exc, name, url) from exc
            raise


def _private_local_config(repo: Repo) -> None:
    """Create ``.dvc/config.local`` (it holds keys) readable by its owner only, before DVC writes it."""
    path = os.path.join(repo.dvc_dir, "config.local")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


# URL schemes served by DVC plugins that are not installed with mvc: the module to import
# and the package to install.
_PLUGINS = {
    "azure": ("dvc_azure", "dvc-azure"),
    "ssh": ("dvc_ssh", "dvc-ssh"),
    "gdrive": ("dvc_gdrive", "dvc-gdrive"),
    "oss": ("dvc_oss", "dvc-oss"),
    "webdav": ("dvc_webdav", "dvc-webdav"),
    "webdavs": ("dvc_webdav", "dvc-webdav"),
    "webhdfs": ("dvc_webhdfs", "dvc-webhdfs"),
    "hdfs": ("dvc_hdfs", "dvc-hdfs"),
}


def _require_plugin(name: str, url: str) -> None:
    """Refuse a remote whose URL scheme needs a DVC plugin that is not installed.

    Raises:
        UsageError: e.g. ``azure://`` without ``dvc-azure`` (push would fail later with an ImportError).
    """
    import importlib.util

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _PLUGINS:
        return
    module, package = _PLUGINS[scheme]
    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"remote {name!r}: {scheme}:// remotes need the {package} plugin, which is not installed",
            hint=f"pip install {package}, then run the command again",
        )


def set_default_remote(root: Path, name: str) -> None:
    """Make ``name`` the default remote."""
    with _repo(root) as repo:
        if name not in repo.config["remote"]:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`", remote=name)
        with repo.config.edit("repo") as conf:
            conf["core"]["remote"] = name


def remove_remote(root: Path, name: str) -> None:
    """Delete a remote from the local and repo configs (both halves: keys and URL).

    The local half goes first: DVC validates each file merged with the others, and a
    ``.dvc/config.local`` section holding only keys, with no URL left in ``.dvc/config``,
    is a config error that breaks every later mvc and dvc command.
    """
    with _repo(root) as repo:
        if name not in repo.config["remote"]:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`", remote=name)
        for level in ("local", "repo"):
            with repo.config.edit(level) as conf:
                conf["remote"].pop(name, None)
                if conf["core"].get("remote") == name:
                    del conf["core"]["remote"]


def default_remote(root: Path) -> str | None:
    """The name of the default remote, or None."""
    with _repo(root) as repo:
        return repo.config["core"].get("remote")


def _validate_remote(repo: Repo, name: str, section: dict[str, Any]) -> None:
    """Check a remote's settings against DVC's schema without writing anything.

    Raises:
        UsageError: unknown URL scheme, or an option that does not apply to it.
    """
    from dvc.config import Config, ConfigError

    merged = repo.config.load_config_to_level()
    merged.setdefault("remote", {})[name] = section
    try:
        Config.validate(merged)
    except ConfigError as exc:
        raise _config_usage_error(exc, name, str(section.get("url", ""))) from exc


def _config_usage_error(exc: Exception, name: str, url: str) -> UsageError:
    """Turn DVC's schema complaint about a remote into one line naming the remote and the fix."""
    text = str(exc).splitlines()[0].removeprefix("config file error: ")
    scheme = url.split("://", 1)[0] + "://" if "://" in url else "local-directory"
    unsupported = re.search(r"Unsupported URL type (\S+)", text)
    if unsupported:
        return UsageError(
            f"remote {name!r}: unsupported URL scheme {unsupported.group(1)!r} in {url!r}",
            hint="use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, azure://, ssh://, http(s)://, or a local directory",
        )
    extra = re.search(r"extra keys not allowed @ data\['remote'\]\['[^']*'\]\['([^']+)'\]", text)
    if extra:
        return UsageError(
            f"remote {name!r}: option {extra.group(1)!r} does not apply to {scheme} remotes",
            hint="--project and --credentialpath are for gs://; --profile, --region and access keys for s3://",
        )
    return UsageError(f"remote {name!r}: {text}", hint="check the URL and the options (`mvc remote add --help`)")


def modify_remote(root: Path, name: str, option: str, value: str | None = None, *, local: bool = False) -> str:
    """Set (or with ``value=None`` unset) one option of remote ``name``.

    Secret options (keys, credential paths) always go to ``.dvc/config.local``, as does
    every option with ``local``.

    Returns:
        The config file written, relative to the repository root.

    Raises:
        RemoteNotFoundError: no such remote.
        UsageError: the option does not apply to the remote's URL scheme, or a bad value.
    """
    with _repo(root) as repo:
        if name not in repo.config["remote"]:
            raise RemoteNotFoundError(f"no remote named {name!r}", hint="list them with `mvc remote list`", remote=name)
        level = "local" if local or option in SECRET_OPTIONS else "repo"
        # The remote as it will be: each file's own section, the edited one changed, merged
        # repo then local. (Unsetting a --local URL override falls back to .dvc/config's.)
        sections = {lv: dict(repo.config.load_one(lv).get("remote", {}).get(name, {})) for lv in ("repo", "local")}
        if value is None:
            sections[level].pop(option, None)
        else:
            sections[level][option] = value
        if option == "url" and value is not None:
            _require_plugin(name, value)
        _validate_remote(repo, name, {**sections["repo"], **sections["local"]})
        if level == "local":
            _private_local_config(repo)
        with repo.config.edit(level) as conf:
            own = conf["remote"].setdefault(name, {})
            if value is None:
                own.pop(option, None)
            else:
                own[option] = value
            if not own:
                del conf["remote"][name]
        return ".dvc/config.local" if level == "local" else ".dvc/config"


__all__ = [
    "RemoteConfig",
    "add_remote",
    "default_remote",
    "modify_remote",
    "remotes",
    "remove_remote",
    "set_default_remote",
]

"""Pushing cache objects by hash, beside the repository's lock: background uploads (issue 10).

Part of the DVC adapter (see :mod:`mvc.dvcstore`): a training thread's versions go up
while the training thread keeps calling mvc, so nothing here opens the repository
:func:`mvc.dvcstore.lock` holds or touches process-wide logging.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mvc.dvcintegrity import _object_intact
from mvc.dvcstore import (
    TransferResult,
    _branching,
    _cache_has,
    _object_ids,
    _progress_hook,
    _push_bytes,
    _register_cache,
    _translate,
)
from mvc.errors import IntegrityError, MissingObjectError, MvcError, RemoteError, counted
from mvc.progress import ByteMeter, Progress


def push_objects(
    root: Path,
    md5s: Iterable[str],
    *,
    remote: str,
    jobs: int | None = None,
    progress: Progress | None = None,
    label: str | None = None,
) -> TransferResult:
    """Upload the cache objects ``md5s`` (a ``.dir`` hash brings its files) to ``remote``.

    Made for a background thread while the training thread keeps calling mvc: it opens
    its own DVC repo (never the one :func:`lock` holds), does not touch logging or
    stdout (which :func:`_quiet` swaps process-wide), shows no progress bar unless given
    ``progress`` (the bytes as one task named ``label``, as in :func:`push`), and takes
    no repository lock: it only reads immutable cache objects.

    Raises:
        MissingObjectError: an object is not in the local cache.
        RemoteNotFoundError / RemoteError: the remote is unknown, or refused or failed.
    """
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.transfer import transfer

    objs = [HashInfo("md5", m) for m in md5s]
    oids = [str(o.value) for o in objs]
    where = f"remote {remote!r}"
    meter: ByteMeter | None = None
    try:
        with Repo(os.fspath(root)) as repo:
            _register_cache(repo)
            odb = repo.cloud.get_remote_odb(remote, "push")
            cache = repo.cache.local
            missing = [oid for oid in oids if not _cache_has(repo, oid)]
            if missing:
                raise MissingObjectError(
                    f"object {missing[0][:8]} is not in the local cache", hint="re-add the weights with `mvc add`"
                )
            for md5 in oids:  # never upload bytes that no longer match their hash
                for oid in _object_ids(repo, md5):
                    if not _object_intact(repo, cache.oid_to_path(oid), oid, use_state=True):
                        raise IntegrityError(
                            f"cache object {oid[:8]} no longer matches its hash: refusing to push it",
                            hint="re-add the weights with `mvc add`, or repair with `mvc verify --repair`",
                        )
            meter = ByteMeter(progress, label or "weights", _push_bytes(repo, remote, oids)) if progress else None
            # dvc_data's transfer moves only the ids it is given: a `.dir` listing without its files.
            objs = [HashInfo("md5", oid) for oid in sorted({i for m in oids for i in _object_ids(repo, m)})]
            with _progress_hook(meter):
                result = transfer(cache, odb, objs, jobs=jobs, cache_odb=cache, callback=_branching(meter))
    except MvcError:
        raise
    except OSError as exc:  # a local or mounted remote directory that cannot be written
        detail = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise RemoteError(f"cannot write to {where} ({detail})", hint="check the remote's URL and permissions") from exc
    except Exception as exc:
        raise _translate(exc, None, remote) from exc
    if result.failed:
        raise RemoteError(
            f"{counted(len(result.failed), 'object')} failed to upload to {where}",
            hint="run `mvc push` again; finished objects are not uploaded twice",
        )
    if meter is not None:
        meter.finish()
    return TransferResult(transferred=len(result.transferred), failed=0)


__all__ = ["push_objects"]

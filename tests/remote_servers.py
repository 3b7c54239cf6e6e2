"""Pytest plugin: session-scoped real S3 (SeaweedFS) and GCS (fake-gcs-server) servers.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.remote_servers"]``.
The servers start lazily, once per session, on 127.0.0.1, in a temporary directory,
and are stopped by PID at the end. A missing server binary fails the test with an
install hint instead of skipping it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SERVERS_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "servers.py"
_MODULE_NAME = "mvc_test_servers"


def load_servers_module() -> ModuleType:
    """Import ``scripts/servers.py`` by path (``scripts/`` is not a package).

    Returns:
        The module, cached in ``sys.modules`` so its dataclasses stay one class.
    """
    cached = sys.modules.get(_MODULE_NAME)
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, SERVERS_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SERVERS_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec so dataclasses can resolve their module.
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


servers = load_servers_module()


def pytest_configure(config: pytest.Config) -> None:
    """Set process-wide environment before any test module imports gcsfs.

    gcsfs reads ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` at import time; left on, every call
    to fake-gcs-server waits 60 s on a gRPC/TLS probe.

    Args:
        config: The pytest config (unused).
    """
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


def _start_or_fail(start: Callable[[Path], Any], workdir: Path) -> Any:
    """Start a server, turning a startup problem into a test failure with the reason.

    Args:
        start: ``servers.start_s3`` or ``servers.start_gcs``.
        workdir: Directory for the server's data and log.

    Returns:
        The running server dataclass.
    """
    try:
        return start(workdir)
    except servers.ServerError as exc:
        message = str(exc)
    # Outside the except block, so the report shows one clear reason, not a chained traceback.
    pytest.fail(f"cannot start test server: {message}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Server]:
    """A SeaweedFS S3 server with one bucket and read-write / read-only identities.

    Yields:
        ``S3Server`` with pid, port, endpoint_url, bucket, access_key, secret_key,
        ro_access_key, ro_secret_key, workdir, log_path.
    """
    server = _start_or_fail(servers.start_s3, tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        servers.stop(server)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.GcsServer]:
    """A fake-gcs-server with one bucket and anonymous access.

    Yields:
        ``GcsServer`` with pid, port, endpoint_url, bucket, workdir, log_path.
    """
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    server = _start_or_fail(servers.start_gcs, tmp_path_factory.mktemp("gcs"))
    try:
        yield server
    finally:
        servers.stop(server)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RayHead]:
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs, no dashboard), one per test session.

    Its task workers import mvc from this checkout (``PYTHONPATH``) and keep fetched
    weights in a session-private cache (``MVC_WORKER_CACHE``). The driver side gets
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``RAY_ADDRESS`` for the session.

    Yields:
        ``RayHead`` with address (HOST:PORT), client_address (ray://HOST:PORT), num_cpus.
    """
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[test]' installs it)")
    root = Path(__file__).resolve().parents[1]
    workdir = tmp_path_factory.mktemp("ray")
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
        "MVC_WORKER_CACHE": str(workdir / "worker-cache"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    head = _start_or_fail(lambda w: servers.start_ray(w, num_cpus=2, env=env), workdir)
    saved = {k: os.environ.get(k) for k in (*servers.RAY_ENV, "RAY_ADDRESS")}
    os.environ.update({**servers.RAY_ENV, "RAY_ADDRESS": head.address})
    try:
        yield head
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        servers.stop(head)

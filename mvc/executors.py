"""Where evaluation tasks run: threads on this machine, or tasks on a Ray cluster (issue 16).

One small interface: :meth:`Executor.submit` returns a :class:`concurrent.futures.Future`,
:meth:`Executor.cancel` stops what still runs (Ctrl-C), and the executor is a context
manager. A future fails only with :class:`TaskFailedError` (worker lost, cancelled, the
task itself crashed), so callers never see a backend's own exception types.

Ray is an optional extra, imported inside :class:`RayExecutor` only: ``import mvc`` and
``mvc --help`` never load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Self

from mvc.errors import EXIT_OTHER, MvcError, RemoteError, UsageError, counted

CLIENT_TRIES = 3
"""Connects through Ray Client (``ray://``) whose server failed to start in time: tried again."""

CANCEL_GRACE_S = 30.0
"""How long Ctrl-C waits for cancelled Ray tasks to stop their commands."""

EXECUTORS = ("local", "ray")
# Ray re-runs a task whose worker process or node died this many times (system
# failures only: an evaluation that fails is deterministic and is not retried).
RAY_MAX_RETRIES = 2
RAY_CONNECT_TIMEOUT_S = 5.0
"""How long joining a cluster may wait for its address to answer before mvc gives up."""
# Ray's own bounds on joining a cluster (Ray 2.60): each GCS connect attempt waits up to
# py_gcs_connect_timeout_s (30 s) for the cluster id, after two 5 s channel connects, and
# ray.init makes up to RAY_NUM_REDIS_GET_RETRIES (20) attempts unless
# gcs_server_port_wait_time_s caps them: about 14 minutes for an address where no Ray
# answers. One attempt of 20 s still gives a slow head (a loaded machine) time to answer.
# Set only where the user has not set them; read when Ray loads its config.
RAY_CONNECT_ENV = {
    "RAY_py_gcs_connect_timeout_s": "20",
    "RAY_gcs_server_port_wait_time_s": "1",
}


class TaskFailedError(MvcError):
    """A task did not return: its worker was lost, it was cancelled, or it crashed."""

    exit_code = EXIT_OTHER


class Executor:
    """Runs picklable module-level functions and hands back futures."""

    kind = "local"

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Start ``fn(*args)``; the future holds its value or a :class:`TaskFailedError`."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Cancel every task not yet finished (after Ctrl-C); their futures fail."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where tasks run, for the progress bar (address and number of workers)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release threads or the cluster connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Threads in this process (the work they start is usually a subprocess)."""

    kind = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)
        self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mvc-task")
        self._futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future = self._pool.submit(fn, *args)
        self._futures.append(future)
        return future

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()

    def describe(self) -> str:
        return f"local: {counted(self.jobs, 'worker')}"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Ray tasks on an existing cluster; one task per :meth:`submit`.

    Args:
        address: ``ray://HOST:PORT`` (Ray Client), ``HOST:PORT`` (the head's GCS port),
            ``auto`` or None (the cluster this machine belongs to, ``RAY_ADDRESS``).
        cpus_per_task: CPUs Ray reserves for each task.
        gpus_per_task: GPUs Ray reserves for each task (fractions share a GPU).
        max_retries: re-runs of a task whose worker or node died.

    Raises:
        UsageError: Ray is not installed, or bad resource numbers.
        RemoteError: the cluster cannot be reached.
    """

    kind = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_task: float = 1,
        gpus_per_task: float = 0,
        max_retries: int = RAY_MAX_RETRIES,
    ) -> None:
        if cpus_per_task < 0 or gpus_per_task < 0:
            raise UsageError(
                "--cpus-per-task and --gpus-per-task cannot be negative", hint="e.g. --cpus-per-task 2 --gpus-per-task 1"
            )
        try:
            import ray
        except ImportError as exc:
            raise UsageError(
                "--executor ray needs Ray, which is not installed", hint="install it with `pip install 'mvc[ray]'`"
            ) from exc
        self._ray = ray
        self.address = address or "auto"
        self._owns_connection = False
        self._connected = False
        self._options: dict[str, Any] = {"num_cpus": cpus_per_task, "max_retries": max_retries, "retry_exceptions": False}
        if gpus_per_task:
            self._options["num_gpus"] = gpus_per_task
        self.max_retries = max_retries
        self._remote: dict[Callable[..., Any], Any] = {}
        self._refs: list[Any] = []
        self._restore: Callable[[], None] = lambda: None

    def _connect(self) -> None:
        """Join the cluster on first use (a re-run with every result saved never connects)."""
        if self._connected:
            return
        ray = self._ray
        self._connected = True
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            # "auto" joins RAY_ADDRESS when set (else the cluster this machine runs): name it.
            named = os.environ.get("RAY_ADDRESS", "") if self.address == "auto" else ""
            where = f"{named} (RAY_ADDRESS)" if named and named != "auto" else self.address
            try:
                _probe(named if named and named != "auto" else self.address)
                with _bounded_connect():
                    self._init_with_retries()
            except Exception as exc:  # noqa: BLE001 - OSError, ConnectionError, ValueError, RaySystemError ...
                # A failed Ray Client connect leaves client mode on in this process, and the
                # next ray.init fails with a bare AssertionError: reset it.
                with contextlib.suppress(Exception):
                    ray.shutdown()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RemoteError(
                    f"cannot connect to the Ray cluster at {where} ({first[:200]})",
                    hint="start one with `ray start --head`, or pass --address HOST:6379 or ray://HOST:10001",
                ) from None
            self._silence_raylet_errors()
        if self.address == "auto":  # name the cluster actually joined (RAY_ADDRESS, ...)
            try:
                self.address = str(ray.get_runtime_context().gcs_address)
            except Exception:  # noqa: BLE001, S110 - informative only: keep "auto"
                pass
        self._check_fits()

    def _init_with_retries(self) -> None:
        """``ray.init``; a Ray Client server that fails to start its per-connection server in
        time ("Initialization failure from server", seen on a loaded head) is asked again."""
        ray = self._ray
        for attempt in range(CLIENT_TRIES):
            try:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
                return
            except Exception as exc:  # noqa: BLE001 - retried only for the client server's start-up failure
                if attempt == CLIENT_TRIES - 1 or "Initialization failure from server" not in str(exc):
                    raise
                with contextlib.suppress(Exception):
                    ray.shutdown()  # a failed client connect leaves client mode on

    def _check_fits(self) -> None:
        """Refuse a task no node can hold: Ray would queue it as infeasible, silently, for ever.

        Raises:
            UsageError: no live node has ``--cpus-per-task`` CPUs and ``--gpus-per-task`` GPUs.
        """
        wanted = {"CPU": float(self._options["num_cpus"]), "GPU": float(self._options.get("num_gpus", 0))}
        try:
            nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        except Exception:  # noqa: BLE001 - cannot tell (an old Ray Client server): let Ray schedule
            return
        if not nodes or any(all(res.get(k, 0.0) >= v for k, v in wanted.items() if v) for res in nodes):
            return
        biggest = max(nodes, key=lambda res: (res.get("GPU", 0.0), res.get("CPU", 0.0)))
        asked = " and ".join(_amount(v, k) for k, v in wanted.items() if v)
        has = ", ".join(_amount(biggest.get(k, 0.0), k) for k in wanted)
        raise UsageError(
            f"no node of the Ray cluster at {self.address} has {asked} for a task (the largest has {has})",
            hint="lower --cpus-per-task / --gpus-per-task, or add a node that has them",
        )

    def _silence_raylet_errors(self) -> None:
        """Keep Ray's raylet error messages off stdout, which carries mvc's data (``--json``).

        A driver thread prints them to ``sys.stdout`` whatever ``log_to_driver`` says
        (ray/_private/worker.py, ``listen_error_messages`` -> ``print_to_stdstream``, Ray
        2.60); a lost worker is reported per version by mvc itself. Restored on close.
        """
        try:
            from ray._private import worker as ray_worker
        except ImportError:  # Ray Client mode or a layout change: nothing to silence
            return
        original = getattr(ray_worker, "print_to_stdstream", None)
        if original is None:
            return

        def quiet(data: dict[str, Any], ignore_prefix: bool) -> None:
            if data.get("pid") != "raylet":
                original(data, ignore_prefix)

        ray_worker.print_to_stdstream = quiet
        self._restore = lambda: setattr(ray_worker, "print_to_stdstream", original)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        self._connect()
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn).options(**self._options)
        ref = remote.remote(*args)
        self._refs.append(ref)
        out: Future[Any] = Future()
        out.set_running_or_notify_cancel()

        def settle(done: Future[Any]) -> None:
            try:
                out.set_result(done.result())
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a TaskFailedError
                out.set_exception(self._failure(exc))

        ref.future().add_done_callback(settle)
        return out

    def _failure(self, exc: BaseException) -> TaskFailedError:
        rx = self._ray.exceptions
        if isinstance(exc, rx.TaskCancelledError) or type(exc).__name__ == "CancelledError":
            return TaskFailedError("cancelled")
        if isinstance(exc, rx.WorkerCrashedError | rx.NodeDiedError | rx.OwnerDiedError | rx.ObjectLostError):
            return TaskFailedError(
                f"the Ray worker running it was lost (tried {self.max_retries + 1} times)",
                hint="see the cluster's logs (out of memory, node preempted?)",
            )
        if isinstance(exc, rx.RayTaskError):
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).strip().splitlines()[-1]
            return TaskFailedError(f"the Ray task crashed ({text[:300]})", hint="is mvc installed on the cluster's workers?")
        first = (str(exc).strip().splitlines() or [""])[0]
        return TaskFailedError(f"the Ray task failed ({type(exc).__name__}: {first[:300]})")

    def cancel(self) -> None:
        for ref in self._refs:
            try:
                # Not forced: the task gets a KeyboardInterrupt and kills its evaluation's
                # process group; a forced cancel kills the worker and orphans that group.
                self._ray.cancel(ref)
            except Exception:  # noqa: BLE001, S112 - finished or already gone: nothing to cancel
                continue
        # Wait for the tasks to take the interrupt before this driver leaves: a driver that
        # disconnects first has its workers killed outright, and their commands orphaned.
        if self._refs:
            try:
                self._ray.wait(self._refs, num_returns=len(self._refs), timeout=CANCEL_GRACE_S)
            except Exception:  # noqa: BLE001, S110 - the cluster is gone: nothing left to wait for
                pass

    def describe(self) -> str:
        self._connect()
        try:
            nodes = sum(1 for n in self._ray.nodes() if n.get("Alive"))
            cpus = int(self._ray.cluster_resources().get("CPU", 0))
        except Exception:  # noqa: BLE001 - the bar is informative only
            return f"ray {self.address}"
        return f"ray {self.address}: {counted(nodes, 'node')}, {counted(cpus, 'CPU worker slot')}"

    def close(self) -> None:
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()
        self._restore()


def _amount(value: float, resource: str) -> str:
    return counted(int(value), resource) if float(value).is_integer() else f"{value:g} {resource}s"


def _probe(address: str) -> None:
    """Fail fast when nothing listens at a cluster address (Ray itself retries for minutes).

    Raises:
        OSError: the address refuses or does not answer within :data:`RAY_CONNECT_TIMEOUT_S`.
    """
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and malformed addresses: Ray resolves or rejects them itself
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except TimeoutError:
        raise OSError(f"no answer within {RAY_CONNECT_TIMEOUT_S:g} s") from None
    except ConnectionRefusedError:
        raise OSError("connection refused: nothing listens there") from None


@contextmanager
def _bounded_connect() -> Iterator[None]:
    """Ray's connect timeouts set to :data:`RAY_CONNECT_ENV` (unless the user set them) while inside.

    Ray's C++ config reads them once, on import; ``Config.initialize`` re-reads the
    environment (as Ray does itself when it turns on token auth). The process environment
    is restored on leaving; Ray's config keeps the bounds.
    """
    added = {k: v for k, v in RAY_CONNECT_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        if added:
            try:
                from ray._raylet import Config  # type: ignore[attr-defined]

                Config.initialize("")
            except (ImportError, AttributeError):  # pragma: no cover - another Ray layout
                pass
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def open_executor(
    kind: str,
    *,
    jobs: int = 1,
    address: str | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
) -> Executor:
    """The executor named ``kind`` ("local" or "ray").

    Raises:
        UsageError: unknown kind, ``--address`` or GPUs given for the local executor,
            or Ray not installed.
        RemoteError: the Ray cluster cannot be reached.
    """
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r}", hint="use --executor local or --executor ray")
    if kind == "local":
        if address is not None or gpus_per_task:
            raise UsageError(
                "--address and --gpus-per-task apply to --executor ray only", hint="add --executor ray, or drop them"
            )
        return LocalExecutor(jobs)
    return RayExecutor(address, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "TaskFailedError", "open_executor"]

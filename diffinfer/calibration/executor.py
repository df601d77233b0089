"""Where a study's posteriors run: local worker processes or a Dask cluster, and the signal
handling that stops them at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

from diffinfer.errors import InputError
from diffinfer.validation import check_int


# ----------------------------------------------------------------------- the runner
def _worker_init(parent_pid: int) -> None:
    """Initialiser of local worker processes: they ignore SIGINT (the parent stops them) and
    die with the parent, even when it is killed outright (SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            armed = libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


def make_executor(workers: int = 1, scheduler: str | None = None) -> Executor:
    """A ``concurrent.futures`` executor: local processes, or a Dask cluster's
    (``scheduler="tcp://host:port"``; needs ``pip install diffinfer[dask]``).

    Local workers ignore SIGINT and die with this process (see :func:`run_study`)."""
    workers = check_int("workers", workers, low=1)
    if scheduler:
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError("a Dask scheduler needs `pip install 'diffinfer[dask]'`") from exc
        client = Client(scheduler)
        executor = client.get_executor()
        executor.owned_client = client  # closed by run_study
        return executor
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))  # fmt: skip


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as SIGINT does) while the block runs, so that a
    terminated study stops its workers; the previous handler is restored afterwards."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while the workers are being stopped."""
    if not _in_main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def stop_workers(pool: Executor, futures: list, own: bool, kill: bool) -> None:
    """Cancel what has not started; on an interrupt (``kill``) also end the running tasks:
    terminate the local worker processes (SIGTERM, then SIGKILL after 5 s)."""
    with signals_held():
        for f in futures:
            f.cancel()
        if not own:
            return
        if isinstance(pool, ProcessPoolExecutor):
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=not kill, cancel_futures=True)
            if kill:
                for proc in processes:
                    if proc.is_alive():
                        proc.terminate()
                deadline = time.monotonic() + 5.0
                for proc in processes:
                    proc.join(max(0.0, deadline - time.monotonic()))
                    if proc.is_alive():
                        proc.kill()
                        proc.join(1.0)
        else:
            pool.shutdown(wait=not kill)

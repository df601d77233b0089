"""Small file helpers: atomic writes and checked reads."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError


@contextlib.contextmanager
def naming_the_file(path: str | os.PathLike) -> Iterator[None]:
    """Give a system error raised while writing ``path`` the file's name (a full disk, a
    file-size limit: ``[Errno 28]``, ``[Errno 27]`` come without one), so that the message
    says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or isinstance(exc, DataFileError):
            raise
        raise OSError(
            exc.errno, f"{exc.strerror or exc} (writing {path})", os.fspath(path)
        ) from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it into place; the
    temporary file is removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        with naming_the_file(path):
            tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(obj: object) -> object:
    """``obj`` with NaN and infinities replaced by None (JSON ``null``), numpy scalars and
    arrays turned into Python numbers and lists and paths into strings, so that strict JSON
    readers accept it."""
    import math

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def same_json(a: object, b: object) -> bool:
    """Whether two JSON-like values are equal as JSON, whatever the order of their keys
    (settings read from cards and data set descriptions are compared this way)."""
    return json.dumps(json_safe(a), sort_keys=True, default=str) == json.dumps(
        json_safe(b), sort_keys=True, default=str
    )


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`): strict JSON, with NaN and
    infinities written as ``null`` (:func:`json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_npz_atomic(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to an ``.npz`` through a uniquely named temporary file (hidden, so that
    globs over result files never see it) renamed into place; no pickles."""

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    try:
        with naming_the_file(path):
            np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_state_atomic(path: str | os.PathLike, tensors: dict, meta: dict) -> Path:
    """Write a training state as safetensors atomically: ``tensors`` (name -> torch tensor)
    and ``meta`` (anything JSON can hold) as the JSON header's ``state`` entry. Read it back
    with :func:`read_state` (no pickles)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with naming_the_file(path):
            try:
                save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                          metadata={"state": json.dumps(json_safe(meta))})  # fmt: skip
            except SafetensorError as exc:  # its writer's I/O errors (a full disk) come so
                raise OSError(f"{exc} (writing {path})") from exc
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """The tensors and the ``meta`` of a state written by :func:`write_state_atomic`; any
    error of a damaged or foreign file propagates (the caller names the fix)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def optimizer_tensors(state: dict, prefix: str = "opt.") -> dict:
    """An optimizer's ``state_dict()["state"]`` as flat tensors ``{prefix}{param}.{name}``
    (its ``param_groups`` are plain values: keep them in the state's meta)."""
    import torch

    return {f"{prefix}{i}.{k}": torch.as_tensor(v) for i, per in state["state"].items()
            for k, v in per.items()}  # fmt: skip


def optimizer_state(tensors: dict, param_groups: list, prefix: str = "opt.") -> dict:
    """The optimizer ``state_dict`` that :func:`optimizer_tensors` flattened, for
    ``load_state_dict``."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            i, name = key[len(prefix) :].split(".", 1)
            state.setdefault(int(i), {})[name] = value
    return {"state": state, "param_groups": param_groups}


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> dict:
    """Read a JSON object, with a clear error for a missing or corrupted file."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFileError(
            f"{what} {path} is not valid JSON ({exc}); it may be truncated"
        ) from exc
    if not isinstance(obj, dict):
        raise DataFileError(f"{what} {path} must hold a JSON object")
    return obj


LOCK_FILE = ".diffinfer.lock"


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` while one job writes into it.

    The lock is an OS file lock (``flock``) on ``directory/.diffinfer.lock``: the OS drops it
    when the process ends, however it ends, so a killed run never leaves a stale lock. A second
    writer is refused at once with :class:`DataFileError` naming the directory, the running
    job and its process id. Where ``fcntl`` does not exist (Windows) the lock is not taken.

    Parameters
    ----------
    directory
        The output directory (created if needed).
    what
        The job, in words, for the message (``"simulate"``, ``"calibrate"``, ``"train"``).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another job"
            raise DataFileError(
                f"{directory} is being written by {holder}; wait for it to finish or choose "
                f"another output directory (two jobs writing one directory would corrupt it)"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (process {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock

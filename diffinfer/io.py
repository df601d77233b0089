"""Small file helpers: atomic writes and checked reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffinfer.errors import DataFileError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it into place; the
    temporary file is removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(obj: object) -> object:
    """``obj`` with NaN and infinities replaced by None (JSON ``null``), numpy scalars and
    arrays turned into Python numbers and lists and paths into strings, so that strict JSON
    readers accept it."""
    import math

    import numpy as np

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


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`): strict JSON, with NaN and
    infinities written as ``null`` (:func:`json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_npz_atomic(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to an ``.npz`` through a uniquely named temporary file (hidden, so that
    globs over result files never see it) renamed into place; no pickles."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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

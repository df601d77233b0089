"""Small file helpers: atomic writes and checked reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffinfer.errors import DataFileError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_npz_atomic(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to an ``.npz`` through a uniquely named temporary file (hidden, so that
    globs over result files never see it) renamed into place; no pickles."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
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

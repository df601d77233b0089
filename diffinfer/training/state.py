"""A training run's state on disk: safetensors with a JSON header (no pickles), written
atomically at every checkpoint and read back by ``train(..., resume=True)``."""

from __future__ import annotations

from pathlib import Path

import torch

from diffinfer.errors import DataFileError
from diffinfer.io import optimizer_state, optimizer_tensors, read_state, write_state_atomic

STATE_FILE = "state.safetensors"
LEGACY_STATE_FILE = "state.pt"
"""The state of runs written before the states were safetensors (a torch file read with
``weights_only=True``): resumed from, then replaced by :data:`STATE_FILE`."""


def write_training_state(path: Path, state: dict) -> None:
    """Write a training state (``model``, ``ema`` and ``optimizer`` state dicts, ``step``,
    ``elapsed`` seconds, ``config`` and ``validation`` as JSON text) as safetensors with a
    JSON header, atomically; read it back with :func:`read_training_state`."""
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    tensors.update({f"ema.{k}": v for k, v in state["ema"].items()})
    tensors.update(optimizer_tensors(state["optimizer"]))
    meta = {"step": int(state["step"]), "elapsed": float(state["elapsed"]),
            "config": state["config"], "validation": state["validation"],
            "param_groups": state["optimizer"]["param_groups"]}  # fmt: skip
    try:
        write_state_atomic(path, tensors, meta)
    except OSError as exc:  # disk full or not writable: the previous checkpoint is kept
        raise DataFileError(
            f"cannot write {path}: {exc}; free disk space and rerun with "
            "--resume (the previous checkpoint is kept)"
        ) from exc


def read_training_state(path: Path) -> dict:
    """A training state written by :func:`write_training_state`, or a legacy ``state.pt``
    (:data:`LEGACY_STATE_FILE`, read with ``torch.load(weights_only=True)``), as one dict
    of the keys :func:`write_training_state` takes; errors of a damaged file propagate."""
    if path.name == LEGACY_STATE_FILE:
        return torch.load(path, map_location="cpu", weights_only=True)
    tensors, meta = read_state(path)
    return {
        "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        "ema": {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
        "optimizer": optimizer_state(tensors, meta["param_groups"]),
        "step": meta["step"],
        "elapsed": meta["elapsed"],
        "config": meta["config"],
        "validation": meta["validation"],
    }

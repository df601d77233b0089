"""Writing and loading model directories: ``weights.safetensors`` plus a ``card.json``.

A card carries everything needed to use the weights: the architecture, the noise schedule,
the transform constants, the map geometry and prior box, a description of the training
data, the steps trained, validation metrics and the sha256 of the weights. Nothing here
unpickles: weights are safetensors. Finding and verifying a directory is
:mod:`diffinfer.store`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffinfer.diffusion.model import DiffusionModel
from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.unet import UNet, UNetConfig
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.transform import Transform
from diffinfer.io import write_json_atomic
from diffinfer.store import (
    CARD_FILE,
    CARD_FORMAT,
    WEIGHTS_FILE,
    read_card,
    resolve_model_dir,
    seal_card,
    sha256_of,
)


def build_card(
    model: DiffusionModel,
    *,
    name: str,
    data: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
) -> dict:
    """The model card of a U-Net model (without the weights entry)."""
    if not isinstance(model.denoiser, UNet):
        raise InputError("only a U-Net model has weights to save; the oracle is exact code")
    return {
        "format": CARD_FORMAT,
        "name": name,
        "architecture": {"kind": "unet", **model.denoiser.config.to_dict()},
        "schedule": {"kind": model.schedule.kind, "n_steps": model.schedule.n_steps},
        "transform": model.transform.to_dict(),
        "field": model.field.to_dict(),
        "data": data or {},
        "training": training or {},
        "metrics": metrics or {},
    }


def save_model(
    model: DiffusionModel,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    data: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write a model directory (weights + card), replacing any model already there.

    The directory is assembled beside ``path`` and renamed into place, so a reader sees the
    old model or the new one, never a mixture.

    Parameters
    ----------
    model
        A U-Net model (the oracle has no weights).
    path
        The model directory.
    name
        Name in the card (default: the directory name).
    data, training, metrics
        Card sections: training data description, training run, validation metrics.
    """
    path = Path(path)
    card = build_card(model, name=name or path.name, data=data, training=training, metrics=metrics)
    state = {k: v.detach().cpu().contiguous() for k, v in model.denoiser.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": CARD_FORMAT})
        os.chmod(tmp / WEIGHTS_FILE, 0o644)
        card["weights"] = {
            "file": WEIGHTS_FILE,
            "sha256": sha256_of(tmp / WEIGHTS_FILE),
            "n_parameters": int(sum(v.numel() for v in state.values())),
            "dtype": "float32",
        }
        write_json_atomic(tmp / CARD_FILE, seal_card(card))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the previous model back
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _remove_stale_siblings(path: Path) -> None:
    """Remove the hidden directories that a killed :func:`save_model` left beside ``path``
    (``.NAME.PID.*`` and ``.NAME.old-PID``, whose process no longer runs)."""
    import re

    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:old-)?(\d+)(?:\..*)?$")
    for sibling in path.parent.glob(f".{path.name}.*"):
        match = pattern.match(sibling.name)
        if not (match and sibling.is_dir()):
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:  # another user's running process
            alive = True
        if not alive:
            shutil.rmtree(sibling, ignore_errors=True)


def load_model(
    name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> DiffusionModel:
    """Load a model directory, or a shipped model by name (e.g. ``"lognormal64"``).

    The name ``"oracle"`` gives the closed-form denoiser of the log-normal simulator
    (:meth:`DiffusionModel.oracle`): the exact model that trained networks approximate.

    Raises
    ------
    DataFileError
        Missing directory, card or weights; weights whose sha256 differs from the card's;
        tensors missing from or unexpected by the architecture the card describes, or of
        the wrong shape.
    """
    from diffinfer.validation import check_device

    device = check_device("device", device)
    if str(name_or_path) == "oracle":
        return DiffusionModel.oracle().to(device)
    path = resolve_model_dir(name_or_path)
    card = read_card(path)
    weights = path / card["weights"].get("file", WEIGHTS_FILE)  # a plain name (read_card)
    if not weights.is_file():
        raise DataFileError(f"weights file missing: {weights}")
    digest = sha256_of(weights)
    if digest != card["weights"].get("sha256"):
        raise DataFileError(
            f"{weights} has sha256 {digest[:16]}..., but the card expects "
            f"{str(card['weights'].get('sha256'))[:16]}...: the file is corrupted or does not "
            "belong to this card; restore it from the model's source"
        )
    try:
        state = load_file(weights)
        arch = dict(card["architecture"])
        if arch.pop("kind", "unet") != "unet":
            raise DataFileError(f"unknown architecture in {path / CARD_FILE}")
        field = FieldConfig.from_dict(card["field"])
        schedule = NoiseSchedule(card["schedule"]["kind"], int(card["schedule"]["n_steps"]))
        transform = Transform.from_dict(card["transform"])
        config = UNetConfig.from_dict(arch)
        model = DiffusionModel.from_config(config, schedule, transform, field, card)
    except (SafetensorError, KeyError, TypeError, ValueError, InputError) as exc:
        raise DataFileError(f"cannot build the model in {path}: {exc}") from exc
    expected = model.denoiser.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise DataFileError(
            f"the weights in {weights} do not match the architecture in its card: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.denoiser.load_state_dict(state)
    return model.to(device).eval()

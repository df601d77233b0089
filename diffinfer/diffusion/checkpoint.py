"""Model directories: ``weights.safetensors`` plus a ``card.json`` model card.

A card carries everything needed to use the weights: the architecture, the noise schedule,
the transform constants, the map geometry and prior box, a description of the training
data, the steps trained, validation metrics and the sha256 of the weights. Nothing here
unpickles: weights are safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.resources
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
from diffinfer.io import read_json, write_json_atomic

CARD_FORMAT = "diffinfer-model/1"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
MODELS_ENV = "DIFFINFER_MODEL_PATH"
HASHED_SECTIONS = ("architecture", "schedule", "transform", "field", "weights", "likelihood",
                   "calibration")  # fmt: skip
"""The card sections that change the maths of a model: covered by ``card_sha256``."""


def card_digest(card: dict) -> str:
    """sha256 of the card sections that change the maths (:data:`HASHED_SECTIONS`), over
    their canonical JSON; descriptive sections (name, data, training, metrics) are free to
    edit."""
    import json

    from diffinfer.io import json_safe

    covered = json_safe({k: card[k] for k in HASHED_SECTIONS if k in card})
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def seal_card(card: dict) -> dict:
    """The card with its ``card_sha256`` entry set (see :func:`card_digest`)."""
    card["card_sha256"] = card_digest(card)
    return card


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_search_path() -> list[Path]:
    """Where :func:`load_model` looks for a model given by name, in order.

    The directories of the ``DIFFINFER_MODEL_PATH`` environment variable (``os.pathsep``
    separated), then the models shipped inside the package (``diffinfer/models``, package
    data found through :mod:`importlib.resources`, so they travel with an installed wheel).
    """
    env = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*env, shipped_models_dir()]


def shipped_models_dir() -> Path:
    """The directory of the models shipped with the package (``diffinfer/models``)."""
    return Path(str(importlib.resources.files("diffinfer") / "models"))


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """The directory of a model given as a path or as the name of a shipped model."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise InputError(f"a model name or directory is needed (e.g. 'lognormal64' or "
                         f"'oracle'), got {name_or_path!r}")  # fmt: skip
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if os.sep not in str(name_or_path):
        for root in model_search_path():
            if (root / str(name_or_path)).is_dir():
                return root / str(name_or_path)
    roots = ", ".join(str(r) for r in model_search_path())
    raise DataFileError(
        f"model {str(name_or_path)!r} not found: not a directory, nor a model name under {roots} "
        f"(set {MODELS_ENV} to add directories)"
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


def update_card(model_dir: str | os.PathLike, updates: dict) -> Path:
    """Set top-level entries of a model's card, atomically; returns the card's path.

    Raises
    ------
    DataFileError
        The directory holds no model card with weights (the oracle has no card).
    """
    if str(model_dir) == "oracle":
        raise DataFileError("the oracle has no model card: give the directory or name of a "
                            "trained model")  # fmt: skip
    path = resolve_model_dir(model_dir) / CARD_FILE
    card = read_card(path.parent)
    card.update(updates)
    write_json_atomic(path, seal_card(card))
    return path


def read_card(path: str | os.PathLike) -> dict:
    """The card of a model directory, checked for the required sections."""
    card = read_json(Path(path) / CARD_FILE, what="model card")
    if card.get("format") != CARD_FORMAT:
        raise DataFileError(
            f"{Path(path) / CARD_FILE} is not a diffinfer model card "
            f"(format {card.get('format')!r}, expected {CARD_FORMAT!r})"
        )
    missing = [
        k for k in ("architecture", "schedule", "transform", "field", "weights") if k not in card
    ]
    if missing:
        raise DataFileError(f"model card {Path(path) / CARD_FILE} lacks {missing}")
    if not isinstance(card["weights"], dict):
        raise DataFileError(f"model card {Path(path) / CARD_FILE}: 'weights' must be a mapping")
    name = card["weights"].get("file", WEIGHTS_FILE)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise DataFileError(
            f"model card {Path(path) / CARD_FILE}: weights.file must be a file name inside the "
            f"model directory (e.g. {WEIGHTS_FILE!r}), got {name!r}"
        )
    if "card_sha256" not in card:
        raise DataFileError(
            f"model card {Path(path) / CARD_FILE} has no card_sha256, so edits to its "
            "transform, schedule or geometry cannot be detected: restore the card from the "
            "model's source (a card you trust can be re-sealed: write "
            "diffinfer.diffusion.checkpoint.seal_card(card) back to it)"
        )
    if card["card_sha256"] != card_digest(card):
        raise DataFileError(
            f"model card {Path(path) / CARD_FILE} was edited: its sections "
            f"{list(HASHED_SECTIONS)} no longer match its card_sha256. They define the model's "
            "maths; restore the card from the model's source (use update_card, recalibrate "
            "--store or fit-proposal --store to change it)"
        )
    return card


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

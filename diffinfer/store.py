"""Finding and verifying model directories: ``weights.safetensors`` plus a ``card.json``.

A model is given by its directory or by name: the directories of ``DIFFINFER_MODEL_PATH``
first, then the models shipped with the package (the repository's top-level ``models/``
folder, which the build maps into the wheel as ``diffinfer.models``). A card is verified when
read: its format, its required sections and its ``card_sha256`` over the sections that change
the model's maths. Writing weights and building models is :mod:`diffinfer.diffusion.checkpoint`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path

from diffinfer.errors import DataFileError, InputError
from diffinfer.io import json_safe, read_json, write_json_atomic

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
    separated), then the models shipped inside the package (``diffinfer.models``, package
    data found through :mod:`importlib.resources`, so they travel with an installed wheel).
    """
    env = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*env, shipped_models_dir()]


def shipped_models_dir() -> Path:
    """The directory of the models shipped with the package: the package
    ``diffinfer.models`` of an installed wheel, the repository's ``models/`` folder in a
    checkout."""
    try:
        return Path(str(importlib.resources.files("diffinfer.models")))
    except ModuleNotFoundError:  # a checkout on sys.path without an install
        return Path(__file__).resolve().parents[1] / "models"


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
            "diffinfer.store.seal_card(card) back to it)"
        )
    if card["card_sha256"] != card_digest(card):
        raise DataFileError(
            f"model card {Path(path) / CARD_FILE} was edited: its sections "
            f"{list(HASHED_SECTIONS)} no longer match its card_sha256. They define the model's "
            "maths; restore the card from the model's source (use update_card, recalibrate "
            "--store or fit-proposal --store to change it)"
        )
    return card

"""Checks of a study's data set against what was trained on it: a reference trained on other
maps, and a test set that is a model's or reference's own training data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffinfer.errors import InputError
from diffinfer.io import same_json

if TYPE_CHECKING:
    from diffinfer.calibration.config import StudyConfig


def check_training_data(config: StudyConfig, model: object, meta: dict) -> None:
    """Refuse an NPE reference of the study trained on other maps than the data set's, and
    ``split="all"`` on the data set that the model or a reference was trained on."""
    card = getattr(model, "card", None) or {}
    trained = {f"model {config.model}": card.get("data") or {}} if model is not None else {}
    for analysis in config.analyses:
        if analysis.startswith("npe"):
            from diffinfer.likelihoods.npe import npe_reference

            ref = npe_reference(analysis, config.options.get("npe"))
            check_reference_data(ref.card, ref.name, meta, config.data)
            trained[f"reference {ref.name}"] = ref.card.get("data") or {}
    for who, data in trained.items():
        for source in _sources(data) if "sources" in data else []:  # named splits
            splits = str(source.get("split", "all")).split("+")
            if is_training_data(source, meta, config.data) and (
                config.split == "all" or "all" in splits or config.split in splits
            ):
                raise InputError(
                    f"{who} was trained on the {source.get('split', 'all')} split of "
                    f"{config.data}; the study's split {config.split!r} holds those maps: "
                    "use another split or data set (diffinfer simulate --seed)"
                )
    if config.split == "all":
        for who, data in trained.items():
            if is_training_data(data, meta, config.data):
                raise InputError(
                    f"split 'all' reads every map of {config.data}, but {who} was trained "
                    "on that data set: use its held-out split (test or validation), or "
                    "simulate a test set with another seed (diffinfer simulate --seed)"
                )


def check_reference_data(card: dict, name: str, meta: dict, root: str) -> None:
    """Refuse a reference trained on maps of another simulator, geometry or settings than
    the data set's (``dataset.json``), naming the differences."""
    data = card.get("data") or {}
    differ = []
    if data.get("simulator") and meta.get("simulator") and data["simulator"] != meta["simulator"]:
        differ.append(f"simulator {data['simulator']!r} against {meta['simulator']!r}")
    mine, theirs = data.get("config") or {}, meta.get("config") or {}
    for key in sorted(set(mine) & set(theirs)):
        if not same_json(mine[key], theirs[key]):
            differ.append(f"{key} {mine[key]!r} against {theirs[key]!r}")
    if differ:
        raise InputError(f"reference {name} was trained on other maps than those of {root}: "
                         f"{'; '.join(differ)} (the reference's card against dataset.json); "
                         "use a reference trained on this simulator and geometry")  # fmt: skip


def is_training_data(data: dict, meta: dict, root: str) -> bool:
    """Whether a card's training data is the data set at ``root``: the same simulator,
    settings and seed, or (for cards that do not record the seed) the same directory."""
    if not data:
        return False
    if "sources" in data:  # trained on maps of several data sets
        return any(is_training_data(source, meta, root) for source in _sources(data))
    if "seed" in data and "seed" in meta:
        same_config = same_json(data.get("config"), meta.get("config"))
        return (data.get("simulator") == meta.get("simulator") and same_config
                and data["seed"] == meta["seed"])  # fmt: skip
    stored = data.get("root")
    return bool(stored) and Path(stored).resolve() == Path(root).resolve()


def _sources(data: dict) -> list[dict]:
    """A card's training data of several data sets, one description per data set (the
    shared entries with the source's own)."""
    common = {k: v for k, v in data.items() if k != "sources"}
    return [{**common, **source} for source in data["sources"]]

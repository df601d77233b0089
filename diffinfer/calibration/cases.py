"""The model and the test cases of a calibration study: the model loaded once per process,
the data set as the study reads it, the checks a study passes before it writes anything, and
each test case's map and true parameters (deterministic, so a resumed study recomputes the
same maps)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffinfer.calibration.config import NO_MODEL, StudyConfig
from diffinfer.calibration.data_checks import check_training_data
from diffinfer.errors import DataFileError, InputError
from diffinfer.io import read_json
from diffinfer.validation import check_int

_MODEL_CACHE: dict[tuple[str, str], object] = {}


_DATA_CACHE: dict[tuple, DataSource] = {}


def study_model(name: str, device: str = "cpu"):
    """The model of a study by name or directory on ``device`` (loaded once per process and
    device), or None for :data:`NO_MODEL`."""
    if name == NO_MODEL:
        return None
    key = (name, str(device))
    if key not in _MODEL_CACHE:
        from diffinfer.diffusion.checkpoint import load_model

        _MODEL_CACHE[key] = load_model(name, device=device)
    return _MODEL_CACHE[key]


@dataclass(frozen=True)
class DataSource:
    """A CAMELS-format data set as a study reads it: the maps, the study's map order
    (one map per cosmology of the split first, then the next map of each, ...), and whether
    the exact references hold for its maps (``why_not`` says why not)."""

    maps: object
    order: np.ndarray
    lognormal: bool
    why_not: str
    meta: dict


def data_source(config: StudyConfig, model) -> DataSource:
    """Open ``config.data`` as the study reads it (cached per process).

    File names, maps per cosmology and the simulator come from the data set's
    ``dataset.json`` when it has one, else from the model's card (the data it was trained
    on), else CMD's defaults; the split (fractions and seed) is the model's training split,
    so that test maps are held out from training.
    """
    from diffinfer.data.camels import MAPS_PER_COSMOLOGY, CamelsMaps

    key = (config.data, config.split, config.model)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    root = Path(config.data)
    if not root.exists():
        raise DataFileError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DataFileError(f"data directory {root} is a file, not a directory")
    meta_path = root / "dataset.json"
    meta = read_json(meta_path, what="data set description") if meta_path.is_file() else {}
    card = (model.card if model is not None else None) or {}
    trained = ((card.get("training") or {}).get("config") or {}).get("data") or {}
    card_data = card.get("data") or {}
    per = meta.get("maps_per_cosmology")
    per = trained.get("maps_per_cosmology") if per is None else per
    per = MAPS_PER_COSMOLOGY if per is None else per
    per = check_int(f"maps_per_cosmology of {meta_path}", per, low=1)
    maps = CamelsMaps.open(
        root,
        field=meta.get("field") or trained.get("field") or "Mtot",
        suite=meta.get("suite") or trained.get("suite") or "IllustrisTNG",
        set_name=meta.get("set") or trained.get("set") or "LH",
        maps_per_cosmology=per,
    )
    split_info = card_data.get("split") or meta.get("split") or {}
    fractions = tuple(trained.get("fractions") or split_info.get("fractions")
                      or (0.7, 0.15, 0.15))  # fmt: skip
    split_seed = trained.get("split_seed", split_info.get("seed", 0))
    if config.split == "all":
        chosen = np.arange(maps.n_cosmologies * per)
    else:
        chosen = maps.split_maps(config.split, fractions, seed=int(split_seed))
    order = chosen.reshape(-1, per).T.ravel()
    # the exact and power-spectrum references hold for log-normal maps of the model's geometry
    simulator = meta.get("simulator") or card_data.get("simulator")
    lognormal, why_not = simulator == "lognormal", ""
    if not lognormal:
        why_not = (f"{root} holds maps of another simulator ({simulator or 'unknown'}; "
                   "dataset.json names it)")  # fmt: skip
    elif "config" in meta and model is not None:
        from diffinfer.fields import FieldConfig

        stored, mine = FieldConfig.from_dict(meta["config"]), model.field
        if stored.geometry_differences(mine):
            lognormal = False
            why_not = (f"{root} holds {stored.n_pix}^2 maps of a {stored.box_size:g} Mpc/h "
                       f"box, {stored.depth:g} Mpc/h deep; the model describes "
                       f"{mine.n_pix}^2 maps, {mine.box_size:g} Mpc/h, {mine.depth:g} "
                       "deep")  # fmt: skip
    source = DataSource(maps=maps, order=order, lognormal=lognormal, why_not=why_not,
                         meta=meta)  # fmt: skip
    _DATA_CACHE[key] = source
    return source


def check_study(config: StudyConfig) -> None:
    """Check that a study can run before anything is written: the model loads, its term
    indices exist, and the data set (if any) is readable, holds ``n_maps`` maps in the
    split, and suits the reference analyses.

    Raises
    ------
    InputError, DataFileError
        With the fix (another model, analyses, split or ``n_maps``).
    """
    if not isinstance(config, StudyConfig):
        raise InputError(f"config must be a StudyConfig, got {type(config).__name__}")
    spectrum = config.options.get("spectrum")
    if isinstance(spectrum, (str, os.PathLike)) and not Path(spectrum).is_file():
        raise DataFileError(f"power-spectrum likelihood file not found: {spectrum} (option "
                            "spectrum); fit one with PowerSpectrumLikelihood or leave the "
                            "option out to fit it to the simulator")  # fmt: skip
    model = study_model(config.model)
    if isinstance(config.likelihood, list) and model is not None:
        n_steps = model.schedule.n_steps
        if max(config.likelihood) >= n_steps:
            raise InputError(f"likelihood term indices must lie in [0, {n_steps - 1}] (the "
                             f"model has {n_steps} timesteps), got "
                             f"{config.likelihood}")  # fmt: skip
    if config.data is None:
        return
    source = data_source(config, model)
    if len(source.order) == 0:
        raise InputError(f"the {config.split} split of {config.data} holds no maps "
                         f"({source.maps.n_cosmologies} cosmologies); use a larger data "
                         "set")  # fmt: skip
    if config.n_maps > len(source.order):
        raise InputError(f"the {config.split} split of {config.data} has "
                         f"{len(source.order)} maps; n_maps={config.n_maps} asks for "
                         "more")  # fmt: skip
    per = source.maps.maps_per_cosmology
    if config.maps_per_theta > 1 and (
        config.maps_per_theta > per or config.n_maps * per > len(source.order)
    ):
        raise InputError(f"the {config.split} split of {config.data} has "
                         f"{len(source.order) // per} cosmologies of {per} maps; "
                         f"{config.n_maps} cases of maps_per_theta={config.maps_per_theta} "
                         "ask for more")  # fmt: skip
    check_training_data(config, model, source.meta)
    needs = [a for a in config.analyses
             if a == "exact" or (a == "power" and "spectrum" not in config.options)]  # fmt: skip
    if needs and not source.lognormal:
        raise InputError(
            f"the {needs} references assume log-normal maps of the model's geometry, but "
            f"{source.why_not}: use analyses=['diffusion'] (a power-spectrum likelihood "
            "fitted to those maps can be given as options['spectrum'])"
        )


def test_case(config: StudyConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The density map (N, N) and true parameters of test case ``index`` (deterministic);
    with ``maps_per_theta`` M > 1, its M maps of one cosmology, (M, N, N)."""
    import torch

    from diffinfer.simulators.lognormal import LognormalSimulator

    model = study_model(config.model)
    m = config.maps_per_theta
    if config.data is None:
        sim = LognormalSimulator.for_model(model)
        rng = np.random.default_rng([config.seed, index])
        low, width = np.asarray(sim.config.prior.low), sim.config.prior.width
        theta = low + width * rng.random(2)
        # map k of a case is the same whatever M: the first map is the one-map study's
        maps = sim.simulate(theta, m, seed=config.seed + 7919, row_offset=index)
        density = maps[0] if m == 1 else maps
    else:
        source = data_source(config, model)
        order = source.order
        n_pix = model.field.n_pix if model is not None else None
        if m == 1:
            if index >= len(order):
                raise InputError(
                    f"the {config.split} split has {len(order)} maps; asked for map {index}"
                )
            picked = order[index : index + 1]
        else:
            per = source.maps.maps_per_cosmology
            by_cosmology = np.sort(order).reshape(-1, per)
            if m > per or index >= len(by_cosmology):
                raise InputError(
                    f"the {config.split} split has {len(by_cosmology)} cosmologies of {per} "
                    f"maps; case {index} with maps_per_theta={m} asks for more"
                )
            picked = by_cosmology[index, :m]
        density, theta = source.maps.load(picked, n_pix=n_pix)
        density, theta = (density[0] if m == 1 else density), theta[0]
    if config.noise_sigma > 0:
        rng = np.random.default_rng([config.seed, index, 1])
        y = model.transform.forward(density)
        y = y + config.noise_sigma * torch.as_tensor(rng.normal(size=y.shape), dtype=y.dtype)
        density = model.transform.inverse(y).numpy()
    return np.asarray(density, np.float64), np.asarray(theta, np.float64)

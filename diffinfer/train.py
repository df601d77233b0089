"""Training a conditional diffusion model on maps in the CAMELS CMD format.

``diffinfer train --config CONFIG.yaml`` runs :func:`train`. The configuration (documented in
docs/training.md, defaults in :data:`DEFAULTS`) names the data set, the architecture, the
schedule and the optimisation; command-line options override it.

Everything random in a step (which maps, their dihedral augmentation, timesteps, noise) is
drawn from a generator seeded by (seed, step), and the learning rate is a function of the
step. A run killed at any point therefore resumes from its last checkpoint (``--resume``)
and continues exactly as if it had never stopped, and a run on W processes (PyTorch DDP,
``torchrun``) sees the same global batches as a run on one: each process takes its slice.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from diffinfer.data.camels import MAPS_PER_COSMOLOGY, CamelsMaps
from diffinfer.diffusion.checkpoint import load_model, save_model
from diffinfer.diffusion.model import PRECISIONS, DiffusionModel, autocast
from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.schedules import SCHEDULES, NoiseSchedule
from diffinfer.diffusion.unet import UNetConfig
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.lognormal import LognormalSimulator
from diffinfer.fields.transform import Transform
from diffinfer.io import read_json
from diffinfer.parameters import PARAM_NAMES, PriorBox
from diffinfer.validation import check_bool, check_choice, check_device, check_float, check_int

STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"

DEFAULTS: dict = {
    "name": None,  # model name in the card (default: the output directory's name)
    "out": "runs/default",
    "init_from": None,  # a model directory or name whose weights start this run
    "data": {
        "root": None,  # directory with Maps_*.npy and params_*.txt (CMD layout)
        "field": "Mtot",
        "suite": "Lognormal",
        "set": "LH",
        "maps_per_cosmology": None,  # default: from dataset.json, else 15 (CMD)
        "n_pix": None,  # block-average to this size (default: as stored)
        "split_seed": 0,
        "fractions": [0.7, 0.15, 0.15],
        "transform": "fit",  # "fit" (train split), "prior" (log-normal only) or {shift, scale}
        "box_size": None,  # Mpc/h; default from dataset.json
        "depth": None,  # Mpc/h; default from dataset.json
        "prior": None,  # {"Omega_m": [lo, hi], "sigma_8": [lo, hi]}; default from dataset.json
    },
    "model": {
        "base_channels": 32,
        "channel_mults": [1, 2, 2],
        "blocks_per_level": 1,
        "attention_levels": [],
        "embed_dim": 128,
        "groups": 8,
        "spectral": True,
    },
    "schedule": {"kind": "linear", "n_steps": 1000},
    "train": {
        "steps": 20000,
        "batch_size": 32,  # global batch, split over DDP processes
        "lr": 1e-3,
        "min_lr": 1e-5,
        "warmup": 200,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.999,
        "augment": True,
        "precision": "fp32",  # or "bf16" (autocast)
        "seed": 0,
        "device": "cpu",
        "threads": None,  # torch intra-op threads (default: torch's choice)
        "max_minutes": None,  # stop (with a checkpoint) after this wall time; resume later
    },
    "validation": {
        "every": 1000,  # steps
        "n_maps": 256,
        "bands": [1, 10, 100, 300, 600, 1000],  # edges of the timestep bands
        "seed": 1,
    },
    "checkpoint": {"every_minutes": 5.0, "every_steps": None},
}

# keys that may change when a run is resumed
_RESUMABLE = {("train", "steps"), ("train", "max_minutes"), ("train", "threads"), ("out",)}


# ------------------------------------------------------------------- configuration
def _unknown_key(prefix: str, key: object, known: list) -> InputError:
    """The error for a key that is not in ``known``, with the closest known key as a hint."""
    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    return InputError(
        f"unknown configuration key {prefix + str(key)!r}{hint} (known keys here: {names})"
    )


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            raise _unknown_key(path, key, list(base))
        if isinstance(base[key], dict):
            if value is None:  # a YAML section with every key commented out
                value = {}
            if not isinstance(value, dict):
                raise InputError(
                    f"configuration key {where!r} must be a mapping of keys, got {value!r}"
                )
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


_NUMERIC_OPTIONAL = {
    ("data", "n_pix"): int,
    ("data", "maps_per_cosmology"): int,
    ("data", "box_size"): float,
    ("data", "depth"): float,
    ("train", "threads"): int,
    ("train", "max_minutes"): float,
    ("checkpoint", "every_steps"): int,
}


def _coerce(config: dict, defaults: dict = DEFAULTS, path: tuple = ()) -> dict:
    """Numbers given as strings (YAML 1.1 reads ``1e-5`` as a string) become numbers.

    Anything that is not a number stays as it is, for :func:`check_config` to report
    with the expected range.
    """
    for key, default in defaults.items():
        where, value = (*path, key), config[key]
        if isinstance(default, dict):
            _coerce(value, default, where)
            continue
        kind = _NUMERIC_OPTIONAL.get(where)
        if kind is None and isinstance(default, int | float) and not isinstance(default, bool):
            kind = type(default)
        if kind is None or not isinstance(value, str):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        config[key] = int(number) if kind is int and number.is_integer() else number
    return config


def _check_structure(config: object, defaults: dict = DEFAULTS, prefix: str = "") -> None:
    """Every section a mapping, every key of :data:`DEFAULTS` present, no other keys."""
    if not isinstance(config, dict):
        what = f"configuration key {prefix[:-1]!r}" if prefix else "the configuration"
        raise InputError(f"{what} must be a mapping of keys, got {config!r}")
    for key in config:
        if key not in defaults:
            raise _unknown_key(prefix, key, list(defaults))
    for key, default in defaults.items():
        if key not in config:
            raise InputError(
                f"the configuration lacks the key {prefix + key!r}; build configurations "
                "with load_config(), which fills in the defaults"
            )
        if isinstance(default, dict):
            _check_structure(config[key], default, f"{prefix}{key}.")


def _leaves(defaults: dict = DEFAULTS, prefix: str = "") -> list[str]:
    """Dotted names of the keys of :data:`DEFAULTS` that hold values (not sections)."""
    out = []
    for key, default in defaults.items():
        if isinstance(default, dict):
            out += _leaves(default, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def _get(config: dict, dotted: str) -> object:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _set(config: dict, dotted: str, value: object) -> None:
    *sections, key = dotted.split(".")
    node = config
    for part in sections:
        node = node[part]
    node[key] = value


_Check = Callable[[str, object], object]


def _optional(check: _Check) -> _Check:
    return lambda name, value: None if value is None else check(name, value)


def _integer(low: int | None = None) -> _Check:
    return lambda name, value: check_int(name, value, low=low)


def _number(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> _Check:
    def check(name: str, value: object) -> float:
        return check_float(name, value, low=low, high=high, low_open=open_low, high_open=open_high)

    return check


def _or_infinity(check: _Check) -> _Check:
    """``check``, but also accepting +infinity (YAML ``.inf``: the feature switched off)."""

    def checked(name: str, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
            return math.inf
        return check(name, value)

    return checked


def _choice(choices: tuple) -> _Check:
    return lambda name, value: check_choice(name, value, choices)


def _text(name: str, value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _file_part(name: str, value: object) -> str:
    value = _text(name, value)
    if "/" in value or "\\" in value or value != value.strip():
        raise InputError(
            f"{name} must be a part of a file name (no slashes, no surrounding spaces), "
            f"got {value!r}"
        )
    return value


def _int_list(low: int, min_len: int = 0) -> _Check:
    def check(name: str, value: object) -> list[int]:
        if not isinstance(value, list | tuple) or len(value) < min_len:
            need = f"a list of at least {min_len} integers" if min_len else "a list of integers"
            raise InputError(f"{name} must be {need}, got {value!r}")
        return [check_int(f"{name}[{i}]", v, low=low) for i, v in enumerate(value)]

    return check


def _fractions(name: str, value: object) -> list[float]:
    expected = (
        "three non-negative numbers [train, validation, test] summing to 1, with train "
        "and validation > 0"
    )
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise InputError(f"{name} must be {expected}, got {value!r}")
    fr = [check_float(f"{name}[{i}]", v, low=0.0) for i, v in enumerate(value)]
    if not math.isclose(sum(fr), 1.0, abs_tol=1e-6) or fr[0] <= 0 or fr[1] <= 0:
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return fr


def _transform(name: str, value: object) -> object:
    expected = "'fit', 'prior' or a mapping {shift, scale} (scale > 0)"
    if isinstance(value, dict):
        for key in value:
            if key not in ("kind", "shift", "scale"):
                raise _unknown_key(name + ".", key, ["kind", "shift", "scale"])
        try:
            Transform.from_dict(value)
        except (TypeError, ValueError) as exc:  # InputError is a ValueError
            raise InputError(f"{name} must be {expected}: {exc}") from None
        return value
    if value not in ("fit", "prior"):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return value


def _prior(name: str, value: object) -> dict:
    expected = "a mapping {" + ", ".join(f"{n}: [low, high]" for n in PARAM_NAMES) + "}"
    if not isinstance(value, dict):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    for key in value:
        if key not in PARAM_NAMES:
            raise _unknown_key(name + ".", key, list(PARAM_NAMES))
    try:
        PriorBox.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be {expected} with low < high: {exc}") from None
    return value


def _device(name: str, value: object) -> str:
    return str(check_device(name, value))


_CHECKS: dict[str, _Check] = {
    "name": _optional(_text),
    "out": _text,
    "init_from": _optional(_text),
    "data.root": _optional(_text),
    "data.field": _file_part,
    "data.suite": _file_part,
    "data.set": _file_part,
    "data.maps_per_cosmology": _optional(_integer(1)),
    "data.n_pix": _optional(_integer(1)),
    "data.split_seed": _integer(0),
    "data.fractions": _fractions,
    "data.transform": _transform,
    "data.box_size": _optional(_number(0.0, open_low=True)),
    "data.depth": _optional(_number(0.0, open_low=True)),
    "data.prior": _optional(_prior),
    "model.base_channels": _integer(1),
    "model.channel_mults": _int_list(1, min_len=1),
    "model.blocks_per_level": _integer(1),
    "model.attention_levels": _int_list(0),
    "model.embed_dim": _integer(2),
    "model.groups": _integer(1),
    "model.spectral": check_bool,
    "schedule.kind": _choice(SCHEDULES),
    "schedule.n_steps": _integer(2),
    "train.steps": _integer(),  # its lower bound depends on init_from: _check_relations
    "train.batch_size": _integer(1),
    "train.lr": _number(0.0, open_low=True),
    "train.min_lr": _number(0.0),
    "train.warmup": _integer(0),
    "train.weight_decay": _number(0.0),
    "train.grad_clip": _or_infinity(_number(0.0, open_low=True)),  # .inf: no clipping
    "train.ema_decay": _number(0.0, 1.0, open_high=True),
    "train.augment": check_bool,
    "train.precision": _choice(PRECISIONS),
    "train.seed": _integer(0),
    "train.device": _device,
    "train.threads": _optional(_integer(1)),
    "train.max_minutes": _optional(_number(0.0, open_low=True)),
    "validation.every": _integer(1),
    "validation.n_maps": _integer(1),
    "validation.bands": _int_list(1, min_len=2),
    "validation.seed": _integer(0),
    "checkpoint.every_minutes": _or_infinity(_number(0.0)),  # .inf: by steps only
    "checkpoint.every_steps": _optional(_integer(1)),
}
if sorted(_CHECKS) != sorted(_leaves()):  # pragma: no cover
    raise RuntimeError("every key of DEFAULTS needs exactly one check in _CHECKS")

_ATTENTION_HEADS = 4  # of diffinfer.diffusion.unet.Attention


def _unet_widths(model: dict) -> tuple[list[int], list[int]]:
    """Channel counts of every group normalisation and every attention block of the U-Net
    that ``model`` describes, following :class:`~diffinfer.diffusion.unet.UNet`."""
    chans = [model["base_channels"] * m for m in model["channel_mults"]]
    levels, blocks = set(model["attention_levels"]), model["blocks_per_level"]
    norms, attention = [], []
    c, skips = chans[0], [chans[0]]
    for level, c_out in enumerate(chans):
        for _ in range(blocks):
            norms += [c, c_out]
            c = c_out
            if level in levels:
                attention.append(c)
            skips.append(c)
        if level < len(chans) - 1:
            skips.append(c)
    norms += [c, c]  # the middle: two residual blocks around an attention block
    attention.append(c)
    for level in reversed(range(len(chans))):
        for _ in range(blocks + 1):
            norms += [c + skips.pop(), chans[level]]
            c = chans[level]
            if level in levels:
                attention.append(c)
    return [*norms, *attention, c], attention


def _check_relations(config: dict) -> None:
    """Checks that involve more than one key (each key alone is already valid)."""
    tr, model, val = config["train"], config["model"], config["validation"]
    low = 0 if config["init_from"] else 1
    what = "0 only with init_from, to save its weights untrained" if tr["steps"] == 0 else ""
    check_int("train.steps", tr["steps"], low=low, what=what)
    if tr["min_lr"] > tr["lr"]:
        raise InputError(f"train.min_lr must be <= train.lr ({tr['lr']:g}), got {tr['min_lr']:g}")
    n_levels = len(model["channel_mults"])
    for level in model["attention_levels"]:
        if level >= n_levels:
            raise InputError(
                f"model.attention_levels must be levels of the U-Net, 0 ... {n_levels - 1} "
                f"(one per entry of model.channel_mults), got {model['attention_levels']}"
            )
    norms, attention = _unet_widths(model)
    groups = model["groups"]
    for width in norms:
        if width % min(groups, width):
            raise InputError(
                f"model.groups = {groups} must divide the channels of every normalisation "
                f"layer, but model.base_channels = {model['base_channels']} with "
                f"model.channel_mults = {model['channel_mults']} gives one of {width} "
                "channels; make model.base_channels a multiple of model.groups"
            )
    for width in attention:
        if width % _ATTENTION_HEADS:
            raise InputError(
                f"model.base_channels = {model['base_channels']} with model.channel_mults = "
                f"{model['channel_mults']} gives an attention block (the middle one or "
                f"model.attention_levels) of {width} channels, not divisible by its "
                f"{_ATTENTION_HEADS} heads"
            )
    n_pix, factor = config["data"]["n_pix"], 2 ** (n_levels - 1)
    if n_pix is not None and n_pix % factor:
        raise InputError(
            f"data.n_pix must be divisible by {factor} (the U-Net downsamples "
            f"len(model.channel_mults) - 1 = {n_levels - 1} times), got {n_pix}"
        )
    bands, n_steps = val["bands"], config["schedule"]["n_steps"]
    increasing = all(a < b for a, b in itertools.pairwise(bands))
    if not increasing or bands[-1] > n_steps:
        raise InputError(
            f"validation.bands must be at least two strictly increasing timesteps within "
            f"1 ... {n_steps} (schedule.n_steps), got {bands}"
        )


def check_config(config: dict) -> dict:
    """Validate every key of a training configuration before anything is read or written.

    Parameters
    ----------
    config
        A configuration with the sections and keys of :data:`DEFAULTS` (as
        :func:`load_config` returns it).

    Returns
    -------
    dict
        A checked copy: numbers given as strings are numbers, integers are ``int``, paths
        and devices are strings, lists are lists.

    Raises
    ------
    InputError
        The first bad key, named as a dotted path with its value and what is expected
        (``train.steps must be an integer >= 1, got -5``); unknown keys come with the
        closest known one.
    """
    _check_structure(config)
    out = _coerce(copy.deepcopy(config))
    for name, check in _CHECKS.items():
        _set(out, name, check(name, _get(out, name)))
    _check_relations(out)
    return out


def _yaml_problem(exc: Exception) -> str:
    """One line from a YAML error: what went wrong and where."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return " ".join(f"{problem}{where}".split())


def parse_override(text: str) -> dict:
    """``"train.lr=1e-3"`` -> ``{"train": {"lr": 0.001}}`` (the value parsed as YAML).

    Raises
    ------
    InputError
        No ``=``, an empty key or section, or a value that is not YAML.
    """
    import yaml

    if not isinstance(text, str) or "=" not in text:
        raise InputError(f"override {text!r} must look like section.key=value (train.lr=1e-4)")
    key, value = text.split("=", 1)
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise InputError(
            f"override {text!r} has an empty key; it must look like section.key=value "
            "(train.lr=1e-4)"
        )
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise InputError(
            f"the value of override {text!r} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    out: dict = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[dict] = ()) -> dict:
    """Defaults, updated by a YAML file, updated by overrides, checked by :func:`check_config`.

    Raises
    ------
    DataFileError
        The file is missing, unreadable, not YAML or not a mapping of sections.
    InputError
        An unknown key or a bad value (see :func:`check_config`).
    """
    import yaml

    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise DataFileError(f"configuration file not found: {p}")
        if not p.is_file():
            raise DataFileError(f"configuration {p} is not a file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise DataFileError(f"cannot read configuration {p}: {exc}") from None
        except yaml.YAMLError as exc:
            raise DataFileError(
                f"cannot parse configuration {p} as YAML: {_yaml_problem(exc)}"
            ) from None
        if loaded is None:  # an empty file: the defaults
            loaded = {}
        if not isinstance(loaded, dict):
            raise DataFileError(
                f"configuration {p} must be a YAML mapping of sections ({', '.join(DEFAULTS)}), "
                f"got {type(loaded).__name__}"
            )
        try:
            config = _merge(config, loaded)
        except InputError as exc:
            raise InputError(f"{exc} in {p}") from None
    for o in overrides:
        if not isinstance(o, dict):
            raise InputError(
                f"an override must be a mapping like {{'train': {{'lr': 1e-4}}}}, got {o!r}"
            )
        config = _merge(config, o)
    return check_config(config)


def _check_resumable(saved: dict, config: dict) -> None:
    def flat(d: dict, prefix: tuple = ()) -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): v})
        return out

    a, b = flat(saved), flat(config)
    changed = [".".join(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    changed = [c for c in changed if tuple(c.split(".")) not in _RESUMABLE]
    if changed:
        raise InputError(
            f"cannot resume: the configuration differs from the checkpoint's in {changed}; "
            "only train.steps, train.max_minutes and train.threads may change"
        )


# ----------------------------------------------------------------------- the data
class TrainingData:
    """Train and validation maps in model space, held in memory as float32."""

    def __init__(self, config: dict) -> None:
        d = config["data"]
        if d["root"] is None:
            raise InputError("data.root is not set: give the data directory in the config")
        meta_path = Path(d["root"]) / "dataset.json"
        meta = read_json(meta_path, what="dataset description") if meta_path.is_file() else {}
        maps = CamelsMaps.open(
            d["root"],
            field=d["field"],
            suite=d["suite"],
            set_name=d["set"],
            maps_per_cosmology=int(
                d["maps_per_cosmology"] or meta.get("maps_per_cosmology", MAPS_PER_COSMOLOGY)
            ),
        )
        stored = FieldConfig.from_dict(meta["config"]) if "config" in meta else None
        n_pix = int(d["n_pix"] or maps.n_pix)
        box = d["box_size"] or (stored.box_size if stored else None)
        depth = d["depth"] or (stored.depth if stored else None)
        if box is None or depth is None:
            raise InputError(
                "the data set has no dataset.json: set data.box_size and data.depth (Mpc/h)"
            )
        if d["prior"] is not None:
            prior = PriorBox.from_dict(d["prior"])
        elif stored is not None:
            prior = stored.prior
        else:
            theta = maps.params[:, :2]
            prior = PriorBox(tuple(theta.min(0)), tuple(theta.max(0)))
        self.field = FieldConfig(n_pix=n_pix, box_size=box, depth=depth, prior=prior)
        fr = tuple(d["fractions"])
        train_idx = maps.split_maps("train", fr, d["split_seed"])
        val_idx = maps.split_maps("validation", fr, d["split_seed"])
        for split, idx in (("training", train_idx), ("validation", val_idx)):
            if len(idx) == 0:
                raise InputError(
                    f"data.fractions {list(fr)} leave the {split} split empty: the data set "
                    f"has only {maps.n_cosmologies} cosmologies"
                )
        density, theta = maps.load(train_idx, n_pix=n_pix)
        if isinstance(d["transform"], dict):
            self.transform = Transform.from_dict(d["transform"])
        elif d["transform"] == "fit":
            self.transform = Transform.fit(density)
        elif d["transform"] == "prior":
            if meta.get("simulator") != "lognormal":
                raise InputError("data.transform 'prior' needs a log-normal data set")
            self.transform = LognormalSimulator(self.field).prior_transform()
        else:
            raise InputError(
                f"data.transform must be 'fit', 'prior' or {{shift, scale}}, got {d['transform']!r}"
            )
        self.maps = self.transform.forward(density).float().unsqueeze(1)
        self.theta = torch.as_tensor(theta, dtype=torch.float32)
        val_density, val_theta = maps.load(val_idx, n_pix=n_pix)
        self.val_maps = self.transform.forward(val_density).float().unsqueeze(1)
        self.val_theta = torch.as_tensor(val_theta, dtype=torch.float32)
        self.lognormal = meta.get("simulator") == "lognormal" and n_pix == maps.n_pix
        self.description = {
            "root": str(d["root"]),
            "files": f"Maps_{d['field']}_{d['suite']}_{d['set']}",
            "simulator": meta.get("simulator", "unknown"),
            "n_cosmologies": int(maps.n_cosmologies),
            "maps_per_cosmology": int(maps.maps_per_cosmology),
            "split": {"fractions": list(fr), "seed": d["split_seed"], "by": "cosmology"},
            "n_train_maps": len(train_idx),
            "n_validation_maps": len(val_idx),
            "stored_n_pix": int(maps.n_pix),
        }


def _generator(*key: int) -> torch.Generator:
    state = np.random.SeedSequence(list(key)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def batch_plan(
    n_maps: int, batch_size: int, n_steps: int, seed: int, step: int, augment: bool
) -> dict[str, torch.Tensor]:
    """Map indices, dihedral elements, timesteps and noise of one global batch.

    Map indices walk through a fresh permutation of the training maps every epoch; the
    rest is drawn from a generator seeded by (seed, step).
    """
    pos = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, within = np.divmod(pos, n_maps)
    index = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n_maps)
        index[epochs == e] = perm[within[epochs == e]]
    g = _generator(seed, step, 1)
    dihedral = torch.randint(0, 8 if augment else 1, (batch_size,), generator=g)
    t = torch.randint(1, n_steps + 1, (batch_size,), generator=g)
    return {"index": torch.as_tensor(index), "dihedral": dihedral, "t": t, "generator": g}


def apply_dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dihedral element k[i] (0..7: k % 4 quarter turns, then a mirror if k >= 4) per map."""
    out = x.clone()
    for i in range(x.shape[0]):
        ki = int(k[i])
        y = torch.rot90(x[i], ki % 4, dims=(-2, -1))
        out[i] = y.flip(-1) if ki >= 4 else y
    return out


def learning_rate(config: dict, step: int) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr at the last step."""
    tr = config["train"]
    if step < tr["warmup"]:
        return tr["lr"] * (step + 1) / tr["warmup"]
    span = max(tr["steps"] - tr["warmup"], 1)
    frac = min((step - tr["warmup"]) / span, 1.0)
    return tr["min_lr"] + 0.5 * (tr["lr"] - tr["min_lr"]) * (1 + math.cos(math.pi * frac))


# ------------------------------------------------------------------ validation
class Validator:
    """Held-out epsilon-MSE per timestep band, on fixed maps, timesteps and noise.

    For log-normal data the oracle's MSE on the same draws is reported beside it: the
    excess over the oracle is what training can still gain.
    """

    def __init__(self, data: TrainingData, model: DiffusionModel, config: dict) -> None:
        v = config["validation"]
        n = min(int(v["n_maps"]), len(data.val_maps))
        g = _generator(v["seed"], 0)
        pick = torch.randperm(len(data.val_maps), generator=g)[:n]
        self.y = data.val_maps[pick]
        self.theta = data.val_theta[pick]
        self.edges = [int(e) for e in v["bands"]]
        T = model.schedule.n_steps
        increasing = all(a < b for a, b in zip(self.edges, self.edges[1:], strict=False))
        if len(self.edges) < 2 or self.edges[0] < 1 or self.edges[-1] > T or not increasing:
            raise InputError(
                f"validation.bands must be at least two strictly increasing timesteps within "
                f"1 ... {T}: {self.edges}"
            )
        self.draws = []
        for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True):
            hi = hi + 1 if hi == self.edges[-1] else hi
            t = torch.randint(lo, hi, (n,), generator=g)
            self.draws.append((f"{lo}-{hi - 1}", t, torch.randn(self.y.shape, generator=g)))
        self.oracle = None
        if data.lognormal:
            sim = LognormalSimulator(data.field, data.transform)
            self.oracle = OracleDenoiser(sim, model.schedule)

    @torch.no_grad()
    def __call__(self, model: DiffusionModel, batch: int = 64) -> dict:
        out: dict = {"loss": {}, "oracle": {}, "excess": {}, "excess_se": {}}
        device = model.device
        for name, t, noise in self.draws:
            losses, oracle = [], []
            for i in range(0, len(self.y), batch):
                sl = slice(i, i + batch)
                y, th = self.y[sl].to(device), self.theta[sl].to(device)
                losses.append(model.loss(y, th, t[sl].to(device), noise[sl].to(device)).cpu())
                if self.oracle is not None:
                    x_t = model.schedule.q_sample(y.double().cpu(), t[sl], noise[sl].double())
                    eps = self.oracle(x_t, t[sl], th.double().cpu())
                    oracle.append((eps - noise[sl].double()).pow(2).mean(dim=(1, 2, 3)))
            out["loss"][name] = float(torch.cat(losses).mean())
            if oracle:
                out["oracle"][name] = float(torch.cat(oracle).mean())
                # paired per map: the excess over the oracle and its standard error
                excess = torch.cat(losses).double() - torch.cat(oracle)
                out["excess"][name] = float(excess.mean())
                out["excess_se"][name] = float(excess.std() / math.sqrt(len(excess)))
        out["loss_mean"] = float(np.mean(list(out["loss"].values())))
        for key in ("oracle", "excess", "excess_se"):
            if not out[key]:
                del out[key]
        return out


# ------------------------------------------------------------------- the loop
def _atomic_torch_save(obj: dict, path: Path) -> None:
    from diffinfer.io import naming_the_file

    tmp = path.with_name(path.name + ".partial")
    try:
        with naming_the_file(path):
            torch.save(obj, tmp)
    except RuntimeError as exc:  # torch's writer reports a failed write (disk full) this way
        tmp.unlink(missing_ok=True)
        raise DataFileError(f"cannot write {path}: {exc}; free disk space and rerun with "
                            "--resume (the previous checkpoint is kept)") from exc
    os.replace(tmp, path)


def _ddp_setup(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(config: dict, *, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a training run described by ``config`` (see :data:`DEFAULTS`).

    Writes into ``config["out"]``: ``state.pt`` (the full training state, read back with
    ``torch.load(weights_only=True)``), ``model/`` (the EMA weights as a model directory
    with its card) and ``log.jsonl`` (training and validation records), all atomically, at
    every checkpoint and at the end.

    Returns
    -------
    dict
        ``{"step", "stopped_early", "validation", "model_dir"}``.
    """
    config = check_config(config)  # before anything is read or written
    tr = config["train"]
    device = str(tr["device"])
    if tr["threads"]:
        torch.set_num_threads(int(tr["threads"]))
    rank, world = _ddp_setup(device)
    if world > 1 and device.startswith("cuda"):  # one GPU per process
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(device)
    if tr["batch_size"] % world:
        raise InputError(f"train.batch_size {tr['batch_size']} must divide by {world} processes")
    out = Path(config["out"])
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it or choose "
            "another --out"
        )

    data = TrainingData(config)
    schedule = NoiseSchedule(config["schedule"]["kind"], int(config["schedule"]["n_steps"]))
    unet = UNetConfig.from_dict({**config["model"], "prior": data.field.prior.to_dict()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tr["seed"])  # the initial weights depend on the seed alone
        model = DiffusionModel.from_config(unet, schedule, data.transform, data.field)
    if config["init_from"]:
        source = load_model(config["init_from"])
        try:
            model.denoiser.load_state_dict(source.denoiser.state_dict())
        except RuntimeError as exc:
            raise InputError(
                f"cannot start from {config['init_from']}: its architecture differs ({exc})"
            ) from exc
    model.to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.denoiser.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"]
    )
    step, elapsed_before = 0, 0.0
    resumed_validation = None
    if resume and state_path.exists():
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)
            saved_config = json.loads(state["config"])
        except Exception as exc:  # truncated, corrupted or not a training state
            raise DataFileError(
                f"cannot resume from {state_path}: it is damaged or not a diffinfer training "
                f"state ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}); "
                f"restore it from a copy, or move it away to start the run again (the last "
                f"saved model is in {out / 'model'})"
            ) from exc
        _check_resumable(saved_config, config)
        try:
            model.denoiser.load_state_dict(state["model"])
            ema.denoiser.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            step, elapsed_before = int(state["step"]), float(state["elapsed"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DataFileError(f"cannot resume from {state_path}: its tensors do not fit "
                                f"this run ({exc}); move it away to start again") from exc
        resumed_validation = json.loads(state.get("validation", "null"))
    net = model.denoiser
    if world > 1:
        net = DistributedDataParallel(
            model.denoiser, device_ids=[device] if device.startswith("cuda") else None
        )
    validator = Validator(data, model, config) if rank == 0 else None
    log_path = out / LOG_FILE
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, step)

    def checkpoint(validation: dict | None) -> None:
        if rank != 0:
            return
        _atomic_torch_save(
            {
                "model": model.denoiser.state_dict(),
                "ema": ema.denoiser.state_dict(),
                "optimizer": opt.state_dict(),
                "step": torch.tensor(step),
                "elapsed": torch.tensor(elapsed_before + time.perf_counter() - t_start),
                "config": json.dumps(config),
                "validation": json.dumps(validation),
            },
            state_path,
        )
        save_model(
            ema,
            out / MODEL_DIR,
            name=config["name"] or out.name,
            data=data.description,
            training={
                "steps": step,
                "samples_seen": step * tr["batch_size"],
                "config": config,
                "wall_hours": (elapsed_before + time.perf_counter() - t_start) / 3600,
                "processes": world,
            },
            metrics={"validation": validation} if validation else {},
        )

    def log(record: dict) -> None:
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    bs_local = tr["batch_size"] // world
    ck = config["checkpoint"]
    t_start = time.perf_counter()
    last_ckpt = t_start
    last_validation = resumed_validation
    bar = tqdm(total=tr["steps"], initial=step, disable=not progress or rank != 0, desc="training")
    window_t, window_n = time.perf_counter(), 0
    stopped_early = False
    saved_step = -1
    while step < tr["steps"]:
        plan = batch_plan(
            len(data.maps), tr["batch_size"], schedule.n_steps, tr["seed"], step, tr["augment"]
        )
        noise = torch.randn((tr["batch_size"], *data.maps.shape[1:]), generator=plan["generator"])
        sl = slice(rank * bs_local, (rank + 1) * bs_local)
        y = apply_dihedral(data.maps[plan["index"][sl]], plan["dihedral"][sl]).to(device)
        theta = data.theta[plan["index"][sl]].to(device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        model.denoiser.train()
        with autocast(device, tr["precision"]):
            losses = model.loss(y, theta, plan["t"][sl].to(device), noise[sl].to(device), net)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), tr["grad_clip"])
        opt.step()
        with torch.no_grad():
            d = min(tr["ema_decay"], (1 + step) / (10 + step))
            for pe, pm in zip(ema.denoiser.parameters(), model.denoiser.parameters(), strict=True):
                pe.lerp_(pm, 1 - d)
            for be, bm in zip(ema.denoiser.buffers(), model.denoiser.buffers(), strict=True):
                be.copy_(bm)
        step += 1
        window_n += tr["batch_size"]
        if step % 10 == 0 or step == tr["steps"]:
            rate = window_n / max(time.perf_counter() - window_t, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{rate:.0f}")
            log({"step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                 "lr": learning_rate(config, step - 1), "samples_per_s": rate})  # fmt: skip
            window_t, window_n = time.perf_counter(), 0
        bar.update(1)
        if step % config["validation"]["every"] == 0 or step == tr["steps"]:
            if validator is not None:
                last_validation = {"step": step, **validator(ema)}
                log({"validation": last_validation})
                bar.write(f"step {step}: validation " + _format_validation(last_validation))
        now = time.perf_counter()
        due = (now - last_ckpt) / 60 >= ck["every_minutes"] or (
            ck["every_steps"] and step % ck["every_steps"] == 0
        )
        over_time = bool(tr["max_minutes"]) and (now - t_start) / 60 >= tr["max_minutes"]
        if world > 1 and tr["max_minutes"]:  # every process stops at the same step
            flag = torch.tensor(int(over_time), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_time = bool(flag.item())
        if due or over_time or step == tr["steps"]:
            checkpoint(last_validation)
            last_ckpt, saved_step = now, step
        if over_time and step < tr["steps"]:
            stopped_early = True
            break
    bar.close()
    if saved_step != step:  # nothing left to do (steps reached before this call)
        checkpoint(last_validation)
    if world > 1:
        dist.barrier()
    return {
        "step": step,
        "stopped_early": stopped_early,
        "validation": last_validation,
        "model_dir": str(out / MODEL_DIR),
    }


def _format_validation(v: dict) -> str:
    parts = []
    for band, value in v["loss"].items():
        o = v.get("oracle", {}).get(band)
        parts.append(f"t {band}: {value:.4f}" + (f" (oracle {o:.4f})" if o is not None else ""))
    return "; ".join(parts)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (by a run killed after its last checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        s = rec.get("step", rec.get("validation", {}).get("step", 0))
        if s <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)

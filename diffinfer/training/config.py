"""The training configuration: its schema with defaults (:data:`DEFAULTS`), one check per
key, the relations between keys, YAML files and ``--set`` overrides (docs/training.md)."""

from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path

from diffinfer.diffusion.model import PRECISIONS
from diffinfer.diffusion.schedules import SCHEDULES
from diffinfer.errors import DataFileError, InputError
from diffinfer.training.checks import (
    Check,
    choice,
    device_check,
    file_part,
    fractions,
    int_list,
    integer,
    number,
    optional,
    or_infinity,
    prior_check,
    text,
    transform_check,
    unknown_key,
)
from diffinfer.validation import check_bool, check_int

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


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            raise unknown_key(path, key, list(base))
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
            raise unknown_key(prefix, key, list(defaults))
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


_CHECKS: dict[str, Check] = {
    "name": optional(text),
    "out": text,
    "init_from": optional(text),
    "data.root": optional(text),
    "data.field": file_part,
    "data.suite": file_part,
    "data.set": file_part,
    "data.maps_per_cosmology": optional(integer(1)),
    "data.n_pix": optional(integer(1)),
    "data.split_seed": integer(0),
    "data.fractions": fractions,
    "data.transform": transform_check,
    "data.box_size": optional(number(0.0, open_low=True)),
    "data.depth": optional(number(0.0, open_low=True)),
    "data.prior": optional(prior_check),
    "model.base_channels": integer(1),
    "model.channel_mults": int_list(1, min_len=1),
    "model.blocks_per_level": integer(1),
    "model.attention_levels": int_list(0),
    "model.embed_dim": integer(2),
    "model.groups": integer(1),
    "model.spectral": check_bool,
    "schedule.kind": choice(SCHEDULES),
    "schedule.n_steps": integer(2),
    "train.steps": integer(),  # its lower bound depends on init_from: _check_relations
    "train.batch_size": integer(1),
    "train.lr": number(0.0, open_low=True),
    "train.min_lr": number(0.0),
    "train.warmup": integer(0),
    "train.weight_decay": number(0.0),
    "train.grad_clip": or_infinity(number(0.0, open_low=True)),  # .inf: no clipping
    "train.ema_decay": number(0.0, 1.0, open_high=True),
    "train.augment": check_bool,
    "train.precision": choice(PRECISIONS),
    "train.seed": integer(0),
    "train.device": device_check,
    "train.threads": optional(integer(1)),
    "train.max_minutes": optional(number(0.0, open_low=True)),
    "validation.every": integer(1),
    "validation.n_maps": integer(1),
    "validation.bands": int_list(1, min_len=2),
    "validation.seed": integer(0),
    "checkpoint.every_minutes": or_infinity(number(0.0)),  # .inf: by steps only
    "checkpoint.every_steps": optional(integer(1)),
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


def check_resumable(saved: dict, config: dict) -> None:
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

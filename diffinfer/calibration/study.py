"""Coverage studies: posteriors for many test maps, written one file per (analysis, map).

A study draws test cosmologies (from the simulator, or the held-out split of a CAMELS-format
data set), computes the posterior of every map under every analysis (the diffusion likelihood
and the references: exact, power spectrum) through :func:`diffinfer.posterior`, and writes
each result as it finishes. A killed or interrupted study resumes without redoing finished
maps. The work goes through a ``concurrent.futures`` executor: local processes by default, a
Dask cluster when given a scheduler address.

Everything a study is given is checked before anything is written (:meth:`StudyConfig.
__post_init__` for the values, :func:`check_study` for the model and the data): a study that
cannot run leaves no directory behind. SIGINT (Ctrl-C) and SIGTERM stop the workers at once
and raise :class:`KeyboardInterrupt`; finished results are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError, DiffinferError, InputError
from diffinfer.io import (
    directory_lock,
    json_safe,
    read_json,
    write_json_atomic,
    write_npz_atomic,
)
from diffinfer.validation import check_choice, check_float, check_int

ANALYSES = ("diffusion", "exact", "power", "npe", "npe-power")
STUDY_FILE = "study.json"
SPLITS = ("test", "validation")
METHODS = ("grid", "emcee", "nuts")
UNREADABLE = ("raise", "warn", "skip")


@dataclass
class StudyConfig:
    """What a coverage study computes; every value is checked on construction.

    Attributes
    ----------
    model
        Model name or directory, or ``"oracle"``.
    likelihood
        Diffusion likelihood terms: ``"vlb"``, ``"l0"`` or a list of term indices.
    analyses
        Which posteriors to compute per map: any of ``"diffusion"``, ``"exact"``, ``"power"``,
        ``"npe"`` and ``"npe-power"`` (neural posterior estimators, option ``npe`` names
        a reference other than the shipped default).
    n_maps
        Number of test maps.
    method
        Posterior method (``"grid"`` gives exact HPD levels; MCMC draws are thinned).
    data
        ``None``: maps from the log-normal simulator at cosmologies uniform in the prior;
        else a CAMELS-format directory whose ``split`` supplies maps and true parameters.
    split
        ``"test"`` or ``"validation"`` (e.g. the calibration split for a temperature fit).
    seed
        Seeds the cosmologies, the maps and every posterior.
    n_draws
        Posterior draws kept per map (ranks, TARP, triangles).
    temperature
        Likelihood temperature of the diffusion analysis (None: the model card's).
        ``options={"temperature": t}`` tempers every analysis (e.g. to check that a
        deliberately overconfident posterior is detected).
    noise_sigma
        Gaussian pixel noise (model space) added to every test map and assumed by the
        likelihoods.
    maps_per_theta
        Maps of one cosmology per test case (default 1): the posterior of each case is that
        of its maps together (the product of their likelihoods). Simulated: that many maps
        of the case's theta; from a data set: the first maps of one cosmology of the split
        per case. The NPE references analyse one map and are refused for more.
    options
        Further :func:`diffinfer.posterior` options (n_timesteps, n_coarse, ...): names
        from ``diffinfer.posterior.SAMPLER_OPTIONS[method]`` and the likelihood options,
        JSON values (they are written to ``study.json``).

    Raises
    ------
    InputError
        A value of the wrong type or range, an unknown analysis, or an unknown posterior
        option (a typo would otherwise be dropped by the reference analyses).
    """

    model: str = "lognormal64"
    likelihood: str | list[int] = "vlb"
    analyses: list[str] = field(default_factory=lambda: ["diffusion", "exact", "power"])
    n_maps: int = 200
    method: str = "grid"
    data: str | None = None
    split: str = "test"
    seed: int = 0
    n_draws: int = 1000
    temperature: float | None = None
    noise_sigma: float = 0.0
    options: dict = field(default_factory=dict)
    maps_per_theta: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"model must be a model name or directory, or 'oracle'; "
                             f"got {self.model!r}")  # fmt: skip
        self.likelihood = _check_likelihood(self.likelihood)
        if isinstance(self.analyses, str) or not isinstance(self.analyses, (list, tuple)):
            raise InputError(f"analyses must be a list drawn from {list(ANALYSES)}, "
                             f"got {self.analyses!r}")  # fmt: skip
        self.analyses = list(self.analyses)
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise InputError(f"analyses must be among {list(ANALYSES)}; got {self.analyses} "
                             f"(unknown: {bad})" if bad else
                             f"analyses must name at least one of {list(ANALYSES)}")  # fmt: skip
        if len(set(self.analyses)) != len(self.analyses):
            raise InputError(f"analyses lists an analysis twice: {self.analyses}")
        if self.model == NO_MODEL and ("diffusion" in self.analyses or self.data is None):
            raise InputError("model 'none' is for studies of the references alone on a data "
                             "set: drop the diffusion analysis and give data, or name a "
                             "model")  # fmt: skip
        self.n_maps = check_int("n_maps", self.n_maps, low=1, what="test maps")
        self.method = check_choice("method", self.method, METHODS)
        if self.data is not None:
            if not isinstance(self.data, (str, os.PathLike)) or not os.fspath(self.data):
                raise InputError(f"data must be a directory or None, got {self.data!r}")
            self.data = os.fspath(self.data)
        self.split = check_choice("split", self.split, SPLITS)
        self.seed = check_int("seed", self.seed, low=0)
        self.n_draws = check_int("n_draws", self.n_draws, low=10, what="posterior draws per map")
        if self.temperature is not None:
            self.temperature = check_float("temperature", self.temperature, low=0,
                                           low_open=True)  # fmt: skip
        self.noise_sigma = check_float("noise_sigma", self.noise_sigma, low=0,
                                       what="model-space pixel noise")  # fmt: skip
        if self.model == NO_MODEL and self.noise_sigma > 0:
            raise InputError("noise_sigma is added in a model's space: name the model")
        self.maps_per_theta = check_int("maps_per_theta", self.maps_per_theta, low=1,
                                        what="maps of one cosmology per test case")  # fmt: skip
        npe = [a for a in self.analyses if a.startswith("npe")]
        if self.maps_per_theta > 1 and npe:
            raise InputError(f"the {npe} references estimate the posterior of one map; "
                             f"maps_per_theta={self.maps_per_theta} needs the diffusion, "
                             "exact or power analyses")  # fmt: skip
        _check_options(self)


def _check_likelihood(likelihood: object) -> str | list[int]:
    """The diffusion term set: "vlb", "l0" or a non-empty list of distinct term indices."""
    if isinstance(likelihood, str):
        return check_choice("likelihood", likelihood, ("vlb", "l0"))
    if isinstance(likelihood, (list, tuple)) and likelihood:
        terms = [check_int("likelihood term index", i, low=0) for i in likelihood]
        if len(set(terms)) != len(terms):
            raise InputError(f"likelihood lists a term twice: {terms}")
        return terms
    raise InputError("likelihood must be 'vlb', 'l0' or a non-empty list of term indices, "
                     f"got {likelihood!r}")  # fmt: skip


def _check_options(config: StudyConfig) -> None:
    """Names and values of the posterior options, against what :func:`diffinfer.posterior`
    accepts for the study's method (every analysis sees the options it understands)."""
    from diffinfer.posterior import _LIKELIHOOD_OPTIONS, SAMPLER_OPTIONS, check_posterior_options

    options = config.options
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InputError(f"options must be a dict of posterior options, got {options!r}")
    if "noise_sigma" in options:
        raise InputError("give the pixel noise as noise_sigma (--noise-sigma), not as a "
                         "posterior option: it is added to the test maps and modelled")  # fmt: skip
    names = (*_LIKELIHOOD_OPTIONS, *SAMPLER_OPTIONS[config.method])
    allowed = [o for o in names if o != "noise_sigma"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {near[0]!r}?)" if near else repr(u) for u in unknown
                 for near in [difflib.get_close_matches(u, allowed, n=1)]]  # fmt: skip
        raise InputError(f"unknown posterior option {', '.join(hints)} for method "
                         f"{config.method!r}; options: {allowed}")  # fmt: skip
    try:
        json.dumps(json_safe(options), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"options must be JSON values (numbers, strings, lists; no NaN or "
                         f"inf): they are written to {STUDY_FILE} ({exc}); give a fitted "
                         "power-spectrum likelihood as a file name") from exc  # fmt: skip
    # the values, as each analysis's posterior() will receive them
    for analysis in config.analyses:
        kwargs = _posterior_kwargs(config, analysis)
        likelihood = kwargs.pop("likelihood")
        check_posterior_options(likelihood, config.method, config.seed, kwargs)


# ----------------------------------------------------------------------- model and data
_MODEL_CACHE: dict[str, object] = {}
_DATA_CACHE: dict[tuple, _DataSource] = {}


NO_MODEL = "none"
"""The model of a study of the references alone (analyses without "diffusion", on a data set):
the split and the prior box come from the data set."""


def _model(name: str):
    if name == NO_MODEL:
        return None
    if name not in _MODEL_CACHE:
        from diffinfer.diffusion.checkpoint import load_model

        _MODEL_CACHE[name] = load_model(name)
    return _MODEL_CACHE[name]


@dataclass(frozen=True)
class _DataSource:
    """A CAMELS-format data set as a study reads it: the maps, the study's map order
    (one map per cosmology of the split first, then the next map of each, ...), and whether
    the exact references hold for its maps (``why_not`` says why not)."""

    maps: object
    order: np.ndarray
    lognormal: bool
    why_not: str


def _data_source(config: StudyConfig, model) -> _DataSource:
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
        same = (stored.n_pix == mine.n_pix and math.isclose(stored.box_size, mine.box_size)
                and math.isclose(stored.depth, mine.depth))  # fmt: skip
        if not same:
            lognormal = False
            why_not = (f"{root} holds {stored.n_pix}^2 maps of a {stored.box_size:g} Mpc/h "
                       f"box, {stored.depth:g} Mpc/h deep; the model describes "
                       f"{mine.n_pix}^2 maps, {mine.box_size:g} Mpc/h, {mine.depth:g} "
                       "deep")  # fmt: skip
    source = _DataSource(maps=maps, order=order, lognormal=lognormal, why_not=why_not)
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
    model = _model(config.model)
    if isinstance(config.likelihood, list) and model is not None:
        n_steps = model.schedule.n_steps
        if max(config.likelihood) >= n_steps:
            raise InputError(f"likelihood term indices must lie in [0, {n_steps - 1}] (the "
                             f"model has {n_steps} timesteps), got "
                             f"{config.likelihood}")  # fmt: skip
    if config.data is None:
        return
    source = _data_source(config, model)
    if len(source.order) == 0:
        raise InputError(f"the {config.split} split of {config.data} holds no maps "
                         f"({source.maps.n_cosmologies} cosmologies); use a larger data "
                         "set")  # fmt: skip
    if config.n_maps > len(source.order):
        raise InputError(f"the {config.split} split of {config.data} has "
                         f"{len(source.order)} maps; n_maps={config.n_maps} asks for "
                         "more")  # fmt: skip
    per = source.maps.maps_per_cosmology
    if config.maps_per_theta > 1 and (config.maps_per_theta > per
                                      or config.n_maps * per > len(source.order)):
        raise InputError(f"the {config.split} split of {config.data} has "
                         f"{len(source.order) // per} cosmologies of {per} maps; "
                         f"{config.n_maps} cases of maps_per_theta={config.maps_per_theta} "
                         "ask for more")  # fmt: skip
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

    from diffinfer.fields.lognormal import LognormalSimulator

    model = _model(config.model)
    m = config.maps_per_theta
    if config.data is None:
        sim = LognormalSimulator(model.field, model.transform)
        rng = np.random.default_rng([config.seed, index])
        low, width = np.asarray(sim.config.prior.low), sim.config.prior.width
        theta = low + width * rng.random(2)
        # map k of a case is the same whatever M: the first map is the one-map study's
        maps = sim.simulate(theta, m, seed=config.seed + 7919, row_offset=index)
        density = maps[0] if m == 1 else maps
    else:
        source = _data_source(config, model)
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


# ----------------------------------------------------------------------- one posterior
def _posterior_kwargs(config: StudyConfig, analysis: str) -> dict:
    kwargs = dict(config.options)
    if config.noise_sigma > 0:
        kwargs["noise_sigma"] = config.noise_sigma
    if analysis == "diffusion":
        if config.temperature is not None:
            kwargs["temperature"] = config.temperature
        return {"likelihood": config.likelihood, **kwargs}
    # references take only the options they understand
    from diffinfer.posterior import SAMPLER_OPTIONS

    keep = {"noise_sigma", "spectrum", "temperature", *SAMPLER_OPTIONS[config.method]}
    if analysis.startswith("npe"):
        keep = (keep - {"spectrum"}) | {"npe"}
    else:
        keep.discard("npe")
    return {"likelihood": analysis, **{k: v for k, v in kwargs.items() if k in keep}}


def result_path(out: Path, analysis: str, index: int) -> Path:
    """Where the result of one (analysis, map) pair is written."""
    return Path(out) / "results" / analysis / f"{index:05d}.npz"


def run_one(config: dict, analysis: str, index: int, out: str, threads: int = 1) -> str:
    """Compute and write one posterior; a picklable task for any executor.

    The file holds the truth, the posterior mean and covariance, ``n_draws`` draws, the HPD
    credibility level of the truth (exact on the grid), the normalised log density at the
    truth, evaluations, and wall time.
    """
    import torch

    from diffinfer.calibration.metrics import thin_to_independent
    from diffinfer.posterior import posterior

    torch.set_num_threads(threads)
    cfg = StudyConfig(**config)
    path = result_path(Path(out), analysis, index)
    start = time.perf_counter()
    density, truth = test_case(cfg, index)
    # one bar for the whole study (run_study's); none per map. Every map gets the study's
    # likelihood seed, as every user call gets the default one: a study measures the
    # posterior a user gets, not an average over seeds
    post = posterior(density, model=_model(cfg.model), method=cfg.method,
                     seed=cfg.seed, progress=False,
                     **_posterior_kwargs(cfg, analysis))  # fmt: skip
    post.name = f"{analysis} posterior of map {index}"
    _check_temperature(path, float(post.info.get("temperature", 1.0)))
    if analysis == "diffusion":
        _check_seed(path, cfg.seed)
    if cfg.method == "grid":
        g = post.grid()
        draws = g.sample(cfg.n_draws, seed=cfg.seed + index)
        mean, cov = g.mean(), g.cov()
        level = float(g.credibility(truth)[0])
        log_pdf = float(g.log_pdf(truth)[0])
        n_eval, edge = g.n_evaluations, g.edge_mass
    else:
        from scipy.stats import gaussian_kde

        samples = post.sample(cfg.n_draws * 4)
        draws = thin_to_independent(samples.theta, cfg.n_draws)
        mean, cov = draws.mean(0), np.cov(draws.T)
        # one density estimate for the HPD level (as metrics.hpd_credibility) and log p(truth)
        kde = gaussian_kde(draws.T)
        p_truth = float(kde(truth[:, None])[0])
        level = float(np.mean(kde(draws.T) > p_truth))
        log_pdf = float(np.log(p_truth + 1e-300))
        n_eval, edge = post.n_evaluations, 0.0
    mc = post.mc_error() or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(path, truth=truth, draws=draws, mean=mean, cov=cov, credibility=level,
                     log_pdf_truth=log_pdf, n_evaluations=n_eval, edge_mass=edge,
                     seconds=time.perf_counter() - start,
                     temperature=post.info.get("temperature", 1.0),
                     terms=np.array(post.info.get("terms", "")),
                     n_noise=post.info.get("n_noise", 0), noise_sigma=cfg.noise_sigma,
                     likelihood_seed=cfg.seed,
                     mc_error_mean=np.asarray(mc.get("mean", [np.nan, np.nan]), float),
                     mc_error_sd=np.asarray(mc.get("sd", [np.nan, np.nan]), float),
                     mc_error_met=bool(mc.get("met", True)),
                     n_timesteps=int(mc.get("n_timesteps", 0)),
                     network_calls=int(mc.get("n_denoiser_calls", 0)),
                     label=np.array(post.info["label"]))  # fmt: skip
    return str(path)


def _check_temperature(path: Path, temperature: float) -> None:
    """Refuse to add a result at another likelihood temperature than the analysis's results
    already in the study (checked before the posterior is computed). A study without a
    ``temperature`` takes the model card's when each map is computed, so a card
    recalibrated while a study grows would otherwise mix two temperatures in one report."""
    for other in sorted(path.parent.glob("*.npz")):
        if other.name == path.name:
            continue
        result = load_result(other)
        if result is None or "temperature" not in result:
            continue
        old = float(result["temperature"])
        if not math.isclose(old, temperature, rel_tol=1e-9):
            study = path.parent.parent.parent
            raise InputError(
                f"{study}: its {path.parent.name} results were computed at likelihood "
                f"temperature {old:.6g}, this map's would be at {temperature:.6g} (has the "
                f"model card been recalibrated since the study began?); grow it with "
                f"--temperature {old:.6g}, or start a new study with another --out"
            )
        return


def _check_seed(path: Path, seed: int) -> None:
    """Refuse to add a diffusion result to an analysis whose results were computed with other
    likelihood seeds: earlier versions gave map i the seed ``seed + i`` (an average over
    seeds, not what a user gets), recorded by the absence of ``likelihood_seed``."""
    for other in sorted(path.parent.glob("*.npz")):
        if other.name == path.name:
            continue
        result = load_result(other)
        if result is None:
            continue
        old = result.get("likelihood_seed")
        if old is None or int(old) != seed:
            study = path.parent.parent.parent
            was = "seed + map index" if old is None else str(int(old))
            raise InputError(
                f"{study}: its diffusion results were computed with likelihood seed {was}, "
                f"this map's would use seed {seed} (every map now gets the study's seed, as "
                "a user's call gets the default); start a new study with another --out"
            )
        return


RESULT_KEYS = ("truth", "draws", "mean", "cov", "credibility", "log_pdf_truth",
               "n_evaluations", "edge_mass", "seconds")  # fmt: skip
"""What every result file holds (:func:`run_one`); a file without one of them is damaged."""


def load_result(path: Path) -> dict | None:
    """One result file as a dict of arrays, or None if it is missing, unreadable or damaged
    (:func:`result_problem`): a resumed study recomputes such maps rather than trust them."""
    try:
        with np.load(path, allow_pickle=False) as f:
            result = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    return None if result_problem(result) else result


def result_problem(result: dict) -> str | None:
    """What is wrong with a result's contents, in words, or None: every key of
    :data:`RESULT_KEYS`, of the right shapes, with finite values (the log density at the
    truth may be -inf: a truth outside the grid) and a covariance without negative variances
    (a zero-width posterior is a result, which the report names)."""
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        return f"missing {missing}"
    try:
        truth, mean = np.asarray(result["truth"], float), np.asarray(result["mean"], float)
        cov, draws = np.asarray(result["cov"], float), np.asarray(result["draws"], float)
        scalars = [float(result[k]) for k in ("credibility", "n_evaluations", "edge_mass",
                                               "seconds")]  # fmt: skip
        log_pdf = float(result["log_pdf_truth"])
    except (TypeError, ValueError):
        return "values that are not numbers"
    if truth.shape != (2,) or mean.shape != (2,) or cov.shape != (2, 2) or draws.ndim != 2 \
            or draws.shape[-1:] != (2,) or len(draws) == 0:  # fmt: skip
        return "arrays of the wrong shape"
    if not all(np.isfinite(a).all() for a in (truth, mean, cov, draws, scalars)):
        return "NaN or inf values"
    if math.isnan(log_pdf) or log_pdf == math.inf or (np.diag(cov) < 0).any():
        return "an impossible log density or covariance"
    return None


def _result_files(out: str | os.PathLike, analysis: str) -> list[Path]:
    check_choice("analysis", analysis, ANALYSES)
    return sorted((Path(out) / "results" / analysis).glob("[0-9][0-9][0-9][0-9][0-9].npz"))


def read_results(out: str | os.PathLike, analysis: str) -> tuple[list[dict], list[Path]]:
    """The finished results of one analysis, in map order (each with its ``index``), and
    the result files that cannot be read (truncated, corrupted); one pass over the files."""
    results, bad = [], []
    for p in _result_files(out, analysis):
        r = load_result(p)
        if r is None:
            bad.append(p)
            continue
        r["index"] = int(p.stem)
        results.append(r)
    return results, bad


def load_results(out: str | os.PathLike, analysis: str, *, unreadable: str = "raise") -> list[dict]:
    """Every finished result of one analysis, in map order (each with its ``index``).

    Parameters
    ----------
    out
        The study directory.
    analysis
        ``"diffusion"``, ``"exact"`` or ``"power"``.
    unreadable
        What to do with result files that cannot be read: ``"raise"`` (default) a
        :class:`~diffinfer.errors.DataFileError` naming them, ``"warn"`` skip them with a
        warning naming them, ``"skip"`` skip them silently. Skipping changes every metric
        computed from the results: rerunning the study recomputes those maps.

    Raises
    ------
    DataFileError
        Unreadable result files (with ``unreadable="raise"``).
    """
    check_choice("unreadable", unreadable, UNREADABLE)
    results, bad = read_results(out, analysis)
    if bad and unreadable != "skip":
        text = (f"{len(bad)} unreadable {analysis} result file(s) in {out}: "
                f"{', '.join(p.name for p in bad)}")  # fmt: skip
        if unreadable == "raise":
            raise DataFileError(f"{text}; rerun the study (same command) to recompute them, "
                                "or delete them to go on without those maps")  # fmt: skip
        warnings.warn(f"skipped {text}", stacklevel=2)
    return results


# ----------------------------------------------------------------------- the runner
def _worker_init(parent_pid: int) -> None:
    """Initialiser of local worker processes: they ignore SIGINT (the parent stops them) and
    die with the parent, even when it is killed outright (SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            armed = libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


def make_executor(workers: int = 1, scheduler: str | None = None) -> Executor:
    """A ``concurrent.futures`` executor: local processes, or a Dask cluster's
    (``scheduler="tcp://host:port"``; needs ``pip install diffinfer[dask]``).

    Local workers ignore SIGINT and die with this process (see :func:`run_study`)."""
    workers = check_int("workers", workers, low=1)
    if scheduler:
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError("a Dask scheduler needs `pip install 'diffinfer[dask]'`") from exc
        client = Client(scheduler)
        executor = client.get_executor()
        executor.owned_client = client  # closed by run_study
        return executor
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))  # fmt: skip


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as SIGINT does) while the block runs, so that a
    terminated study stops its workers; the previous handler is restored afterwards."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while the workers are being stopped."""
    if not _in_main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _stop(pool: Executor, futures: list, own: bool, kill: bool) -> None:
    """Cancel what has not started; on an interrupt (``kill``) also end the running tasks:
    terminate the local worker processes (SIGTERM, then SIGKILL after 5 s)."""
    with _signals_held():
        for f in futures:
            f.cancel()
        if not own:
            return
        if isinstance(pool, ProcessPoolExecutor):
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=not kill, cancel_futures=True)
            if kill:
                for proc in processes:
                    if proc.is_alive():
                        proc.terminate()
                deadline = time.monotonic() + 5.0
                for proc in processes:
                    proc.join(max(0.0, deadline - time.monotonic()))
                    if proc.is_alive():
                        proc.kill()
                        proc.join(1.0)
        else:
            pool.shutdown(wait=not kill)


def run_study(
    config: StudyConfig,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    executor: Executor | None = None,
    threads: int = 1,
    progress: bool = True,
    on_result: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) a study and return its report (:func:`diffinfer.calibration.report`).

    Everything is checked (:class:`StudyConfig`, :func:`check_study`, the options below)
    before ``out`` is created or ``study.json`` written. SIGINT and SIGTERM (converted to
    :class:`KeyboardInterrupt` while the study runs) cancel the queued maps and terminate
    the local worker processes, which also die with this process if it is killed outright;
    finished results are kept, and running the same study again resumes it.

    Parameters
    ----------
    config
        The study.
    out
        Output directory: ``study.json``, ``results/<analysis>/<map>.npz``, the report.
    workers, scheduler, executor
        Local worker processes, or a Dask scheduler address, or any executor to use as is.
    threads
        torch threads per task.

    Raises
    ------
    InputError
        A bad argument, or ``out`` holds a different study (change ``out`` or delete it to
        start afresh). More maps or other analyses with the same settings are the same
        study: only the missing results are computed, and the report covers the analyses
        of ``config``.
    DataFileError
        The model or the data set cannot be read.
    KeyboardInterrupt
        On SIGINT or SIGTERM, after the workers are stopped.
    """


    if not isinstance(config, StudyConfig):
        raise InputError(f"config must be a StudyConfig, got {type(config).__name__}")
    workers = check_int("workers", workers, low=1, what="local worker processes")
    threads = check_int("threads", threads, low=1, what="torch threads per task")
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip()):
        raise InputError(f"scheduler must be a Dask scheduler address, got {scheduler!r}")
    if scheduler and executor is not None:
        raise InputError("give a Dask scheduler or an executor, not both")
    if on_result is not None and not callable(on_result):
        raise InputError(f"on_result must be callable, got {on_result!r}")
    check_study(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: the study directory (--out) must be a directory")
    spec = json_safe(asdict(config))
    study_file = out / STUDY_FILE
    if study_file.exists():
        old = read_json(study_file, what="study description")
        if not _same_study(old, spec):
            raise InputError(f"{out} holds a different study ({study_file}); use another --out "
                             "or delete it to start afresh")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, "calibrate"):  # a second run into out is refused
        write_json_atomic(study_file, spec)
        return _run(config, spec, out, workers, threads, scheduler, executor, progress,
                    on_result)  # fmt: skip


def _run(config: StudyConfig, spec: dict, out: Path, workers: int, threads: int,
         scheduler: str | None, executor: Executor | None, progress: bool,
         on_result: Callable[[str], None] | None) -> dict:  # fmt: skip
    """The maps of :func:`run_study` still to compute, computed; its report."""
    from tqdm.auto import tqdm

    from diffinfer.calibration.report import write_report

    todo = [(a, i) for i in range(config.n_maps) for a in config.analyses
            if load_result(result_path(out, a, i)) is None]  # fmt: skip
    own = executor is None
    with _sigterm_as_interrupt():
        if own and workers <= 1 and scheduler is None:
            for a, i in tqdm(todo, desc="posteriors", disable=not progress):
                path = run_one(spec, a, i, str(out), threads)
                if on_result:
                    on_result(path)
        elif todo:
            pool = executor or make_executor(workers, scheduler)
            futures: list = []
            tasks: dict = {}
            try:
                for a, i in todo:  # appended one by one: an interrupt here cancels what was sent
                    futures.append(pool.submit(run_one, spec, a, i, str(out), threads))
                    tasks[futures[-1]] = (a, i)
                for fut in tqdm(as_completed(futures), total=len(futures), desc="posteriors",
                                disable=not progress):  # fmt: skip
                    try:
                        path = fut.result()
                    except BrokenProcessPool as exc:
                        a, i = tasks[fut]
                        raise DiffinferError(
                            f"a worker process died while computing the {a} posterior of map "
                            f"{i} ({result_path(out, a, i)}): out of memory, or killed? "
                            f"Finished maps are kept in {out}; rerun the same command with "
                            "fewer --workers to resume"
                        ) from exc
                    if on_result:
                        on_result(path)
            except BaseException:
                # an interrupt or a failed map: end the running tasks too (finished results are
                # kept and a rerun resumes), so that no wait outlives the error
                _stop(pool, futures, own, kill=True)
                raise
            else:
                if own:
                    pool.shutdown(wait=True)
            finally:
                client = getattr(pool, "owned_client", None)
                if own and client is not None:
                    client.close()
        return write_report(out)


def _same_study(old: dict, new: dict) -> bool:
    """Whether a study.json describes the same study as ``new`` (``n_maps`` and
    ``analyses`` may differ: each analysis's results depend only on the other settings, so
    a study grows by maps or by analyses; NaN and null compare equal, as a strict JSON
    writer turns one into the other)."""

    def key(spec: dict) -> str:
        spec = {"maps_per_theta": 1,  # studies written before the option had one map a case
                **{k: v for k, v in json_safe(spec).items() if k not in ("n_maps", "analyses")}}
        return json.dumps(spec, sort_keys=True)

    return key(old) == key(new)


def squared_distances(results: list[dict], untempered: bool = False) -> np.ndarray:
    """The squared Mahalanobis distance d^2 = (mean - truth)^T C^-1 (mean - truth) of each
    map's truth under the Gaussian with its posterior mean and covariance C.

    With ``untempered``, a result computed at temperature t contributes t d^2: the distance
    under the untempered likelihood's posterior (:func:`fit_temperature`).

    Raises
    ------
    InputError
        A result that is incomplete, not finite, of another dimension, or whose covariance
        is singular (a zero-width posterior); the message names the map.
    """
    d2, dim = [], None
    for k, r in enumerate(results):
        name = _map_name(r, k)
        if not isinstance(r, dict):
            raise InputError(f"{name}: a result must be a dict, got {type(r).__name__}")
        missing = [key for key in ("mean", "truth", "cov") if key not in r]
        if missing:
            raise InputError(f"{name}: the result lacks {missing}")
        try:
            mean, truth, cov = (np.asarray(r[key], dtype=float) for key in ("mean", "truth", "cov"))
            used = float(r.get("temperature", 1.0))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: mean, truth, cov and temperature must be numbers "
                             f"({exc})") from exc  # fmt: skip
        dim = truth.size if dim is None else dim
        if truth.shape != (dim,) or mean.shape != (dim,) or cov.shape != (dim, dim):
            raise InputError(f"{name}: expected a mean and truth of {dim} parameters and a "
                             f"{dim} x {dim} covariance; got shapes {mean.shape}, "
                             f"{truth.shape}, {cov.shape}")  # fmt: skip
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(truth))
                and np.all(np.isfinite(cov))):  # fmt: skip
            raise InputError(f"{name}: the posterior mean, truth or covariance is not finite")
        check_float(f"{name}: temperature", used, low=0, low_open=True)
        eig = np.linalg.eigvalsh(0.5 * (cov + cov.T))
        if eig.max() <= 0 or eig.min() <= 1e-12 * eig.max():
            raise InputError(
                f"{name}: the posterior covariance is singular (eigenvalues "
                f"{np.array2string(eig, precision=3)}; a zero-width posterior, e.g. all its "
                "mass in one grid cell); delete that result and rerun the study with a finer "
                "grid, or leave the map out"
            )
        diff = mean - truth
        # a posterior computed at temperature t has covariance t C: t d^2 undoes it
        d2.append((used if untempered else 1.0) * float(diff @ np.linalg.solve(cov, diff)))
    return np.asarray(d2)


def fit_temperature(results: list[dict], estimator: str = "mean") -> dict:
    """The likelihood temperature that makes Gaussian-approximated posteriors calibrated.

    Tempering the likelihood by tau scales a Gaussian posterior's covariance by tau, so the
    squared Mahalanobis distance of the truth d^2 = (mean - truth)^T C^-1 (mean - truth)
    becomes d^2 / tau, which for a calibrated Gaussian posterior follows chi^2 with D (the
    number of parameters) degrees of freedom. Results computed at a temperature t enter as
    t d^2, so tau is always relative to the untempered likelihood.

    Parameters
    ----------
    results
        Per-map results of a study (``mean``, ``truth``, ``cov``, optionally
        ``temperature``).
    estimator
        ``"mean"``: tau = mean(d^2) / D (the maximum-likelihood estimate when every map
        needs the same tau), its standard error from the spread of d^2. ``"median"``: tau =
        median(d^2) / median(chi^2_D), its standard error the asymptotic one of a sample
        median under that model; robust to a few maps whose posterior is far from the truth
        (a single such map can dominate the mean of d^2), and it calibrates the central
        credible regions.

    Returns
    -------
    dict
        ``temperature``, ``se``, ``n_maps``, ``estimator``.

    Raises
    ------
    InputError
        Fewer than 5 results, or a result that is incomplete, not finite, of another
        dimension, or whose covariance is singular (a zero-width posterior); the message
        names the map.
    """
    if not isinstance(results, (list, tuple)):
        raise InputError(f"results must be a list of result dicts, got {type(results).__name__}")
    if len(results) < 5:
        raise InputError(f"fitting a temperature needs at least 5 maps, got {len(results)}")
    if estimator not in ("mean", "median"):
        raise InputError(f"estimator must be 'mean' or 'median', got {estimator!r}")
    d2 = squared_distances(results, untempered=True)
    dim = np.asarray(results[0]["truth"]).size
    if estimator == "median":
        from scipy import stats

        q = float(stats.chi2.median(dim))
        tau = float(np.median(d2) / q)
        # sd of a sample median: sqrt(1/4 / n) / f(median), f the density of tau chi^2_D
        se = tau * math.sqrt(0.25 / len(d2)) / (q * float(stats.chi2.pdf(q, dim)))
        return {"temperature": tau, "se": float(se), "n_maps": len(d2), "estimator": estimator}
    return {"temperature": float(d2.mean() / dim),
            "se": float(d2.std(ddof=1) / dim / math.sqrt(len(d2))), "n_maps": len(d2),
            "estimator": estimator}  # fmt: skip


def _map_name(result: object, position: int) -> str:
    index = result.get("index") if isinstance(result, dict) else None
    if index is None:
        return f"result {position}"
    return f"map {int(index):05d} (results/.../{int(index):05d}.npz)"


def store_temperature(model_dir: str | os.PathLike, fit: dict, likelihood: str, n_noise: int,
                      noise_sigma: float = 0.0, report: dict | None = None) -> Path:  # fmt: skip
    """Record a fitted temperature in a model card (``calibration``, a list with one entry
    per term set), atomically; the posterior then applies it to this term set by default.

    Raises
    ------
    InputError
        The oracle (it has no card), or a fit that is not a positive temperature.
    DataFileError
        ``model_dir`` is not a model directory with a complete card and weights entry.
    """
    from diffinfer.diffusion.checkpoint import read_card, resolve_model_dir, update_card

    if str(model_dir) == "oracle":
        raise InputError("the oracle has no model card to store a temperature in")
    check_float("temperature", fit.get("temperature"), low=0, low_open=True)
    card = read_card(resolve_model_dir(model_dir))
    entry = {
        "temperature": float(fit["temperature"]),
        "se": float(fit["se"]),
        "n_maps": int(fit["n_maps"]),
        "estimator": str(fit.get("estimator", "mean")),
        "likelihood": likelihood,
        "n_noise": int(n_noise),
        "noise_sigma": float(noise_sigma),
        **({"report": report} if report else {}),
    }
    # one entry per (term set, noise draws, noise level); other term sets keep theirs
    old = card.get("calibration") or []
    old = [old] if isinstance(old, dict) else list(old)
    key = (likelihood, n_noise, float(noise_sigma))
    kept = [e for e in old if (e.get("likelihood"), e.get("n_noise"),
                                float(e.get("noise_sigma") or 0.0)) != key]  # fmt: skip
    return update_card(model_dir, {"calibration": [*kept, entry]})


def check_same_model(
    named: str | os.PathLike, study_model: object, study: str | os.PathLike
) -> str:
    """Check that the model a user names is the one a study ran with; returns its name.

    Names and directories are compared as the directories they resolve to, so
    ``lognormal64`` and the path of the shipped ``lognormal64`` are the same model.

    Raises
    ------
    DataFileError
        ``named`` is not a model name or directory.
    InputError
        The study ran with another model (or names one that does not exist here).
    """
    from diffinfer.diffusion.checkpoint import resolve_model_dir

    named = os.fspath(named)
    mismatch = InputError(
        f"{study} was computed with model {study_model!r}, not {named!r}: a temperature "
        "fitted on one model's posteriors does not apply to another; name the study's model"
    )
    if named == "oracle" or study_model == "oracle":
        if named != study_model:
            raise mismatch
        return named
    mine = resolve_model_dir(named).resolve()
    if not isinstance(study_model, str) or not study_model:
        raise mismatch
    try:
        theirs = resolve_model_dir(study_model).resolve()
    except DataFileError:
        raise mismatch from None
    if mine != theirs:
        raise mismatch
    return named

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

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffinfer.calibration.config import NO_MODEL, STUDY_FILE, StudyConfig, posterior_kwargs
from diffinfer.calibration.data_checks import check_training_data
from diffinfer.calibration.executor import make_executor, sigterm_as_interrupt, stop_workers
from diffinfer.calibration.results import load_result, result_path
from diffinfer.errors import DataFileError, DiffinferError, InputError
from diffinfer.io import (
    directory_lock,
    json_safe,
    read_json,
    write_json_atomic,
    write_npz_atomic,
)
from diffinfer.validation import check_int

# ----------------------------------------------------------------------- model and data
_MODEL_CACHE: dict[str, object] = {}


_DATA_CACHE: dict[tuple, _DataSource] = {}


def study_model(name: str):
    """The model of a study by name or directory (loaded once per process), or None for
    :data:`NO_MODEL`."""
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
    meta: dict


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
    source = _DataSource(maps=maps, order=order, lognormal=lognormal, why_not=why_not,
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


def run_one(config: dict, analysis: str, index: int, out: str, threads: int = 1) -> str:
    """Compute and write one posterior; a picklable task for any executor.

    The file holds the truth, the posterior mean and covariance, ``n_draws`` draws, the HPD
    credibility level of the truth (exact on the grid), the normalised log density at the
    truth, evaluations, and wall time.
    """
    import torch

    from diffinfer.calibration.metrics import thin_to_independent
    from diffinfer.inference.posterior import posterior

    torch.set_num_threads(threads)
    cfg = StudyConfig(**config)
    path = result_path(Path(out), analysis, index)
    start = time.perf_counter()
    density, truth = test_case(cfg, index)
    # one bar for the whole study (run_study's); none per map. Every map gets the study's
    # likelihood seed, as every user call gets the default one: a study measures the
    # posterior a user gets, not an average over seeds
    post = posterior(density, model=study_model(cfg.model), method=cfg.method,
                     seed=cfg.seed, progress=False,
                     **posterior_kwargs(cfg, analysis))  # fmt: skip
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
            grow = (f"--temperature {old:.6g}" if path.parent.name == "diffusion"
                    else f"--set temperature={old:.6g}")  # fmt: skip
            raise InputError(
                f"{study}: its {path.parent.name} results were computed at likelihood "
                f"temperature {old:.6g}, this map's would be at {temperature:.6g} (has the "
                f"model card been recalibrated since the study began?); grow it with "
                f"{grow}, or start a new study with another --out"
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
    with sigterm_as_interrupt():
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
                stop_workers(pool, futures, own, kill=True)
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
        spec = {
            "maps_per_theta": 1,  # studies written before the option had one map a case
            **{k: v for k, v in json_safe(spec).items() if k not in ("n_maps", "analyses")},
        }
        return json.dumps(spec, sort_keys=True)

    return key(old) == key(new)

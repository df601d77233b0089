"""Coverage studies: posteriors for many test maps, written one file per (analysis, map).

A study draws test cosmologies (from the simulator, or the held-out split of a CAMELS-format
data set), computes the posterior of every map under every analysis (the diffusion likelihood
and the references: exact, power spectrum) through :func:`diffinfer.posterior`, and writes
each result as it finishes. A killed study resumes without redoing finished maps. The work
goes through a ``concurrent.futures`` executor: local processes by default, a Dask cluster
when given a scheduler address.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffinfer.errors import InputError
from diffinfer.io import read_json, write_json_atomic, write_npz_atomic

ANALYSES = ("diffusion", "exact", "power")
STUDY_FILE = "study.json"


@dataclass
class StudyConfig:
    """What a coverage study computes.

    Attributes
    ----------
    model
        Model name or directory, or ``"oracle"``.
    likelihood
        Diffusion likelihood terms: ``"vlb"``, ``"l0"`` or a list of term indices.
    analyses
        Which posteriors to compute per map: any of ``"diffusion"``, ``"exact"``, ``"power"``.
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
    options
        Further :func:`diffinfer.posterior` options (n_timesteps, n_coarse, ...).
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

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise InputError(f"analyses must be among {ANALYSES}; got {self.analyses}")
        if self.n_maps < 1 or self.n_draws < 10:
            raise InputError("a study needs n_maps >= 1 and n_draws >= 10")
        if self.noise_sigma < 0:
            raise InputError(f"noise_sigma must be >= 0, got {self.noise_sigma}")


# ----------------------------------------------------------------------- test maps
_MODEL_CACHE: dict[str, object] = {}


def _model(name: str):
    if name not in _MODEL_CACHE:
        from diffinfer.diffusion.checkpoint import load_model

        _MODEL_CACHE[name] = load_model(name)
    return _MODEL_CACHE[name]


def test_case(config: StudyConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The density map and true parameters of test map ``index`` (deterministic)."""
    import torch

    from diffinfer.fields.lognormal import LognormalSimulator

    model = _model(config.model)
    if config.data is not None and model.card.get("data", {}).get("simulator") != "lognormal":
        bad = [a for a in config.analyses
               if a == "exact" or (a == "power" and "spectrum" not in config.options)]  # fmt: skip
        if bad:
            raise InputError(
                f"the {bad} references assume log-normal maps, but {config.data} holds maps "
                "of another simulator: use analyses=['diffusion'] (a power-spectrum "
                "likelihood fitted to those maps can be given as options['spectrum'])"
            )
    if config.data is None:
        sim = LognormalSimulator(model.field, model.transform)
        rng = np.random.default_rng([config.seed, index])
        low, width = np.asarray(sim.config.prior.low), sim.config.prior.width
        theta = low + width * rng.random(2)
        density = sim.simulate(theta, 1, seed=config.seed + 7919, row_offset=index)[0]
    else:
        from diffinfer.data.camels import CamelsMaps

        # the model's own data description: file names and the split it was trained with
        d = model.card.get("training", {}).get("config", {}).get("data", {})
        maps = CamelsMaps.open(
            config.data,
            field=d.get("field", "Mtot"),
            suite=d.get("suite", "IllustrisTNG"),
            set_name=d.get("set", "LH"),
        )
        test = maps.split_maps(config.split, tuple(d.get("fractions", (0.7, 0.15, 0.15))),
                               seed=int(d.get("split_seed", 0)))  # fmt: skip
        # one map per test cosmology first, then the next map of each, ...
        per = maps.maps_per_cosmology
        order = test.reshape(-1, per).T.ravel()
        if index >= len(order):
            raise InputError(
                f"the {config.split} split has {len(order)} maps; asked for map {index}"
            )
        density, theta = maps.load(order[index : index + 1], n_pix=model.field.n_pix)
        density, theta = density[0], theta[0]
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
    post = posterior(density, model=_model(cfg.model), method=cfg.method,
                     seed=cfg.seed + index, **_posterior_kwargs(cfg, analysis))  # fmt: skip
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
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(path, truth=truth, draws=draws, mean=mean, cov=cov, credibility=level,
                     log_pdf_truth=log_pdf, n_evaluations=n_eval, edge_mass=edge,
                     seconds=time.perf_counter() - start,
                     temperature=post.info.get("temperature", 1.0),
                     terms=np.array(post.info.get("terms", "")),
                     n_noise=post.info.get("n_noise", 0), noise_sigma=cfg.noise_sigma,
                     label=np.array(post.info["label"]))  # fmt: skip
    return str(path)


def load_result(path: Path) -> dict | None:
    """One result file as a dict of arrays, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def load_results(out: str | os.PathLike, analysis: str) -> list[dict]:
    """Every finished result of one analysis, in map order (each with its ``index``)."""
    folder = Path(out) / "results" / analysis
    results = []
    for p in sorted(folder.glob("[0-9][0-9][0-9][0-9][0-9].npz")):
        r = load_result(p)
        if r is not None:
            r["index"] = int(p.stem)
            results.append(r)
    return results


# ----------------------------------------------------------------------- the runner
def make_executor(workers: int = 1, scheduler: str | None = None) -> Executor:
    """A ``concurrent.futures`` executor: local processes, or a Dask cluster's
    (``scheduler="tcp://host:port"``; needs ``pip install diffinfer[dask]``)."""
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
                               mp_context=multiprocessing.get_context("spawn"))  # fmt: skip


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
        ``out`` holds a different study (change ``out`` or delete it to start afresh).
    """
    from tqdm.auto import tqdm

    from diffinfer.calibration.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = asdict(config)
    study_file = out / STUDY_FILE
    if study_file.exists():
        old = read_json(study_file)
        if {k: v for k, v in old.items() if k != "n_maps"} != {
            k: v for k, v in json.loads(json.dumps(spec)).items() if k != "n_maps"
        }:
            raise InputError(f"{out} holds a different study ({study_file}); use another --out "
                             "or delete it to start afresh")  # fmt: skip
    write_json_atomic(study_file, spec)
    todo = [(a, i) for i in range(config.n_maps) for a in config.analyses
            if load_result(result_path(out, a, i)) is None]  # fmt: skip
    own = executor is None
    if own and workers <= 1 and scheduler is None:
        for a, i in tqdm(todo, desc="posteriors", disable=not progress):
            path = run_one(spec, a, i, str(out), threads)
            if on_result:
                on_result(path)
    elif todo:
        pool = executor or make_executor(workers, scheduler)
        try:
            futures = [pool.submit(run_one, spec, a, i, str(out), threads) for a, i in todo]
            for fut in tqdm(as_completed(futures), total=len(futures), desc="posteriors",
                            disable=not progress):  # fmt: skip
                path = fut.result()
                if on_result:
                    on_result(path)
        finally:
            if own:
                pool.shutdown(wait=True)
                client = getattr(pool, "owned_client", None)
                if client is not None:
                    client.close()
    return write_report(out)


def fit_temperature(results: list[dict]) -> dict:
    """The likelihood temperature that makes Gaussian-approximated posteriors calibrated.

    Tempering the likelihood by tau scales a Gaussian posterior's covariance by tau, so the
    squared Mahalanobis distance of the truth d^2 = (mean - truth)^T C^-1 (mean - truth)
    becomes d^2 / tau. Calibration means E[d^2 / tau] = D (the number of parameters); the
    estimate is tau = mean(d^2) / D, with its standard error from the spread of d^2. Results
    computed at a temperature t enter as t d^2, so tau is always relative to the untempered
    likelihood.

    Returns
    -------
    dict
        ``temperature``, ``se``, ``n_maps``.
    """
    if len(results) < 5:
        raise InputError("fitting a temperature needs at least 5 maps")
    d2 = []
    for r in results:
        diff = np.asarray(r["mean"]) - np.asarray(r["truth"])
        # a posterior computed at temperature t has covariance t C: undo it, so that the
        # fit is always relative to the untempered likelihood
        used = float(r.get("temperature", 1.0))
        d2.append(used * float(diff @ np.linalg.solve(np.asarray(r["cov"]), diff)))
    d2 = np.asarray(d2)
    dim = len(results[0]["truth"])
    return {"temperature": float(d2.mean() / dim),
            "se": float(d2.std(ddof=1) / dim / math.sqrt(len(d2))), "n_maps": len(d2)}  # fmt: skip


def store_temperature(model_dir: str | os.PathLike, fit: dict, likelihood: str, n_noise: int,
                      noise_sigma: float = 0.0, report: dict | None = None) -> Path:  # fmt: skip
    """Record a fitted temperature in a model card (``calibration``, a list with one entry
    per term set), atomically; the posterior then applies it to this term set by default."""
    from diffinfer.diffusion.checkpoint import CARD_FILE, resolve_model_dir, update_card

    card = read_json(resolve_model_dir(model_dir) / CARD_FILE)
    entry = {
        "temperature": fit["temperature"],
        "se": fit["se"],
        "n_maps": fit["n_maps"],
        "likelihood": likelihood,
        "n_noise": n_noise,
        "noise_sigma": float(noise_sigma),
        **({"report": report} if report else {}),
    }
    # one entry per (term set, noise draws, noise level); other term sets keep theirs
    old = card.get("calibration") or []
    old = [old] if isinstance(old, dict) else list(old)
    key = (likelihood, n_noise, float(noise_sigma))
    kept = [e for e in old if (e.get("likelihood"), e.get("n_noise"),
                                float(e.get("noise_sigma", 0.0))) != key]  # fmt: skip
    return update_card(model_dir, {"calibration": [*kept, entry]})

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
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import numpy as np

from diffinfer.calibration.cases import check_study, study_model, test_case
from diffinfer.calibration.config import NO_MODEL, STUDY_FILE, StudyConfig, posterior_kwargs
from diffinfer.calibration.executor import make_executor, sigterm_as_interrupt, stop_workers
from diffinfer.calibration.results import load_result, result_path
from diffinfer.errors import DiffinferError, InputError
from diffinfer.io import (
    directory_lock,
    json_safe,
    read_json,
    write_json_atomic,
    write_npz_atomic,
)
from diffinfer.validation import check_device, check_int


def run_maps(config: dict, analysis: str, indices: list[int], out: str, threads: int = 1,
             batch: int | None = None, device: str = "cpu") -> list[str]:  # fmt: skip
    """Compute and write the posteriors of some maps of one analysis; a picklable task for
    any executor. The study's model runs on ``device``.

    The maps' grids are computed in one pass (:func:`diffinfer.inference.many.compute_grids`,
    the engine of :func:`diffinfer.posteriors`: ``batch`` maps at once, default its device's,
    with the network calls of a diffusion likelihood batched across maps). Each map's file
    holds the truth, the posterior mean and covariance, ``n_draws`` draws, the HPD
    credibility level of the truth (exact on the grid), the normalised log density at the
    truth, evaluations, network calls, and the wall time (its share of the task's).
    """
    import torch

    from diffinfer.inference.many import compute_grids
    from diffinfer.inference.posterior import posterior

    torch.set_num_threads(threads)
    cfg = StudyConfig(**config)
    start = time.perf_counter()
    cases, posts = [], []
    for i in indices:
        path = result_path(Path(out), analysis, i)
        density, truth = test_case(cfg, i)
        # no bar per map (run_study has one for the study). Every map gets the study's
        # likelihood seed, as every user call gets the default one: a study measures the
        # posterior a user gets, not an average over seeds
        post = posterior(density, model=study_model(cfg.model, device), method=cfg.method,
                         seed=cfg.seed, progress=False,
                         **posterior_kwargs(cfg, analysis))  # fmt: skip
        post.name = f"{analysis} posterior of map {i}"
        old = _other_result(path)  # what this map must agree with, read once
        _check_temperature(path, old, float(post.info.get("temperature", 1.0)))
        if analysis == "diffusion":
            _check_seed(path, old, cfg.seed)
        _check_reference(path, old, _reference(post))
        cases.append((i, path, truth))
        posts.append(post)
    if cfg.method == "grid":
        compute_grids(posts, batch=batch, progress=False)
    share = (time.perf_counter() - start) / len(indices)
    for post, (i, path, truth) in zip(posts, cases, strict=True):
        _write_result(cfg, i, path, post, truth, share)
    return [str(path) for _, path, _ in cases]


def _write_result(cfg: StudyConfig, index: int, path: Path, post, truth: np.ndarray,
                  seconds: float) -> None:  # fmt: skip
    """Summarise one computed posterior (draws, moments, the truth's level) into its file;
    ``seconds``: its share of the computation, to which the summary's own time is added."""
    start = time.perf_counter()
    if cfg.method == "grid":
        g = post.grid()
        draws = g.sample(cfg.n_draws, seed=cfg.seed + index)
        mean, cov = g.mean(), g.cov()
        level = float(g.credibility(truth)[0])
        log_pdf = float(g.log_pdf(truth)[0])
        n_eval, edge = g.n_evaluations, g.edge_mass
    else:
        from scipy.stats import gaussian_kde

        from diffinfer.calibration.metrics import thin_to_independent

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
                     seconds=seconds + time.perf_counter() - start,
                     temperature=post.info.get("temperature", 1.0),
                     terms=np.array(post.info.get("terms", "")),
                     n_noise=post.info.get("n_noise", 0), noise_sigma=cfg.noise_sigma,
                     likelihood_seed=cfg.seed, reference=np.array(_reference(post)),
                     mc_error_mean=np.asarray(mc.get("mean", [np.nan, np.nan]), float),
                     mc_error_sd=np.asarray(mc.get("sd", [np.nan, np.nan]), float),
                     mc_error_met=bool(mc.get("met", True)),
                     n_timesteps=int(mc.get("n_timesteps", 0)),
                     network_calls=int(mc.get("n_denoiser_calls", 0)),
                     label=np.array(post.info["label"]))  # fmt: skip


def _other_result(path: Path) -> dict | None:
    """The first readable result of ``path``'s analysis other than ``path`` itself: what a
    map added to the study must agree with."""
    for other in sorted(path.parent.glob("*.npz")):
        if other.name != path.name:
            result = load_result(other)
            if result is not None:
                return result
    return None


def _check_temperature(path: Path, result: dict | None, temperature: float) -> None:
    """Refuse to add a result at another likelihood temperature than the analysis's results
    already in the study (checked before the posterior is computed). A study without a
    ``temperature`` takes the model card's when each map is computed, so a card
    recalibrated while a study grows would otherwise mix two temperatures in one report.
    ``result``: another result of the analysis (:func:`_other_result`), or None."""
    if result is None or "temperature" not in result:
        return
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


def _check_seed(path: Path, result: dict | None, seed: int) -> None:
    """Refuse to add a diffusion result to an analysis whose results were computed with other
    likelihood seeds: earlier versions gave map i the seed ``seed + i`` (an average over
    seeds, not what a user gets), recorded by the absence of ``likelihood_seed``."""
    if result is None:
        return
    old = result.get("likelihood_seed")
    if old is None or int(old) != seed:
        study = path.parent.parent.parent
        was = "seed + map index" if old is None else str(int(old))
        raise InputError(
            f"{study}: its diffusion results were computed with likelihood seed {was}, "
            f"this map's would use seed {seed} (every map now gets the study's seed, as "
            "a user's call gets the default); start a new study with another --out"
        )


def _reference(post) -> str:
    """The NPE reference a posterior uses, by name and weights (empty for the others)."""
    settings = post.info.get("provenance", {}).get("settings", {})
    if "weights_sha256" not in settings:
        return ""
    return f"{settings.get('npe')} (weights sha256 {settings['weights_sha256']})"


def _check_reference(path: Path, result: dict | None, reference: str) -> None:
    """Refuse to add an NPE result computed with another reference than the analysis's
    results: a reference whose members changed under the same name (an ensemble grown), or
    a changed default, would otherwise mix two estimators in one report. Results written
    before the weights were recorded are checked by the reference's name."""
    if result is None:
        return
    if "reference" in result:
        old = str(result["reference"])
    else:  # written before the weights were recorded: the name its label gives
        found = re.search(r"neural posterior estimate \(([^:]+):", str(result.get("label", "")))
        if found is None:
            return
        old, reference = found.group(1), reference.split(" (")[0]
    if old != reference:
        study = path.parent.parent.parent
        name, new_name = old.split(" (")[0], reference.split(" (")[0]
        grow = f", or grow it with --set npe={name}" if name and name != new_name else ""
        raise InputError(
            f"{study}: its {path.parent.name} results were computed with the reference "
            f"{old or 'none'}, this map's would use {reference or 'none'}; start a new study "
            f"with another --out{grow}"
        )


def run_study(
    config: StudyConfig,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    executor: Executor | None = None,
    threads: int = 1,
    batch: int | None = None,
    device: str = "cpu",
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
    batch
        Maps of the diffusion analysis computed together in one task, their network calls
        batched (:func:`diffinfer.posteriors`); default
        :func:`~diffinfer.inference.many.default_batch` of the study's model (one on a CPU,
        where one map's calls already fill the network's fastest batch).
    device
        Where the study's diffusion model runs: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"mps"``, in every worker (the references run on the CPU). Not part of the study:
        a study started on one device may be grown on another.

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
    if batch is not None:
        batch = check_int("batch", batch, low=1, what="maps per task of the diffusion analysis")
    device = str(check_device("device", device))
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
        return _run(config, spec, out, workers, threads, batch, device, scheduler, executor,
                    progress, on_result)  # fmt: skip


def _tasks(config: StudyConfig, out: Path, batch: int | None,
           device: str) -> list[tuple[str, list[int]]]:  # fmt: skip
    """The maps still to compute, as tasks of :func:`run_maps`: the diffusion analysis's in
    groups of ``batch`` maps (default :func:`~diffinfer.inference.many.default_batch` of the
    study's model on ``device``), every reference's one map at a time (their evaluations
    cost milliseconds)."""
    tasks: list[tuple[str, list[int]]] = []
    for a in config.analyses:
        todo = [i for i in range(config.n_maps) if load_result(result_path(out, a, i)) is None]
        size = 1
        if a == "diffusion" and todo:
            size = batch if batch is not None else _default_batch(config, device)
        tasks += [(a, todo[lo : lo + size]) for lo in range(0, len(todo), size)]
    # map by map as before: every analysis of a map before the next map
    return sorted(tasks, key=lambda task: task[1][0])


def _default_batch(config: StudyConfig, device: str) -> int:
    """:func:`~diffinfer.inference.many.default_batch` of the study's model on ``device``
    (the model is loaded in this process only where it can batch: on a GPU)."""
    if config.model == NO_MODEL or not device.startswith("cuda"):
        return 1
    from diffinfer.inference.many import default_batch

    return default_batch(study_model(config.model, device))


def _run(config: StudyConfig, spec: dict, out: Path, workers: int, threads: int,
         batch: int | None, device: str, scheduler: str | None, executor: Executor | None,
         progress: bool, on_result: Callable[[str], None] | None) -> dict:  # fmt: skip
    """The maps of :func:`run_study` still to compute, computed; its report."""
    from tqdm.auto import tqdm

    from diffinfer.calibration.report import write_report

    tasks = _tasks(config, out, batch, device)
    total = sum(len(indices) for _, indices in tasks)
    own = executor is None
    with sigterm_as_interrupt():
        if own and workers <= 1 and scheduler is None:
            with tqdm(total=total, desc="posteriors", disable=not progress) as bar:
                for a, indices in tasks:
                    for path in run_maps(spec, a, indices, str(out), threads, batch, device):
                        bar.update()
                        if on_result:
                            on_result(path)
        elif tasks:
            pool = executor or make_executor(workers, scheduler)
            futures: list = []
            sent: dict = {}
            try:
                for a, indices in tasks:  # one by one: an interrupt here cancels what was sent
                    futures.append(pool.submit(run_maps, spec, a, indices, str(out), threads,
                                               batch, device))  # fmt: skip
                    sent[futures[-1]] = (a, indices)
                with tqdm(total=total, desc="posteriors", disable=not progress) as bar:
                    for fut in as_completed(futures):
                        try:
                            paths = fut.result()
                        except BrokenProcessPool as exc:
                            a, indices = sent[fut]
                            where = ", ".join(str(result_path(out, a, i)) for i in indices)
                            raise DiffinferError(
                                f"a worker process died while computing the {a} posterior of "
                                f"map{'s' if len(indices) > 1 else ''} "
                                f"{', '.join(map(str, indices))} ({where}): out of memory, or "
                                f"killed? Finished maps are kept in {out}; rerun the same "
                                "command with fewer --workers to resume"
                            ) from exc
                        for path in paths:
                            bar.update()
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
